//! The polling source against a fake Bot API, publishing into the memory sink:
//! what is confirmed to Telegram, when, and what the relay does on each fault.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use support::corpus::{expected_routing, Corpus};
use support::fake_bot_api::{FakeBotApi, Fault};
use support::relay::{allow_future_kinds, config, eventually, token, RunningRelay};
use tgrelay::sink::memory::MemorySink;

const WAIT: Duration = Duration::from_secs(20);

/// Offsets the relay sent with getUpdates, in order.
fn offsets(api: &FakeBotApi, token: &str) -> Vec<Option<i64>> {
    api.calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates")
        .map(|c| c.params.get("offset").and_then(|o| o.as_i64()))
        .collect()
}

async fn setup(bot_id: u64) -> (FakeBotApi, String, Arc<MemorySink>) {
    let api = FakeBotApi::start().await;
    let token = token(bot_id);
    api.add_bot(&token);
    (api, token, Arc::new(MemorySink::new()))
}

#[tokio::test]
async fn every_kind_arrives_byte_identical_with_its_routing_facts() {
    let (api, token, sink) = setup(1001).await;
    let corpus = Corpus::load();
    let updates = corpus.mixed(5000, 600, 7);
    api.push_updates(&token, updates.clone());
    // A kind added after Bot API 10.1 arrives once it is named in allowed_updates.
    let extra = allow_future_kinds();
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], &extra),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, updates.len(), WAIT).await);
    relay.stop().await.unwrap();

    let delivered = sink.delivered();
    assert_eq!(
        delivered.len(),
        updates.len(),
        "one message per update, no extra"
    );
    let mut kinds = BTreeSet::new();
    for (raw, envelope) in updates.iter().zip(&delivered) {
        assert_eq!(&envelope.payload[..], &raw[..], "bytes untouched");
        let (kind, chat, user) = expected_routing(&serde_json::from_slice(raw).unwrap());
        assert_eq!(envelope.kind.as_str(), kind);
        assert_eq!((envelope.chat_id, envelope.user_id), (chat, user), "{kind}");
        assert_eq!(envelope.bot.id, 1001);
        kinds.insert(kind);
    }
    let all: BTreeSet<String> = corpus
        .kinds()
        .into_iter()
        .chain(["story_reaction".into()])
        .collect();
    assert_eq!(kinds, all, "every Bot API kind and a future one");
}

#[tokio::test]
async fn allowed_updates_is_sent_explicitly_with_every_kind() {
    let (api, token, sink) = setup(1002).await;
    let corpus = Corpus::load();
    // Kinds Telegram leaves out by default must still arrive.
    let ids = [10, 11, 12];
    let updates = ["chat_member", "message_reaction", "message_reaction_count"]
        .iter()
        .zip(ids)
        .map(|(kind, id)| corpus.update(kind, id, 1))
        .collect();
    api.push_updates(&token, updates);
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 3, WAIT).await);
    relay.stop().await.unwrap();
    for call in api
        .calls(&token)
        .iter()
        .filter(|c| c.method == "getUpdates")
    {
        let allowed = call.params["allowed_updates"]
            .as_array()
            .expect("always sent");
        assert_eq!(allowed.len(), corpus.kinds().len());
    }
    assert_eq!(sink.delivered().len(), 3);
}

#[tokio::test]
async fn a_failed_publish_holds_the_offset_and_the_update_comes_again() {
    let (api, token, sink) = setup(1003).await;
    let corpus = Corpus::load();
    api.push_updates(&token, corpus.mixed(100, 5, 3));
    sink.fail_once([102]);
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 5, WAIT).await);
    relay.stop().await.unwrap();

    // First fetch: no offset. 100 and 101 are safe, 102 failed: the next fetch
    // confirms only below 102, and Telegram sends 102.. again.
    let sent = offsets(&api, &token);
    assert_eq!(&sent[..3], &[None, Some(102), Some(105)], "{sent:?}");
    assert_eq!(api.confirmed(&token), vec![100, 101, 102, 103, 104]);
    let ids: Vec<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    // 103 and 104 were delivered in the first round too: duplicates, never loss.
    assert_eq!(ids, vec![100, 101, 103, 104, 102, 103, 104]);
}

#[tokio::test]
async fn nothing_is_confirmed_while_the_broker_is_down() {
    let (api, token, sink) = setup(1004).await;
    api.push_updates(&token, Corpus::load().mixed(1, 20, 5));
    sink.set_down(true);
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(eventually(20, || sink.attempts() >= 40).await, "retried");
    assert!(api.confirmed(&token).is_empty());
    assert!(offsets(&api, &token).iter().all(Option::is_none));
    sink.set_down(false);
    assert!(api.wait_for_confirmed(&token, 20, WAIT).await);
    relay.stop().await.unwrap();
    let ids: BTreeSet<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    assert_eq!(ids, (1..=20).collect());
}

#[tokio::test]
async fn retry_after_is_waited_exactly() {
    let (api, token, sink) = setup(1005).await;
    api.inject(&token, Fault::TooManyRequests { retry_after: 2 });
    api.push_updates(&token, Corpus::load().mixed(1, 3, 1));
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 3, WAIT).await);
    let waited = relay.metric("tgrelay_telegram_retry_after_seconds_total{bot=\"main\"}");
    let limited = relay
        .metric("tgrelay_telegram_errors_total{bot=\"main\",code=\"429\",method=\"getUpdates\"}");
    relay.stop().await.unwrap();

    let calls: Vec<_> = api
        .calls(&token)
        .into_iter()
        .filter(|c| c.method == "getUpdates")
        .collect();
    assert_eq!(calls[0].status, 429);
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(2),
        "retry_after honoured"
    );
    assert_eq!((waited, limited), (2.0, 1.0));
}

#[tokio::test]
async fn bad_gateway_html_and_resets_are_retried_with_backoff() {
    let (api, token, sink) = setup(1006).await;
    for fault in [
        Fault::BadGatewayHtml,
        Fault::Reset,
        Fault::InternalError,
        Fault::Conflict,
    ] {
        api.inject(&token, fault);
    }
    api.push_updates(&token, Corpus::load().mixed(1, 4, 2));
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 4, WAIT).await);
    let errors = |code: &str| {
        relay.metric(&format!(
            "tgrelay_telegram_errors_total{{bot=\"main\",code=\"{code}\",method=\"getUpdates\"}}"
        ))
    };
    assert_eq!(
        errors("502"),
        1.0,
        "502 with an HTML body counts under its status"
    );
    assert_eq!(errors("transport"), 1.0);
    assert_eq!(errors("500"), 1.0);
    assert_eq!(errors("409"), 1.0);
    relay.stop().await.unwrap();
    let calls: Vec<_> = api
        .calls(&token)
        .into_iter()
        .filter(|c| c.method == "getUpdates")
        .collect();
    for pair in calls[..5].windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(250),
            "never a tight loop"
        );
    }
    assert_eq!(sink.delivered().len(), 4);
}

#[tokio::test]
async fn a_revoked_token_stops_that_bot_only() {
    let api = FakeBotApi::start().await;
    let (good, bad) = (token(1007), token(1008));
    api.add_bot(&good);
    // `bad` is not registered: the fake answers 401 as for a revoked token.
    api.push_updates(&good, Corpus::load().mixed(1, 10, 4));
    let sink = Arc::new(MemorySink::new());
    let cfg = config(&api.base_url(), &[("good", &good), ("bad", &bad)], "");
    let relay = RunningRelay::start(cfg, sink.clone());
    assert!(api.wait_for_confirmed(&good, 10, WAIT).await);
    relay.stop().await.unwrap();
    assert_eq!(sink.delivered().len(), 10);
    assert!(sink.delivered().iter().all(|e| e.bot.name == "good"));
}

#[tokio::test]
async fn when_every_bot_is_refused_the_relay_exits_with_an_error() {
    let api = FakeBotApi::start().await;
    let revoked = token(1009);
    let cfg = config(&api.base_url(), &[("main", &revoked)], "");
    let err = RunningRelay::start(cfg, Arc::new(MemorySink::new()))
        .finished()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("every bot has stopped"), "{err}");
    assert!(!format!("{err:?}").contains(&revoked));
}

#[tokio::test]
async fn shutdown_confirms_what_was_relayed_so_a_restart_replays_nothing() {
    let (api, token, sink) = setup(1010).await;
    api.push_updates(&token, Corpus::load().mixed(1, 7, 9));
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(eventually(20, || sink.delivered().len() == 7).await);
    relay.stop().await.unwrap();
    assert_eq!(api.confirmed(&token), (1..=7).collect::<Vec<_>>());
    let last = api
        .calls(&token)
        .into_iter()
        .rfind(|c| c.method == "getUpdates")
        .unwrap();
    assert_eq!(last.params["offset"], 8);
    assert_eq!(last.params["limit"], 1);
    assert_eq!(last.params["timeout"], 0);

    // A restart finds nothing to replay.
    api.push_updates(&token, Corpus::load().mixed(8, 1, 9));
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 8, WAIT).await);
    relay.stop().await.unwrap();
    let ids: Vec<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_item_that_is_not_an_update_is_dead_lettered_and_the_rest_flows() {
    let (api, token, sink) = setup(1011).await;
    let corpus = Corpus::load();
    let mut items = corpus.mixed(1, 2, 1);
    items.push(br#"{"update_id":"three","message":{}}"#.to_vec());
    items.extend(corpus.mixed(4, 2, 1));
    api.push_updates(&token, items);
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(eventually(20, || sink.delivered().len() == 4).await);
    assert!(eventually(20, || api.pending(&token).is_empty()).await);
    let malformed = relay.metric("tgrelay_malformed_updates_total{bot=\"main\"}");
    relay.stop().await.unwrap();
    let letters = sink.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        &letters[0].payload[..],
        br#"{"update_id":"three","message":{}}"#
    );
    assert_eq!(letters[0].reason, "update_id is not a 64-bit integer");
    assert_eq!(malformed, 1.0);
}

#[tokio::test]
async fn a_stale_webhook_is_deleted_without_dropping_pending_updates() {
    let (api, token, sink) = setup(1012).await;
    api.set_webhook_url(&token, Some("https://old.example/hook"));
    api.push_updates(&token, Corpus::load().mixed(1, 3, 1));
    let extra = "delete_webhook = true\n";
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], extra),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 3, WAIT).await);
    relay.stop().await.unwrap();
    let delete = api
        .calls(&token)
        .into_iter()
        .find(|c| c.method == "deleteWebhook")
        .unwrap();
    assert_eq!(delete.params["drop_pending_updates"], false);
    assert!(api.forgotten(&token).is_empty());
}

#[tokio::test]
async fn without_the_option_a_webhook_means_409_and_backoff() {
    let (api, token, sink) = setup(1013).await;
    api.set_webhook_url(&token, Some("https://old.example/hook"));
    let relay = RunningRelay::start(
        config(
            &api.base_url(),
            &[("main", &token)],
            "delete_webhook = false\n",
        ),
        sink.clone(),
    );
    // The fake records its answer before the relay has read it: wait for the counter.
    let conflicts =
        "tgrelay_telegram_errors_total{bot=\"main\",code=\"409\",method=\"getUpdates\"}";
    assert!(eventually(20, || relay.metric(conflicts) >= 2.0).await);
    relay.stop().await.unwrap();
    assert!(api.calls(&token).iter().filter(|c| c.status == 409).count() >= 2);
    assert!(api
        .calls(&token)
        .iter()
        .all(|c| c.method != "deleteWebhook"));
}
