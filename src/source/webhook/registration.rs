//! The webhook's life at Telegram: setWebhook (only when something changed), and
//! getWebhookInfo read periodically into metrics and logs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::BotWebhookConfig;
use crate::backoff::Backoff;
use crate::secret::Secret;
use crate::source::BotContext;
use crate::telegram::{BotApi, ErrorClass, SetWebhook, TelegramError, WebhookInfo};

/// What to register for one bot.
#[derive(Debug, Clone)]
pub struct Registration {
    pub config: BotWebhookConfig,
    pub secret: Secret,
    /// A secret generated at this start cannot already be at Telegram: always set.
    pub secret_generated: bool,
    pub allowed_updates: Vec<String>,
}

impl Registration {
    fn params(&self) -> Option<SetWebhook<'_>> {
        Some(SetWebhook {
            url: self.config.url.as_deref()?,
            secret_token: Some(self.secret.expose()),
            allowed_updates: &self.allowed_updates,
            max_connections: self.config.max_connections,
            ip_address: self.config.ip_address.as_deref(),
            drop_pending_updates: self.config.drop_pending_updates,
        })
    }

    /// Whether Telegram already has these settings. The secret cannot be read back, so a
    /// changed configured secret needs `tgrelay webhook set`.
    fn matches(&self, info: &WebhookInfo) -> bool {
        let Some(want) = self.params() else {
            return false;
        };
        let mut have_kinds = info.allowed_updates.clone().unwrap_or_default();
        let mut want_kinds = want.allowed_updates.to_vec();
        have_kinds.sort();
        want_kinds.sort();
        !self.secret_generated
            && info.url == want.url
            && info.max_connections == Some(i64::from(want.max_connections))
            && have_kinds == want_kinds
            && info.has_custom_certificate == self.config.certificate.is_some()
            && (want.ip_address.is_none() || info.ip_address.as_deref() == want.ip_address)
    }

    /// Calls setWebhook unless Telegram already has the same settings (or `force`).
    /// Returns whether it was set.
    pub async fn apply(&self, api: &BotApi, force: bool) -> Result<bool, TelegramError> {
        if !force && self.matches(&api.get_webhook_info().await?) {
            return Ok(false);
        }
        self.set(api).await?;
        Ok(true)
    }

    /// `apply` for a running bot: each Bot API call counted under its own method.
    async fn reconcile(&self, ctx: &BotContext) -> Result<bool, TelegramError> {
        let info = ctx
            .observed("getWebhookInfo", ctx.api.get_webhook_info())
            .await?;
        if self.matches(&info) {
            return Ok(false);
        }
        ctx.observed("setWebhook", self.set(&ctx.api)).await?;
        Ok(true)
    }

    /// setWebhook with these settings, uploading the certificate if there is one.
    async fn set(&self, api: &BotApi) -> Result<(), TelegramError> {
        let params = self.params().ok_or_else(|| TelegramError::Transport {
            method: "setWebhook",
            message: "no webhook url configured".into(),
        })?;
        let certificate = match &self.config.certificate {
            Some(path) => Some(std::fs::read(path).map_err(|e| TelegramError::Transport {
                method: "setWebhook",
                message: format!("reading the certificate {}: {e}", path.display()),
            })?),
            None => None,
        };
        api.set_webhook(&params, certificate).await?;
        Ok(())
    }
}

/// Registers (retrying transient errors), then reads getWebhookInfo every
/// `info_interval` until `shutdown`. The bot is ready once registered; a refused
/// token ends it with that error.
pub async fn run(
    ctx: BotContext,
    registration: Option<Registration>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), TelegramError> {
    let bot = ctx.bot.name.clone();
    if let Some(registration) = registration {
        let mut attempt = 0;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                result = async {
                    // As for polling bots: a few hundred start-up calls at a time.
                    let _turn = ctx.starting.turn().await;
                    registration.reconcile(&ctx).await
                } => result,
            };
            match result {
                Ok(true) => {
                    tracing::info!(%bot, url = registration.config.url.as_deref().unwrap_or(""), "webhook registered")
                }
                Ok(false) => tracing::info!(%bot, "webhook already registered with these settings"),
                Err(e) if e.class() == ErrorClass::Unauthorized => {
                    ctx.set_up(false);
                    return Err(e);
                }
                Err(e) => {
                    let wait = match e.class() {
                        ErrorClass::RetryAfter(wait) => wait,
                        _ => Backoff::DEFAULT.next_delay(attempt),
                    };
                    attempt += 1;
                    tracing::warn!(%bot, error = %e, wait_ms = wait.as_millis() as u64, "registering the webhook failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            }
            break;
        }
    }
    ctx.set_up(true);
    watch_info(&ctx, interval, &shutdown).await;
    Ok(())
}

/// getWebhookInfo into metrics; a log line when Telegram's last error changes.
async fn watch_info(ctx: &BotContext, interval: Duration, shutdown: &CancellationToken) {
    let bot = ctx.bot.name.as_str();
    let mut last_error: Option<String> = None;
    loop {
        let info = ctx
            .observed("getWebhookInfo", ctx.api.get_webhook_info())
            .await;
        // Flood control binds every method: the next read waits at least `retry_after`.
        let wait = match info.as_ref().map_err(|e| e.class()) {
            Err(ErrorClass::RetryAfter(asked)) => asked.max(interval),
            _ => interval,
        };
        if let Ok(info) = info {
            let m = &ctx.metrics;
            m.webhook_pending_updates
                .with_label_values(&[bot])
                .set(info.pending_update_count);
            m.webhook_max_connections
                .with_label_values(&[bot])
                .set(info.max_connections.unwrap_or(0));
            m.webhook_last_error_timestamp
                .with_label_values(&[bot])
                .set(info.last_error_date.unwrap_or(0));
            if info.last_error_message != last_error {
                if let Some(message) = &info.last_error_message {
                    tracing::warn!(%bot, error = %message, pending = info.pending_update_count,
                        "Telegram reports a webhook delivery error");
                }
                last_error = info.last_error_message;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
