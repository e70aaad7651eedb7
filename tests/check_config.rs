//! `tgrelay check-config` as an operator runs it: every problem of a configuration
//! listed, the effective configuration printed with secrets redacted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");

#[test]
fn check_config_lists_every_problem_and_exits_64() {
    let output = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/tgrelay.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));

    let output = Command::new(BIN)
        .args(["check-config", "--config", "config.toml"])
        .env("TGRELAY_BOTS__MAIN__POLL_LIMIT", "500")
        .env("TGRELAY_BOTS__MAIN__API_URL", "ftp://x")
        .env("TGRELAY_BOTS__OTHER__TOKEN", "not-a-token-SECRET")
        .env("TGRELAY_SINK__NATS__SUBJECT", "telegram.{chat}")
        .env("TGRELAY_SINK__KIND", "nats")
        .env("TGRELAY_WORKER_THREADS", "100000")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let errors = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bots.main.token (TGRELAY_BOTS__MAIN__TOKEN): required",
        "bots.main.poll_limit",
        "bots.main.api_url",
        "bots.other.token (TGRELAY_BOTS__OTHER__TOKEN): not a bot token",
        "sink.nats.subject",
        "worker_threads (100000) must be at most 256",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(
        !errors.contains("SECRET"),
        "a rejected token is not echoed:\n{errors}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let output = Command::new(BIN)
        .args(["check-config", "--config", "config.toml"])
        .env("TGRELAY_BOTS__MAIN__TOKEN", "123456:SECRET-value")
        .env("TGRELAY_SINK__NATS__PASSWORD", "hunter2")
        .env("TGRELAY_SINK__KAFKA__SASL_USERNAME", "relay")
        .env("TGRELAY_SINK__KAFKA__SASL_PASSWORD", "kafka-hunter2")
        .env("TGRELAY_BOTS__MAIN__POLL_TIMEOUT", "45s")
        .env("TGRELAY_WORKER_THREADS", "2")
        // What Kubernetes injects for a Service named tgrelay: not settings.
        .env("TGRELAY_SERVICE_HOST", "10.0.0.1")
        .env("TGRELAY_PORT_9090_TCP_ADDR", "10.0.0.1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("SECRET") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("token = \"**REDACTED**\""), "{text}");
    assert!(
        text.contains("sasl_password = \"**REDACTED**\""),
        "the Kafka SASL password comes from the environment, redacted:\n{text}"
    );
    assert!(
        text.contains("poll_timeout = \"45s\"") && text.contains("worker_threads = 2"),
        "environment overrides the file:\n{text}"
    );
}
