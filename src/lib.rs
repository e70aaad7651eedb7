//! tgrelay relays Telegram Bot API updates into message brokers, at least once.
//!
//! **The guarantee.** Telegram forgets an update once it is confirmed (by the next
//! getUpdates offset, or by the 2xx answer to a webhook POST). The relay confirms
//! an update only after the broker acknowledged it, so an update is never lost;
//! a crash or a broker failure can make Telegram send it again, and every copy
//! carries the same id (`<bot_id>:<update_id>`) to deduplicate on.
//!
//! Modules:
//! - [`config`]: defaults → config.toml → `TGRELAY_*` environment, validated in one pass;
//!   each sink and source describes and validates its own section.
//! - [`telegram`]: the small Bot API client; token-safe errors; zero-copy getUpdates split.
//! - [`envelope`]: one update's routing facts and Telegram's bytes, untouched.
//! - [`cloudevent`]: the wire contract's attributes and content modes (binary, structured).
//! - [`route`]: subject/topic templates.
//! - [`ack`]: the one place that decides what may be confirmed.
//! - [`backoff`]: how long to wait before retrying.
//! - [`lease`]: how long this replica may still call Telegram for the bots it owns.
//! - [`source`]: where updates come from: getUpdates long polling, or the webhook listener.
//! - [`broker`]: the connections to NATS and Kafka, and what the relay keeps there.
//! - [`sink`]: where they go: NATS JetStream, Kafka, a JSON-lines file, memory for tests.
//! - [`outbound`]: the other way: Bot API calls services publish to the broker, executed by
//!   each bot's owner within Telegram's flood limits, their answers published back.
//! - [`metrics`], [`health`], [`admin`]: what an operator sees.
//! - [`supervisor`]: runs each bot as its own task, started and stopped alone.
//! - [`cluster`]: which replica runs which bot (one process, or shared through the broker).
//! - [`reload`]: the bot set changed while running (SIGHUP, a watched `tokens_dir`).
//! - [`app`]: wiring and shutdown.
//! - [`preflight`]: `check-config --connect`, what only the network can tell.
//! - [`secret`]: strings that never print themselves.
#![forbid(unsafe_code)]

pub mod ack;
pub mod admin;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod cloudevent;
pub mod cluster;
pub mod config;
pub mod envelope;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod outbound;
pub mod preflight;
pub mod reload;
pub mod route;
pub mod secret;
pub mod sink;
pub mod source;
pub mod supervisor;
pub mod telegram;
