//! `tgrelay check-config --connect`: each bot's getMe, the broker and its stream or
//! topics, checked against the fake Bot API and the real NATS JetStream; every problem
//! listed, exit 69, nothing changed at the broker, no token ever shown.

mod support;

use std::path::Path;

use support::fake_bot_api::FakeBotApi;
use support::nats::{self as jsupport, unique};
use support::relay::{free_port, tgrelay, token, Ran};

/// EX_UNAVAILABLE: the configuration is valid, something it points at is not.
const UNAVAILABLE: Option<i32> = Some(69);

/// `check-config --connect` on `toml`, written to `dir/config.toml`.
fn connect(dir: &Path, toml: &str) -> Ran {
    std::fs::write(dir.join("config.toml"), toml).unwrap();
    // The command blocks; the fake Bot API runs on the runtime's other thread.
    tokio::task::block_in_place(|| tgrelay(dir, &["check-config", "--connect"], &[]))
}

fn bot_toml(name: &str, token: &str, api: &FakeBotApi) -> String {
    format!(
        "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{}\"\n",
        api.base_url()
    )
}

fn assert_no_secret(ran: &Ran, tokens: &[&str]) {
    for secret in tokens.iter().map(|t| t.split_once(':').unwrap().1) {
        assert!(
            !ran.text().contains(secret),
            "a token leaked:\n{}",
            ran.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_and_a_missing_broker_are_both_listed() {
    let api = FakeBotApi::start().await;
    let (good, wrong) = (token(2001), token(2002));
    api.add_bot(&good); // the fake answers 401 to a token it does not know
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"nats://127.0.0.1:{}\"\n",
        bot_toml("good", &good, &api),
        bot_toml("wrong", &wrong, &api),
        free_port()
    );
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, UNAVAILABLE, "{}", ran.stderr);
    for expected in [
        "ok: bots.good: getMe",
        "2 problems:",
        "- bots.wrong: getMe: Telegram answered 401: Unauthorized",
        "the token is wrong or revoked",
        "- sink.nats: connecting to NATS at nats://127.0.0.1:",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "no {expected:?} in:\n{}",
            ran.stderr
        );
    }
    assert!(
        ran.stdout.contains("[bots.wrong]"),
        "the configuration itself is valid and printed:\n{}",
        ran.stdout
    );
    assert_no_secret(&ran, &[&good, &wrong]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_setup_passes_and_a_missing_stream_is_not_created() {
    let js = jsupport::jetstream().await;
    let api = FakeBotApi::start().await;
    let good = token(2003);
    api.add_bot(&good);
    let dir = tempfile::tempdir().unwrap();
    let (stream, prefix) = (unique("TGRELAY_CONNECT"), unique("connect"));
    let bot = bot_toml("main", &good, &api);

    // The stream is missing: the relay would create it, so only a note...
    let toml = bot.clone() + &jsupport::sink_toml(&stream, &prefix, "");
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let note = format!("note: sink.nats: stream {stream} is missing; the relay creates it");
    assert!(ran.stderr.contains(&note), "{}", ran.stderr);
    assert!(
        js.get_stream(&stream).await.is_err(),
        "--connect created the stream"
    );
    // ...unless it may not create it.
    let toml = format!(
        "{bot}{}create_stream = false\n",
        jsupport::sink_toml(&stream, &prefix, "")
    );
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, UNAVAILABLE, "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "- sink.nats: stream {stream} is missing (create it"
        )),
        "{}",
        ran.stderr
    );

    jsupport::create_stream(&js, &stream, &prefix, -1).await;
    let ran = connect(dir.path(), &toml);
    // A subject template the stream does not capture: every publish would fail.
    let stray = unique("stray");
    let wrong = toml.replace(
        &format!("subject = \"{prefix}.{{bot}}.{{kind}}\""),
        &format!("subject = \"{stray}.{{bot}}.{{kind}}\""),
    );
    let stray_ran = connect(dir.path(), &wrong);
    jsupport::delete_stream(&js, &stream).await;

    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for expected in [
        "ok: bots.main: getMe: @",
        &format!("ok: sink.nats: stream {stream} exists and captures all "),
        "check-config --connect: no problems",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "no {expected:?} in:\n{}",
            ran.stderr
        );
    }
    assert_no_secret(&ran, &[&good]);
    assert_eq!(stray_ran.code, UNAVAILABLE, "{}", stray_ran.stderr);
    let expected = format!(
        "- sink.nats: stream {stream} does not capture \
         {stray}.main.business_connection (no stream), "
    );
    assert!(stray_ran.stderr.contains(&expected), "{}", stray_ran.stderr);
    assert!(
        !stray_ran.stderr.contains(".main.deadletter"),
        "the dead-letter subject is captured: {}",
        stray_ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sink_needs_a_writable_directory() {
    let api = FakeBotApi::start().await;
    let good = token(2004);
    api.add_bot(&good);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("updates.jsonl");
    let toml = format!(
        "{}[sink.file]\npath = \"{}\"\n",
        bot_toml("main", &good, &api),
        missing.display()
    );
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, UNAVAILABLE, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains(&format!("- sink.file: {}: No such file", missing.display())),
        "{}",
        ran.stderr
    );

    let here = dir.path().join("updates.jsonl");
    let toml = format!(
        "{}[sink.file]\npath = \"{}\"\n",
        bot_toml("main", &good, &api),
        here.display()
    );
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("is writable"), "{}", ran.stderr);
    assert!(!here.exists(), "--connect created the file");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only config.toml is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_that_do_not_answer_are_a_problem() {
    let api = FakeBotApi::start().await;
    let good = token(2005);
    api.add_bot(&good);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"127.0.0.1:{}\"\n",
        bot_toml("main", &good, &api),
        free_port()
    );
    let ran = connect(dir.path(), &toml);
    assert_eq!(ran.code, UNAVAILABLE, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("1 problem:\n  - sink.kafka:"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("ok: bots.main: getMe"),
        "{}",
        ran.stderr
    );
}
