//! Which Bot API methods the gateway runs, and which of them make messages.
//!
//! Telegram matches method names case-insensitively, so every comparison here does
//! too: `GETUPDATES` is getUpdates, and is refused like it.

/// The default allow-list: the families a service answering users needs.
pub const DEFAULT_ALLOW: &[&str] = &[
    "send*", "edit*", "delete*", "answer*", "copy*", "forward*", "pin*", "unpin*",
];

/// Always refused, whatever the allow-list says: each would break the relay's own
/// updates (another poller, a webhook set or removed behind its back) or the token.
pub const ALWAYS_REFUSED: &[&str] = &[
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "logOut",
    "close",
];

/// Run only when `outbound.allow` names them, never through a family (`send*`,
/// `delete*`): they spend the bot's Stars, or delete more than a message.
pub const BY_NAME_ONLY: &[(&str, &str)] = &[
    ("sendGift", SPENDS),
    ("giftPremiumSubscription", SPENDS),
    ("transferGift", SPENDS),
    ("upgradeGift", SPENDS),
    ("convertGiftToStars", SPENDS),
    ("transferBusinessAccountStars", SPENDS),
    ("refundStarPayment", SPENDS),
    ("editUserStarSubscription", SPENDS),
    ("deleteStickerSet", DELETES),
    ("deleteStickerFromSet", DELETES),
    ("deleteChatPhoto", DELETES),
    ("deleteChatStickerSet", DELETES),
    ("deleteForumTopic", DELETES),
    ("deleteMyCommands", DELETES),
    ("deleteStory", DELETES),
];
const SPENDS: &str = "spends the bot's Stars";
const DELETES: &str = "deletes more than a message";

/// A method name as it may appear in a URL path: 1-64 ASCII letters and digits.
pub fn is_method_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a method is not executed, or `None` when it is.
pub fn refusal(method: &str, allow: &[String]) -> Option<String> {
    if !is_method_name(method) {
        return Some("the tg-method header is not a Bot API method name".into());
    }
    if ALWAYS_REFUSED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(method))
    {
        return Some(format!(
            "{method} is never executed through the broker: it would break the relay's own updates"
        ));
    }
    if !allow.iter().any(|pattern| matches(pattern, method)) {
        return Some(format!("{method} is not in outbound.allow"));
    }
    let named = |name: &str| allow.iter().any(|p| p.eq_ignore_ascii_case(name));
    match BY_NAME_ONLY
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(method))
    {
        Some((name, what)) if !named(name) => Some(format!(
            "{method} {what}: it runs only when outbound.allow names it, not through a family"
        )),
        _ => None,
    }
}

/// `send*` matches every name starting with `send`; a plain name matches itself.
fn matches(pattern: &str, method: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => method
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
        None => pattern.eq_ignore_ascii_case(method),
    }
}

/// Whether a call makes or changes a message in its chat, so the chat's flood limit
/// counts it: send* (but sendChatAction), copy*, forward* and edit*. Deleting,
/// pinning, answering and chat actions count against the bot only.
pub fn is_message(method: &str) -> bool {
    let lower = method.to_ascii_lowercase();
    if lower == "sendchataction" {
        return false;
    }
    ["send", "copy", "forward", "edit"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Families a repeat of which changes nothing more than the first call did: reads,
/// edits and settings (the same state set twice), deletes and unpins (gone is gone),
/// answers to a query (Telegram takes one answer per query).
const REPEATABLE_FAMILIES: &[&str] = &["get", "edit", "set", "delete", "pin", "unpin"];

/// Single methods a repeat of which changes nothing more.
const REPEATABLE: &[&str] = &[
    "sendChatAction",
    "answerCallbackQuery",
    "answerInlineQuery",
    "answerShippingQuery",
    "answerPreCheckoutQuery",
    "banChatMember",
    "unbanChatMember",
    "banChatSenderChat",
    "unbanChatSenderChat",
    "restrictChatMember",
    "promoteChatMember",
    "approveChatJoinRequest",
    "declineChatJoinRequest",
    "stopPoll",
    "stopMessageLiveLocation",
    "leaveChat",
    "readBusinessMessage",
    "closeForumTopic",
    "reopenForumTopic",
    "closeGeneralForumTopic",
    "reopenGeneralForumTopic",
    "hideGeneralForumTopic",
    "unhideGeneralForumTopic",
];

/// Whether the relay may send `method` again after an attempt that may have reached
/// Telegram without an answer (a timeout, a reset, a 5xx). Everything not known to be
/// safe is not: a message sent twice reaches its user twice.
pub fn is_repeatable(method: &str) -> bool {
    REPEATABLE.iter().any(|m| m.eq_ignore_ascii_case(method))
        || REPEATABLE_FAMILIES.iter().any(|family| {
            method.len() > family.len()
                && matches(&format!("{family}*"), method)
                && method.as_bytes()[family.len()].is_ascii_uppercase()
        })
}

/// Whether a call answers a user who is waiting (a callback, an inline query) or
/// edits what they interact with: it goes before bulk calls unless told otherwise.
pub fn is_interactive(method: &str) -> bool {
    ["answer", "edit"]
        .iter()
        .any(|family| matches(&format!("{family}*"), method))
}

/// Problems of an allow-list: malformed entries, and entries naming a method that is
/// always refused (which would silently do nothing).
pub fn check_allow_list(allow: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for entry in allow {
        let name = entry.strip_suffix('*').unwrap_or(entry);
        if !is_method_name(name) {
            errors.push(format!(
                "{entry:?} is not a method name or a family like \"send*\""
            ));
        } else if !entry.ends_with('*') && refusal(entry, allow).is_some() {
            errors.push(format!("{entry:?} is always refused; remove it"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_ALLOW.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn the_default_families_run_and_the_inbound_side_is_never_touched() {
        let allow = defaults();
        for method in [
            "sendMessage",
            "sendChatAction",
            "editMessageText",
            "deleteMessage",
            "answerCallbackQuery",
            "copyMessage",
            "forwardMessages",
            "pinChatMessage",
            "unpinAllChatMessages",
            "SENDMESSAGE",
        ] {
            assert_eq!(refusal(method, &allow), None, "{method}");
        }
        for method in [
            "getUpdates",
            "deleteWebhook",
            "DELETEWEBHOOK",
            "setWebhook",
            "logOut",
            "close",
            "CLOSE",
        ] {
            let why = refusal(method, &allow).expect(method);
            assert!(why.contains("never executed"), "{why}");
        }
        for method in [
            "sendGift",
            "DELETESTICKERSET",
            "deleteForumTopic",
            "editUserStarSubscription",
        ] {
            let why = refusal(method, &allow).expect(method);
            assert!(why.contains("not through a family"), "{why}");
        }
        let mut named = allow.clone();
        named.push("sendgift".into());
        assert_eq!(refusal("sendGift", &named), None);
        for method in ["getChat", "banChatMember", "setMyCommands"] {
            let why = refusal(method, &allow).expect(method);
            assert!(why.contains("not in outbound.allow"), "{why}");
        }
        for method in ["", "send/../getMe", "sendMessage?x=1", "send Message"] {
            let why = refusal(method, &allow).expect(method);
            assert!(why.contains("not a Bot API method name"), "{method}: {why}");
        }
    }

    #[test]
    fn a_plain_name_allows_that_method_only() {
        let allow = vec!["getChat".to_owned()];
        assert_eq!(refusal("getchat", &allow), None);
        assert!(refusal("getChatMember", &allow).is_some());
        assert!(check_allow_list(&["deleteWebhook".into()])[0].contains("always refused"));
        assert!(check_allow_list(&defaults()).is_empty());
    }

    #[test]
    fn only_methods_known_to_be_safe_are_repeated() {
        for method in [
            "getChat",
            "editMessageText",
            "deleteMessage",
            "setMessageReaction",
            "answerCallbackQuery",
            "sendChatAction",
            "pinChatMessage",
            "unpinAllChatMessages",
        ] {
            assert!(is_repeatable(method), "{method}");
        }
        for method in [
            "sendMessage",
            "sendMediaGroup",
            "copyMessages",
            "forwardMessage",
            "sendGift",
            "createChatInviteLink",
            "exportChatInviteLink",
            "answerWebAppQuery",
            "setting",
            "someFutureMethod",
        ] {
            assert!(!is_repeatable(method), "{method}");
        }
    }

    #[test]
    fn messages_count_against_their_chat() {
        for method in [
            "sendMessage",
            "sendPhoto",
            "copyMessage",
            "forwardMessage",
            "editMessageText",
        ] {
            assert!(is_message(method), "{method}");
        }
        for method in [
            "sendChatAction",
            "deleteMessage",
            "answerCallbackQuery",
            "pinChatMessage",
        ] {
            assert!(!is_message(method), "{method}");
        }
    }
}
