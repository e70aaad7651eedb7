//! A killed owner loses no call and sends none twice: two relay processes share one
//! bot through NATS (its owner runs its calls), services flood calls to many chats,
//! and the owner is SIGKILLed mid-flood. The other replica takes the bot over and
//! finishes: every call gets its result, each chat's calls reach Telegram in order, no
//! limit is exceeded, and no call is sent twice: the calls the killed owner had with
//! Telegram are found "started" in the request journal and answered as unknown. Calls
//! published again with their ids afterwards get their first answers from the
//! journal, from the new owner, and are not sent again.

mod support;

use std::time::Duration;

use support::fake_bot_api::{FakeBotApi, Fault};
use support::gateway;
use support::nats;
use support::process::{scrape, RelayProcess};
use support::relay::{free_port, token};

/// `outbound.concurrency` in this test: the most calls one owner has with Telegram.
const CONCURRENCY: usize = 8;
/// Calls answered late, with Telegram when the owner goes.
const LATE: usize = 4;

fn replica_toml(
    api: &FakeBotApi,
    token: &str,
    prefix: &str,
    instance: &str,
    admin: &str,
) -> String {
    let mut toml = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"{admin}\"\n\
         [cluster]\nmode = \"shared\"\ninstance = \"{instance}\"\nname = \"{prefix}\"\nlease_ttl = \"3s\"\n"
    );
    toml.push_str(&nats::sink_toml(&format!("{prefix}_UPD"), prefix, ""));
    toml.push_str(&gateway::outbound_toml(
        prefix,
        &format!("concurrency = {CONCURRENCY}\n"),
    ));
    toml.push_str(&format!(
        "[bots.main]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout = \"1s\"\n",
        api.base_url()
    ));
    toml
}

async fn owns(admin: &str) -> bool {
    scrape(admin, "tgrelay_bots_owned").await == 1.0
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas sharing one bot, the first its owner.
struct Pair {
    api: FakeBotApi,
    token: String,
    prefix: String,
    admins: [String; 2],
    first: RelayProcess,
    second: RelayProcess,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn start(bot_id: u64) -> Pair {
        let api = FakeBotApi::start().await;
        let token = token(bot_id);
        api.add_bot(&token);
        api.sends().set_limits(gateway::fast_limits());
        let prefix = nats::unique("gwkill");
        let dir = tempfile::tempdir().unwrap();
        let admins = [
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ];
        let toml =
            |instance: &str, admin: &str| replica_toml(&api, &token, &prefix, instance, admin);
        let first = RelayProcess::spawn(dir.path(), "a", &toml("a", &admins[0]), &[]);
        wait_for("replica a owns the bot", 30, async || {
            owns(&admins[0]).await
        })
        .await;
        let second = RelayProcess::spawn(dir.path(), "b", &toml("b", &admins[1]), &[]);
        wait_for("both replicas see each other", 30, async || {
            scrape(&admins[1], "tgrelay_cluster_members").await == 2.0
        })
        .await;
        assert!(!owns(&admins[1]).await, "the bot stays with its owner");
        Pair {
            api,
            token,
            prefix,
            admins,
            first,
            second,
            _dir: dir,
        }
    }

    /// Floods calls, does `to_owner` to the first replica once a quarter of them was
    /// sent, reads every result (up to `max_unknown` may be unknown), then publishes
    /// some calls again; returns the calls (sent twice, answered twice, unknown).
    async fn flood(
        self,
        max_unknown: usize,
        to_owner: impl AsyncFnOnce(RelayProcess),
    ) -> (usize, usize, usize) {
        let js = nats::jetstream().await;
        let plan = gateway::plan("kill", 60, 40, 20, 4);
        let total: usize = plan.iter().map(Vec::len).sum();
        let subject = format!("{}-out.main", self.prefix);
        let producers: Vec<_> = plan
            .iter()
            .cloned()
            .map(|calls| tokio::spawn(gateway::publish_nats(js.clone(), subject.clone(), calls)))
            .collect();
        wait_for("a quarter of the calls sent", 60, async || {
            self.api.sends().sent(&self.token).len() >= total / 4
        })
        .await;
        // The next calls are delivered and answered late: they are with Telegram when
        // the owner goes.
        for _ in 0..LATE {
            let late = Fault::AnswerLate(Duration::from_secs(3));
            self.api.inject_on(&self.token, "sendMessage", late);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        to_owner(self.first).await;
        for producer in producers {
            producer.await.unwrap();
        }
        let results = format!("{}-out.main.results", self.prefix);
        let stream = format!("{}_OUT", self.prefix);
        let answers =
            gateway::results_nats(&js, &stream, &results, total, Duration::from_secs(120)).await;
        assert!(owns(&self.admins[1]).await, "replica b took the bot over");
        let (answered_twice, unknown) =
            gateway::check_results_after_crash(&plan, &answers, max_unknown);
        let sent_twice = gateway::check_sent_except(&self.api, &self.token, &plan, &unknown);
        // The first calls again, each under its own id (another Nats-Msg-Id, so the
        // server's duplicate window lets them through): answered from the journal.
        let again: Vec<_> = plan[0][..10].to_vec();
        let sent = self.api.sends().sent(&self.token).len();
        for call in &again {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("tg-method", "sendMessage");
            headers.insert("tg-request-id", call.id.as_str());
            headers.insert("Nats-Msg-Id", format!("{}:again", call.id).as_str());
            let ack = js
                .publish_with_headers(subject.clone(), headers, call.body().into())
                .await
                .unwrap();
            ack.await.unwrap();
        }
        let repeats =
            gateway::results_nats(&js, &stream, &results, again.len(), Duration::from_secs(60))
                .await;
        assert_eq!(repeats.len(), again.len());
        for repeat in &repeats {
            let first = answers
                .iter()
                .find(|a| a.request_id() == repeat.request_id())
                .unwrap();
            assert_eq!(repeat.body, first.body, "the first answer again");
        }
        assert_eq!(
            self.api.sends().sent(&self.token).len(),
            sent,
            "nothing sent again"
        );
        self.second.terminate().await;
        for stream in ["OUT", "OUT_LIMITS", "UPD"] {
            nats::delete_stream(&js, &format!("{}_{stream}", self.prefix)).await;
        }
        let journal = format!("{}_OUT_REQUESTS", self.prefix);
        for bucket in [
            format!("{}-members", self.prefix),
            format!("{}-owners", self.prefix),
            journal,
        ] {
            let _ = js.delete_key_value(bucket).await;
        }
        eprintln!("{total} calls; sent twice: {sent_twice}; answered twice: {answered_twice}; unknown: {}", unknown.len());
        (sent_twice, answered_twice, unknown.len())
    }
}

#[tokio::test]
async fn a_killed_owner_loses_no_call_and_its_successor_sends_none_twice() {
    let pair = Pair::start(8301).await;
    let (sent_twice, answered_twice, unknown) =
        pair.flood(CONCURRENCY, async |owner| owner.kill()).await;
    assert_eq!(sent_twice, 0, "calls sent twice");
    assert!(
        unknown >= LATE,
        "the calls with Telegram are answered as unknown"
    );
    assert!(
        answered_twice <= CONCURRENCY,
        "{answered_twice} calls answered twice"
    );
}

#[tokio::test]
async fn an_owner_stopped_cleanly_hands_over_without_repeating_anything() {
    let pair = Pair::start(8302).await;
    let (sent_twice, answered_twice, _) = pair
        .flood(0, async |owner| {
            assert!(owner.terminate().await.success());
        })
        .await;
    assert_eq!((sent_twice, answered_twice), (0, 0));
}
