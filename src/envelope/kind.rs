//! `UpdateKind`: which optional field of Update an update carries.
//!
//! The known list is Bot API 10.3's (a test checks it against the published type
//! data, with the kinds added after it named one by one). This one list is the
//! enum, the default `allowed_updates` and the CloudEvents types; the chat and user
//! are found by a rule that needs no entry per kind (see `head`). So a kind a new
//! Bot API adds is one line below. Until then it is still relayed under its own
//! name (`Other`), once asked for; only a name that could not be a Bot API field,
//! or an update with zero or several optional fields, becomes `unknown`.

use std::fmt;
use std::sync::Arc;

macro_rules! update_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// The kind of an update, named as its field in the Bot API's Update object.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum UpdateKind {
            $($variant,)*
            /// A field this build does not know yet, relayed under its own name.
            Other(Arc<str>),
            /// No optional field, several, or a name that is not a field name.
            Unknown,
        }

        impl UpdateKind {
            /// Every kind this build knows, in the Bot API's order.
            pub const KNOWN: &'static [UpdateKind] = &[$(UpdateKind::$variant,)*];

            /// The kind for an Update field name.
            pub fn from_field(name: &str) -> UpdateKind {
                match name {
                    $($name => UpdateKind::$variant,)*
                    other if is_field_name(other) => UpdateKind::Other(Arc::from(other)),
                    _ => UpdateKind::Unknown,
                }
            }

            /// CloudEvents `type`: `org.telegram.update.<kind>` (static for known kinds).
            pub fn ce_type(&self) -> std::borrow::Cow<'static, str> {
                match self {
                    $(UpdateKind::$variant => std::borrow::Cow::Borrowed(concat!("org.telegram.update.", $name)),)*
                    UpdateKind::Other(name) => std::borrow::Cow::Owned(format!("org.telegram.update.{name}")),
                    UpdateKind::Unknown => std::borrow::Cow::Borrowed("org.telegram.update.unknown"),
                }
            }

            /// The field name, as used in CloudEvents `type` and routing `{kind}`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(UpdateKind::$variant => $name,)*
                    UpdateKind::Other(name) => name,
                    UpdateKind::Unknown => "unknown",
                }
            }
        }
    };
}

update_kinds! {
    Message => "message",
    EditedMessage => "edited_message",
    ChannelPost => "channel_post",
    EditedChannelPost => "edited_channel_post",
    BusinessConnection => "business_connection",
    BusinessMessage => "business_message",
    EditedBusinessMessage => "edited_business_message",
    DeletedBusinessMessages => "deleted_business_messages",
    GuestMessage => "guest_message",
    MessageReaction => "message_reaction",
    MessageReactionCount => "message_reaction_count",
    InlineQuery => "inline_query",
    ChosenInlineResult => "chosen_inline_result",
    CallbackQuery => "callback_query",
    ShippingQuery => "shipping_query",
    PreCheckoutQuery => "pre_checkout_query",
    PurchasedPaidMedia => "purchased_paid_media",
    Poll => "poll",
    PollAnswer => "poll_answer",
    MyChatMember => "my_chat_member",
    ChatMember => "chat_member",
    ChatJoinRequest => "chat_join_request",
    ChatBoost => "chat_boost",
    RemovedChatBoost => "removed_chat_boost",
    ManagedBot => "managed_bot",
    Subscription => "subscription",
    StoppedMessageGeneration => "stopped_message_generation",
}

/// Bot API field names are short lower_snake_case; anything else would be unsafe
/// in a NATS subject or Kafka topic, so it is not trusted as a kind.
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

impl fmt::Display for UpdateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_round_trip() {
        for kind in UpdateKind::KNOWN {
            assert_eq!(&UpdateKind::from_field(kind.as_str()), kind);
            assert!(is_field_name(kind.as_str()), "{kind}");
        }
        let names: std::collections::HashSet<&str> =
            UpdateKind::KNOWN.iter().map(UpdateKind::as_str).collect();
        assert_eq!(names.len(), UpdateKind::KNOWN.len(), "no name twice");
    }

    #[test]
    fn the_kinds_of_bot_api_10_2_and_10_3_are_known() {
        for (name, kind) in [
            ("subscription", UpdateKind::Subscription),
            (
                "stopped_message_generation",
                UpdateKind::StoppedMessageGeneration,
            ),
        ] {
            assert_eq!(UpdateKind::from_field(name), kind);
            assert_eq!(kind.ce_type(), format!("org.telegram.update.{name}"));
        }
    }

    #[test]
    fn a_later_field_keeps_its_name() {
        let kind = UpdateKind::from_field("story_reaction");
        assert_eq!(kind, UpdateKind::Other(Arc::from("story_reaction")));
        assert_eq!(kind.as_str(), "story_reaction");
    }

    #[test]
    fn names_unsafe_for_routing_are_unknown() {
        for bad in [
            "",
            "a.b",
            "a>b",
            "Message",
            "a b",
            "_x",
            "9lives",
            &"x".repeat(65),
        ] {
            assert_eq!(UpdateKind::from_field(bad), UpdateKind::Unknown, "{bad:?}");
        }
    }
}
