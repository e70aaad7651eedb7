//! `tgrelay check-config` as an operator runs it: every problem of a configuration
//! listed once, each naming the setting as it was written, the effective configuration
//! printed with secrets redacted, and exit statuses a script can act on.

mod support;

use std::process::Command;

use support::relay::{tgrelay, token};

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");
/// EX_USAGE: the command line is wrong.
const USAGE: Option<i32> = Some(64);
/// EX_CONFIG: the configuration is wrong.
const CONFIG: Option<i32> = Some(78);

#[test]
fn check_config_lists_every_problem_and_exits_78() {
    let output = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/tgrelay.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), CONFIG);
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
    assert_eq!(output.status.code(), CONFIG);
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

#[test]
fn an_unparsable_file_is_reported_once_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "bots = [\n[sink\n").unwrap();
    let ran = tgrelay(dir.path(), &["check-config", "--config", "bad.toml"], &[]);
    assert_eq!(ran.code, CONFIG, "{}", ran.stderr);
    assert_eq!(
        ran.stderr.matches("parse error").count(),
        1,
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("bad.toml: TOML parse error at line 2"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("no bots"), "{}", ran.stderr);
    assert!(
        ran.stdout.is_empty(),
        "no configuration printed: {}",
        ran.stdout
    );
}

#[test]
fn an_unknown_setting_is_named_as_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let good = token(1001);
    let ran = tgrelay(
        dir.path(),
        &["check-config"],
        &[
            ("TGRELAY_BOTS__MAIN__TOKEN", &good),
            ("TGRELAY_SINK__KIDN", "nats"),
            ("tgrelay_log__levle", "debug"),
            ("TGRELAY_DRAIN_TIMOUT", "5s"),
        ],
    );
    assert_eq!(ran.code, CONFIG, "{}", ran.stderr);
    for expected in [
        "TGRELAY_SINK__KIDN (sink.kidn): unknown setting; expected one of kind, envelope",
        "tgrelay_log__levle (log.levle): unknown setting; expected one of level, format",
        "TGRELAY_DRAIN_TIMOUT (drain_timout): unknown setting; expected one of bots,",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "no {expected:?} in:\n{}",
            ran.stderr
        );
    }
    assert!(!ran.stderr.contains("KIDN.SINK"), "{}", ran.stderr);

    let file = format!("[bots.main]\ntoken = \"{good}\"\n[sink]\nkidn = \"nats\"\n");
    std::fs::write(dir.path().join("config.toml"), file).unwrap();
    let ran = tgrelay(dir.path(), &["check-config"], &[]);
    assert_eq!(ran.code, CONFIG, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("sink.kidn in config.toml: unknown setting; expected one of kind,"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_duration_without_a_unit_says_how_to_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "[bots.main]\ntoken = \"{}\"\npoll_timeout = 30\n\
         [sink.nats]\npublish_timeout = \"5\"\n",
        token(1002)
    );
    std::fs::write(dir.path().join("config.toml"), file).unwrap();
    let ran = tgrelay(
        dir.path(),
        &["check-config"],
        &[("TGRELAY_DRAIN_TIMEOUT", "20")],
    );
    assert_eq!(ran.code, CONFIG, "{}", ran.stderr);
    for expected in [
        "TGRELAY_DRAIN_TIMEOUT (drain_timeout): 20 has no unit: write 20s",
        "bots.main.poll_timeout in config.toml: 30 has no unit: write \"30s\"",
        "sink.nats.publish_timeout in config.toml: 5 has no unit: write \"5s\"",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "no {expected:?} in:\n{}",
            ran.stderr
        );
    }
    assert!(
        !ran.stderr.contains("no bots configured"),
        "the bot is configured, only mistyped:\n{}",
        ran.stderr
    );
}

#[test]
fn the_config_file_is_read_from_the_current_directory_never_a_parent() {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("[bots.main]\ntoken = \"{}\"\n", token(1003));
    std::fs::write(dir.path().join("config.toml"), file).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();

    let ran = tgrelay(&sub, &["check-config"], &[]);
    assert_eq!(
        ran.code, CONFIG,
        "the parent's file was read: {}",
        ran.stdout
    );
    assert!(ran.stderr.contains("no bots configured"), "{}", ran.stderr);

    let ran = tgrelay(dir.path(), &["check-config"], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("[bots.main]"), "{}", ran.stdout);
}

#[test]
fn one_bot_configured_twice_is_an_error_and_no_token_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (token(1004), token(1005));
    let other_secret = "1004:Another-secret_of-1004";
    std::fs::write(dir.path().join("token"), format!("{first}\n")).unwrap();
    let file = format!(
        "[bots.a]\ntoken = \"{first}\"\n[bots.b]\ntoken_file = \"token\"\n\
         [bots.c]\ntoken = \"{other_secret}\"\n[bots.d]\ntoken = \"{second}\"\n"
    );
    std::fs::write(dir.path().join("config.toml"), file).unwrap();
    let ran = tgrelay(dir.path(), &["check-config"], &[]);
    assert_eq!(ran.code, CONFIG, "{}", ran.stderr);
    for expected in [
        "bots.a and bots.b use the same token (bot id 1004)",
        "bots.b and bots.c use tokens of the same bot (bot id 1004)",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "no {expected:?} in:\n{}",
            ran.stderr
        );
    }
    assert!(!ran.stderr.contains("bots.d"), "{}", ran.stderr);
    for secret in [&first, &second, other_secret].map(|t| t.split_once(':').unwrap().1) {
        assert!(
            !ran.text().contains(secret),
            "a token leaked:\n{}",
            ran.text()
        );
    }
}

#[test]
fn exit_statuses_tell_a_bad_command_line_from_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["bogus"][..],
        &[],
        &["check-config", "--connectt"],
        &["webhook", "info"],
    ] {
        let ran = tgrelay(dir.path(), args, &[]);
        assert_eq!(ran.code, USAGE, "tgrelay {args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains("Usage"), "{}", ran.stderr);
    }
    for args in [&["--help"][..], &["--version"], &["check-config", "--help"]] {
        let ran = tgrelay(dir.path(), args, &[]);
        assert_eq!(ran.code, Some(0), "tgrelay {args:?}: {}", ran.stderr);
        assert!(!ran.stdout.is_empty() && ran.stderr.is_empty(), "{args:?}");
    }
    let ran = tgrelay(dir.path(), &["check-config"], &[]);
    assert_eq!(ran.code, CONFIG, "no bots: {}", ran.stderr);

    // A bot the configuration does not have is a mistake on the command line.
    let main = token(1006);
    let env = [("TGRELAY_BOTS__MAIN__TOKEN", main.as_str())];
    let ran = tgrelay(dir.path(), &["webhook", "info", "--bot", "nope"], &env);
    assert_eq!(ran.code, USAGE, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no bot named \"nope\""),
        "{}",
        ran.stderr
    );
}

/// Runs `check-config` on `toml` written to a file in `dir`.
fn check(dir: &std::path::Path, toml: &str) -> std::process::Output {
    let path = dir.join("relay.toml");
    std::fs::write(&path, toml).unwrap();
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn a_token_directory_is_validated_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let head = format!(
        "tokens_dir = \"{}\"\n[sink]\nkind = \"file\"\n",
        tokens.display()
    );

    // An empty directory is a relay waiting for its first bot, not an error.
    let output = check(dir.path(), &head);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // Hidden entries (a mounted Secret's `..data`) and directories are not bots.
    std::fs::write(tokens.join("shop"), format!("{}\n", token(301))).unwrap();
    std::fs::write(tokens.join(".shop.swp"), "junk").unwrap();
    std::fs::create_dir(tokens.join("..2026_11_26")).unwrap();
    let output = check(dir.path(), &head);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let effective = String::from_utf8_lossy(&output.stdout);
    assert!(effective.contains("[bots.shop]"), "{effective}");
    assert_eq!(
        effective.matches("[bots.").count() - effective.matches("[bots.shop.").count(),
        1
    );
    assert!(!effective.contains(&token(301)), "the token is redacted");

    // Problems name the file; a token is never echoed; a default's problem is told
    // once, not once per bot.
    std::fs::write(tokens.join("Bad.Name"), token(302)).unwrap();
    std::fs::write(tokens.join("broken"), "SECRET-not-a-token").unwrap();
    for i in 0..20 {
        std::fs::write(tokens.join(format!("b{i}")), token(400 + i)).unwrap();
    }
    let output = check(
        dir.path(),
        &format!(
            "{head}[bot_defaults]\npoll_limit = 500\n[bots.shop]\ntoken = \"{}\"\n",
            token(301)
        ),
    );
    assert_eq!(output.status.code(), CONFIG);
    let errors = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bots.Bad.Name (from the file ",
        "Bad.Name): a bot name is 1-64 of a-z",
        "bots.broken.token (TGRELAY_BOTS__BROKEN__TOKEN): not a bot token",
        "bots.shop: its token is set both here and by the file",
        "bot_defaults.poll_limit (TGRELAY_BOT_DEFAULTS__POLL_LIMIT): must be 1 to 100",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert_eq!(errors.matches("poll_limit").count(), 1, "{errors}");
    assert!(!errors.contains("SECRET"), "{errors}");

    // A directory that is not there is an error naming it.
    let output = check(
        dir.path(),
        "tokens_dir = \"/nonexistent/tokens\"\n[sink]\nkind = \"file\"\n",
    );
    assert_eq!(output.status.code(), CONFIG);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains(
            "tokens_dir (TGRELAY_TOKENS_DIR): cannot read the directory /nonexistent/tokens"
        ),
        "{errors}"
    );

    // The defaults never carry a token.
    let output = check(
        dir.path(),
        &format!(
            "[sink]\nkind = \"file\"\n[bot_defaults]\ntoken = \"{}\"\n[bots.x]\ntoken = \"{}\"\n",
            token(501),
            token(502)
        ),
    );
    assert_eq!(output.status.code(), CONFIG);
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("bot_defaults: a token belongs to one bot"),
        "{output:?}"
    );
}
