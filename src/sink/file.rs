//! `FileSink`: CloudEvents structured JSON, one event per line, fsync'd before it counts.
//!
//! One writer thread owns the file. Publishers hand it their lines and wait; the
//! thread takes everything queued, writes it, calls `fdatasync` once and answers all
//! of them (group commit), so concurrent batches share one disk flush. A failed write
//! is cut off again, so the file never keeps half a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::Sink;
use crate::ack::Outcome;
use crate::cloudevent::Attributes;
use crate::envelope::{DeadLetter, Envelope};

/// `[sink.file]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// JSON-lines file, one CloudEvents structured object per line; appended to.
    pub path: PathBuf,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            path: PathBuf::from("tgrelay-updates.jsonl"),
        }
    }
}

impl FileSinkConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push("sink.file.path (TGRELAY_SINK__FILE__PATH): required".into());
        }
        errors
    }
}

/// Lines waiting for the writer; bounded so a stuck disk pushes back on sources.
const QUEUE: usize = 256;

pub struct FileSink {
    queue: mpsc::Sender<Pending>,
    healthy: Arc<AtomicBool>,
}

struct Pending {
    lines: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

impl FileSink {
    /// Opens (creating or appending to) `path` and starts the writer thread.
    pub fn open(path: &Path) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            file,
            path: path.to_owned(),
            healthy: Arc::clone(&healthy),
        };
        std::thread::Builder::new()
            .name("tgrelay-file-sink".into())
            .spawn(move || writer.run(rx))?;
        Ok(FileSink { queue, healthy })
    }

    /// Whether [`FileSink::open`] would succeed, leaving things as they are
    /// (`check-config --connect`): an existing file is opened for appending and nothing
    /// written; otherwise its directory must take a new file (a probe, removed again).
    pub fn check_writable(path: &Path) -> std::io::Result<()> {
        if path.exists() {
            return OpenOptions::new().append(true).open(path).map(drop);
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let probe = dir.join(format!(".tgrelay-check-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        std::fs::remove_file(&probe)
    }

    async fn write(&self, lines: Vec<u8>) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { lines, done })
            .await
            .map_err(|_| "file writer stopped".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("file writer stopped".into()))
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>> {
        async move {
            let mut lines = Vec::with_capacity(batch.iter().map(|e| e.payload.len() + 300).sum());
            for envelope in batch {
                lines.extend(Attributes::of(envelope).structured_json(&envelope.payload, None));
                lines.push(b'\n');
            }
            let outcome = match self.write(lines).await {
                Ok(()) => Outcome::Delivered,
                Err(reason) => Outcome::Failed {
                    reason,
                    fatal: false,
                },
            };
            vec![outcome; batch.len()]
        }
        .boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome> {
        async move {
            let attrs = Attributes::of_dead_letter(letter);
            let mut line = attrs.structured_json(&letter.payload, Some(&letter.reason));
            line.push(b'\n');
            match self.write(line).await {
                Ok(()) => Outcome::DeadLettered {
                    reason: letter.reason.clone(),
                },
                Err(reason) => Outcome::Failed {
                    reason,
                    fatal: false,
                },
            }
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Every answered write was already fsync'd; nothing is buffered.
        futures::future::ready(()).boxed()
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            let result = self.commit(&group);
            self.healthy.store(result.is_ok(), Ordering::Relaxed);
            for write in group {
                let _ = write.done.send(result.clone());
            }
        }
    }

    /// Appends every group member's lines and syncs; on failure, cuts the file back.
    fn commit(&mut self, group: &[Pending]) -> Result<(), String> {
        let before = self.file.metadata().map(|m| m.len());
        let written = group
            .iter()
            .try_for_each(|w| self.file.write_all(&w.lines))
            .and_then(|()| self.file.sync_data());
        written.map_err(|e| {
            if let Ok(len) = before {
                let _ = self.file.set_len(len);
            }
            let error = format!("writing {}: {e}", self.path.display());
            tracing::error!(%error, "file sink write failed");
            error
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::envelope::BotIdentity;

    #[tokio::test]
    async fn appends_one_structured_event_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let sink = FileSink::open(&path).unwrap();
        let bot = Arc::new(BotIdentity::new("main", 1));
        let batch: Vec<Envelope> = (1..=3)
            .map(|id| {
                let raw = format!(r#"{{"update_id":{id},"message":{{"chat":{{"id":5}}}}}}"#);
                Envelope::from_update(&bot, Bytes::from(raw), SystemTime::now()).unwrap()
            })
            .collect();
        let outcomes = sink.publish(&batch).await;
        assert!(outcomes.iter().all(Outcome::is_safe));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["id"], "1:3");
        assert_eq!(last["data"]["update_id"], 3);
    }
}
