//! Ownership: which replica runs which bot.
//!
//! `single` (the default): this process owns every configured bot. `shared`: every
//! replica loads the same bots and each bot is run by one live replica at a time,
//! coordinated through the broker the relay already talks to (NATS key-value buckets,
//! or a Kafka consumer group). An [`Ownership`] starts and stops bots on the
//! [`Supervisor`] as ownership moves, and keeps this replica's [`Lease`] alive.
//!
//! Safety never depends on it: two replicas polling one bot only cause duplicates and
//! 409s, because each confirms only what it published itself (see `ack`). Ownership is
//! there so that, normally, nobody polls twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::{BotConfig, ClusterConfig, ClusterMode};
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;
use coordinator::SharedOwnership;

pub mod coordinator;
pub mod kafka;
pub mod nats;
pub mod plan;
pub mod store;

/// The configured bots, by name; a watch so that the set may change while running.
pub type Bots = watch::Receiver<Arc<BTreeMap<String, BotConfig>>>;

/// Decides which bots this replica runs.
pub trait Ownership: Send {
    /// Runs until `shutdown`, starting and stopping bots on `supervisor` as this
    /// replica gains and loses them.
    fn run(
        self: Box<Self>,
        bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// The ownership the configuration asks for, over the broker the sink connected to.
pub async fn connect(
    config: &ClusterConfig,
    broker: &Broker,
    lease: Lease,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Box<dyn Ownership>> {
    if config.mode == ClusterMode::Single {
        return Ok(Box::new(Single));
    }
    match broker {
        Broker::Nats(nats) => {
            let store = nats::NatsStore::connect(nats, config).await?;
            Ok(Box::new(SharedOwnership::new(
                store, config, lease, metrics,
            )))
        }
        Broker::Kafka(kafka) => {
            let store = kafka::KafkaStore::connect(kafka, config, &metrics).await?;
            Ok(Box::new(SharedOwnership::new(
                store, config, lease, metrics,
            )))
        }
        Broker::None => anyhow::bail!("cluster.mode = \"shared\" needs a broker (nats or kafka)"),
    }
}

/// `single`: this process owns every bot there is.
pub struct Single;

impl Ownership for Single {
    fn run(
        self: Box<Self>,
        mut bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let wanted = Arc::clone(&bots.borrow_and_update());
                for name in wanted.keys() {
                    supervisor.start(&wanted, name);
                }
                for name in supervisor.running() {
                    if !wanted.contains_key(&name) {
                        supervisor.stop(&name).await;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = bots.changed() => if changed.is_err() { return },
                }
            }
        })
    }
}

/// What a shared replica reports about ownership, in metrics and one log line per change.
#[derive(Clone)]
pub(crate) struct OwnershipLog {
    pub metrics: Arc<Metrics>,
    pub instance: String,
    /// The bots with a `tgrelay_bot_owner` series here (1 or 0), and the bot set they
    /// were last checked against.
    reported: Arc<Mutex<Reported>>,
}

#[derive(Default)]
struct Reported {
    bots: BTreeSet<String>,
    checked: Option<Arc<BTreeMap<String, BotConfig>>>,
}

impl OwnershipLog {
    pub fn new(metrics: Arc<Metrics>, instance: String) -> OwnershipLog {
        OwnershipLog {
            metrics,
            instance,
            reported: Arc::default(),
        }
    }

    fn set_owner(&self, bot: &str, owner: bool) {
        self.metrics
            .bot_owner
            .with_label_values(&[bot])
            .set(i64::from(owner));
        let mut reported = self.reported.lock().unwrap();
        if !reported.bots.contains(bot) {
            reported.bots.insert(bot.to_owned());
        }
    }

    /// Drops the owner series of bots no longer configured (a removed bot is no bot
    /// without an owner); looks only when the bot set changed.
    pub fn configured(&self, bots: &Arc<BTreeMap<String, BotConfig>>) {
        let mut reported = self.reported.lock().unwrap();
        if reported
            .checked
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, bots))
        {
            return;
        }
        reported.checked = Some(Arc::clone(bots));
        reported.bots.retain(|bot| {
            let keep = bots.contains_key(bot);
            if !keep {
                self.metrics.bot_owner.remove_label_values(&[bot]);
            }
            keep
        });
    }

    pub fn acquired(&self, bot: &str, from: Option<&str>, unowned: Option<std::time::Duration>) {
        let m = &self.metrics;
        m.lease_acquisitions.with_label_values(&[bot]).inc();
        self.set_owner(bot, true);
        // Its losses exist at 0 from now on, so a lapse shows in `increase()` and panels.
        for reason in ["lapsed", "taken"] {
            m.lease_losses.with_label_values(&[bot, reason]);
        }
        if let Some(waited) = unowned {
            m.bot_unowned_seconds.observe(waited.as_secs_f64());
        }
        match from {
            Some(previous) => tracing::info!(%bot, instance = %self.instance, %previous,
                unowned_ms = unowned.map(|d| d.as_millis() as u64), "took the bot over"),
            None => tracing::info!(%bot, instance = %self.instance, "owns the bot"),
        }
    }

    pub fn released(&self, bot: &str) {
        self.set_owner(bot, false);
        tracing::info!(%bot, instance = %self.instance, "released the bot to rebalance");
    }

    pub fn lost(&self, bot: &str, reason: &'static str) {
        self.metrics
            .lease_losses
            .with_label_values(&[bot, reason])
            .inc();
        self.set_owner(bot, false);
        tracing::warn!(%bot, instance = %self.instance, reason, "lost the bot");
    }

    /// Another process runs under this replica's name (`yielding`: and started first,
    /// so this one runs nothing), or no longer does.
    pub fn twin(&self, yielding: bool) {
        self.metrics.cluster_name_conflict.set(i64::from(yielding));
        if yielding {
            tracing::error!(instance = %self.instance,
                "another process runs as this cluster.instance and started first; this one runs no bot and sends no heartbeat until it is gone: give each replica its own cluster.instance");
        } else {
            tracing::warn!(instance = %self.instance,
                "the other process with this cluster.instance is gone; running bots again");
        }
    }

    /// This replica's lease lapsed: its bots stopped polling until it is renewed.
    /// An owner write failed; a refusal of the compare-and-set is counted.
    pub fn write_failed(&self, error: &store::StoreError) {
        if matches!(error, store::StoreError::Conflict) {
            self.metrics.cluster_owner_conflicts.inc();
        }
    }

    pub fn lapsed(&self, bots: usize) {
        tracing::warn!(instance = %self.instance, bots,
            "cluster lease lapsed (the broker did not take a renewal in time); stopped polling until it is renewed");
    }

    pub fn owned(&self, running: &BTreeSet<String>, members: usize) {
        self.metrics.bots_owned.set(running.len() as i64);
        self.metrics.cluster_members.set(members as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(m: &Metrics, bot: &str) -> i64 {
        m.bot_owner.with_label_values(&[bot]).get()
    }

    #[test]
    fn a_bot_counts_as_owned_from_its_claim_until_it_is_released_or_lost() {
        let log = OwnershipLog::new(Arc::new(Metrics::new()), "r0".into());
        let m = Arc::clone(&log.metrics);
        log.acquired("a", None, None);
        log.acquired("b", Some("r1"), Some(std::time::Duration::from_secs(3)));
        assert_eq!((owner(&m, "a"), owner(&m, "b")), (1, 1));
        let text = m.render();
        assert!(
            text.contains("tgrelay_lease_losses_total{bot=\"a\",reason=\"lapsed\"} 0"),
            "{text}"
        );

        log.released("a");
        log.lost("b", "taken");
        // 0, not gone: summed over replicas, a bot nobody owns reads 0, not nothing.
        assert_eq!((owner(&m, "a"), owner(&m, "b")), (0, 0));
        assert!(m.render().contains("tgrelay_bot_owner{bot=\"a\"} 0"));

        // "b" leaves the configuration: its series goes, "a"'s stays.
        let mut bots = BTreeMap::new();
        bots.insert("a".to_owned(), BotConfig::default());
        log.configured(&Arc::new(bots));
        let text = m.render();
        assert!(text.contains("tgrelay_bot_owner{bot=\"a\"} 0"), "{text}");
        assert!(!text.contains("tgrelay_bot_owner{bot=\"b\""), "{text}");
    }
}
