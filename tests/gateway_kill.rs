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

#[tokio::test]
async fn a_killed_owner_loses_no_call_and_repeats_only_what_it_had_with_telegram() {
    let api = FakeBotApi::start().await;
    let token = token(8301);
    api.add_bot(&token);
    api.sends().set_limits(gateway::fast_limits());
    let prefix = nats::unique("gwkill");
    let dir = tempfile::tempdir().unwrap();
    let admins = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let first = RelayProcess::spawn(
        dir.path(),
        "a",
        &replica_toml(&api, &token, &prefix, "a", &admins[0]),
        &[],
    );
    wait_for("replica a owns the bot", 30, async || {
        owns(&admins[0]).await
    })
    .await;
    let second = RelayProcess::spawn(
        dir.path(),
        "b",
        &replica_toml(&api, &token, &prefix, "b", &admins[1]),
        &[],
    );
    wait_for("both replicas see each other", 30, async || {
        scrape(&admins[1], "tgrelay_cluster_members").await == 2.0
    })
    .await;
    assert!(!owns(&admins[1]).await, "the bot stays with its owner");

    let js = nats::jetstream().await;
    let plan = gateway::plan("kill", 60, 40, 20, 4);
    let total: usize = plan.iter().map(Vec::len).sum();
    let subject = format!("{prefix}-out.main");
    let producers: Vec<_> = plan
        .iter()
        .cloned()
        .map(|calls| tokio::spawn(gateway::publish_nats(js.clone(), subject.clone(), calls)))
        .collect();
    wait_for("a quarter of the calls sent", 60, async || {
        api.sends().sent(&token).len() >= total / 4
    })
    .await;
    first.kill();
    for producer in producers {
        producer.await.unwrap();
    }
    let results = format!("{prefix}-out.main.results");
    let answers = gateway::results_nats(
        &js,
        &format!("{prefix}_OUT"),
        &results,
        total,
        Duration::from_secs(120),
    )
    .await;
    assert!(owns(&admins[1]).await, "replica b took the bot over");

    let answered_twice = gateway::check_results(&plan, &answers);
    let sent_twice = gateway::check_sent(&api, &token, &plan);
    assert!(sent_twice <= CONCURRENCY, "{sent_twice} calls sent twice");
    assert!(
        answered_twice <= CONCURRENCY,
        "{answered_twice} calls answered twice"
    );
    second.terminate().await;
    for stream in ["OUT", "OUT_LIMITS", "UPD"] {
        nats::delete_stream(&js, &format!("{prefix}_{stream}")).await;
    }
    for bucket in ["members", "owners"] {
        let _ = js.delete_key_value(format!("{prefix}-{bucket}")).await;
    }
    eprintln!("{total} calls; sent twice: {sent_twice}; answered twice: {answered_twice}");
}
