//! Every secret setting read from a file, as a mounted Kubernetes Secret gives it: a NATS
//! password and token that a server of the test's own checks, a Kafka SASL password,
//! and none of them, nor the bot token or the webhook secret, in `check-config`'s output.

mod support;

use std::path::Path;
use std::process::Command;

use figment::providers::{Format, Toml};
use figment::Figment;

use support::nats::unique;
use support::private_broker::{BrokerKind, PrivateBroker};
use support::relay::token;
use tgrelay::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");

/// A polling bot and a NATS sink at `url` with `auth` (TOML lines of `[sink.nats]`).
fn nats_toml(url: &str, auth: &str) -> String {
    format!(
        "[admin]\nlisten = \"\"\n[bots.main]\ntoken = \"{}\"\n\
         [sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{url}\"\nstream = \"{}\"\n\
         stream_subjects = [\"{}.>\"]\nsubject = \"{}.{{bot}}.{{kind}}\"\n{auth}\n",
        token(818181),
        unique("TGRELAY_SECRET"),
        unique("secret"),
        unique("secret"),
    )
}

/// A secret file as Kubernetes mounts one, but with the final line break of `echo`.
fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path.display().to_string()
}

/// Connects the configured sink as the relay does at start.
async fn connect(toml: &str) -> Result<(), String> {
    let config = Config::from_figment(Figment::from(Toml::string(toml)))
        .map_err(|e| format!("config: {e}"))?;
    tgrelay::sink::connect(&config.sink, &[])
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn a_nats_password_from_a_file_is_the_one_the_server_checks() {
    let password = format!("pw-{}", rand::random::<u64>());
    let broker =
        PrivateBroker::start_with(BrokerKind::Nats, &["--user", "relay", "--pass", &password]);
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", &password);
    let wrong = secret_file(dir.path(), "wrong", "not-the-password");
    let auth = |file: &str| format!("user = \"relay\"\npassword_file = \"{file}\"");

    connect(&nats_toml(&broker.address(), &auth(&good)))
        .await
        .expect("the password from the file is accepted");
    let refused = connect(&nats_toml(&broker.address(), &auth(&wrong)))
        .await
        .expect_err("a wrong password from a file is refused");
    assert!(refused.contains("authorization"), "{refused}");
    assert!(!refused.contains("not-the-password"), "{refused}");
}

#[tokio::test]
async fn a_nats_token_from_a_file_is_the_one_the_server_checks() {
    let secret = format!("tk-{}", rand::random::<u64>());
    let broker = PrivateBroker::start_with(BrokerKind::Nats, &["--auth", &secret]);
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "token", &secret);
    let auth = format!("token_file = \"{good}\"");
    connect(&nats_toml(&broker.address(), &auth))
        .await
        .expect("the token from the file is accepted");
    let refused = connect(&nats_toml(&broker.address(), ""))
        .await
        .expect_err("without the token the server refuses");
    assert!(refused.contains("authorization"), "{refused}");
}

#[test]
fn secret_files_never_reach_check_config_output() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        ("bot-token", format!("{}-FILE", token(828282))),
        ("hook-token", format!("{}-FILE", token(828283))),
        ("webhook-secret", "webhook-SECRET-from-file".to_owned()),
        ("nats-password", "nats-SECRET-password".to_owned()),
        ("nats-token", "nats-SECRET-token".to_owned()),
        ("kafka-password", "kafka-SECRET-password".to_owned()),
    ];
    let file = |name: &str| {
        let (_, value) = secrets.iter().find(|(n, _)| *n == name).unwrap();
        secret_file(dir.path(), name, value)
    };
    let bot = format!(
        "[bots.main]\ntoken_file = \"{}\"\n[bots.hook]\ntoken_file = \"{}\"\nmode = \"webhook\"\n\
         [bots.hook.webhook]\nurl = \"https://relay.example/hook\"\nsecret_token_file = \"{}\"\n",
        file("bot-token"),
        file("hook-token"),
        file("webhook-secret"),
    );
    let sinks = [
        format!(
            "[sink]\nkind = \"nats\"\n[sink.nats]\nuser = \"relay\"\npassword_file = \"{}\"\n\
             token_file = \"{}\"\n",
            file("nats-password"),
            file("nats-token"),
        ),
        format!(
            "[sink]\nkind = \"kafka\"\n[sink.kafka]\nsasl_username = \"relay\"\n\
             sasl_password_file = \"{}\"\n[sink.kafka.properties]\n\
             \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n",
            file("kafka-password"),
        ),
    ];
    for sink in sinks {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{bot}{sink}")).unwrap();
        let output = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}\n{sink}");
        for (_, value) in &secrets {
            assert!(!stdout.contains(value.as_str()), "{value} in:\n{stdout}");
            assert!(!stderr.contains(value.as_str()), "{value} in:\n{stderr}");
        }
        // The files were read: their secrets show redacted, and their paths as set.
        assert!(stdout.contains("**REDACTED**"), "{stdout}");
        assert!(stdout.contains("_file = "), "{stdout}");
    }
}

#[test]
fn a_secret_set_inline_and_from_a_file_or_unreadable_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let password = secret_file(dir.path(), "password", "hunter2-SECRET");
    std::fs::write(
        &path,
        format!(
            "[bots.main]\ntoken = \"{}\"\n[sink]\nkind = \"nats\"\n[sink.nats]\nuser = \"relay\"\n\
             password = \"inline-SECRET\"\npassword_file = \"{password}\"\n\
             token_file = \"{}\"\n",
            token(838383),
            dir.path().join("missing").display()
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for expected in [
        "sink.nats.password_file (TGRELAY_SINK__NATS__PASSWORD_FILE): set inline and from a file",
        "sink.nats.token_file (TGRELAY_SINK__NATS__TOKEN_FILE): cannot read",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("SECRET"), "{stderr}");
}
