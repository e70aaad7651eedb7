//! Keeping the limiter's memory saved while sending (see `snapshot`): saved each
//! second while it changes, and no call sent while a change has gone unsaved for
//! `UNSAVED_LIMIT`, so a crash loses at most that much of it.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::super::broker::LimitsStore;
use super::super::limiter::{Limiter, Limits};
use super::super::snapshot::{Clock, Snapshot, UNSAVED_LIMIT};

pub struct Saving {
    bot: String,
    store: Arc<dyn LimitsStore>,
    /// The first change not yet saved.
    dirty_since: Option<Instant>,
    /// The first change made while a save was under way (that save misses it).
    dirty_during_save: Option<Instant>,
    in_progress: Option<JoinHandle<Result<(), String>>>,
    failures: u32,
}

impl Saving {
    pub fn new(bot: &str, store: Arc<dyn LimitsStore>) -> Saving {
        Saving {
            bot: bot.to_owned(),
            store,
            dirty_since: None,
            dirty_during_save: None,
            in_progress: None,
            failures: 0,
        }
    }

    /// The limiter the last owner left, or a cautious one when its memory is unreadable.
    pub async fn load(&self, limits: Limits) -> Result<Limiter, String> {
        let clock = Clock::current();
        let Some(bytes) = self.store.load().await? else {
            return Ok(Limiter::new(limits));
        };
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(snapshot) => Ok(snapshot.restore(limits, clock)),
            Err(e) => {
                tracing::warn!(bot = %self.bot, error = %e, "the saved flood-limit memory is unreadable; starting cautiously");
                Ok(cautious(limits, clock))
            }
        }
    }

    /// The limiter's memory changed now.
    pub fn mark(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
        if self.in_progress.is_some() {
            self.dirty_during_save.get_or_insert(now);
        }
    }

    /// Whether a call may be sent now: no change has gone unsaved too long.
    pub fn may_send(&self, now: Instant) -> bool {
        self.dirty_since
            .is_none_or(|since| now.duration_since(since) < UNSAVED_LIMIT)
    }

    /// Starts saving, when there is something to save and no save is under way.
    pub fn start(&mut self, limiter: &Limiter) {
        if self.dirty_since.is_none() || self.in_progress.is_some() {
            return;
        }
        let bytes = Snapshot::save(limiter, Clock::current(), false);
        let store = Arc::clone(&self.store);
        self.dirty_during_save = None;
        self.in_progress = Some(tokio::spawn(async move { store.save(bytes).await }));
    }

    pub fn is_saving(&self) -> bool {
        self.in_progress.is_some()
    }

    /// Resolves when the save under way ends (never, when none is).
    pub async fn finished(&mut self) {
        match &mut self.in_progress {
            Some(task) => {
                let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
                self.in_progress = None;
                self.record(result);
            }
            None => std::future::pending().await,
        }
    }

    fn record(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.dirty_since = self.dirty_during_save.take();
                self.failures = 0;
            }
            Err(error) => {
                if self.failures % 10 == 0 {
                    tracing::warn!(bot = %self.bot, %error, "saving the flood-limit memory failed; calls wait for it");
                }
                self.failures += 1;
            }
        }
    }

    /// Saves the memory a last time, when nothing more will be sent.
    pub async fn save_last(&mut self, limiter: &Limiter) {
        if let Some(task) = self.in_progress.take() {
            let _ = task.await;
        }
        let bytes = Snapshot::save(limiter, Clock::current(), true);
        if let Err(error) = self.store.save(bytes).await {
            tracing::warn!(bot = %self.bot, %error, "could not save the flood-limit memory at stop; the next owner starts cautiously");
        }
    }
}

/// A limiter that assumes every chat just had as much as a crashed owner could send.
fn cautious(limits: Limits, clock: Clock) -> Limiter {
    let snapshot = Snapshot {
        taken_at: 0,
        last: false,
        bot_next_call: None,
        bot_paused_until: None,
        chats: Vec::new(),
    };
    snapshot.restore(limits, clock)
}
