//! The bot supervisor: one bot stopped and started alone, finishing and confirming its
//! batch, while the others keep their long poll; a replica running no bot is no failure.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::relay::{config, eventually, token, RunningRelay};
use tgrelay::sink::memory::MemorySink;

const WAIT: Duration = Duration::from_secs(20);

/// getUpdates calls of a bot that got no answer: the one in flight, and any the relay
/// abandoned (a long poll cut short).
fn unanswered_polls(api: &FakeBotApi, token: &str) -> usize {
    api.calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates" && c.status == 0)
        .count()
}

fn polls(api: &FakeBotApi, token: &str) -> usize {
    api.calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates")
        .count()
}

/// Two polling bots, `a` and `b`; `b` long-polls for 30 s so any interruption shows.
async fn two_bots(api: &FakeBotApi, sink: &Arc<MemorySink>) -> (RunningRelay, String, String) {
    let (a, b) = (token(2001), token(2002));
    api.add_bot(&a);
    api.add_bot(&b);
    let mut cfg = config(&api.base_url(), &[("a", &a), ("b", &b)], "");
    cfg.bots.get_mut("b").unwrap().poll_timeout = Duration::from_secs(30);
    let relay = RunningRelay::started(cfg, sink.clone()).await;
    (relay, a, b)
}

#[tokio::test]
async fn a_bot_stopped_alone_finishes_its_batch_confirms_it_and_the_others_keep_polling() {
    let api = FakeBotApi::start().await;
    let sink = Arc::new(MemorySink::new());
    let (relay, a, b) = two_bots(&api, &sink).await;
    let corpus = Corpus::load();
    api.push_updates(&b, corpus.mixed(1, 3, 1));
    assert!(api.wait_for_confirmed(&b, 3, WAIT).await);
    assert!(eventually(20, || unanswered_polls(&api, &b) == 1).await);
    let b_polls = polls(&api, &b);

    // `a` has a batch in the broker's hands when it is asked to stop.
    sink.hold(true);
    api.push_updates(&a, corpus.mixed(1, 5, 2));
    assert!(
        eventually(20, || relay.metric("tgrelay_updates_in_flight{bot=\"a\"}")
            == 5.0)
        .await
    );
    let supervisor = relay.supervisor().clone();
    let stopping = tokio::spawn(async move { supervisor.stop("a").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "stop waits for the batch in hand");
    sink.hold(false);
    stopping.await.unwrap();

    assert_eq!(
        api.confirmed(&a),
        (1..=5).collect::<Vec<_>>(),
        "confirmed on stop"
    );
    let a_polls = polls(&api, &a);
    assert!(!relay.supervisor().running().contains("a"));
    assert!(relay.supervisor().running().contains("b"));
    // Stopped: `a` polls no more and its readiness is gone; `b` kept its one long poll.
    api.push_updates(&a, corpus.mixed(6, 2, 3));
    api.push_updates(&b, corpus.mixed(4, 2, 4));
    assert!(api.wait_for_confirmed(&b, 5, WAIT).await);
    assert_eq!(polls(&api, &a), a_polls, "a stopped bot does not poll");
    assert_eq!(api.confirmed(&a).len(), 5);
    assert!(!relay.metrics.render().contains("source_up{bot=\"a\"}"));
    assert_eq!(
        api.calls(&b)[..b_polls]
            .iter()
            .filter(|c| c.method == "getUpdates" && c.status == 0)
            .count(),
        0,
        "b's long poll in flight while a stopped was answered, not cut short"
    );
    relay.stop().await.unwrap();
    let a_ids: Vec<i64> = sink
        .delivered()
        .iter()
        .filter(|e| e.bot.name == "a")
        .map(|e| e.update_id)
        .collect();
    assert_eq!(a_ids, (1..=5).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bot_taken_over_stops_at_once_and_calls_telegram_no_more() {
    let api = FakeBotApi::start().await;
    let sink = Arc::new(MemorySink::new());
    let (relay, _a, b) = two_bots(&api, &sink).await;
    let corpus = Corpus::load();
    api.push_updates(&b, corpus.mixed(1, 3, 1));
    assert!(api.wait_for_confirmed(&b, 3, WAIT).await);
    // `b` has a batch in the broker's hands when another replica takes it over: a
    // stop would confirm that batch with one more getUpdates once it is published.
    sink.hold(true);
    api.push_updates(&b, corpus.mixed(4, 2, 2));
    assert!(
        eventually(20, || relay.metric("tgrelay_updates_in_flight{bot=\"b\"}")
            == 2.0)
        .await
    );
    let before = api.calls(&b).len();
    let supervisor = relay.supervisor().clone();
    let stopping = tokio::spawn(async move { supervisor.stop_taken("b").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sink.hold(false);
    stopping.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A final confirm (a getUpdates) would cut the new owner's long poll short.
    assert_eq!(
        api.calls(&b).len(),
        before,
        "no call after the bot was taken"
    );
    assert!(!relay.supervisor().running().contains("b"));
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_stopped_bot_started_again_resumes_after_what_it_confirmed() {
    let api = FakeBotApi::start().await;
    let sink = Arc::new(MemorySink::new());
    let (relay, a, _b) = two_bots(&api, &sink).await;
    let corpus = Corpus::load();
    api.push_updates(&a, corpus.mixed(1, 4, 5));
    assert!(api.wait_for_confirmed(&a, 4, WAIT).await);
    relay.supervisor().stop("a").await;
    api.push_updates(&a, corpus.mixed(5, 3, 6));

    let bots = Arc::new(config(&api.base_url(), &[("a", &a)], "").bots);
    relay.supervisor().start(&bots, "a");
    assert!(api.wait_for_confirmed(&a, 7, WAIT).await);
    assert!(eventually(20, || relay.metric("tgrelay_source_up{bot=\"a\"}") == 1.0).await);
    relay.stop().await.unwrap();
    let a_ids: Vec<i64> = sink
        .delivered()
        .iter()
        .filter(|e| e.bot.name == "a")
        .map(|e| e.update_id)
        .collect();
    assert_eq!(
        a_ids,
        (1..=7).collect::<Vec<_>>(),
        "nothing replayed, nothing lost"
    );
}

#[tokio::test]
async fn a_relay_running_no_bot_is_not_a_failure() {
    let api = FakeBotApi::start().await;
    let sink = Arc::new(MemorySink::new());
    let (relay, _a, _b) = two_bots(&api, &sink).await;
    relay.supervisor().stop("a").await;
    relay.supervisor().stop("b").await;
    assert!(relay.supervisor().running().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !relay.is_finished(),
        "owning no bot, the relay waits for work"
    );
    relay.stop().await.expect("a clean stop");
}
