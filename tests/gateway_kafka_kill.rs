//! A relay killed mid-flood on Kafka loses no call and sends none twice: one relay
//! process runs a bot's calls from Kafka, is SIGKILLed after a quarter of a flood, and
//! is started again. Every call gets its result, each chat's calls reach Telegram in
//! order, no limit is exceeded (the restarted relay reads the limits its predecessor
//! kept), and nothing is sent twice: the restarted relay replays the request journal,
//! answers the calls that were with Telegram at the kill as unknown and those already
//! answered (their offsets not yet committed) with their first answers. Calls produced
//! again with their ids afterwards get their first answers too.

mod support;

use std::time::Duration;

use support::fake_bot_api::{FakeBotApi, Fault};
use support::gateway;
use support::process::RelayProcess;
use support::{kafka, nats, relay};

const CONCURRENCY: usize = 8;
/// Calls answered late, with Telegram at the kill.
const LATE: usize = 4;
/// The test's bot rate is 200 calls a second; progress is saved every 250 ms: results
/// published again are at most those finished in the quarter second before the kill.
const FINISHED_UNSAVED: usize = 200 / 4;

#[tokio::test]
async fn a_killed_relay_restarted_loses_no_call_and_sends_none_twice() {
    let api = FakeBotApi::start().await;
    let token = relay::token(8401);
    api.add_bot(&token);
    api.sends().set_limits(gateway::fast_limits());
    let prefix = nats::unique("gwkk");
    let toml = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n{}{}[bots.main]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout = \"1s\"\n",
        kafka::sink_toml(&prefix, ""),
        gateway::outbound_toml(&prefix, &format!("concurrency = {CONCURRENCY}\n")),
        api.base_url()
    );
    let dir = tempfile::tempdir().unwrap();
    let first = RelayProcess::spawn(dir.path(), "first", &toml, &[]);

    let plan = gateway::plan("kk", 60, 40, 20, 4);
    let total: usize = plan.iter().map(Vec::len).sum();
    let topic = format!("{prefix}-out.main");
    let producers: Vec<_> = plan
        .iter()
        .cloned()
        .map(|calls| {
            tokio::spawn(gateway::publish_kafka(
                kafka::brokers(),
                topic.clone(),
                calls,
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while api.sends().sent(&token).len() < total / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a quarter of the calls sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next calls are delivered and answered late: with Telegram at the kill.
    for _ in 0..LATE {
        api.inject_on(
            &token,
            "sendMessage",
            Fault::AnswerLate(Duration::from_secs(3)),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    let second = RelayProcess::spawn(dir.path(), "second", &toml, &[]);
    for producer in producers {
        producer.await.unwrap();
    }
    let results = format!("{topic}.results");
    let answers =
        gateway::results_kafka(&kafka::brokers(), &results, total, Duration::from_secs(120)).await;
    let (answered_twice, unknown) =
        gateway::check_results_after_crash(&plan, &answers, CONCURRENCY);
    let sent_twice = gateway::check_sent_except(&api, &token, &plan, &unknown);
    let sent = api.sends().sent(&token).len();
    let again: Vec<_> = plan[0][..10].to_vec();
    gateway::publish_kafka(kafka::brokers(), topic.clone(), again.clone()).await;
    let all = answers.len() + again.len();
    let more =
        gateway::results_kafka(&kafka::brokers(), &results, all, Duration::from_secs(60)).await;
    assert_eq!(more.len(), all);
    for call in &again {
        let bodies: Vec<_> = more
            .iter()
            .filter(|a| a.request_id() == call.id)
            .map(|a| &a.body)
            .collect();
        assert!(bodies.len() >= 2, "{}: {bodies:?}", call.id);
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "the first answer again: {bodies:?}"
        );
    }
    assert_eq!(api.sends().sent(&token).len(), sent, "nothing sent again");
    second.terminate().await;
    eprintln!(
        "{total} calls; sent twice: {sent_twice}; answered twice: {answered_twice}; unknown: {}",
        unknown.len()
    );
    assert_eq!(sent_twice, 0, "calls sent twice");
    assert!(
        unknown.len() >= LATE,
        "the calls with Telegram are answered as unknown"
    );
    assert!(
        answered_twice <= CONCURRENCY + FINISHED_UNSAVED,
        "{answered_twice} calls answered twice"
    );
}
