//! `ConnectingSink`: the relay's sink from the moment it starts, before and after its
//! broker first answers.
//!
//! A broker that is down when the relay starts is an outage like any other: the relay
//! runs, reports not ready, fetches nothing (no bot starts before the broker answered)
//! and answers webhooks 503 so Telegram retries. Once the broker is connected every
//! call goes straight to the real sink.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Sink, SinkKind};
use crate::ack::Outcome;
use crate::envelope::{DeadLetter, Envelope};

pub struct ConnectingSink {
    name: &'static str,
    connected: OnceLock<Arc<dyn Sink>>,
}

const NOT_YET: &str = "not connected to the broker yet";

impl ConnectingSink {
    pub fn new(kind: SinkKind) -> ConnectingSink {
        ConnectingSink {
            name: kind.name(),
            connected: OnceLock::new(),
        }
    }

    /// The broker answered: from now on everything goes to `sink`.
    pub fn connected(&self, sink: Arc<dyn Sink>) {
        let _ = self.connected.set(sink);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get().is_some()
    }
}

fn not_yet() -> Outcome {
    Outcome::Failed {
        reason: NOT_YET.into(),
        fatal: false,
    }
}

impl Sink for ConnectingSink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>> {
        match self.connected.get() {
            Some(sink) => sink.publish(batch),
            None => futures::future::ready(batch.iter().map(|_| not_yet()).collect()).boxed(),
        }
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome> {
        match self.connected.get() {
            Some(sink) => sink.dead_letter(letter),
            None => futures::future::ready(not_yet()).boxed(),
        }
    }

    fn is_ready(&self) -> bool {
        self.connected.get().is_some_and(|s| s.is_ready())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        match self.connected.get() {
            Some(sink) => sink.close(),
            None => futures::future::ready(()).boxed(),
        }
    }
}
