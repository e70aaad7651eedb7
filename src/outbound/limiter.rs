//! Flood control for one bot, pure: every method is told the time, so the tests drive
//! the clock. Telegram does not publish its algorithm, so each limit here is kept in
//! a form that also satisfies a stricter reading of it, whatever the network adds:
//!
//! - **the bot**: calls are paced evenly, one per `(1 s + 40 ms) / rate`, and a timer
//!   firing up to 5 ms late is caught up rather than lost, so the bot sends 96 % of
//!   `rate`. No second at Telegram sees more than `rate` calls (sliding window or
//!   token bucket alike) unless one call is delayed 35 ms more than another on the way.
//! - **a chat**: its next message waits `gap` after the *answer* to its previous
//!   one; the answer comes after Telegram counted the message, so the gap there is
//!   longer than `gap` whatever the latency.
//! - **a group** (a negative id or an `@username`): also at most `per_window`
//!   messages per `window`, counted from their answers: a sliding window, which a
//!   token bucket or a fixed minute would allow too.
//! - **a 429** pauses its scope (a chat, or the bot) until the time it names.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// What lies between the relay deciding to send and Telegram counting the call:
/// one call may be delayed this much more than another without breaking a limit.
pub const JITTER_BUDGET: Duration = Duration::from_millis(40);
/// How late a timer may fire and still keep the bot's schedule (a busy thread, a
/// timer wheel of 1 ms ticks); it comes off the jitter budget.
const CATCH_UP: Duration = Duration::from_millis(5);

/// A chat as a call names it: `chat_id` is an integer or an `@username`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatKey {
    Id(i64),
    /// Lowercased, without the `@` (Telegram usernames are case-insensitive).
    Username(String),
}

impl ChatKey {
    /// Users have positive ids; groups, supergroups and channels negative ones, and
    /// only supergroups and channels have usernames.
    pub fn is_group(&self) -> bool {
        !matches!(self, ChatKey::Id(id) if *id > 0)
    }
}

impl std::fmt::Display for ChatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatKey::Id(id) => write!(f, "{id}"),
            ChatKey::Username(name) => write!(f, "@{name}"),
        }
    }
}

/// The limits of one bot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Between two calls of the bot, on average.
    pub bot_interval: Duration,
    /// From the answer to a message in a chat to the next message there.
    pub gap: Duration,
    /// Messages per `window` in a group.
    pub per_window: usize,
    pub window: Duration,
    /// Between two paid broadcasts, when the bot may make them (their own budget).
    pub paid_interval: Option<Duration>,
}

impl Limits {
    /// `bot_rate` calls per second, `chat_rate` messages per second in a chat,
    /// `group_rate` messages per minute in a group.
    pub fn new(bot_rate: f64, chat_rate: f64, group_rate: f64) -> Limits {
        let per_window = (group_rate.floor() as usize).max(1);
        Limits {
            bot_interval: (Duration::from_secs(1) + JITTER_BUDGET).div_f64(bot_rate),
            gap: Duration::from_secs_f64(1.0 / chat_rate),
            per_window,
            window: Duration::from_secs(60).mul_f64(per_window as f64 / group_rate),
            paid_interval: None,
        }
    }

    /// With a budget of `rate` paid broadcasts per second.
    pub fn with_paid(mut self, rate: Option<f64>) -> Limits {
        self.paid_interval = rate.map(|r| (Duration::from_secs(1) + JITTER_BUDGET).div_f64(r));
        self
    }
}

/// What a 429 pauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Chat(ChatKey),
    Bot,
}

/// What the limiter remembers of one chat.
#[derive(Debug, Clone, Default)]
pub(super) struct ChatMemory {
    /// Answers to its last messages, oldest first (groups keep `per_window`, users one).
    pub answers: VecDeque<Instant>,
    pub paused_until: Option<Instant>,
}

/// Flood control of one bot.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// When the bot's next call is due (its schedule).
    next_call: Option<Instant>,
    /// When its next paid broadcast is due.
    next_paid: Option<Instant>,
    pub(super) bot_paused_until: Option<Instant>,
    pub(super) chats: HashMap<ChatKey, ChatMemory>,
    /// What every chat not yet seen is assumed to have had: `count` answers at
    /// `at` (after a predecessor's unclean end; see `snapshot`).
    pub(super) baseline: Option<(Instant, usize)>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            next_call: None,
            next_paid: None,
            bot_paused_until: None,
            chats: HashMap::new(),
            baseline: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When the bot may make its next call.
    pub fn bot_ready_at(&self, now: Instant) -> Instant {
        let scheduled = self.next_call.unwrap_or(now);
        scheduled.max(self.bot_paused_until.unwrap_or(now)).max(now)
    }

    /// When a call to `chat` may go as far as the chat is concerned; `message`: the
    /// call makes or changes a message (see `methods::is_message`).
    pub fn chat_ready_at(&self, chat: &ChatKey, message: bool, now: Instant) -> Instant {
        let memory = self.chats.get(chat);
        let baseline = self.baseline_for(chat);
        let memory = memory.or(baseline.as_ref());
        let Some(memory) = memory else {
            return now;
        };
        let mut at = memory.paused_until.unwrap_or(now).max(now);
        if message {
            if let Some(last) = memory.answers.back() {
                at = at.max(*last + self.limits.gap);
            }
            if chat.is_group() && memory.answers.len() >= self.limits.per_window {
                let oldest = memory.answers[memory.answers.len() - self.limits.per_window];
                at = at.max(oldest + self.limits.window);
            }
        }
        at
    }

    /// Until when a 429 paused the bot, or `chat`, whichever is later.
    pub fn paused_until(&self, chat: Option<&ChatKey>) -> Option<Instant> {
        let chat = chat.and_then(|c| self.chats.get(c)?.paused_until);
        self.bot_paused_until.max(chat)
    }

    /// When the bot may make its next paid broadcast (a 429 pause holds them too).
    pub fn paid_ready_at(&self, now: Instant) -> Instant {
        let scheduled = self.next_paid.unwrap_or(now);
        scheduled.max(self.bot_paused_until.unwrap_or(now)).max(now)
    }

    /// Spends the bot's turn on a call made now (when `bot_ready_at` allowed it).
    pub fn take(&mut self, now: Instant) {
        self.take_n(now, 1, false);
    }

    /// Spends `weight` turns of the bot's budget, or of its paid budget, on a call
    /// made now: an album costs its items.
    pub fn take_n(&mut self, now: Instant, weight: u32, paid: bool) {
        let (next, interval) = match (paid, self.limits.paid_interval) {
            (true, Some(interval)) => (&mut self.next_paid, interval),
            _ => (&mut self.next_call, self.limits.bot_interval),
        };
        let scheduled = next.unwrap_or(now);
        // A timer that fired a little late keeps the schedule; after an idle spell the
        // schedule starts again from now (no saved-up burst).
        let base = scheduled.max(now.checked_sub(CATCH_UP).unwrap_or(now));
        *next = Some(base + interval * weight.max(1));
    }

    /// The answer to a message in `chat` came now.
    pub fn answered(&mut self, chat: &ChatKey, now: Instant) {
        self.answered_n(chat, now, 1);
    }

    /// The answer to `weight` messages in `chat` (an album) came now.
    pub fn answered_n(&mut self, chat: &ChatKey, now: Instant, weight: u32) {
        let keep = if chat.is_group() {
            self.limits.per_window
        } else {
            1
        };
        let memory = self.memory(chat);
        memory
            .answers
            .extend(std::iter::repeat_n(now, weight.max(1) as usize));
        while memory.answers.len() > keep {
            memory.answers.pop_front();
        }
    }

    /// A 429 asked to wait until `until`.
    pub fn pause(&mut self, scope: &Scope, until: Instant) {
        let slot = match scope {
            Scope::Bot => &mut self.bot_paused_until,
            Scope::Chat(chat) => &mut self.memory(chat).paused_until,
        };
        *slot = Some(slot.map_or(until, |t| t.max(until)));
    }

    /// Forgets chats whose every limit has run out, so memory follows the active chats.
    pub fn forget_idle(&mut self, now: Instant) {
        let limits = self.limits;
        self.chats.retain(|chat, m| !is_idle(chat, m, &limits, now));
        if self
            .baseline
            .is_some_and(|(at, _)| at + limits.window.max(limits.gap) <= now)
        {
            self.baseline = None;
        }
    }

    pub(super) fn next_call(&self) -> Option<Instant> {
        self.next_call
    }

    pub(super) fn set_next_call(&mut self, at: Option<Instant>) {
        self.next_call = at;
    }

    /// Keeps the answers each chat's limits read: a group's window, a user's last.
    pub(super) fn trim(&mut self) {
        let per_window = self.limits.per_window;
        for (chat, memory) in &mut self.chats {
            let keep = if chat.is_group() { per_window } else { 1 };
            memory.answers.make_contiguous().sort();
            while memory.answers.len() > keep {
                memory.answers.pop_front();
            }
        }
    }

    pub fn chats_remembered(&self) -> usize {
        self.chats.len()
    }

    fn memory(&mut self, chat: &ChatKey) -> &mut ChatMemory {
        if !self.chats.contains_key(chat) {
            let start = self.baseline_for(chat).unwrap_or_default();
            self.chats.insert(chat.clone(), start);
        }
        self.chats.get_mut(chat).expect("inserted above")
    }

    fn baseline_for(&self, chat: &ChatKey) -> Option<ChatMemory> {
        let (at, count) = self.baseline?;
        let count = if chat.is_group() {
            count.min(self.limits.per_window)
        } else {
            1
        };
        Some(ChatMemory {
            answers: std::iter::repeat_n(at, count).collect(),
            paused_until: None,
        })
    }
}

/// No limit of `chat` can delay anything any more.
pub(super) fn is_idle(chat: &ChatKey, m: &ChatMemory, limits: &Limits, now: Instant) -> bool {
    let paused = m.paused_until.is_some_and(|t| t > now);
    let pacing = m.answers.back().is_some_and(|t| *t + limits.gap > now);
    let window = chat.is_group() && m.answers.front().is_some_and(|t| *t + limits.window > now);
    !(paused || pacing || window)
}

#[cfg(test)]
mod tests;
