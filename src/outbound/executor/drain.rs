//! Stopping the executor: calls not sent go back in order, calls with Telegram are
//! waited for until they have their answer (at most `call_timeout`, whatever the
//! drain deadline says: a call handed over while it may still reach Telegram would be
//! sent twice), their results published up to the drain deadline, and the limiter's
//! memory saved a last time.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::broker::Taken;
use super::super::config::{ATTEMPT_MARGIN, RESULT_GRACE};
use super::Executor;

impl Executor {
    /// Stopping: calls not sent go back in order; calls with Telegram finish; the
    /// limiter's memory is saved a last time.
    pub(super) async fn drain(mut self, mut intake: mpsc::Receiver<Taken>) {
        let started = Instant::now();
        intake.close();
        let mut given_back = self.give_back().await;
        while let Ok(taken) = intake.try_recv() {
            taken.delivery.release().await;
            given_back += 1;
        }
        let answers_due = started + self.settings.call_timeout + ATTEMPT_MARGIN;
        while !self.attempts.is_empty() {
            tokio::select! {
                Some(done) = self.attempts.join_next() => {
                    self.settle(done.expect("an attempt does not panic"));
                    given_back += self.give_back().await;
                }
                _ = tokio::time::sleep_until(answers_due) => break,
            }
        }
        let abandoned = self.attempts.len();
        self.attempts.abort_all();
        let deadline = (started + self.settings.drain_timeout).max(Instant::now() + RESULT_GRACE);
        if abandoned == 0 {
            let _ = tokio::time::timeout_at(deadline, self.saving.save_last(&self.limiter)).await;
        }
        let finished = async { while self.finishing.join_next().await.is_some() {} };
        let unsettled = tokio::time::timeout_at(deadline, finished).await.is_err();
        self.finishing.abort_all();
        self.metrics
            .pending
            .with_label_values(&[&self.bot.name])
            .set(0);
        tracing::info!(bot = %self.bot.name, given_back, abandoned, unsettled, "outbound calls stopped");
    }

    /// Gives back every call not with Telegram now, in the order taken. A call whose
    /// key is claimed in the journal (its attempt failed before reaching Telegram, or
    /// it may be repeated) is forgotten there first, so its next owner sends it.
    async fn give_back(&mut self) -> usize {
        let mut count = 0;
        for job in self.lanes.drain_unstarted() {
            self.in_lanes.remove(&job.key);
            if job.journaled {
                if let Err(error) = self.journal.forget(&job.key).await {
                    // Its next owner answers it as unknown: never sent twice.
                    tracing::warn!(bot = %self.bot.name, %error, "cannot clear a call given back from the request journal");
                }
            }
            for taken in std::iter::once(job.taken).chain(job.followers) {
                taken.delivery.release().await;
                count += 1;
            }
        }
        count
    }
}
