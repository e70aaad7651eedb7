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
        mut spec: stream::Config,
        create: bool,
        hint: &str,
    ) -> Result<stream::Stream, NatsSinkError> {
        let name = spec.name.clone();
        let error = |message: String| NatsSinkError::Stream {
            stream: name.clone(),
            message,
        };
        if create {
            spec.num_replicas = self.replicas;
            let mut stream = self
                .js
                .get_or_create_stream(spec)
                .await
                .map_err(|e| error(e.to_string()))?;
            let found = stream.info().await.map_err(|e| error(e.to_string()))?;
            self.raise_replicas(found.config.clone())
                .await
                .map_err(error)?;
            Ok(stream)
        } else {
            self.js
                .get_stream(&name)
                .await
                .map_err(|e| error(format!("{e} ({hint})")))
        }
    }

    /// Key-value bucket `spec.bucket`, created from `spec` when missing.
    pub async fn key_value(&self, mut spec: kv::Config) -> Result<kv::Store, NatsSinkError> {
        let name = spec.bucket.clone();
        if let Ok(store) = self.js.get_key_value(&name).await {
            let stream = format!("KV_{name}");
            let raised = match self.js.get_stream(&stream).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => self.raise_replicas(info.config.clone()).await,
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            return raised
                .map(|()| store)
                .map_err(|message| NatsSinkError::Bucket {
                    bucket: name,
                    message,
                });
        }
        spec.num_replicas = self.replicas;
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
                        "{created} (the relay's key-value buckets, for a shared cluster and \
                         the gateway's request journal, need nats-server 2.10 or later)"
                    ),
                }),
        }
    }

    /// A stream of the relay's own found with fewer replicas than it creates (made by
    /// an older version, or on a smaller cluster) is raised, so that losing one node
    /// stops nothing; JetStream moves the data over while the stream keeps serving.
    async fn raise_replicas(&self, mut found: stream::Config) -> Result<(), String> {
        if found.num_replicas.max(1) >= self.replicas {
            return Ok(());
        }
        let (from, to) = (found.num_replicas.max(1), self.replicas);
        found.num_replicas = to;
        self.js
            .update_stream(&found)
            .await
            .map_err(|e| format!("raising its replicas from {from} to {to}: {e}"))?;
        tracing::info!(stream = %found.name, from, to, "raised the replicas of a stream");
        Ok(())
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
