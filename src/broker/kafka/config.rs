//! `[sink.kafka]`: brokers, topics, and librdkafka properties, with the settings the
//! delivery guarantee depends on pinned and checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize, Serializer};

use crate::route::RouteTemplate;
use crate::secret::{self, Secret};

/// `[sink.kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic template; placeholders `{bot}`, `{bot_id}`, `{kind}`.
    pub topic: String,
    /// Where updates the broker refuses for good go, with a `tgrelay-error` header.
    pub dead_letter_topic: String,
    /// Create missing topics at start (admin API); otherwise a missing topic is a startup error.
    pub create_topics: bool,
    /// Partitions of topics the relay creates.
    pub partitions: i32,
    /// Replication factor of topics the relay creates (-1: the broker's default): the
    /// updates' topics, the cluster's coordination topics and the gateway's topics.
    pub replication_factor: i32,
    /// `min.insync.replicas` of topics the relay creates (-1: the broker's default). With
    /// `acks=all`, a write then needs this many replicas: 2 of 3 survives one broker lost.
    pub min_insync_replicas: i32,
    /// How long librdkafka may try to deliver a message before it fails (and is retried
    /// by fetching it again): far under Telegram's 60 s webhook wait.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// How long the producer waits to fill a batch (`linger.ms`). 1 ms by default: a
    /// polled batch is enqueued within a fraction of that, so it leaves in one produce
    /// request (0 split it into many small ones, at three times the CPU), while a
    /// polling bot cannot fetch its next batch before this one is acked, so every
    /// millisecond here is a millisecond per round (5 ms halved the polling rate into
    /// Kafka); webhook answers wait for it too.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// librdkafka properties passed through (SASL, TLS, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. Values of secret-looking keys are redacted in output.
    #[serde(serialize_with = "redact_properties")]
    pub properties: BTreeMap<String, String>,
    /// Allow properties that break at-least-once delivery (acks 0/1, idempotence off).
    pub allow_unsafe_properties: bool,
    /// SASL user name (`sasl.username`), with `properties."security.protocol"` =
    /// `SASL_SSL` or `SASL_PLAINTEXT` and a `sasl.mechanism`.
    pub sasl_username: Option<String>,
    /// SASL password (`sasl.password`). A field of its own so that it can come from the
    /// environment (`TGRELAY_SINK__KAFKA__SASL_PASSWORD`, a Kubernetes secret): a property
    /// name has dots, which an environment variable name cannot carry.
    pub sasl_password: Option<Secret>,
    /// A file holding the SASL password (a mounted Kubernetes Secret); instead of
    /// `sasl_password`.
    pub sasl_password_file: Option<PathBuf>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "telegram.{bot}.{kind}".into(),
            dead_letter_topic: "telegram.{bot}.deadletter".into(),
            create_topics: false,
            partitions: 3,
            replication_factor: -1,
            min_insync_replicas: -1,
            message_timeout: Duration::from_secs(20),
            linger: Duration::from_millis(1),
            properties: BTreeMap::new(),
            allow_unsafe_properties: false,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
        }
    }
}

/// Properties the relay sets itself; passing them through would bypass its checks.
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

impl KafkaSinkConfig {
    /// Every problem of this section. Reads `sasl_password_file` into `sasl_password`.
    pub fn validate(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let err = |key: &str, what: String| {
            format!(
                "sink.kafka.{key} (TGRELAY_SINK__KAFKA__{}): {what}",
                key.to_uppercase()
            )
        };
        let file = self.sasl_password_file.as_deref();
        if let Err(e) = secret::resolve_file(&mut self.sasl_password, file) {
            errors.push(err("sasl_password_file", e));
        }
        if self.brokers.trim().is_empty() {
            errors.push(err("brokers", "required".into()));
        }
        for (key, template) in [
            ("topic", &self.topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if let Err(e) = validate_topic_template(template) {
                errors.push(err(key, e));
            }
        }
        if self.partitions < 1 {
            errors.push(err("partitions", "must be at least 1".into()));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas < -1 {
            errors.push(err(
                "min_insync_replicas",
                "must be -1 (broker default) or at least 1".into(),
            ));
        } else if self.replication_factor > 0 && self.min_insync_replicas > self.replication_factor
        {
            errors.push(err(
                "min_insync_replicas",
                "cannot exceed replication_factor: no write would ever succeed".into(),
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            errors.push(err(
                "replication_factor",
                "must be -1 (broker default) or at least 1".into(),
            ));
        }
        if self.message_timeout.is_zero() || self.message_timeout > Duration::from_secs(55) {
            errors.push(err(
                "message_timeout",
                "must be above zero and at most 55s (Telegram waits 60 s for a webhook answer)"
                    .into(),
            ));
        }
        for key in self
            .properties
            .keys()
            .filter(|k| OWN_PROPERTIES.contains(&k.as_str()))
        {
            errors.push(err(
                "properties",
                format!("{key:?} is set by the relay: use brokers or message_timeout"),
            ));
        }
        errors.extend(self.sasl_problems().into_iter().map(|(key, p)| err(key, p)));
        if !self.allow_unsafe_properties {
            errors.extend(
                self.unsafe_properties()
                    .into_iter()
                    .map(|p| err("properties", p)),
            );
        }
        errors
    }

    /// SASL credentials set twice, half set, or set where librdkafka would ignore them.
    fn sasl_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (key, property, set) in [
            (
                "sasl_username",
                "sasl.username",
                self.sasl_username.is_some(),
            ),
            (
                "sasl_password",
                "sasl.password",
                self.sasl_password.is_some(),
            ),
        ] {
            if set && self.properties.contains_key(property) {
                problems.push((
                    key,
                    format!("set here and as properties.{property:?}: keep one"),
                ));
            }
        }
        if self.sasl_username.is_some() != self.sasl_password.is_some() {
            problems.push((
                "sasl_password",
                "sasl_username and sasl_password (or sasl_password_file) go together".into(),
            ));
        }
        let protocol = self
            .properties
            .get("security.protocol")
            .map(|p| p.trim().to_ascii_lowercase());
        let uses_sasl = matches!(protocol.as_deref(), Some("sasl_ssl" | "sasl_plaintext"));
        if (self.sasl_username.is_some() || self.sasl_password.is_some()) && !uses_sasl {
            problems.push((
                "sasl_username",
                "needs properties.\"security.protocol\" = \"SASL_SSL\" (or \"SASL_PLAINTEXT\"); \
                 without it the credentials would not be sent"
                    .into(),
            ));
        }
        problems
    }

    /// Properties that would let the relay confirm updates a broker could still lose.
    fn unsafe_properties(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (key, value) in &self.properties {
            let value = value.trim().to_ascii_lowercase();
            let breaks = match key.as_str() {
                "acks" | "request.required.acks" => !matches!(value.as_str(), "all" | "-1"),
                "enable.idempotence" => value == "false",
                _ => false,
            };
            if breaks {
                found.push(format!(
                    "{key} = {value:?} breaks at-least-once delivery (acks=all and idempotence are required); \
                     set allow_unsafe_properties = true to force it"
                ));
            }
        }
        found
    }

    /// The producer's librdkafka configuration: safe defaults, then the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = self.connection_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", self.linger.as_millis().to_string());
        config
    }

    /// How to reach the brokers (address, TLS, SASL), for any client: the producer,
    /// and the consumers a shared cluster or outbound calls use.
    pub fn connection_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", concat!("tgrelay/", env!("CARGO_PKG_VERSION")))
            .set("socket.keepalive.enable", "true");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        if let Some(user) = &self.sasl_username {
            config.set("sasl.username", user);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password.expose());
        }
        config
    }
}

/// Kafka topic names are 1-249 of `[a-zA-Z0-9._-]`; placeholders render to such characters.
fn validate_topic_template(template: &str) -> Result<(), String> {
    RouteTemplate::parse(template)?;
    let rendered = RouteTemplate::parse(template)?.render_with("bot", 1, "kind");
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !rendered.chars().all(legal) {
        return Err(format!(
            "{template:?}: a topic name is made of a-z A-Z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Serializes pass-through properties with the values of secret-looking keys redacted.
fn redact_properties<S: Serializer>(
    properties: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let redacted: BTreeMap<&str, &str> = properties
        .iter()
        .map(|(k, v)| {
            let secret = ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|w| k.contains(w));
            (k.as_str(), if secret { "**REDACTED**" } else { v.as_str() })
        })
        .collect();
    redacted.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(properties: &[(&str, &str)]) -> KafkaSinkConfig {
        KafkaSinkConfig {
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn properties_that_break_the_guarantee_are_refused_unless_allowed() {
        for bad in [
            ("acks", "1"),
            ("acks", "0"),
            ("request.required.acks", "1"),
            ("enable.idempotence", "false"),
        ] {
            let errors = with(&[bad]).validate();
            assert_eq!(errors.len(), 1, "{bad:?}");
            assert!(errors[0].contains("breaks at-least-once"), "{errors:?}");
            let mut allowed = with(&[bad]);
            allowed.allow_unsafe_properties = true;
            assert!(allowed.validate().is_empty());
        }
        assert!(with(&[("acks", "all"), ("compression.type", "lz4")])
            .validate()
            .is_empty());
        assert_eq!(with(&[("bootstrap.servers", "x:1")]).validate().len(), 1);
    }

    #[test]
    fn min_insync_replicas_must_leave_writes_possible() {
        let mut config = KafkaSinkConfig {
            replication_factor: 3,
            min_insync_replicas: 2,
            ..Default::default()
        };
        assert!(config.validate().is_empty());
        config.min_insync_replicas = 4;
        let errors = config.validate();
        assert!(
            errors.len() == 1 && errors[0].starts_with("sink.kafka.min_insync_replicas"),
            "{errors:?}"
        );
        config.min_insync_replicas = 0;
        assert_eq!(config.validate().len(), 1);
    }

    #[test]
    fn secrets_in_properties_are_redacted_in_output() {
        let mut config = with(&[("sasl.password", "hunter2"), ("sasl.username", "relay")]);
        config.brokers = "b:9092".into();
        let text = toml::to_string(&config).unwrap();
        assert!(
            !text.contains("hunter2") && text.contains("relay"),
            "{text}"
        );
    }

    #[test]
    fn sasl_credentials_reach_librdkafka_and_never_the_output() {
        let mut config = with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
        ]);
        config.sasl_username = Some("relay".into());
        config.sasl_password = Some(Secret::new("hunter2"));
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let client = config.client_config();
        assert_eq!(client.get("sasl.username"), Some("relay"));
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
        let text = toml::to_string(&config).unwrap();
        assert!(
            !text.contains("hunter2") && text.contains("relay"),
            "{text}"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_sasl_password_file_reaches_librdkafka() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "hunter2\n").unwrap();
        let mut config = with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
        ]);
        config.sasl_username = Some("relay".into());
        config.sasl_password_file = Some(path);
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert_eq!(config.client_config().get("sasl.password"), Some("hunter2"));
        assert!(!toml::to_string(&config).unwrap().contains("hunter2"));
    }

    #[test]
    fn sasl_credentials_half_set_twice_or_without_a_sasl_protocol_are_refused() {
        let sasl = [("security.protocol", "sasl_plaintext")];
        let mut half = with(&sasl);
        half.sasl_password = Some(Secret::new("p"));
        let errors = half.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("go together"), "{errors:?}");

        let mut twice = with(&[sasl[0], ("sasl.username", "a")]);
        twice.sasl_username = Some("b".into());
        twice.sasl_password = Some(Secret::new("p"));
        let errors = twice.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "sink.kafka.sasl_username (TGRELAY_SINK__KAFKA__SASL_USERNAME): set here"
            ),
            "{errors:?}"
        );

        let mut plaintext = with(&[]);
        plaintext.sasl_username = Some("a".into());
        plaintext.sasl_password = Some(Secret::new("p"));
        let errors = plaintext.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("security.protocol"), "{errors:?}");
    }

    #[test]
    fn topic_templates_must_render_legal_names() {
        assert!(validate_topic_template("telegram.{bot}.{kind}").is_ok());
        assert!(validate_topic_template("telegram/{bot}").is_err());
        assert!(validate_topic_template("telegram.{chat}").is_err());
    }
}
