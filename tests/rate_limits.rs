//! The polling relay against the odd 429s a rate limiter in front of the Bot API may
//! answer: a `retry_after` with a fraction, and an HTML page with only a `Retry-After`
//! header. Each is waited for at least as long as it asks (a fraction rounded up),
//! never retried after a short transient backoff, and no update is lost. The waits are
//! read from the fake's own record of when each call arrived: a lower bound on the
//! relay's behaviour, not a measure of its speed.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::{Call, FakeBotApi, Fault};
use support::relay::{config, token, RunningRelay};
use tgrelay::sink::memory::MemorySink;

const WAIT: Duration = Duration::from_secs(20);

/// What one run showed: the getUpdates calls, and the relay's count of seconds waited
/// on 429s and of getUpdates errors labelled `code`.
struct Run {
    calls: Vec<Call>,
    waited: f64,
    errors: f64,
}

/// Runs a relay until the 5 updates pushed behind `fault` are confirmed, and checks
/// that each of them was delivered.
async fn run_behind(bot_id: u64, fault: Fault, code: &str) -> Run {
    let api = FakeBotApi::start().await;
    let token = token(bot_id);
    api.add_bot(&token);
    api.inject(&token, fault);
    api.push_updates(&token, Corpus::load().mixed(1, 5, 9));
    let sink = Arc::new(MemorySink::new());
    let relay = RunningRelay::start(
        config(&api.base_url(), &[("main", &token)], ""),
        sink.clone(),
    );
    assert!(api.wait_for_confirmed(&token, 5, WAIT).await);
    let waited = relay.metric("tgrelay_telegram_retry_after_seconds_total{bot=\"main\"}");
    let errors = relay.metric(&format!(
        "tgrelay_telegram_errors_total{{bot=\"main\",code=\"{code}\",method=\"getUpdates\"}}"
    ));
    relay.stop().await.unwrap();

    let delivered: BTreeSet<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    assert_eq!(delivered, (1..=5).collect(), "nothing lost");
    assert_eq!(api.confirmed(&token), vec![1, 2, 3, 4, 5]);
    let calls = api
        .calls(&token)
        .into_iter()
        .filter(|c| c.method == "getUpdates")
        .collect();
    Run {
        calls,
        waited,
        errors,
    }
}

/// Asserts that the first getUpdates got the 429 and the next came `at_least` after it.
fn assert_waited(calls: &[Call], at_least: Duration) {
    assert_eq!(calls[0].status, 429);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= at_least,
        "the next getUpdates came {gap:?} after the 429, before {at_least:?}"
    );
}

#[tokio::test]
async fn a_fractional_retry_after_is_waited_rounded_up() {
    let fault = Fault::TooManyRequestsFraction {
        retry_after_ms: 1500,
    };
    let run = run_behind(1101, fault, "429").await;
    assert_waited(&run.calls, Duration::from_secs(2));
    assert_eq!((run.waited, run.errors), (2.0, 1.0));
}

#[tokio::test]
async fn an_html_429_waits_for_its_retry_after_header() {
    let fault = Fault::TooManyRequestsHtml {
        retry_after: Some(2),
    };
    let run = run_behind(1102, fault, "429").await;
    assert_waited(&run.calls, Duration::from_secs(2));
    assert_eq!((run.waited, run.errors), (2.0, 1.0));
}
