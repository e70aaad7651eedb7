//! The small Bot API client: the few methods the relay calls, and token-safe errors.
//!
//! Every call is a POST with a JSON body to `{base}/bot{token}/{method}`. The token is
//! in every URL, so nothing here ever formats a URL into an error or a log line.

use std::time::Duration;

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::secret::Secret;

mod answer;
pub mod config;
mod error;
mod params;
pub mod reply;

use answer::Answer;
pub use config::{ClientError, TelegramConfig};
pub use error::{ErrorClass, TelegramError, DEFAULT_RETRY_AFTER};
pub use params::{AllowedUpdates, BotUser, GetUpdates, SetWebhook, WebhookInfo};
pub use reply::RawUpdate;

/// Default Bot API base URL; a local Bot API server is configured instead of it.
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";

/// How long the short methods (getMe, deleteWebhook, ...) may take.
const SHORT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// An idle pooled connection lives longer than the longest call (a 50 s long poll plus
/// `SHORT_CALL_TIMEOUT`), so one freed by a bot backing off is reused, not dialled again.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per host. Every bot's long poll holds a connection of its own
/// (HTTP/1.1), so what sits idle is only the few between one poll's end and the next,
/// and the extra dials of a pool checkout that was handed a freed connection first: at
/// thousands of bots, left unbounded, those were thousands of idle sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// A Bot API client for one bot.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
}

/// The method label of errors from [`BotApi::call_raw`], whose method names are the
/// callers' (the caller logs the name itself).
pub const RAW_CALL: &str = "Bot API call";

/// Telegram's answer to a call made on a service's behalf: the status and the body
/// exactly as sent, and what the relay makes of them.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub body: Bytes,
    /// `None` for `ok: true`; else the error, whose class says whether to retry.
    pub error: Option<TelegramError>,
}

impl BotApi {
    pub fn new(http: reqwest::Client, base_url: &str, token: Secret) -> Self {
        BotApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The shared HTTP client every bot uses (one connection pool per process), with
    /// the default `[telegram]` settings.
    pub fn http_client() -> reqwest::Client {
        Self::http_client_with(&TelegramConfig::default()).expect("the TLS backend initialises")
    }

    /// The shared HTTP client, trusting `config`'s CAs; proxies come from the environment.
    pub fn http_client_with(config: &TelegramConfig) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tgrelay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .tls_built_in_root_certs(config.builtin_roots);
        for certificate in config.ca_certificates()? {
            builder = builder.add_root_certificate(certificate);
        }
        builder
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))
    }

    pub async fn get_me(&self) -> Result<BotUser, TelegramError> {
        self.call("getMe", &serde_json::json!({}), SHORT_CALL_TIMEOUT)
            .await
    }

    /// Long-polls for updates. The HTTP timeout sits above the long-poll timeout,
    /// so a slow answer is Telegram's empty reply, not our error.
    pub async fn get_updates(&self, req: &GetUpdates<'_>) -> Result<Vec<RawUpdate>, TelegramError> {
        const METHOD: &str = "getUpdates";
        let timeout = Duration::from_secs(u64::from(req.timeout)) + SHORT_CALL_TIMEOUT;
        let answer = self.post_json(METHOD, req.body(), timeout).await?;
        match reply::parse_updates(&answer.body) {
            Ok(Ok(updates)) => Ok(updates),
            Ok(Err(failure)) => Err(answer.failed(METHOD, failure, &self.token)),
            Err(_) => Err(answer.not_a_reply(METHOD, &self.token)),
        }
    }

    pub async fn delete_webhook(&self, drop_pending_updates: bool) -> Result<bool, TelegramError> {
        let params = serde_json::json!({ "drop_pending_updates": drop_pending_updates });
        self.call("deleteWebhook", &params, SHORT_CALL_TIMEOUT)
            .await
    }

    /// Registers the webhook; with `certificate` (PEM bytes) the call is a multipart upload.
    pub async fn set_webhook(
        &self,
        params: &SetWebhook<'_>,
        certificate: Option<Vec<u8>>,
    ) -> Result<bool, TelegramError> {
        const METHOD: &str = "setWebhook";
        let Some(pem) = certificate else {
            return self.call(METHOD, params, SHORT_CALL_TIMEOUT).await;
        };
        let mut form = reqwest::multipart::Form::new();
        let fields = serde_json::to_value(params).expect("parameters serialize");
        for (name, value) in fields.as_object().expect("an object") {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            form = form.text(name.clone(), text);
        }
        let part = reqwest::multipart::Part::bytes(pem).file_name("certificate.pem");
        form = form.part("certificate", part);
        let request = self
            .request(METHOD)
            .multipart(form)
            .timeout(SHORT_CALL_TIMEOUT);
        let answer = self.send(METHOD, request).await?;
        self.read_reply(METHOD, &answer)
    }

    pub async fn get_webhook_info(&self) -> Result<WebhookInfo, TelegramError> {
        self.call("getWebhookInfo", &serde_json::json!({}), SHORT_CALL_TIMEOUT)
            .await
    }

    /// POSTs `params` (a JSON object, sent as is) to `method` and returns the answer
    /// untouched. Only a call that got no answer at all is an `Err`. The caller checks
    /// `method`: it becomes part of the URL.
    pub async fn call_raw(
        &self,
        method: &str,
        params: Bytes,
        timeout: Duration,
    ) -> Result<RawReply, TelegramError> {
        let request = self
            .request(method)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(params)
            .timeout(timeout);
        let mut answer = self.send(RAW_CALL, request).await?;
        // A proxy's error page may echo the URL, and the body goes to a broker.
        if contains(&answer.body, self.token.expose().as_bytes()) {
            let text = String::from_utf8_lossy(&answer.body);
            answer.body = Bytes::from(self.token.scrub(&text));
        }
        let error = match reply::parse::<IgnoredAny>(&answer.body) {
            Ok(Ok(_)) => None,
            Ok(Err(failure)) => Some(answer.failed(RAW_CALL, failure, &self.token)),
            Err(_) => Some(answer.not_a_reply(RAW_CALL, &self.token)),
        };
        Ok(RawReply {
            status: answer.status,
            body: answer.body,
            error,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, TelegramError> {
        let answer = self.post(method, params, timeout).await?;
        self.read_reply(method, &answer)
    }

    fn read_reply<T: DeserializeOwned>(
        &self,
        method: &'static str,
        answer: &Answer,
    ) -> Result<T, TelegramError> {
        match reply::parse(&answer.body) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(failure)) => Err(answer.failed(method, failure, &self.token)),
            Err(_) => Err(answer.not_a_reply(method, &self.token)),
        }
    }

    async fn post(
        &self,
        method: &'static str,
        params: &impl Serialize,
        timeout: Duration,
    ) -> Result<Answer, TelegramError> {
        let body = serde_json::to_vec(params).expect("request parameters serialize");
        self.post_json(method, body, timeout).await
    }

    async fn post_json(
        &self,
        method: &'static str,
        body: impl Into<reqwest::Body>,
        timeout: Duration,
    ) -> Result<Answer, TelegramError> {
        let request = self
            .request(method)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout);
        self.send(method, request).await
    }

    /// A POST to `method`; the URL holds the token, so it never leaves this client.
    fn request(&self, method: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/bot{}/{}", self.base_url, self.token.expose(), method);
        self.http.post(url)
    }

    /// Sends a request and reads the whole answer, with token-safe transport errors.
    async fn send(
        &self,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, TelegramError> {
        let transport = |e| TelegramError::transport(method, e, &self.token);
        let response = request.send().await.map_err(transport)?;
        Answer::read(response).await.map_err(transport)
    }
}

/// An error and its sources, one line (reqwest's own message says little alone).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-route server answering every request with `status` and `body`.
    async fn answering(status: u16, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || async move {
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            (status, body)
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_raw_call_returns_the_body_untouched_and_classified() {
        let token = Secret::new("1:T");
        let ok = r#"{"ok":true,  "result":{"message_id":7,"x":1.50}}"#;
        let api = BotApi::new(
            BotApi::http_client(),
            &answering(200, ok).await,
            token.clone(),
        );
        let reply = api
            .call_raw("sendMessage", Bytes::from_static(b"{}"), SHORT_CALL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!((reply.status, &reply.body[..]), (200, ok.as_bytes()));
        assert!(reply.error.is_none());

        let flood = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#;
        let api = BotApi::new(BotApi::http_client(), &answering(429, flood).await, token);
        let reply = api
            .call_raw("sendMessage", Bytes::from_static(b"{}"), SHORT_CALL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(&reply.body[..], flood.as_bytes());
        let class = reply.error.unwrap().class();
        assert_eq!(class, ErrorClass::RetryAfter(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn a_raw_answer_echoing_the_token_is_scrubbed() {
        let page = "<html>404 Not Found: /bot123456:SECRET-token_value/sendFoo</html>";
        let token = Secret::new("123456:SECRET-token_value");
        let api = BotApi::new(BotApi::http_client(), &answering(404, page).await, token);
        let reply = api
            .call_raw("sendFoo", Bytes::from_static(b"{}"), SHORT_CALL_TIMEOUT)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        let error = reply.error.unwrap();
        let shown = format!("{body} {error} {error:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(body.contains("/bot**REDACTED**/sendFoo"), "{body}");
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_token() {
        // Port 9 on loopback: nothing listens, so the connection is refused.
        let token = Secret::new("123456:SECRET-token_value");
        let api = BotApi::new(BotApi::http_client(), "http://127.0.0.1:9", token);
        let err = api.get_me().await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, TelegramError::Transport { .. }), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("123456"), "{shown}");
    }
}
