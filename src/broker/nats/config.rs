//! `[sink.nats]`: the NATS server, subjects, stream and credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::route::RouteTemplate;
use crate::secret::{self, Secret};

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
    /// Replicas of every stream and key-value bucket the relay creates (the updates'
    /// stream, the cluster's buckets, the gateway's streams). 0 (the default): 3 on a
    /// JetStream cluster of three or more servers, else as many as it has (1 on a
    /// single server). A stream it finds with fewer replicas is raised to this.
    pub replicas: usize,
    /// Duplicate window of a stream the relay creates: a re-published update inside it
    /// is dropped by the server (`Nats-Msg-Id`).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long a publish may wait for its PubAck; keep it far under Telegram's 60 s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Publishes awaiting a PubAck at once; more wait (back-pressure).
    pub max_in_flight: usize,
    /// NATS credentials file (`.creds`: a user JWT and its NKey seed), for servers in
    /// decentralized (operator) mode.
    pub credentials_file: Option<PathBuf>,
    /// User name, with `password` (or `password_file`).
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<Secret>,
    /// A file holding the password (a mounted Kubernetes Secret); instead of `password`.
    pub password_file: Option<PathBuf>,
    /// Authentication token.
    pub token: Option<Secret>,
    /// A file holding the token; instead of `token`.
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the server's certificate (a private
    /// CA); it replaces the system's roots for NATS. Implies `tls_required`.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (and its chain) for servers that verify clients (mutual
    /// TLS), with `tls_key_file`. Implies `tls_required`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (a mounted Kubernetes Secret).
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to the server without TLS. A `tls://` URL, the files above, and a
    /// server that requires TLS all mean TLS too.
    pub tls_required: bool,
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
            replicas: 0,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            credentials_file: None,
            user: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

impl NatsSinkConfig {
    /// Every problem of these settings, each naming its key and environment variable.
    /// Reads `password_file` and `token_file` into `password` and `token`.
    pub fn validate(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let err = |key: &str, what: &str| {
            format!(
                "sink.nats.{key} (TGRELAY_SINK__NATS__{}): {what}",
                key.to_uppercase()
            )
        };
        for (key, secret, file) in [
            ("password_file", &mut self.password, &self.password_file),
            ("token_file", &mut self.token, &self.token_file),
        ] {
            if let Err(e) = secret::resolve_file(secret, file.as_deref()) {
                errors.push(err(key, &e));
            }
        }
        if self.password.is_some() != self.user.is_some() {
            errors.push(err(
                "user",
                "user and password (or password_file) go together",
            ));
        }
        errors.extend(self.tls_problems().into_iter().map(|(k, e)| err(k, &e)));
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
        if let Err(e) = super::connection::servers(&self.url) {
            errors.push(format!("sink.nats.url (TGRELAY_SINK__NATS__URL): {e}"));
        }
        if self.replicas > 5 {
            errors.push(
                "sink.nats.replicas (TGRELAY_SINK__NATS__REPLICAS): JetStream allows at most 5"
                    .into(),
            );
        }
        if self.max_in_flight == 0 {
            errors.push("sink.nats.max_in_flight: must be at least 1".into());
        }
        if self.publish_timeout.is_zero() {
            errors.push("sink.nats.publish_timeout: must be above zero".into());
        }
        errors
    }

    /// Whether the connection must be TLS (the server may require it on its own, too).
    pub fn requires_tls(&self) -> bool {
        self.tls_required || self.tls_ca_file.is_some() || self.tls_cert_file.is_some()
    }

    /// TLS files that go unpaired, or cannot be read, or hold no certificate or key.
    fn tls_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push((
                "tls_key_file",
                "tls_cert_file and tls_key_file go together".into(),
            ));
        }
        for (key, file) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
        ] {
            if let Some(Err(e)) = file.as_deref().map(read_certificates) {
                problems.push((key, e));
            }
        }
        if let Some(path) = &self.tls_key_file {
            if let Err(e) = PrivateKeyDer::from_pem_file(path) {
                let e = format!("{}: no PEM private key ({e})", path.display());
                problems.push(("tls_key_file", e));
            }
        }
        problems
    }
}

/// Checks a file holds PEM certificates: at least one, each readable.
fn read_certificates(path: &Path) -> Result<(), String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: no PEM certificates ({e})", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_needs_a_user_and_a_file_fills_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "hunter2\n").unwrap();
        let mut config = NatsSinkConfig {
            password_file: Some(path),
            ..Default::default()
        };
        let errors = config.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("go together"), "{errors:?}");

        config.user = Some("relay".into());
        config.password = None;
        assert!(config.validate().is_empty());
        assert_eq!(
            config.password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
    }

    #[test]
    fn tls_files_must_hold_what_they_name_and_pair_up() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let mut config = NatsSinkConfig {
            tls_ca_file: Some(not_pem.clone()),
            tls_cert_file: Some(dir.path().join("missing.pem")),
            ..Default::default()
        };
        assert!(config.requires_tls());
        let errors = config.validate();
        let named = |key: &str| errors.iter().filter(|e| e.starts_with(key)).count();
        assert_eq!(named("sink.nats.tls_ca_file"), 1, "{errors:?}");
        assert_eq!(named("sink.nats.tls_cert_file"), 1, "{errors:?}");
        assert_eq!(named("sink.nats.tls_key_file"), 1, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("go together")));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(!NatsSinkConfig::default().requires_tls());
    }
}
