//! The real NATS JetStream on this machine, from a consumer's side: each test gets its
//! own stream and subject prefix, and reads back with its own pull consumer, as
//! another team's service would.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

/// `TEST_TGRELAY_NATS_URL`, set by scripts/test; the usual local server otherwise.
pub fn url() -> String {
    std::env::var("TEST_TGRELAY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<random>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

pub async fn jetstream() -> jetstream::Context {
    let client = async_nats::connect(url())
        .await
        .unwrap_or_else(|e| panic!("NATS at {} (run the tests with scripts/test): {e}", url()));
    jetstream::new(client)
}

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub headers: HashMap<String, String>,
    pub payload: Bytes,
    /// When the server stored it (its JetStream timestamp).
    pub stored_at: SystemTime,
}

/// Every message of `stream`, in stream order, read with a fresh pull consumer.
pub async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let mut stream = js.get_stream(stream).await.expect("the stream exists");
    let count = stream.info().await.expect("stream info").state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("a consumer");
    let mut messages = consumer.messages().await.expect("a message stream");
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers what it holds")
            .expect("not ended")
            .expect("a message");
        let headers = next
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(name, values)| (name.to_string(), values[0].to_string()))
            .collect();
        let published = next.info().expect("JetStream metadata").published;
        let nanos = u64::try_from(published.unix_timestamp_nanos()).expect("after 1970");
        out.push(Stored {
            subject: next.subject.to_string(),
            headers,
            payload: next.payload.clone(),
            stored_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
        });
    }
    out
}

/// Creates a stream on `<prefix>.>` (what the relay would, but with test limits).
pub async fn create_stream(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    max_message_size: i32,
) {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        max_message_size,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create the stream");
}

pub async fn delete_stream(js: &jetstream::Context, name: &str) {
    let _ = js.delete_stream(name).await;
}

/// TOML for a NATS sink writing `<prefix>.{bot}.{kind}` into stream `stream`.
pub fn sink_toml(stream: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[sink]\nkind = \"nats\"\n{extra}\n[sink.nats]\nurl = \"{}\"\nstream = \"{stream}\"\n\
         stream_subjects = [\"{prefix}.>\"]\nsubject = \"{prefix}.{{bot}}.{{kind}}\"\n\
         dead_letter_subject = \"{prefix}.{{bot}}.deadletter\"\n",
        url()
    )
}
