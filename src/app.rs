//! Wiring: one sink, one source per bot, the admin server, and shutdown.
//!
//! Shutdown is one `CancellationToken` handed to every task. Sources stop fetching,
//! finish the batch in hand and confirm; the relay waits for them up to the drain
//! deadline, then flushes the sink. Bots are isolated: one bot stopping (a revoked
//! token) leaves the others running; only when every bot has stopped does the
//! relay exit with an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{BotConfig, Config, Mode, SinkKind};
use crate::envelope::BotIdentity;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::sink::file::FileSink;
use crate::sink::kafka::topics::BotRoutes;
use crate::sink::kafka::KafkaSink;
use crate::sink::nats::NatsSink;
use crate::sink::Sink;
use crate::source::polling::{PollingSettings, PollingSource};
use crate::source::webhook::registration::{self, Registration};
use crate::source::webhook::{self, WebhookBot, WebhookServer};
use crate::source::BotContext;
use crate::telegram::BotApi;

/// The longest the final flush may take at shutdown (the Kafka sink bounds its own at 5 s).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(6);

/// A configured relay, ready to run.
pub struct Relay {
    config: Config,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Relay {
    /// Connects the configured sink (failing fast on a wrong broker setup).
    pub async fn from_config(config: Config) -> anyhow::Result<Relay> {
        let sink: Arc<dyn Sink> = match config.sink.kind {
            SinkKind::File => {
                let path = &config.sink.file.path;
                Arc::new(
                    FileSink::open(path).with_context(|| format!("opening {}", path.display()))?,
                )
            }
            SinkKind::Nats => {
                Arc::new(NatsSink::connect(&config.sink.nats, config.sink.envelope).await?)
            }
            SinkKind::Kafka => {
                let routes: Vec<BotRoutes> = config
                    .bots
                    .iter()
                    .map(|(name, bot)| BotRoutes {
                        name: name.clone(),
                        id: bot.bot_id(),
                        kinds: bot.allowed_updates.clone(),
                    })
                    .collect();
                let kafka = &config.sink.kafka;
                Arc::new(KafkaSink::connect(kafka, config.sink.envelope, &routes).await?)
            }
        };
        Ok(Self::with_sink(config, sink))
    }

    /// A relay publishing to a given sink (tests use the memory sink).
    pub fn with_sink(config: Config, sink: Arc<dyn Sink>) -> Relay {
        Relay {
            config,
            sink,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new()),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Runs until `shutdown` is cancelled and the sources have drained, or every bot stopped.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.start(shutdown).await?.wait().await
    }

    /// Binds the listeners and starts every source; a taken port or a bad TLS file
    /// fails here, before anything is fetched.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<Running> {
        if !self.config.admin.listen.is_empty() {
            let admin = crate::admin::AdminState {
                metrics: Arc::clone(&self.metrics),
                health: Arc::clone(&self.health),
                sink: Arc::clone(&self.sink),
            };
            let listener = tokio::net::TcpListener::bind(&self.config.admin.listen)
                .await
                .with_context(|| {
                    format!("binding the admin server to {}", self.config.admin.listen)
                })?;
            tokio::spawn(crate::admin::serve(listener, admin, shutdown.clone()));
        }
        let bots = TaskTracker::new();
        let http = BotApi::http_client();
        let mut webhook_bots = Vec::new();
        for (name, bot) in &self.config.bots {
            let ctx = BotContext {
                bot: Arc::new(BotIdentity::new(name.clone(), bot.bot_id())),
                api: BotApi::new(http.clone(), &bot.api_url, bot.token().clone()),
                sink: Arc::clone(&self.sink),
                metrics: Arc::clone(&self.metrics),
                health: Arc::clone(&self.health),
            };
            ctx.set_up(false);
            match bot.mode {
                Mode::Polling => spawn_polling(&bots, ctx, bot, shutdown.clone()),
                Mode::Webhook => {
                    let registration = bot.webhook.register.then(|| webhook_registration(bot));
                    let interval = bot.webhook.info_interval;
                    bots.spawn(registration::run(
                        ctx.clone(),
                        registration,
                        interval,
                        shutdown.clone(),
                    ));
                    let secret = bot
                        .webhook
                        .secret_token
                        .clone()
                        .expect("validated: a secret");
                    webhook_bots.push(WebhookBot::new(ctx, bot.webhook.path_for(name), secret));
                }
            }
        }
        bots.close();
        let mut webhook_addr = None;
        let mut webhook_task = None;
        if !webhook_bots.is_empty() {
            let server = WebhookServer::new(&self.config.webhook, webhook_bots, shutdown.clone());
            let drain = self.config.drain_timeout;
            let (addr, task) = webhook::serve(
                &self.config.webhook,
                server,
                Arc::clone(&self.metrics),
                shutdown.clone(),
                drain,
            )
            .await?;
            tracing::info!(%addr, tls = self.config.webhook.tls_cert.is_some(), "webhook listener bound");
            webhook_addr = Some(addr);
            webhook_task = Some(task);
        }
        tracing::info!(
            sink = self.sink.name(),
            bots = self.config.bots.len(),
            // What the runtime runs on (main picked it from the config), not a second pick.
            threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "tgrelay started"
        );
        Ok(Running {
            webhook_addr,
            webhook_task,
            bots,
            shutdown,
            sink: self.sink,
            drain_timeout: self.config.drain_timeout,
        })
    }
}

/// A started relay.
pub struct Running {
    /// Where the webhook listener is bound, when any bot uses webhooks.
    pub webhook_addr: Option<SocketAddr>,
    webhook_task: Option<tokio::task::JoinHandle<()>>,
    bots: TaskTracker,
    shutdown: CancellationToken,
    sink: Arc<dyn Sink>,
    drain_timeout: Duration,
}

impl Running {
    /// Waits for `shutdown` (then drains) or for every bot to stop (an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        let all_stopped = tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = self.bots.wait() => true,
        };
        if all_stopped && !self.shutdown.is_cancelled() {
            self.shutdown.cancel();
            close(&*self.sink).await;
            anyhow::bail!("every bot has stopped; see the errors above");
        }
        tracing::info!(deadline = %humantime::format_duration(self.drain_timeout), "shutting down: draining");
        let drained = async {
            self.bots.wait().await;
            if let Some(task) = self.webhook_task {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "drain deadline passed; unconfirmed updates will be relayed again on restart"
            );
        }
        close(&*self.sink).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Flushes the sink, but never waits long for a broker that is away: everything
/// confirmed was acknowledged already, so only stragglers are at stake.
async fn close(sink: &dyn Sink) {
    if tokio::time::timeout(CLOSE_TIMEOUT, sink.close())
        .await
        .is_err()
    {
        tracing::warn!("the broker did not take the final flush in time; exiting anyway");
    }
}

fn spawn_polling(
    bots: &TaskTracker,
    ctx: BotContext,
    bot: &BotConfig,
    shutdown: CancellationToken,
) {
    let settings = PollingSettings {
        timeout_secs: bot.poll_timeout.as_secs() as u32,
        limit: bot.poll_limit as u8,
        allowed_updates: bot.allowed_updates.clone(),
        delete_webhook: bot.delete_webhook,
        backoff: Backoff::DEFAULT,
    };
    let source = PollingSource::new(ctx, settings);
    bots.spawn(async move {
        if let Err(stopped) = source.run(shutdown).await {
            tracing::error!(error = %stopped, "bot stopped");
        }
    });
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
