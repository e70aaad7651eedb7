//! The parameters of the calls the relay makes and the answers it reads, as sent and
//! received on the wire.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// getUpdates parameters. `allowed_updates` is always sent, so a value set by an
/// earlier caller never sticks silently.
#[derive(Debug, Clone)]
pub struct GetUpdates<'a> {
    pub offset: Option<i64>,
    pub limit: u8,
    pub timeout: u32,
    pub allowed_updates: &'a AllowedUpdates,
}

impl GetUpdates<'_> {
    /// The JSON body; the kinds are written as serialized once, not again per call.
    pub(super) fn body(&self) -> String {
        use std::fmt::Write as _;
        let mut body = String::with_capacity(64 + self.allowed_updates.0.len());
        body.push('{');
        if let Some(offset) = self.offset {
            let _ = write!(body, "\"offset\":{offset},");
        }
        let _ = write!(
            body,
            "\"limit\":{},\"timeout\":{},\"allowed_updates\":{}}}",
            self.limit, self.timeout, self.allowed_updates.0
        );
        body
    }
}

/// `allowed_updates` as the JSON array sent with every getUpdates: serialized once and
/// shared (cheap to clone), so ten thousand bots asking for the same kinds hold one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUpdates(Arc<str>);

impl AllowedUpdates {
    pub fn new(kinds: &[String]) -> AllowedUpdates {
        let json = serde_json::to_string(kinds).expect("strings serialize");
        AllowedUpdates(json.into())
    }
}

/// The bot itself, from getMe.
#[derive(Debug, Clone, Deserialize)]
pub struct BotUser {
    pub id: i64,
    pub username: Option<String>,
}

/// setWebhook parameters. `drop_pending_updates` is sent only when true.
#[derive(Debug, Clone, Serialize)]
pub struct SetWebhook<'a> {
    pub url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_token: Option<&'a str>,
    pub allowed_updates: &'a [String],
    pub max_connections: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drop_pending_updates: bool,
}

/// getWebhookInfo's answer (the fields the relay reads).
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
pub struct WebhookInfo {
    pub url: String,
    #[serde(default)]
    pub has_custom_certificate: bool,
    pub ip_address: Option<String>,
    #[serde(default)]
    pub pending_update_count: i64,
    pub last_error_date: Option<i64>,
    pub last_error_message: Option<String>,
    pub max_connections: Option<i64>,
    pub allowed_updates: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_get_updates_body_is_the_json_serde_would_write() {
        let kinds = vec!["message".to_owned(), "chat_member".to_owned()];
        let allowed = AllowedUpdates::new(&kinds);
        for offset in [None, Some(42)] {
            let request = GetUpdates {
                offset,
                limit: 100,
                timeout: 30,
                allowed_updates: &allowed,
            };
            let mut expected = serde_json::json!({
                "limit": 100, "timeout": 30, "allowed_updates": kinds,
            });
            if let Some(offset) = offset {
                expected["offset"] = offset.into();
            }
            let body: serde_json::Value = serde_json::from_str(&request.body()).unwrap();
            assert_eq!(body, expected);
        }
    }
}
