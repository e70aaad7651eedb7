//! The fake Bot API's sending side: sendMessage and the few other methods services
//! call to answer users, answering as Telegram does (a `Message` whose `message_id`
//! grows per chat, `true` for deletes, actions and callback answers), recording each
//! call with its arrival time, and keeping Telegram's flood limits: a call over a
//! limit is answered 429 with `retry_after` and recorded as a flood refusal.
//!
//! Telegram does not publish its flood-control algorithm; the fake reads each
//! documented limit as a sliding window over arrival times, the strictest of the
//! usual readings (a token bucket, or a fixed minute, allows everything it allows):
//! - per bot: at most `bot_per_second` calls of these methods in any second;
//! - per chat: at most `chat_per_second` messages in any second;
//! - per group (negative id or `@username`): at most `group_per_minute` messages in
//!   any minute.
//!
//! "Messages" are what makes or changes one: send* but sendChatAction, copy*,
//! forward*, edit*. Deleting, pinning, answering callbacks and chat actions count
//! against the bot only. A test can inject a 429 for one chat, and the usual faults
//! (5xx, slow answers) per method through `FakeBotApi::inject_on`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::{int_param, str_param, Reply};

/// The limits the fake keeps; Telegram's documented ones by default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimits {
    pub bot_per_second: usize,
    pub chat_per_second: usize,
    pub group_per_minute: usize,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            bot_per_second: 30,
            chat_per_second: 1,
            group_per_minute: 20,
        }
    }
}

/// One send-side call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// As sent (Telegram matches it case-insensitively).
    pub method: String,
    /// `chat_id` as given (a number, or `@username`), when the call had one.
    pub chat: Option<String>,
    pub params: Value,
    pub at: Instant,
    pub status: u16,
    /// The limit a 429 of the fake's flood control named (`bot`, `chat`, `group`).
    pub flood: Option<&'static str>,
}

#[derive(Default)]
pub struct Sends {
    state: Mutex<SendState>,
}

#[derive(Default)]
struct SendState {
    limits: FloodLimits,
    bots: HashMap<String, BotSends>,
}

#[derive(Default)]
struct BotSends {
    calls: VecDeque<Instant>,
    /// Per chat: arrival times of its messages in the last minute.
    chats: HashMap<String, VecDeque<Instant>>,
    /// Per chat: the last message id given, and the ids still there.
    messages: HashMap<String, (i64, Vec<i64>)>,
    /// 429s to answer the next calls to a chat, with their retry_after.
    injected: HashMap<String, VecDeque<u64>>,
    sent: Vec<Sent>,
}

impl Sends {
    fn state(&self) -> MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_limits(&self, limits: FloodLimits) {
        self.state().limits = limits;
    }

    /// The next call to `chat` (as the call names it) is answered 429 `retry_after`.
    pub fn inject_429(&self, token: &str, chat: &str, retry_after: u64) {
        let mut state = self.state();
        let bot = state.bots.entry(token.to_owned()).or_default();
        bot.injected
            .entry(chat.to_owned())
            .or_default()
            .push_back(retry_after);
    }

    /// Every send-side call of this bot, in order of arrival.
    pub fn sent(&self, token: &str) -> Vec<Sent> {
        self.state()
            .bots
            .get(token)
            .map(|b| b.sent.clone())
            .unwrap_or_default()
    }

    /// Calls the fake's flood control refused: each one a limit exceeded.
    pub fn flood_refusals(&self, token: &str) -> Vec<Sent> {
        self.sent(token)
            .into_iter()
            .filter(|s| s.flood.is_some())
            .collect()
    }

    /// Answers a send-side method, or `None` when `method` is not one.
    pub(super) fn answer(
        &self,
        token: &str,
        bot_id: i64,
        method: &str,
        params: &Map<String, Value>,
    ) -> Option<Reply> {
        let lower = method.to_ascii_lowercase();
        if !is_known(&lower) {
            return None;
        }
        let chat = str_param(params, "chat_id");
        let now = Instant::now();
        let mut state = self.state();
        let limits = state.limits;
        let bot = state.bots.entry(token.to_owned()).or_default();
        let (status, reply, flood) =
            match bot.admit(&limits, chat.as_deref(), is_message(&lower), now) {
                Err((scope, retry_after)) => (429, too_many(retry_after), Some(scope)),
                Ok(()) => match chat
                    .as_deref()
                    .and_then(|c| bot.injected.get_mut(c)?.pop_front())
                {
                    Some(retry_after) => (429, too_many(retry_after), None),
                    None => {
                        let reply = bot.execute(bot_id, &lower, chat.as_deref(), params);
                        (reply_status(&reply), reply, None)
                    }
                },
            };
        bot.sent.push(Sent {
            method: method.to_owned(),
            chat,
            params: Value::Object(params.clone()),
            at: now,
            status,
            flood,
        });
        Some(reply)
    }
}

fn is_known(method: &str) -> bool {
    matches!(
        method,
        "sendmessage"
            | "sendphoto"
            | "senddocument"
            | "sendchataction"
            | "copymessage"
            | "forwardmessage"
            | "editmessagetext"
            | "deletemessage"
            | "answercallbackquery"
            | "pinchatmessage"
    )
}

fn is_message(method: &str) -> bool {
    method != "sendchataction"
        && ["send", "copy", "forward", "edit"]
            .iter()
            .any(|p| method.starts_with(p))
}

fn is_group(chat: &str) -> bool {
    chat.starts_with('@') || chat.starts_with('-')
}

impl BotSends {
    /// Applies the flood limits to a call arriving now; counts it when admitted.
    fn admit(
        &mut self,
        limits: &FloodLimits,
        chat: Option<&str>,
        message: bool,
        now: Instant,
    ) -> Result<(), (&'static str, u64)> {
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        prune(&mut self.calls, now, second);
        check(&self.calls, limits.bot_per_second, second, now).map_err(|w| ("bot", w))?;
        if let (true, Some(chat)) = (message, chat) {
            let times = self.chats.entry(chat.to_owned()).or_default();
            prune(times, now, minute);
            let last_second: VecDeque<Instant> = times
                .iter()
                .copied()
                .filter(|t| now.duration_since(*t) < second)
                .collect();
            check(&last_second, limits.chat_per_second, second, now).map_err(|w| ("chat", w))?;
            if is_group(chat) {
                check(times, limits.group_per_minute, minute, now).map_err(|w| ("group", w))?;
            }
            times.push_back(now);
        }
        self.calls.push_back(now);
        Ok(())
    }

    fn execute(
        &mut self,
        bot_id: i64,
        method: &str,
        chat: Option<&str>,
        params: &Map<String, Value>,
    ) -> Reply {
        let Some(chat) = chat else {
            return match method {
                "answercallbackquery" if str_param(params, "callback_query_id").is_some() => {
                    Reply::ok("true")
                }
                "answercallbackquery" => Reply::error(400, "Bad Request: query_id is empty"),
                _ => Reply::error(400, "Bad Request: chat_id is empty"),
            };
        };
        let (last_id, ids) = self.messages.entry(chat.to_owned()).or_default();
        match method {
            "sendchataction" | "pinchatmessage" => Reply::ok("true"),
            "deletemessage" => {
                let id = int_param(params, "message_id").unwrap_or(0);
                match ids.iter().position(|m| *m == id) {
                    Some(at) => {
                        ids.remove(at);
                        Reply::ok("true")
                    }
                    None => Reply::error(400, "Bad Request: message to delete not found"),
                }
            }
            "editmessagetext" => {
                let id = int_param(params, "message_id").unwrap_or(0);
                if !ids.contains(&id) {
                    return Reply::error(400, "Bad Request: message to edit not found");
                }
                Reply::ok(&message(bot_id, chat, id, params).to_string())
            }
            "sendmessage" if str_param(params, "text").is_none_or(|t| t.is_empty()) => {
                Reply::error(400, "Bad Request: message text is empty")
            }
            _ => {
                *last_id += 1;
                ids.push(*last_id);
                let result = match method {
                    "copymessage" => json!({ "message_id": *last_id }),
                    _ => message(bot_id, chat, *last_id, params),
                };
                Reply::ok(&result.to_string())
            }
        }
    }
}

/// Drops arrival times older than `window`.
fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// `Err(retry_after)` when `limit` calls already arrived within `window` of now.
fn check(
    times: &VecDeque<Instant>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Result<(), u64> {
    let recent: Vec<&Instant> = times
        .iter()
        .filter(|t| now.duration_since(**t) < window)
        .collect();
    if recent.len() < limit {
        return Ok(());
    }
    let frees_at = *recent[recent.len() - limit] + window;
    Err(frees_at.duration_since(now).as_secs_f64().ceil().max(1.0) as u64)
}

fn too_many(retry_after: u64) -> Reply {
    Reply::json(
        429,
        format!(
            r#"{{"ok":false,"error_code":429,"description":"Too Many Requests: retry after {retry_after}","parameters":{{"retry_after":{retry_after}}}}}"#
        ),
    )
}

fn reply_status(reply: &Reply) -> u16 {
    reply.status()
}

/// A `Message` as Telegram returns it for a message the bot sent to `chat`.
fn message(bot_id: i64, chat: &str, id: i64, params: &Map<String, Value>) -> Value {
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let chat = match chat.strip_prefix('@') {
        Some(name) => {
            json!({ "id": -1_000_000_000_000i64 - name.len() as i64, "type": "channel", "title": name, "username": name })
        }
        None => {
            let id: i64 = chat.parse().unwrap_or(0);
            if id < 0 {
                json!({ "id": id, "type": "supergroup", "title": format!("Group {id}") })
            } else {
                json!({ "id": id, "type": "private", "first_name": format!("User {id}") })
            }
        }
    };
    let mut message = json!({
        "message_id": id,
        "from": { "id": bot_id, "is_bot": true, "first_name": "Fake", "username": format!("fake_{bot_id}_bot") },
        "chat": chat,
        "date": date,
    });
    for field in ["text", "caption"] {
        if let Some(value) = params.get(field) {
            message[field] = value.clone();
        }
    }
    if let Some(photo) = str_param(params, "photo") {
        message["photo"] =
            json!([{ "file_id": photo, "file_unique_id": "u1", "width": 90, "height": 90 }]);
    }
    message
}
