//! What the relay keeps in JetStream: the updates' stream, and the streams and
//! key-value buckets the cluster and the gateway ask for. Each is created when missing
//! (when configured to) or checked, so a wrong setup fails at start.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{kv, stream, ErrorCode};

use super::{NatsBroker, NatsSinkError};

/// Whether a stream is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    Exists,
    Missing,
}

impl NatsBroker {
    /// The updates' stream (`sink.nats.stream`), created when missing and
    /// `create_stream` is set.
    pub async fn ensure_updates_stream(&self) -> Result<(), NatsSinkError> {
        let config = &self.config;
        let spec = stream::Config {
            name: config.stream.clone(),
            subjects: config.stream_subjects.clone(),
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        };
        let hint = "create it, or set sink.nats.create_stream = true";
        self.stream(spec, config.create_stream, hint)
            .await
            .map(|_| ())
    }

    /// Stream `spec.name`: created from `spec` when missing and `create`, else it must
    /// exist (`hint` says how to fix it when it does not).
    pub async fn stream(
        &self,
        spec: stream::Config,
        create: bool,
        hint: &str,
    ) -> Result<stream::Stream, NatsSinkError> {
        let name = spec.name.clone();
        let error = |message: String| NatsSinkError::Stream {
            stream: name.clone(),
            message,
        };
        if create {
            self.js
                .get_or_create_stream(spec)
                .await
                .map_err(|e| error(e.to_string()))
        } else {
            self.js
                .get_stream(&name)
                .await
                .map_err(|e| error(format!("{e} ({hint})")))
        }
    }

    /// Key-value bucket `spec.bucket`, created from `spec` when missing.
    pub async fn key_value(&self, spec: kv::Config) -> Result<kv::Store, NatsSinkError> {
        let name = spec.bucket.clone();
        if let Ok(store) = self.js.get_key_value(&name).await {
            return Ok(store);
        }
        match self.js.create_key_value(spec).await {
            Ok(store) => Ok(store),
            // Another replica created it meanwhile.
            Err(created) => self
                .js
                .get_key_value(&name)
                .await
                .map_err(|_| NatsSinkError::Bucket {
                    bucket: name,
                    // nats-server 2.9 answers in a shape the client cannot read.
                    message: format!(
                        "{created} (a shared cluster needs nats-server 2.10 or later)"
                    ),
                }),
        }
    }

    /// Whether the updates' stream is there; asking only (`check-config --connect`).
    pub async fn updates_stream_state(&self) -> Result<StreamState, NatsSinkError> {
        match self.js.get_stream(&self.config.stream).await {
            Ok(_) => Ok(StreamState::Exists),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(StreamState::Missing)
                }
                _ => Err(NatsSinkError::Stream {
                    stream: self.config.stream.clone(),
                    message: e.to_string(),
                }),
            },
        }
    }
}
