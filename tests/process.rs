//! The `tgrelay` binary as an operator runs it: killed with SIGKILL mid-stream and
//! restarted, stopped with SIGTERM, fed faults with debug logging on.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::{FakeBotApi, Fault};
use support::nats::{self as jsupport, read_all, unique};
use support::relay::{eventually, free_port, token};

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");

/// Starts the relay binary with `config` written to a file and stderr captured to `log`.
fn spawn(config: &str, dir: &Path, log: &str, env: &[(&str, &str)]) -> Child {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the relay binary starts")
}

fn bot_toml(api: &FakeBotApi, token: &str, limit: u32) -> String {
    format!(
        "drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n[bots.main]\ntoken = \"{token}\"\n\
         api_url = \"{}\"\npoll_timeout = \"1s\"\npoll_limit = {limit}\n{}",
        api.base_url(),
        support::relay::allow_future_kinds()
    )
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1500 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    panic!("the relay did not exit within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_mid_stream_and_restarted_it_loses_nothing() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_KILL"), unique("kill"));
    let api = FakeBotApi::start().await;
    let token = token(313131);
    api.add_bot(&token);
    let corpus = Corpus::load();
    let first = corpus.mixed(1, 2000, 21);
    api.push_updates(&token, first.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = bot_toml(&api, &token, 20) + &jsupport::sink_toml(&stream, &prefix, "");

    let mut relay = spawn(&config, dir.path(), "first.log", &[]);
    assert!(
        api.wait_for_confirmed(&token, 400, Duration::from_secs(30))
            .await
    );
    relay.kill().unwrap(); // SIGKILL: no drain, no final confirm
    relay.wait().unwrap();
    let confirmed_at_kill = api.confirmed(&token).len();
    eprintln!("killed with {confirmed_at_kill} of 2000 confirmed");

    let second = corpus.mixed(2001, 1000, 22);
    api.push_updates(&token, second.clone());
    let mut relay = spawn(&config, dir.path(), "second.log", &[]);
    assert!(
        api.wait_for_confirmed(&token, 3000, Duration::from_secs(60))
            .await
    );
    sigterm(&relay);
    assert!(wait_exit(&mut relay).await.success());

    let sent: BTreeMap<String, &Vec<u8>> = first
        .iter()
        .chain(&second)
        .enumerate()
        .map(|(i, raw)| (format!("313131:{}", i + 1), raw))
        .collect();
    let stored = read_all(&js, &stream).await;
    let mut seen = BTreeSet::new();
    for msg in &stored {
        let id = &msg.headers["ce-id"];
        assert_eq!(&msg.payload[..], &sent[id][..], "{id} byte-identical");
        seen.insert(id.clone());
    }
    assert_eq!(
        seen.len(),
        3000,
        "every update arrived (killed after {confirmed_at_kill} confirmed)"
    );
    assert_eq!(stored.len(), 3000, "replays were dropped by Nats-Msg-Id");
    jsupport::delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_sink_is_still_connecting_exits_zero() {
    let api = FakeBotApi::start().await;
    let token = token(424250);
    api.add_bot(&token);
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the Kafka sink keeps probing for its topics at start.
    let config = format!(
        "{}[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"127.0.0.1:{}\"\n",
        bot_toml(&api, &token, 100),
        free_port()
    );
    let mut relay = spawn(&config, dir.path(), "relay.log", &[]);
    let log = dir.path().join("relay.log");
    let probing = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("brokers are down")
    };
    assert!(eventually(10, probing).await, "the sink is connecting");
    sigterm(&relay);
    let status = wait_exit(&mut relay).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(api.calls(&token).is_empty(), "it never started polling");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a log file: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_confirms_relayed_updates_and_exits_zero_and_logs_never_show_the_token() {
    let api = FakeBotApi::start().await;
    let token = token(424243);
    api.add_bot(&token);
    for fault in [
        Fault::TooManyRequests { retry_after: 1 },
        Fault::BadGatewayHtml,
        Fault::Reset,
        Fault::Conflict,
    ] {
        api.inject(&token, fault);
    }
    let updates = Corpus::load().mixed(1, 60, 5);
    api.push_updates(&token, updates.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("updates.jsonl");
    let config = format!(
        "{}[sink]\nkind = \"file\"\n[sink.file]\npath = \"{}\"\n",
        bot_toml(&api, &token, 100),
        out.display()
    );
    let mut relay = spawn(&config, dir.path(), "relay.log", &[]);
    let lines = || {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(eventually(30, || lines() == 60).await, "all 60 written");
    sigterm(&relay);
    assert!(wait_exit(&mut relay).await.success(), "exit 0 on SIGTERM");

    assert_eq!(
        api.confirmed(&token),
        (1..=60).collect::<Vec<_>>(),
        "confirmed on shutdown"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    for (raw, line) in updates.iter().zip(text.lines()) {
        let data = line.split_once(",\"data\":").unwrap().1;
        assert_eq!(&data.as_bytes()[..data.len() - 1], &raw[..]);
    }
    let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    assert!(log.contains("backing off"), "faults were logged:\n{log}");
    let secret = token.split_once(':').unwrap().1;
    assert!(
        !log.contains(secret),
        "the token leaked into the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webhook_mode_neither_the_token_nor_the_secret_reach_the_log() {
    let api = FakeBotApi::start().await;
    api.set_webhook_timing(support::fake_bot_api::WebhookTiming {
        answer_timeout: Duration::from_secs(10),
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(500),
    });
    let token = token(515151);
    api.add_bot(&token);
    api.push_updates(&token, Corpus::load().mixed(1, 40, 6));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let secret = "Hook-secret_value-9";
    let config = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n\
         [sink]\nkind = \"file\"\n[sink.file]\npath = \"{}\"\n[bots.main]\ntoken = \"{token}\"\n\
         api_url = \"{}\"\nmode = \"webhook\"\n{}[bots.main.webhook]\n\
         url = \"http://127.0.0.1:{port}/telegram/main\"\nsecret_token = \"{secret}\"\ninfo_interval = \"1s\"\n",
        dir.path().join("out.jsonl").display(),
        api.base_url(),
        support::relay::allow_future_kinds()
    );
    let mut relay = spawn(&config, dir.path(), "relay.log", &[]);
    assert!(
        api.wait_for_confirmed(&token, 40, Duration::from_secs(30))
            .await
    );
    // A request with a wrong secret, as an attacker would send.
    let url = format!("http://127.0.0.1:{port}/telegram/main");
    let wrong = reqwest::Client::new()
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", "guess")
        .body(Corpus::load().update("message", 99, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    sigterm(&relay);
    assert!(wait_exit(&mut relay).await.success());
    let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    assert!(log.contains("webhook registered"), "{log}");
    let token_secret = token.split_once(':').unwrap().1;
    assert!(!log.contains(token_secret), "the token leaked:\n{log}");
    assert!(!log.contains(secret), "the webhook secret leaked:\n{log}");
}
