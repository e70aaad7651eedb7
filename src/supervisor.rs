//! How each bot's configuration becomes the settings of its source.

use crate::backoff::Backoff;
use crate::config::BotConfig;
use crate::source::polling::PollingSettings;
use crate::source::webhook::registration::Registration;

pub fn polling_settings(bot: &BotConfig) -> PollingSettings {
    PollingSettings {
        timeout_secs: bot.poll_timeout.as_secs() as u32,
        limit: bot.poll_limit as u8,
        allowed_updates: bot.allowed_updates.clone(),
        delete_webhook: bot.delete_webhook,
        backoff: Backoff::DEFAULT,
    }
}

/// What `setWebhook` should say for a bot.
pub fn webhook_registration(bot: &BotConfig) -> Registration {
    Registration {
        config: bot.webhook.clone(),
        secret: bot
            .webhook
            .secret_token
            .clone()
            .expect("validated: a secret"),
        secret_generated: bot.webhook_secret_generated,
        allowed_updates: bot.allowed_updates.clone(),
    }
}
