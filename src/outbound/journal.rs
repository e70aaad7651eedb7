//! The request journal: each call a bot's owner sends is written to the broker before
//! it goes to Telegram ("started") and again once it has its final answer
//! ("answered"), under its request id (or, without one, the broker's id of it).
//!
//! So dedup outlives the owner: a new owner (after a handover, a crash, a restart)
//! finds a repeat's answer in the broker and publishes it again instead of sending
//! the call twice, and a call found "started, not answered" (its owner died while it
//! was with Telegram) is answered as unknown, never sent again. Claiming a key is
//! atomic where the broker allows it (NATS: a key-value create), so two owners of one
//! bot cannot both send a call.
//!
//! Entries live for `outbound.dedup_window` (the NATS bucket's `max_age`, the Kafka
//! topic's `retention.ms`). Only final answers are kept (see `Outcome::is_final`): a
//! call started and then not sent after all (a give-up, an expired deadline) is
//! forgotten, so a repeat of it runs.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::answer::{Answered, Outcome};

/// What an earlier owner left under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The fingerprint of the call it was written for (see `recent::fingerprint`).
    pub fingerprint: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Sent, or about to be, and not answered: its owner stopped in between.
    Started,
    Answered(Answered),
}

/// Where a bot's request journal is kept.
pub trait Journal: Send + Sync + 'static {
    /// Reads what the journal needs before the first call (Kafka replays its topic).
    fn load(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Claims `key` for a call about to be sent: `None` when it was free (it is now
    /// "started"), else what is there. Resolves once the broker has the claim.
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
    ) -> BoxFuture<'a, Result<Option<Found>, String>>;
    /// Records a call's final answer.
    fn answer<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        answered: &'a Answered,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Forgets a call started and then not sent after all, so that a repeat runs.
    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// What a journal write that must follow a call's answer does.
#[derive(Debug, Clone)]
pub enum Entry {
    Answer {
        key: String,
        fingerprint: u64,
        answered: Answered,
    },
    Forget {
        key: String,
    },
}

impl Entry {
    /// The write for a started call that got `answered`.
    pub fn after(key: String, fingerprint: u64, answered: &Answered) -> Entry {
        if answered.outcome.is_final() {
            Entry::Answer {
                key,
                fingerprint,
                answered: answered.clone(),
            }
        } else {
            Entry::Forget { key }
        }
    }

    pub async fn write(&self, journal: &dyn Journal) -> Result<(), String> {
        match self {
            Entry::Answer {
                key,
                fingerprint,
                answered,
            } => journal.answer(key, *fingerprint, answered).await,
            Entry::Forget { key } => journal.forget(key).await,
        }
    }
}

/// The broker's key for a call's key: fixed length and safe in any subject or topic
/// key, whatever the request id holds (128 bits of its SHA-256, in hex).
pub fn storage_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An entry as stored: JSON, readable with `nats kv get` or a console consumer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// The call's fingerprint, in hex.
    pub fingerprint: String,
    /// `started`, or the answer's `tg-outcome`.
    pub state: String,
    /// When it was written (ms since the epoch); Kafka's replay skips what is older
    /// than the window.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_error: Option<String>,
}

const STARTED: &str = "started";

impl Record {
    pub fn started(fingerprint: u64) -> Record {
        Record {
            fingerprint: format!("{fingerprint:016x}"),
            state: STARTED.into(),
            at_ms: now_ms(),
            body: None,
            relay_error: None,
        }
    }

    pub fn answered(fingerprint: u64, answered: &Answered) -> Record {
        Record {
            fingerprint: format!("{fingerprint:016x}"),
            state: answered.outcome.as_str().into(),
            at_ms: now_ms(),
            body: Some(String::from_utf8_lossy(&answered.body).into_owned()),
            relay_error: answered.relay_error.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    /// What a stored entry says; an entry this version cannot read is an error.
    pub fn decode(bytes: &[u8]) -> Result<Found, String> {
        Record::decode_at(bytes).map(|(found, _)| found)
    }

    /// What a stored entry says, and when it was written (ms since the epoch).
    pub fn decode_at(bytes: &[u8]) -> Result<(Found, u64), String> {
        let record: Record =
            serde_json::from_slice(bytes).map_err(|e| format!("a journal entry: {e}"))?;
        let fingerprint = u64::from_str_radix(&record.fingerprint, 16)
            .map_err(|e| format!("a journal entry's fingerprint: {e}"))?;
        let state = if record.state == STARTED {
            State::Started
        } else {
            let outcome = Outcome::parse(&record.state)
                .ok_or_else(|| format!("a journal entry's state {:?}", record.state))?;
            State::Answered(Answered {
                body: Bytes::from(record.body.unwrap_or_default()),
                relay_error: record.relay_error,
                outcome,
            })
        };
        Ok((Found { fingerprint, state }, record.at_ms))
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A journal in memory, for the executor's tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryJournal {
    pub entries: std::sync::Mutex<std::collections::HashMap<String, Found>>,
    /// Every write fails while set (a broker away).
    pub down: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl MemoryJournal {
    fn check(&self) -> Result<(), String> {
        match self.down.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err("the broker is away".into()),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
impl Journal for MemoryJournal {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
    ) -> BoxFuture<'a, Result<Option<Found>, String>> {
        let result = self.check().map(|()| {
            let mut entries = self.entries.lock().unwrap();
            let found = entries.get(key).cloned();
            if found.is_none() {
                let started = Found {
                    fingerprint,
                    state: State::Started,
                };
                entries.insert(key.to_owned(), started);
            }
            found
        });
        Box::pin(async move { result })
    }

    fn answer<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        answered: &'a Answered,
    ) -> BoxFuture<'a, Result<(), String>> {
        let result = self.check().map(|()| {
            let found = Found {
                fingerprint,
                state: State::Answered(answered.clone()),
            };
            self.entries.lock().unwrap().insert(key.to_owned(), found);
        });
        Box::pin(async move { result })
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let result = self.check().map(|()| {
            self.entries.lock().unwrap().remove(key);
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let started = Record::decode(&Record::started(0xabc).encode()).unwrap();
        assert_eq!(
            started,
            Found {
                fingerprint: 0xabc,
                state: State::Started
            }
        );
        let answered = Answered::unknown("timed out");
        let back = Record::decode(&Record::answered(u64::MAX, &answered).encode()).unwrap();
        assert_eq!(back.fingerprint, u64::MAX);
        assert_eq!(back.state, State::Answered(answered));
        assert!(
            Record::decode(b"{\"fingerprint\":\"1\",\"state\":\"maybe\",\"at_ms\":0}").is_err()
        );
        assert!(Record::decode(b"not json").is_err());
    }

    #[test]
    fn storage_keys_are_fixed_and_plain() {
        let long = "x".repeat(10_000);
        for key in ["id:a", "id:a b.c>*", "ce:1:2", long.as_str()] {
            let k = storage_key(key);
            assert_eq!(k.len(), 32);
            assert!(k.chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        }
        assert_ne!(storage_key("id:a"), storage_key("id:b"));
    }

    #[test]
    fn only_final_answers_are_kept() {
        let give_up = Answered::lane_full(3);
        assert!(matches!(
            Entry::after("k".into(), 1, &give_up),
            Entry::Forget { .. }
        ));
        assert!(matches!(
            Entry::after("k".into(), 1, &Answered::unknown("x")),
            Entry::Answer { .. }
        ));
    }
}
