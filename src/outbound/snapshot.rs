//! What a bot's limiter remembers, saved to the broker so that its next owner (after a
//! handover, a crash or a restart) keeps the limits this one was keeping: a group's
//! last minute of messages and every pause a 429 asked for outlive the process.
//!
//! A clean stop saves a last snapshot after its last call; the next owner continues
//! from it exactly. After a crash the latest snapshot may miss what the old owner
//! sent since; the executor never lets its memory go unsaved for longer than
//! [`UNSAVED_LIMIT`] while sending, so each chat had at most [`PHANTOMS`] messages
//! since, and the next owner counts that many against every chat, as of its start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::limiter::{is_idle, ChatKey, ChatMemory, Limiter, Limits};

/// How long the executor may keep sending while its memory is not saved.
pub const UNSAVED_LIMIT: Duration = Duration::from_secs(2);
/// What a crashed owner may have sent to one chat after its last save: one message
/// per second for `UNSAVED_LIMIT`, and one in flight.
pub const PHANTOMS: usize = 3;
/// Clocks of two replicas may differ this much; times read back are moved this much
/// later, which only makes the limits stricter.
const CLOCK_MARGIN: Duration = Duration::from_millis(100);
/// A saved snapshot stays under this size (a NATS message is 1 MiB at most by
/// default): chats beyond it are left out, the least recent first, and the snapshot
/// is then read as if from a crash. At 30 calls a second a bot has at most 1,800
/// chats with a limit running, far below it.
const MAX_BYTES: usize = 512 * 1024;

/// The saved form: times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: u64,
    /// Saved by an owner that stopped cleanly: nothing was sent after it.
    pub last: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_next_call: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_paused_until: Option<u64>,
    pub chats: Vec<ChatEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEntry {
    /// The chat id in decimal, or `@username`.
    pub chat: String,
    pub answers: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<u64>,
}

/// Converts between the monotonic clock and Unix milliseconds at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub unix: SystemTime,
}

impl Clock {
    pub fn current() -> Clock {
        Clock {
            now: Instant::now(),
            unix: SystemTime::now(),
        }
    }

    fn to_unix_ms(self, at: Instant) -> u64 {
        let unix = if at >= self.now {
            self.unix + (at - self.now)
        } else {
            self.unix - (self.now - at)
        };
        unix.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn to_instant(self, ms: u64) -> Instant {
        let then = UNIX_EPOCH + Duration::from_millis(ms) + CLOCK_MARGIN;
        match then.duration_since(self.unix) {
            Ok(ahead) => self.now + ahead,
            Err(behind) => self.now.checked_sub(behind.duration()).unwrap_or(self.now),
        }
    }
}

impl Snapshot {
    /// What `limiter` must pass on, as JSON of at most `MAX_BYTES`; `last` when
    /// nothing will be sent after it.
    pub fn save(limiter: &Limiter, clock: Clock, last: bool) -> Vec<u8> {
        let mut max_chats = usize::MAX;
        loop {
            let snapshot = Snapshot::of(limiter, clock, last, max_chats);
            let bytes = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
            if bytes.len() <= MAX_BYTES || snapshot.chats.is_empty() {
                return bytes;
            }
            max_chats = snapshot.chats.len() / 2;
        }
    }

    /// What `limiter` must pass on, at most `max_chats` chats of it.
    fn of(limiter: &Limiter, clock: Clock, last: bool, max_chats: usize) -> Snapshot {
        let limits = limiter.limits();
        let mut live: Vec<(&ChatKey, &ChatMemory)> = limiter
            .chats
            .iter()
            .filter(|(chat, m)| !is_idle(chat, m, limits, clock.now))
            .collect();
        let truncated = live.len() > max_chats;
        if truncated {
            live.sort_by_key(|(_, m)| std::cmp::Reverse(m.answers.back().copied()));
            live.truncate(max_chats);
        }
        let ms = |at: Instant| clock.to_unix_ms(at);
        Snapshot {
            taken_at: ms(clock.now),
            last: last && !truncated,
            bot_next_call: limiter.next_call().filter(|t| *t > clock.now).map(ms),
            bot_paused_until: limiter.bot_paused_until.filter(|t| *t > clock.now).map(ms),
            chats: live
                .into_iter()
                .map(|(chat, m)| ChatEntry {
                    chat: chat.to_string(),
                    answers: m.answers.iter().copied().map(ms).collect(),
                    paused_until: m.paused_until.filter(|t| *t > clock.now).map(ms),
                })
                .collect(),
        }
    }

    /// A limiter that continues from this snapshot.
    pub fn restore(&self, limits: Limits, clock: Clock) -> Limiter {
        let at = |ms: u64| clock.to_instant(ms);
        let mut limiter = Limiter::new(limits);
        if self.last {
            limiter.set_next_call(self.bot_next_call.map(at));
        }
        limiter.bot_paused_until = self.bot_paused_until.map(at);
        for entry in &self.chats {
            let Some(chat) = parse_chat(&entry.chat) else {
                continue;
            };
            let mut memory = ChatMemory {
                answers: entry.answers.iter().copied().map(at).collect(),
                paused_until: entry.paused_until.map(at),
            };
            if !self.last {
                memory
                    .answers
                    .extend(std::iter::repeat_n(clock.now, PHANTOMS));
            }
            limiter.chats.insert(chat, memory);
        }
        if !self.last {
            limiter.baseline = Some((clock.now, PHANTOMS));
        }
        limiter.trim();
        limiter
    }
}

fn parse_chat(text: &str) -> Option<ChatKey> {
    match text.strip_prefix('@') {
        Some(name) => Some(ChatKey::Username(name.to_ascii_lowercase())),
        None => text.parse().ok().map(ChatKey::Id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::limiter::Scope;

    fn limits() -> Limits {
        Limits::new(30.0, 1.0, 20.0)
    }

    #[test]
    fn a_clean_handover_continues_exactly() {
        let clock = Clock::current();
        let mut old = Limiter::new(limits());
        let group = ChatKey::Id(-100);
        for i in 0..20 {
            old.answered(&group, clock.now + Duration::from_secs(i));
        }
        old.pause(
            &Scope::Chat(ChatKey::Username("news".into())),
            clock.now + Duration::from_secs(30),
        );
        old.pause(&Scope::Bot, clock.now + Duration::from_secs(5));
        let later = Clock {
            now: clock.now + Duration::from_secs(20),
            unix: clock.unix + Duration::from_secs(20),
        };
        let text = Snapshot::save(&old, later, true);
        let read: Snapshot = serde_json::from_slice(&text).unwrap();
        assert_eq!(read, Snapshot::of(&old, later, true, usize::MAX));

        let new = read.restore(limits(), later);
        let margin = CLOCK_MARGIN + Duration::from_millis(1);
        let ready = new.chat_ready_at(&group, true, later.now);
        let expected = clock.now + Duration::from_secs(60);
        assert!(
            ready >= expected && ready <= expected + margin,
            "{:?}",
            ready - expected
        );
        let news = new.chat_ready_at(&ChatKey::Username("news".into()), false, later.now);
        assert!(news >= clock.now + Duration::from_secs(30));
        assert_eq!(
            new.bot_ready_at(later.now),
            later.now,
            "the bot pause ended"
        );
        assert_eq!(
            new.chat_ready_at(&ChatKey::Id(5), true, later.now),
            later.now
        );
    }

    #[test]
    fn after_a_crash_every_chat_counts_what_may_have_gone_unsaved() {
        let clock = Clock::current();
        let mut old = Limiter::new(limits());
        let group = ChatKey::Id(-100);
        for i in 0..10 {
            old.answered(&group, clock.now + Duration::from_secs(i));
        }
        let saved = Snapshot::of(
            &old,
            Clock {
                now: clock.now + Duration::from_secs(10),
                unix: clock.unix + Duration::from_secs(10),
            },
            false,
            usize::MAX,
        );
        let start = Clock {
            now: clock.now + Duration::from_secs(15),
            unix: clock.unix + Duration::from_secs(15),
        };
        let mut new = saved.restore(limits(), start);
        let count_until = |limiter: &mut Limiter, chat: &ChatKey, end: Instant| {
            let mut now = start.now;
            let mut sent = 0;
            while limiter.chat_ready_at(chat, true, now) < end {
                now = limiter.chat_ready_at(chat, true, now);
                limiter.answered(chat, now);
                sent += 1;
            }
            sent
        };
        let minute = clock.now + Duration::from_secs(60);
        assert_eq!(count_until(&mut new, &group, minute), 20 - 10 - PHANTOMS);
        let unknown = ChatKey::Id(-200);
        assert!(new.chat_ready_at(&unknown, true, start.now) >= start.now + Duration::from_secs(1));
        assert_eq!(
            count_until(&mut new, &unknown, start.now + Duration::from_secs(59)),
            20 - PHANTOMS
        );
    }

    #[test]
    fn a_snapshot_too_large_keeps_the_latest_chats_and_reads_as_after_a_crash() {
        let clock = Clock::current();
        let mut limiter = Limiter::new(limits());
        for chat in 0..40_000 {
            let at = clock.now + Duration::from_micros(chat as u64);
            limiter.answered(&ChatKey::Id(-1_000_000_000_000 - chat), at);
        }
        let bytes = Snapshot::save(&limiter, clock, true);
        assert!(bytes.len() <= MAX_BYTES, "{}", bytes.len());
        let read: Snapshot = serde_json::from_slice(&bytes).unwrap();
        assert!(!read.last && !read.chats.is_empty());
        let newest = (-1_000_000_000_000i64 - 39_999).to_string();
        assert!(read.chats.iter().any(|c| c.chat == newest));
    }

    #[test]
    fn chats_parse_back_as_they_were_written() {
        for chat in [
            ChatKey::Id(-1001234567890),
            ChatKey::Id(42),
            ChatKey::Username("news".into()),
        ] {
            assert_eq!(parse_chat(&chat.to_string()), Some(chat));
        }
        assert_eq!(parse_chat("nonsense"), None);
    }
}
