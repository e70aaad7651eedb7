//! One call as a service published it, checked; and the result message it gets, in
//! the wire contract's shape (see README, "Calling the Bot API through the broker").
//!
//! A call is refused, never run, when its method is not allowed, its body is not a
//! JSON object, its `tg-reply-to` names no usable route, or an option header is
//! malformed. A refusal is answered like Telegram answers a bad request:
//! `{"ok":false,"error_code":400,...}`. Every result says in `tg-outcome` what
//! became of the call (see [`Outcome`]).

use std::time::SystemTime;

use bytes::Bytes;

pub use super::answer::{relay_answer, Answered, Outcome, UNKNOWN_CODE};
use super::body;
use super::limiter::ChatKey;
use super::methods;
pub use super::options::{Options, ALLOW_RETRY};
use super::reply_to::ReplyPolicy;
use crate::cloudevent::{DATA_CONTENT_TYPE, SPEC_VERSION};

/// The headers of a call.
pub const METHOD: &str = "tg-method";
pub const REQUEST_ID: &str = "tg-request-id";
pub const REPLY_TO: &str = "tg-reply-to";
/// On every result: what became of the call (see [`Outcome`]).
pub const OUTCOME: &str = "tg-outcome";
/// `ce-type` of results: `org.telegram.result.<method>`.
pub const RESULT_TYPE: &str = "org.telegram.result";
/// On results the relay makes itself (refusals, give-ups): why.
pub const RELAY_ERROR: &str = "tgrelay-error";

/// A call taken from the broker, as it came.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Option<String>,
    pub request_id: Option<String>,
    pub reply_to: Option<String>,
    /// The broker's id of the message: the JetStream stream sequence, or Kafka's
    /// `<partition>.<offset>`.
    pub broker_id: String,
    pub body: Bytes,
    /// When the broker stored it, when it says.
    pub published: Option<SystemTime>,
    pub options: Options,
}

/// A checked call, ready to run.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub chat: Option<ChatKey>,
    /// The inline message it edits, when it names no chat.
    pub inline_message: Option<String>,
    /// The business connection it goes through.
    pub business_connection: Option<String>,
    /// Messages Telegram counts for it (an album's items; the messages forwarded).
    pub weight: u32,
    /// A paid broadcast: its own budget, when the bot has one.
    pub paid: bool,
    /// It goes before bulk calls (`tg-priority`; `answer*` and `edit*` by default).
    pub interactive: bool,
    /// It makes or changes a message, so its chat's limits count it.
    pub message: bool,
    /// It may be sent again after an attempt that may have reached Telegram: the
    /// method is safe to repeat, or the caller allowed it.
    pub repeatable: bool,
    /// Not sent after this time (`tg-deadline`).
    pub deadline: Option<SystemTime>,
}

/// What a service is told for one call: where, with which headers, which body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub route: String,
    /// The Kafka key: the target chat, else the call's id.
    pub key: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Checks a call: `replies` says where its result may go.
pub fn check(request: &Request, allow: &[String], replies: &ReplyPolicy) -> Result<Call, String> {
    let method = request
        .method
        .as_deref()
        .ok_or("no tg-method header: name the Bot API method, e.g. tg-method: sendMessage")?;
    if let Some(why) = methods::refusal(method, allow) {
        return Err(why);
    }
    if let Some(route) = &request.reply_to {
        if !is_route(route) {
            return Err(format!(
                "tg-reply-to {route:?} is not a subject or topic results can go to"
            ));
        }
        if let Some(why) = replies.refusal(route) {
            return Err(why);
        }
    }
    let head = body::head(&request.body)?;
    let allow_retry = request.options.allow_retry()?;
    Ok(Call {
        method: method.to_owned(),
        chat: head.chat,
        inline_message: head.inline_message,
        business_connection: head.business_connection,
        weight: head.weight,
        paid: head.paid,
        interactive: request
            .options
            .interactive()?
            .unwrap_or_else(|| methods::is_interactive(method)),
        message: methods::is_message(method),
        repeatable: allow_retry || methods::is_repeatable(method),
        deadline: request.options.deadline()?,
    })
}

/// The call's `tg-reply-to`, when results may go there (see `reply_to`).
pub fn reply_route<'a>(request: &'a Request, replies: &ReplyPolicy) -> Option<&'a str> {
    request
        .reply_to
        .as_deref()
        .filter(|route| is_route(route) && replies.refusal(route).is_none())
}

/// A NATS subject or Kafka topic a result can be published to: no wildcards, no
/// empty tokens, what a Kafka topic name allows.
fn is_route(route: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !route.is_empty()
        && route.len() <= 249
        && route.chars().all(legal)
        && route.split('.').all(|token| !token.is_empty())
}

impl Reply {
    /// The result of `request` for bot `bot_id`: to its `tg-reply-to` (`reply_to`
    /// tells whether to use it), else to `default_route`; its chat is `chat`, else
    /// the one its body names.
    pub fn to(
        request: &Request,
        bot_id: u64,
        chat: Option<&ChatKey>,
        default_route: &str,
        use_reply_to: bool,
        answered: &Answered,
    ) -> Reply {
        let route = match &request.reply_to {
            Some(route) if use_reply_to => route.clone(),
            _ => default_route.to_owned(),
        };
        let ce_id = format!("{bot_id}:{}", request.broker_id);
        let named = body::head(&request.body).ok().and_then(|h| h.chat);
        let chat = chat.or(named.as_ref());
        let mut headers = cloud_event(request, bot_id, &ce_id, chat);
        if let Some(method) = &request.method {
            headers.push((METHOD, one_line(method)));
        }
        if let Some(id) = &request.request_id {
            headers.push((REQUEST_ID, one_line(id)));
        }
        headers.push((OUTCOME, answered.outcome.as_str().to_owned()));
        if let Some(error) = &answered.relay_error {
            headers.push((RELAY_ERROR, one_line(error)));
        }
        let key = match chat {
            Some(ChatKey::Id(id)) => id.to_string(),
            Some(chat) => chat.to_string(),
            None => request.request_id.clone().unwrap_or(ce_id),
        };
        Reply {
            route,
            key,
            headers,
            body: answered.body.clone(),
        }
    }
}

/// The CloudEvents attributes of a result, as the updates carry them (binary mode):
/// `ce-type` is `org.telegram.result.<method>`, `ce-subject` the chat when there is one.
fn cloud_event(
    request: &Request,
    bot_id: u64,
    ce_id: &str,
    chat: Option<&ChatKey>,
) -> Vec<(&'static str, String)> {
    let kind = match request.method.as_deref() {
        Some(method) if methods::is_method_name(method) => format!("{RESULT_TYPE}.{method}"),
        _ => RESULT_TYPE.to_owned(),
    };
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let mut headers = vec![
        ("ce-specversion", SPEC_VERSION.to_owned()),
        ("ce-id", ce_id.to_owned()),
        ("ce-source", format!("/telegram/bot/{bot_id}")),
        ("ce-type", kind),
        ("ce-time", now),
        ("content-type", DATA_CONTENT_TYPE.to_owned()),
    ];
    if let Some(chat) = chat {
        headers.push(("ce-subject", chat.to_string()));
    }
    headers
}

/// Header values are one line.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Option<&str>, body: &str) -> Request {
        Request {
            method: method.map(str::to_owned),
            request_id: Some("r-1".into()),
            reply_to: None,
            broker_id: "7".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            published: None,
            options: Options::default(),
        }
    }

    fn replies() -> ReplyPolicy {
        let config = super::super::OutboundConfig {
            subject: "out.{bot}".into(),
            results: "out.{bot}.results".into(),
            ..Default::default()
        };
        ReplyPolicy::new(&config, "main", 1)
    }

    fn allow() -> Vec<String> {
        methods::DEFAULT_ALLOW
            .iter()
            .map(|m| m.to_string())
            .collect()
    }

    #[test]
    fn the_chat_is_read_from_every_form_of_chat_id() {
        let cases = [
            (r#"{"chat_id":42,"text":"hi"}"#, Some(ChatKey::Id(42))),
            (
                r#"{"text":"hi","chat_id":"-100123"}"#,
                Some(ChatKey::Id(-100123)),
            ),
            (
                r#" {"chat_id":"@News"}"#,
                Some(ChatKey::Username("news".into())),
            ),
            (r#"{"callback_query_id":"x"}"#, None),
            (r#"{"chat_id":{"odd":1}}"#, None),
        ];
        for (body, chat) in cases {
            let call = check(&request(Some("sendMessage"), body), &allow(), &replies()).unwrap();
            assert_eq!(call.chat, chat, "{body}");
        }
    }

    #[test]
    fn what_cannot_be_run_is_refused_with_a_reason() {
        let refused = |method: Option<&str>, body: &str, reply_to: Option<&str>| {
            let mut r = request(method, body);
            r.reply_to = reply_to.map(str::to_owned);
            check(&r, &allow(), &replies()).unwrap_err()
        };
        assert!(refused(None, "{}", None).contains("no tg-method"));
        assert!(refused(Some("getUpdates"), "{}", None).contains("never executed"));
        assert!(refused(Some("sendMessage"), "[1,2]", None).contains("not a JSON object"));
        assert!(refused(Some("sendMessage"), "{\"chat_id\":", None).contains("not a JSON object"));
        assert!(refused(Some("sendMessage"), "{}", Some("out.*")).contains("tg-reply-to"));
        assert!(refused(Some("sendMessage"), "{}", Some("out.main")).contains("tg-reply-to"));
        assert!(refused(Some("sendMessage"), "{}", Some("a..b")).contains("tg-reply-to"));
        assert!(refused(Some("sendMessage"), "{}", Some("svc.replies")).contains("tg-reply-to"));
        let mut inbox = request(Some("sendMessage"), "{}");
        inbox.reply_to = Some("_INBOX.x1".into());
        assert!(check(&inbox, &allow(), &replies()).is_ok());
        let mut r = request(Some("sendMessage"), "{}");
        r.options.allow_retry = Some("maybe".into());
        assert!(check(&r, &allow(), &replies())
            .unwrap_err()
            .contains(ALLOW_RETRY));
    }

    #[test]
    fn a_message_is_repeated_only_when_the_caller_allows_it() {
        let mut r = request(Some("sendMessage"), r#"{"chat_id":1,"text":"x"}"#);
        assert!(!check(&r, &allow(), &replies()).unwrap().repeatable);
        r.options.allow_retry = Some("TRUE".into());
        assert!(check(&r, &allow(), &replies()).unwrap().repeatable);
        let edit = request(Some("editMessageText"), r#"{"chat_id":1,"text":"x"}"#);
        assert!(check(&edit, &allow(), &replies()).unwrap().repeatable);
    }

    #[test]
    fn a_result_carries_the_contract_headers_and_goes_where_asked() {
        let mut r = request(Some("sendMessage"), "{}");
        r.reply_to = Some("svc.replies".into());
        let chat = ChatKey::Id(-5);
        let refused = Answered::refused("x\ny");
        let reply = Reply::to(&r, 9, Some(&chat), "out.main.results", true, &refused);
        assert_eq!(
            (reply.route.as_str(), reply.key.as_str()),
            ("svc.replies", "-5")
        );
        let header = |name| {
            reply
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("ce-id"), Some("9:7"));
        assert_eq!(header("ce-specversion"), Some("1.0"));
        assert_eq!(header("ce-source"), Some("/telegram/bot/9"));
        assert_eq!(header("ce-type"), Some("org.telegram.result.sendMessage"));
        assert_eq!(header("ce-subject"), Some("-5"));
        assert!(header("ce-time").is_some_and(|t| humantime::parse_rfc3339(t).is_ok()));
        assert_eq!(header(METHOD), Some("sendMessage"));
        assert_eq!(header(REQUEST_ID), Some("r-1"));
        assert_eq!(header(RELAY_ERROR), Some("x y"));
        assert_eq!(header(OUTCOME), Some("refused"));
        let parsed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(parsed["error_code"], 400);
        assert_eq!(parsed["ok"], false);

        let told = Answered {
            body: Bytes::from_static(br#"{"ok":true,"result":true}"#),
            relay_error: None,
            outcome: Outcome::Ok,
        };
        let reply = Reply::to(&r, 9, None, "out.main.results", false, &told);
        assert_eq!(
            (reply.route.as_str(), reply.key.as_str()),
            ("out.main.results", "r-1")
        );
        assert!(reply.headers.iter().all(|(n, _)| *n != RELAY_ERROR));
    }
}
