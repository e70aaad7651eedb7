//! `tgrelay check-config --connect`: what only the network can tell about a valid
//! configuration. Each bot's token is tried with getMe at its `api_url`; the sink's
//! broker is asked whether the stream (capturing every subject the routes reach) or the
//! topics the relay needs exist; a file sink's path must be writable.
//!
//! Nothing is changed anywhere: a stream or topic the relay would create at start is a
//! note, not a problem. The checks run at once, each bounded by [`CHECK_TIMEOUT`], so a
//! broker that is down fails the check in seconds; every problem is listed.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;

use crate::config::{BotConfig, Config};
use crate::sink::file::FileSink;
use crate::sink::SinkKind;
use crate::telegram::{BotApi, ErrorClass};

mod broker;

/// The longest any one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    /// Not a problem, but worth knowing (the relay will create a missing stream).
    Note(String),
    Problem(String),
}

/// Every finding, bots first (by name), then the sink.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn problems(&self) -> Vec<&str> {
        self.findings
            .iter()
            .filter_map(|f| match f {
                Finding::Problem(p) => Some(p.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            match finding {
                Finding::Ok(text) => writeln!(f, "ok: {text}")?,
                Finding::Note(text) => writeln!(f, "note: {text}")?,
                Finding::Problem(_) => {}
            }
        }
        match self.problems().as_slice() {
            [] => writeln!(f, "check-config --connect: no problems"),
            [one] => writeln!(f, "check-config --connect: 1 problem:\n  - {one}"),
            problems => writeln!(
                f,
                "check-config --connect: {} problems:\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            ),
        }
    }
}

/// Runs every check of a validated configuration.
pub async fn check(config: &Config) -> Report {
    let http = BotApi::http_client();
    let bots = join_all(
        config
            .bots
            .iter()
            .map(|(name, bot)| check_bot(&http, name, bot)),
    );
    let (mut findings, sink) = tokio::join!(bots, check_sink(config));
    findings.push(sink);
    Report { findings }
}

/// `fut`, or `None` when it takes longer than [`CHECK_TIMEOUT`].
async fn within<T>(fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CHECK_TIMEOUT, fut).await.ok()
}

/// getMe with the bot's token: the token is valid and belongs to the bot id it names.
async fn check_bot(http: &reqwest::Client, name: &str, bot: &BotConfig) -> Finding {
    let api = BotApi::new(http.clone(), &bot.api_url, bot.token().clone());
    let at = &bot.api_url;
    match within(api.get_me()).await {
        None => Finding::Problem(format!(
            "bots.{name}: getMe at {at}: no answer within {}s",
            CHECK_TIMEOUT.as_secs()
        )),
        Some(Err(e)) if e.class() == ErrorClass::Unauthorized => Finding::Problem(format!(
            "bots.{name}: {e} (at {at}): the token is wrong or revoked"
        )),
        Some(Err(e)) => Finding::Problem(format!("bots.{name}: {e} (at {at})")),
        Some(Ok(me)) if u64::try_from(me.id).ok() != Some(bot.bot_id()) => {
            Finding::Problem(format!(
                "bots.{name}: getMe at {at} answered for bot id {}, not {} as the token says",
                me.id,
                bot.bot_id()
            ))
        }
        Some(Ok(me)) => Finding::Ok(format!(
            "bots.{name}: getMe: @{} (id {})",
            me.username.as_deref().unwrap_or("?"),
            me.id
        )),
    }
}

async fn check_sink(config: &Config) -> Finding {
    match config.sink.kind {
        SinkKind::File => check_file(config),
        SinkKind::Nats => broker::check_nats(config).await,
        SinkKind::Kafka => broker::check_kafka(config).await,
    }
}

fn check_file(config: &Config) -> Finding {
    let path = config.sink.file.path.display();
    match FileSink::check_writable(&config.sink.file.path) {
        Ok(()) => Finding::Ok(format!("sink.file: {path} is writable")),
        Err(e) => Finding::Problem(format!("sink.file: {path}: {e}")),
    }
}
