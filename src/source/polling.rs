//! `PollingSource`: getUpdates long polling, confirming only what a broker acked.
//!
//! One loop per bot: fetch a batch, publish it all concurrently, await every outcome,
//! then move the offset past the unbroken run of safe updates (`ack::confirm_offset`).
//! The offset reaches Telegram with the next getUpdates, which is what confirms;
//! a failed publish holds it, so Telegram sends the rest again after a backoff.
//! On shutdown (or when the bot is stopped alone) the loop stops fetching, finishes
//! the batch in hand and sends one last `getUpdates(offset, limit=1, timeout=0)` so a
//! clean restart replays nothing. When this replica's lease lapses it stops at once,
//! even mid long poll, and sends nothing more: the bot may be another replica's now.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::BotContext;
use crate::ack::{confirm_offset, Outcome};
use crate::backoff::Backoff;
use crate::envelope::{malformed_id, DeadLetter, Envelope};
use crate::telegram::{AllowedUpdates, ErrorClass, GetUpdates, RawUpdate, TelegramError};

/// Polling settings of one bot.
#[derive(Debug, Clone)]
pub struct PollingSettings {
    pub timeout_secs: u32,
    pub limit: u8,
    pub allowed_updates: AllowedUpdates,
    pub delete_webhook: bool,
    pub backoff: Backoff,
}

/// Why a bot's polling stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("bot {bot}: {error}; this bot stops (check its token)")]
pub struct PollingStopped {
    pub bot: String,
    pub error: TelegramError,
}

pub struct PollingSource {
    ctx: BotContext,
    settings: PollingSettings,
    /// Offset to send next: one past the last update safe in a broker.
    offset: Option<i64>,
    /// Consecutive failed Bot API calls.
    fetching: Streak,
    /// Consecutive batches the sink did not fully take.
    publishing: Streak,
    /// Reported up (readiness, `tgrelay_source_up`) since its last error.
    up: bool,
}

/// How long a getUpdates may stay open before it counts as accepted: Telegram answers
/// a refusal within a round trip.
const ACCEPTED_AFTER: Duration = Duration::from_secs(1);

/// A run of consecutive failures: drives the backoff, and logs only what changes.
#[derive(Debug, Default)]
struct Streak {
    count: u32,
    label: Option<String>,
}

impl Streak {
    /// Records a failure; returns the backoff attempt and whether this label is new.
    fn fail(&mut self, label: &str) -> (u32, bool) {
        let attempt = self.count;
        self.count = self.count.saturating_add(1);
        let new = self.label.as_deref() != Some(label);
        self.label = Some(label.to_owned());
        (attempt, new)
    }

    /// Records a success; returns whether a streak of failures just ended.
    fn succeed(&mut self) -> bool {
        self.count = 0;
        self.label.take().is_some()
    }
}

impl PollingSource {
    pub fn new(ctx: BotContext, settings: PollingSettings) -> Self {
        PollingSource {
            ctx,
            settings,
            offset: None,
            fetching: Streak::default(),
            publishing: Streak::default(),
            up: false,
        }
    }

    /// Runs until `shutdown` (then confirms what is safe) or a fatal error.
    ///
    /// A bot spends its life waiting on a long poll, with this future as its task: the
    /// steps it takes only now and then (start, publishing a batch, the last confirm)
    /// are boxed, so that the task holds the long poll's state alone, not the largest
    /// step's (about 10 KiB a bot otherwise).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), PollingStopped> {
        if !Box::pin(self.start(&shutdown)).await? {
            return Ok(());
        }
        let lease = self.ctx.lease.clone();
        let taken = self.ctx.taken.clone();
        while !shutdown.is_cancelled() && lease.is_valid() && !taken.is_cancelled() {
            let fetched = tokio::select! {
                // In this order: a getUpdates is sent only while the bot is still ours.
                biased;
                // Another replica may take the bot over from now on: stop at once.
                _ = lease.lapsed() => break,
                _ = taken.cancelled() => break,
                _ = shutdown.cancelled() => break,
                fetched = self.fetch() => fetched,
            };
            let delay = match fetched {
                Ok(updates) => Box::pin(self.relay(updates)).await,
                Err(error) => self.on_error(error)?,
            };
            if let Some(delay) = delay {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        if lease.is_valid() && !taken.is_cancelled() {
            Box::pin(self.confirm_on_shutdown()).await;
        } else {
            // Not ours any more: the new owner's getUpdates confirms (and we would cut
            // its long poll short with a 409). What we published comes again: duplicates.
            tracing::info!(bot = %self.ctx.bot.name, "lease lapsed or bot taken over; stopped polling without a final confirm");
        }
        Ok(())
    }

    /// Checks the token (getMe) and removes a stale webhook if asked to.
    /// Returns false when shutdown came first.
    async fn start(&mut self, shutdown: &CancellationToken) -> Result<bool, PollingStopped> {
        loop {
            let (ctx, api) = (&self.ctx, &self.ctx.api);
            let started = async {
                // Thousands of bots starting at once would dial as many connections at
                // once: a few hundred at a time start sooner, and Telegram sees no storm.
                let _turn = ctx.starting.turn().await;
                let me = ctx.observed("getMe", api.get_me()).await?;
                if self.settings.delete_webhook {
                    let info = ctx
                        .observed("getWebhookInfo", api.get_webhook_info())
                        .await?;
                    if !info.url.is_empty() {
                        // Pending updates are kept: polling picks them up.
                        ctx.observed("deleteWebhook", api.delete_webhook(false))
                            .await?;
                        tracing::warn!(bot = %self.ctx.bot.name, "deleted a webhook that blocked polling");
                    }
                }
                Ok::<_, TelegramError>(me)
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                result = started => result,
            };
            let delay = match result {
                Ok(me) => {
                    tracing::info!(bot = %self.ctx.bot.name, bot_id = me.id,
                        username = me.username.as_deref().unwrap_or(""), "polling for updates");
                    return Ok(true);
                }
                Err(error) => self.on_error(error)?,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay.unwrap_or_default()) => {}
            }
        }
    }

    async fn fetch(&mut self) -> Result<Vec<RawUpdate>, TelegramError> {
        let result = if self.up {
            self.get_updates().await
        } else {
            // Boxed: only a bot not yet up carries the timer, and only for this call.
            let (result, accepted) = Box::pin(self.get_updates_until_accepted()).await;
            self.up |= accepted;
            result
        };
        if result.is_ok() {
            self.on_success();
        }
        result
    }

    /// One getUpdates from the current offset, counted like every call.
    async fn get_updates(&self) -> Result<Vec<RawUpdate>, TelegramError> {
        let request = GetUpdates {
            offset: self.offset,
            limit: self.settings.limit,
            timeout: self.settings.timeout_secs,
            allowed_updates: &self.settings.allowed_updates,
        };
        let api = &self.ctx.api;
        self.ctx
            .observed("getUpdates", api.get_updates(&request))
            .await
    }

    /// getUpdates for a bot not yet up. Telegram refuses a poll at once (a refused
    /// token, a second poller, a webhook set) and holds one it accepted until updates
    /// come or the timeout ends: a poll still open after `ACCEPTED_AFTER` was accepted,
    /// and the bot is up from then on, not only when a quiet bot's long poll returns.
    /// Returns the result, and whether the poll was seen accepted before it.
    async fn get_updates_until_accepted(&self) -> (Result<Vec<RawUpdate>, TelegramError>, bool) {
        let mut call = std::pin::pin!(self.get_updates());
        tokio::select! {
            result = &mut call => (result, false),
            _ = tokio::time::sleep(ACCEPTED_AFTER) => {
                self.ctx.set_up(true);
                (call.await, true)
            }
        }
    }

    fn on_success(&mut self) {
        if let Some(offset) = self.offset {
            let name = &self.ctx.bot.name;
            self.ctx
                .metrics
                .last_confirmed_update_id
                .with_label_values(&[name])
                .set(offset - 1);
        }
        if self.fetching.succeed() {
            tracing::info!(bot = %self.ctx.bot.name, "the Bot API answers again");
        }
        self.up = true;
        self.ctx.set_up(true);
    }

    /// Publishes a batch, moves the offset, and says how long to wait before the next fetch.
    async fn relay(&mut self, updates: Vec<RawUpdate>) -> Option<Duration> {
        if updates.is_empty() {
            return None;
        }
        let received_at = SystemTime::now();
        let mut envelopes = Vec::with_capacity(updates.len());
        let mut letters = Vec::new();
        for update in updates {
            match update.head {
                Ok(head) => envelopes.push(Envelope::from_head(
                    &self.ctx.bot,
                    head,
                    update.bytes,
                    received_at,
                )),
                Err(malformed) => letters.push((
                    envelopes.len(),
                    self.dead_letter(malformed.reason, update.bytes, received_at),
                )),
            }
        }
        let (outcomes, letter_outcomes) = futures::join!(
            self.ctx.publish(&envelopes),
            futures::future::join_all(letters.iter().map(|(_, l)| self.ctx.sink.dead_letter(l)))
        );
        let mut safe: Vec<(i64, bool)> = envelopes
            .iter()
            .zip(&outcomes)
            .map(|(e, o)| (e.update_id, o.is_safe()))
            .collect();
        // A malformed item that is not safe holds back the update after it (its own id
        // is unreadable, but Telegram's ids ascend, so it sits before that one).
        for ((position, _), outcome) in letters.iter().zip(&letter_outcomes) {
            if !outcome.is_safe() {
                if let Some(next) = safe.get_mut(*position) {
                    next.1 = false;
                }
            }
        }
        if let Some(offset) = confirm_offset(&safe) {
            self.offset = Some(offset);
        }
        let failed = outcomes
            .iter()
            .chain(&letter_outcomes)
            .find(|o| !o.is_safe());
        match failed {
            None => {
                if self.publishing.succeed() {
                    tracing::info!(bot = %self.ctx.bot.name, "the broker takes updates again");
                }
                None
            }
            Some(Outcome::Failed { reason, fatal }) => Some(self.publish_failed(reason, *fatal)),
            Some(_) => unreachable!("only Failed is unsafe"),
        }
    }

    fn dead_letter(
        &self,
        reason: String,
        payload: bytes::Bytes,
        received_at: SystemTime,
    ) -> DeadLetter {
        self.ctx
            .metrics
            .malformed_updates
            .with_label_values(&[&self.ctx.bot.name])
            .inc();
        tracing::error!(bot = %self.ctx.bot.name, %reason, bytes = payload.len(),
            "Telegram sent an item that is not an update; sending it to the dead-letter route");
        DeadLetter {
            bot: Arc::clone(&self.ctx.bot),
            id: malformed_id(&payload),
            reason,
            payload,
            received_at,
        }
    }

    fn publish_failed(&mut self, reason: &str, fatal: bool) -> Duration {
        let label = if fatal { "publish_fatal" } else { "publish" };
        let (attempt, new) = self.publishing.fail(label);
        if new {
            if fatal {
                tracing::error!(bot = %self.ctx.bot.name, error = %reason,
                    "the broker refuses updates; holding the offset until it accepts them");
            } else {
                tracing::warn!(bot = %self.ctx.bot.name, error = %reason,
                    "publish failed; holding the offset and backing off");
            }
        }
        // Backed off the same way either way: a refusal can be passing (a JetStream
        // stream between leaders answers "no stream" for a few seconds after a node is
        // lost), and waiting the longest step at once would hold every update that long.
        self.settings.backoff.next_delay(attempt)
    }

    /// Sorts a Bot API error: how long to wait, or stop this bot.
    fn on_error(&mut self, error: TelegramError) -> Result<Option<Duration>, PollingStopped> {
        let bot = &self.ctx.bot.name;
        let (attempt, first) = self.fetching.fail(&error.code_label());
        let delay = match error.class() {
            ErrorClass::Unauthorized => {
                tracing::error!(%bot, error = %error, "Telegram refused the token");
                self.ctx.set_up(false);
                return Err(PollingStopped {
                    bot: bot.clone(),
                    error,
                });
            }
            ErrorClass::RetryAfter(wait) => {
                self.ctx
                    .metrics
                    .retry_after_seconds
                    .with_label_values(&[bot])
                    .inc_by(wait.as_secs());
                wait
            }
            ErrorClass::Conflict | ErrorClass::Transient => {
                self.settings.backoff.next_delay(attempt)
            }
        };
        if first {
            let wait_ms = delay.as_millis() as u64;
            if error.class() == ErrorClass::Conflict {
                tracing::warn!(%bot, error = %error, wait_ms,
                    "another getUpdates caller or a webhook holds this bot; backing off");
            } else {
                tracing::warn!(%bot, error = %error, wait_ms, "Bot API call failed; backing off");
            }
        } else {
            tracing::debug!(%bot, error = %error, "Bot API call failed again");
        }
        self.up = false;
        self.ctx.set_up(false);
        Ok(Some(delay))
    }

    /// Confirms the safe offset with a last, immediate getUpdates.
    async fn confirm_on_shutdown(&mut self) {
        let Some(offset) = self.offset else { return };
        let request = GetUpdates {
            offset: Some(offset),
            limit: 1,
            timeout: 0,
            allowed_updates: &self.settings.allowed_updates,
        };
        let bot = &self.ctx.bot.name;
        let confirm = self.ctx.api.get_updates(&request);
        match self.ctx.observed("getUpdates", confirm).await {
            Ok(_) => {
                self.ctx
                    .metrics
                    .last_confirmed_update_id
                    .with_label_values(&[bot])
                    .set(offset - 1);
                tracing::info!(%bot, confirmed_below = offset, "confirmed relayed updates on shutdown");
            }
            Err(error) => tracing::warn!(%bot, error = %error,
                "could not confirm on shutdown; the last batch will be relayed again on restart"),
        }
    }
}
