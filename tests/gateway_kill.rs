//! A killed owner loses no call: two relay processes share one bot through NATS (its
//! owner runs its calls), services flood calls to many chats, and the owner is
//! SIGKILLed mid-flood. The other replica takes the bot over and finishes: every call
//! gets its result, each chat's calls still reach Telegram in order (a call sent
//! again comes again in its place), no limit is exceeded, and what is sent twice is
//! at most what the README promises: the calls the killed owner had with Telegram.

mod support;

use std::time::Duration;

use support::fake_bot_api::FakeBotApi;
use support::gateway;
use support::nats;
use support::process::{scrape, RelayProcess};
use support::relay::{free_port, token};

/// `outbound.concurrency` in this test: the most calls one owner has with Telegram.
const CONCURRENCY: usize = 8;

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
    /// sent, and reads every result; returns the calls (sent twice, answered twice).
    async fn flood(self, to_owner: impl AsyncFnOnce(RelayProcess)) -> (usize, usize) {
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
        to_owner(self.first).await;
        for producer in producers {
            producer.await.unwrap();
        }
        let results = format!("{}-out.main.results", self.prefix);
        let stream = format!("{}_OUT", self.prefix);
        let answers =
            gateway::results_nats(&js, &stream, &results, total, Duration::from_secs(120)).await;
        assert!(owns(&self.admins[1]).await, "replica b took the bot over");
        let answered_twice = gateway::check_results(&plan, &answers);
        let sent_twice = gateway::check_sent(&self.api, &self.token, &plan);
        self.second.terminate().await;
        for stream in ["OUT", "OUT_LIMITS", "UPD"] {
            nats::delete_stream(&js, &format!("{}_{stream}", self.prefix)).await;
        }
        for bucket in ["members", "owners"] {
            let _ = js
                .delete_key_value(format!("{}-{bucket}", self.prefix))
                .await;
        }
        eprintln!("{total} calls; sent twice: {sent_twice}; answered twice: {answered_twice}");
        (sent_twice, answered_twice)
    }
}

#[tokio::test]
async fn a_killed_owner_loses_no_call_and_repeats_only_what_it_had_with_telegram() {
    let pair = Pair::start(8301).await;
    let (sent_twice, answered_twice) = pair.flood(async |owner| owner.kill()).await;
    assert!(sent_twice <= CONCURRENCY, "{sent_twice} calls sent twice");
    assert!(
        answered_twice <= CONCURRENCY,
        "{answered_twice} calls answered twice"
    );
}

#[tokio::test]
async fn an_owner_stopped_cleanly_hands_over_without_repeating_anything() {
    let pair = Pair::start(8302).await;
    let (sent_twice, answered_twice) = pair
        .flood(async |owner| {
            assert!(owner.terminate().await.success());
        })
        .await;
    assert_eq!((sent_twice, answered_twice), (0, 0));
}
