//! `Health`: what `/readyz` reports.
//!
//! The pod's readiness is about the pod: its sink reaches the broker, and its webhook
//! listener is bound where it takes webhooks. A bot that cannot run (a revoked token,
//! a second poller) says so through its own metrics and alert, and here only in the
//! detailed view: one bad token among many must not take every pod out of its Service.
//! Each bot's state is kept for that view, and for `tgrelay_source_up`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// What one bot's source is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Starting, or retrying after an error.
    NotReady,
    /// Polling (its getUpdates accepted), or its webhook registered.
    Ready,
    /// Stopped for good: Telegram refused its token. It stays so until its settings change.
    Failed,
}

impl SourceState {
    pub fn label(self) -> &'static str {
        match self {
            SourceState::NotReady => "not ready",
            SourceState::Ready => "ready",
            SourceState::Failed => "failed (token refused; stopped until its settings change)",
        }
    }
}

/// The webhook listener, where the relay takes webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Some bot may take webhooks, and the listener is not bound yet.
    Binding,
    Bound(SocketAddr),
}

#[derive(Default)]
pub struct Health {
    sources: Mutex<BTreeMap<String, SourceState>>,
    listener: Mutex<Option<ListenerState>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether a bot's source is healthy now.
    pub fn set_source(&self, bot: &str, up: bool) {
        let state = if up {
            SourceState::Ready
        } else {
            SourceState::NotReady
        };
        self.set_state(bot, state);
    }

    /// Records that a bot stopped for good (its token was refused).
    pub fn set_failed(&self, bot: &str) {
        self.set_state(bot, SourceState::Failed);
    }

    fn set_state(&self, bot: &str, state: SourceState) {
        let mut sources = self.sources.lock().unwrap();
        // Every poll says so: no new key (an allocation) when the bot is known.
        match sources.get_mut(bot) {
            Some(known) => *known = state,
            None => {
                sources.insert(bot.to_owned(), state);
            }
        }
    }

    /// Forgets a bot this replica no longer runs.
    pub fn remove_source(&self, bot: &str) {
        self.sources.lock().unwrap().remove(bot);
    }

    /// Every source registered so far, with its state.
    pub fn sources(&self) -> BTreeMap<String, SourceState> {
        self.sources.lock().unwrap().clone()
    }

    /// This relay takes webhooks: it is not ready until the listener is bound.
    pub fn expect_listener(&self) {
        *self.listener.lock().unwrap() = Some(ListenerState::Binding);
    }

    pub fn listener_bound(&self, addr: SocketAddr) {
        *self.listener.lock().unwrap() = Some(ListenerState::Bound(addr));
    }

    /// The webhook listener's state; `None` when the relay takes no webhooks.
    pub fn listener(&self) -> Option<ListenerState> {
        *self.listener.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_bot_stays_failed_until_it_reports_again() {
        let health = Health::new();
        health.set_source("good", true);
        health.set_source("bad", false);
        health.set_failed("bad");
        assert_eq!(health.sources()["bad"], SourceState::Failed);
        // Started again (a new token): its source reports as any other.
        health.set_source("bad", false);
        assert_eq!(health.sources()["bad"], SourceState::NotReady);
        assert_eq!(health.sources()["good"], SourceState::Ready);
    }

    #[test]
    fn the_listener_is_expected_before_it_is_bound() {
        let health = Health::new();
        assert_eq!(health.listener(), None);
        health.expect_listener();
        assert_eq!(health.listener(), Some(ListenerState::Binding));
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        health.listener_bound(addr);
        assert_eq!(health.listener(), Some(ListenerState::Bound(addr)));
    }
}
