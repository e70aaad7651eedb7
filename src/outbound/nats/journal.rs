//! The request journal on NATS: a key-value bucket (`<stream>_REQUESTS`, one history
//! entry, `max_age` = `outbound.dedup_window`), key `<bot id>.<storage key>`. A claim
//! is a key-value create, which the server refuses when the key holds an entry, so
//! of two owners racing for one call only one sends it.

use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::outbound::answer::Answered;
use crate::outbound::journal::{storage_key, Found, Journal, Record};

/// The journal bucket of the calls' stream `calls`.
pub fn bucket(calls: &str) -> String {
    format!("{calls}_REQUESTS")
}

pub struct NatsJournal {
    pub(super) store: kv::Store,
    /// `<bot id>.`
    pub(super) prefix: String,
}

impl NatsJournal {
    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, storage_key(key))
    }
}

impl Journal for NatsJournal {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
    ) -> BoxFuture<'a, Result<Option<Found>, String>> {
        async move {
            let key = self.key(key);
            let started = Bytes::from(Record::started(fingerprint).encode());
            // Twice: an entry seen as there may expire before it is read.
            for _ in 0..2 {
                match self.store.create(&key, started.clone()).await {
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.to_string()),
                }
                if let Some(bytes) = self.store.get(&key).await.map_err(|e| e.to_string())? {
                    return Record::decode(&bytes).map(Some);
                }
            }
            Err("a journal entry came and went while it was read".into())
        }
        .boxed()
    }

    fn answer<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        answered: &'a Answered,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let record = Record::answered(fingerprint, answered).encode();
            self.store
                .put(self.key(key), Bytes::from(record))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            self.store
                .delete(self.key(key))
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}
