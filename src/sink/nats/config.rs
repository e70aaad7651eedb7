//! `[sink.nats]`: the NATS server, subjects, stream and credentials.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::route::RouteTemplate;
use crate::secret::Secret;

/// `[sink.nats]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Subject template; placeholders `{bot}`, `{bot_id}`, `{kind}`.
    pub subject: String,
    /// Where updates the stream refuses for good go, with a `tgrelay-error` header.
    pub dead_letter_subject: String,
    /// The JetStream stream that must capture the subjects.
    pub stream: String,
    /// Subjects of the stream when the relay creates it.
    pub stream_subjects: Vec<String>,
    /// Create the stream at start when it is missing (file storage).
    pub create_stream: bool,
    /// Duplicate window of a stream the relay creates: a re-published update inside it
    /// is dropped by the server (`Nats-Msg-Id`).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long a publish may wait for its PubAck; keep it far under Telegram's 60 s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Publishes awaiting a PubAck at once; more wait (back-pressure).
    pub max_in_flight: usize,
    /// NATS credentials file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        NatsSinkConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject: "telegram.{bot}.{kind}".into(),
            dead_letter_subject: "telegram.{bot}.deadletter".into(),
            stream: "TELEGRAM".into(),
            stream_subjects: vec!["telegram.>".into()],
            create_stream: true,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
        }
    }
}

impl NatsSinkConfig {
    /// Every problem of these settings, each naming its key and environment variable.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (field, template) in [
            ("subject", &self.subject),
            ("dead_letter_subject", &self.dead_letter_subject),
        ] {
            if let Err(e) = RouteTemplate::parse(template) {
                errors.push(format!(
                    "sink.nats.{field} (TGRELAY_SINK__NATS__{}): {e}",
                    field.to_uppercase()
                ));
            }
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            errors.push("sink.nats.stream: a stream name without . * > or spaces".into());
        }
        if self.max_in_flight == 0 {
            errors.push("sink.nats.max_in_flight: must be at least 1".into());
        }
        if self.publish_timeout.is_zero() {
            errors.push("sink.nats.publish_timeout: must be above zero".into());
        }
        errors
    }
}
