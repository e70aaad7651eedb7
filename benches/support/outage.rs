//! Part 4 of `e2e_polling`: the relay binary through a broker outage. It relays a
//! first batch, then its broker goes away for `TEST_TGRELAY_BENCH_OUTAGE_SECS`
//! (default 10; 0 skips this part) while the fake Bot API queues more updates; the
//! relay's VmRSS is sampled every 100 ms meanwhile. Then the broker returns and every
//! update must be confirmed, or the bench fails.
//!
//! The brokers on the usual ports serve other tests and benches, so the outage hits a
//! broker of its own on a free port: a `nats-server -js` stopped with SIGTERM (so
//! JetStream flushes its store) and started again on the same port and store; or a
//! `tansu` with in-memory storage, which a restart would empty, so it is frozen with
//! SIGSTOP and thawed with SIGCONT instead (a hung broker: connections stay open,
//! nothing answers).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use super::fake_bot_api::FakeBotApi;
use super::private_broker::{BrokerKind, PrivateBroker};
use super::{
    proc_status_kib, relay_config, wait_for_first_poll, Broker, Names, RelayProcess, TOKEN,
};

/// Updates relayed before the outage, so the relay's sink has done real work.
pub const BEFORE: usize = 1_000;
/// Updates queued at the fake while the broker is away.
pub const DURING: usize = 5_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

pub struct OutageFigures {
    pub duration: Duration,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
    /// Of the updates queued during the outage, how many were confirmed before it ended.
    pub confirmed_during: usize,
    /// From the broker's return until every update was confirmed.
    pub recovery: Duration,
    pub log: String,
}

/// `TEST_TGRELAY_BENCH_OUTAGE_SECS`; `None` when 0 (skip the outage).
pub fn outage_duration() -> anyhow::Result<Option<Duration>> {
    let name = "TEST_TGRELAY_BENCH_OUTAGE_SECS";
    let Ok(text) = std::env::var(name) else {
        return Ok(Some(Duration::from_secs(10)));
    };
    let secs: u64 = text.parse().with_context(|| format!("{name}={text:?}"))?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// How the broker goes away, for the report.
pub fn how(broker: Broker) -> &'static str {
    match broker {
        Broker::Nats => {
            "a private nats-server (JetStream, file store) stopped with SIGTERM, \
             then started again on the same port and store"
        }
        Broker::Kafka | Broker::KafkaPerBot => {
            "a private tansu (in-memory storage) frozen with SIGSTOP, then thawed with SIGCONT"
        }
    }
}

/// Relays `BEFORE` updates, takes the broker away while `DURING` more are queued,
/// samples the relay's VmRSS, brings the broker back and waits for all to be confirmed.
pub async fn relay_through_outage(
    broker: Broker,
    updates: Vec<Vec<u8>>,
    kinds: &[String],
    outage: Duration,
) -> anyhow::Result<OutageFigures> {
    ensure!(
        updates.len() > BEFORE,
        "the outage needs more than {BEFORE} updates"
    );
    let total = updates.len();
    let mut server = PrivateBroker::start(match broker {
        Broker::Nats => BrokerKind::Nats,
        Broker::Kafka | Broker::KafkaPerBot => BrokerKind::Kafka,
    });
    let api = FakeBotApi::start().await;
    api.add_bot(TOKEN);
    let dir = tempfile::tempdir()?;
    let names = Names::unique("outage");
    let config = relay_config(&api.base_url(), kinds, broker, &server.address(), &names);
    let mut relay = RelayProcess::spawn(&config, dir.path())?;
    wait_for_first_poll(&api, &mut relay).await?;
    let (before, during) = updates.split_at(BEFORE);
    api.push_updates(TOKEN, before.to_vec());
    let within = Duration::from_secs(60);
    if !api.wait_for_confirmed(TOKEN, BEFORE, within).await {
        relay.ensure_running()?;
        bail!(
            "before the outage, only {} of {BEFORE} confirmed in {within:?}:\n{}",
            api.confirmed(TOKEN).len(),
            relay.log()
        );
    }

    server.begin_outage();
    let rss_start_kib = proc_status_kib(relay.pid(), "VmRSS")?;
    let (mut rss_peak_kib, mut rss_end_kib) = (rss_start_kib, rss_start_kib);
    api.push_updates(TOKEN, during.to_vec());
    let ends = Instant::now() + outage;
    while Instant::now() < ends {
        tokio::time::sleep(SAMPLE_EVERY).await;
        relay.ensure_running()?;
        rss_end_kib = proc_status_kib(relay.pid(), "VmRSS")?;
        rss_peak_kib = rss_peak_kib.max(rss_end_kib);
    }
    let confirmed_during = api.confirmed(TOKEN).len().saturating_sub(BEFORE);

    server.end_outage();
    let back = Instant::now();
    // Room for a publish timeout and a backoff step or two, then the catch-up.
    let within = Duration::from_secs(120 + total as u64 / 100);
    let all = api.wait_for_confirmed(TOKEN, total, within).await;
    let recovery = back.elapsed();
    relay.ensure_running()?;
    ensure!(
        all,
        "after the outage, only {} of {total} confirmed within {within:?} of the broker's return\n\
         relay log:\n{}\nbroker log (end):\n{}",
        api.confirmed(TOKEN).len(),
        relay.log(),
        server.log_tail(30)
    );
    let log = relay.log();
    relay.terminate().await?;
    Ok(OutageFigures {
        duration: outage,
        rss_start_kib,
        rss_peak_kib,
        rss_end_kib,
        confirmed_during,
        recovery,
        log,
    })
}
