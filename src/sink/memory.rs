//! `MemorySink`: the test double. Keeps what it is given and fails on request.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::Sink;
use crate::ack::Outcome;
use crate::envelope::{DeadLetter, Envelope};

#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
    /// While set, publishes wait, as on a hung broker; `released` wakes them.
    held: AtomicBool,
    released: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    delivered: Vec<Envelope>,
    dead_letters: Vec<DeadLetter>,
    /// Update ids whose next publish fails (once each).
    fail_once: HashSet<i64>,
    /// While set, every publish fails.
    down: bool,
    attempts: usize,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next publish of each of these update ids fails (transiently).
    pub fn fail_once(&self, update_ids: impl IntoIterator<Item = i64>) {
        self.state.lock().unwrap().fail_once.extend(update_ids);
    }

    /// A broker outage: every publish fails until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// A hung broker: publishes wait (without failing) until `hold(false)`.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
        if !held {
            self.released.notify_waiters();
        }
    }

    /// Envelopes delivered so far, in delivery order (duplicates included).
    pub fn delivered(&self) -> Vec<Envelope> {
        self.state.lock().unwrap().delivered.clone()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state.lock().unwrap().dead_letters.clone()
    }

    /// How many publishes were attempted.
    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>> {
        self.state.lock().unwrap().attempts += batch.len();
        async move {
            loop {
                let released = self.released.notified();
                if !self.held.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
            let mut state = self.state.lock().unwrap();
            batch
                .iter()
                .map(|envelope| {
                    if state.down || state.fail_once.remove(&envelope.update_id) {
                        Outcome::Failed {
                            reason: "memory sink told to fail".into(),
                            fatal: false,
                        }
                    } else {
                        state.delivered.push(envelope.clone());
                        Outcome::Delivered
                    }
                })
                .collect()
        }
        .boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome> {
        self.state.lock().unwrap().dead_letters.push(letter.clone());
        let reason = letter.reason.clone();
        futures::future::ready(Outcome::DeadLettered { reason }).boxed()
    }

    fn is_ready(&self) -> bool {
        !self.state.lock().unwrap().down
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }
}
