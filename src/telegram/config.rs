//! `[telegram]`: the Bot API client every bot shares, and whom it trusts.
//!
//! One HTTP client serves every bot (one connection pool), so its TLS roots are one
//! setting for all of them: the built-in Mozilla roots, plus (or instead of) a PEM
//! bundle for a TLS-inspecting egress proxy or a local Bot API server behind a private
//! CA. Proxies come from the standard environment variables, as curl reads them:
//! `HTTPS_PROXY` (a CONNECT tunnel, which the proxy cannot look into), `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY`, in capitals or not.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[telegram]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// PEM file of CA certificates trusted for Bot API calls, besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Trust the built-in (Mozilla) roots too; `false` trusts `ca_file` alone.
    pub builtin_roots: bool,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            ca_file: None,
            builtin_roots: true,
        }
    }
}

/// Why the Bot API client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("telegram.ca_file (TGRELAY_TELEGRAM__CA_FILE) {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("telegram.builtin_roots (TGRELAY_TELEGRAM__BUILTIN_ROOTS) = false trusts no CA without telegram.ca_file")]
    NoRoots,
    #[error("the Bot API client: {0}")]
    Build(String),
}

impl TelegramConfig {
    /// Every problem of this section: the CA file must hold certificates a client takes.
    pub fn validate(&self) -> Vec<String> {
        match crate::telegram::BotApi::http_client_with(self) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        }
    }

    /// The certificates of `ca_file` (none when unset).
    pub(crate) fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, ClientError> {
        let Some(path) = &self.ca_file else {
            return if self.builtin_roots {
                Ok(Vec::new())
            } else {
                Err(ClientError::NoRoots)
            };
        };
        let error = |message: String| ClientError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| error(format!("not a PEM bundle: {e}")))?;
        if certificates.is_empty() {
            return Err(error("holds no PEM certificate".into()));
        }
        Ok(certificates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let with = |content: &str| {
            std::fs::write(&path, content).unwrap();
            TelegramConfig {
                ca_file: Some(path.clone()),
                builtin_roots: true,
            }
            .validate()
        };
        let empty = with("");
        assert!(empty[0].contains("holds no PEM certificate"), "{empty:?}");
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        assert_eq!(with(garbage).len(), 1, "{:?}", with(garbage));

        let missing = TelegramConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            builtin_roots: true,
        };
        assert!(missing.validate()[0].contains("cannot read it"));
        let none = TelegramConfig {
            ca_file: None,
            builtin_roots: false,
        };
        assert!(none.validate()[0].contains("trusts no CA"));
        assert!(TelegramConfig::default().validate().is_empty());
    }
}
