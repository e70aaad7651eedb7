//! Wiring: one sink, one source per bot, the admin server, and shutdown.
//!
//! Shutdown is one `CancellationToken` handed to every task. Sources stop fetching,
//! finish the batch in hand and confirm; the relay waits for them up to the drain
//! deadline, then flushes the sink. Bots are isolated: one bot stopping (a revoked
//! token) leaves the others running; only when every bot has stopped does the
//! relay exit with an error.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{Config, Mode, SinkKind};
use crate::envelope::BotIdentity;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::sink::file::FileSink;
use crate::sink::kafka::topics::BotRoutes;
use crate::sink::kafka::KafkaSink;
use crate::sink::nats::NatsSink;
use crate::sink::Sink;
use crate::source::polling::{PollingSettings, PollingSource};
use crate::source::BotContext;
use crate::telegram::BotApi;

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
                Mode::Polling => {
                    let settings = PollingSettings {
                        timeout_secs: bot.poll_timeout.as_secs() as u32,
                        limit: bot.poll_limit as u8,
                        allowed_updates: bot.allowed_updates.clone(),
                        delete_webhook: bot.delete_webhook,
                        backoff: Backoff::DEFAULT,
                    };
                    let source = PollingSource::new(ctx, settings);
                    let token = shutdown.clone();
                    bots.spawn(async move {
                        if let Err(stopped) = source.run(token).await {
                            tracing::error!(error = %stopped, "bot stopped");
                        }
                    });
                }
                Mode::Webhook => {
                    anyhow::bail!("bots.{name}: webhook mode is not available in this version")
                }
            }
        }
        bots.close();
        tracing::info!(
            sink = self.sink.name(),
            bots = self.config.bots.len(),
            "tgrelay started"
        );
        let all_stopped = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = bots.wait() => true,
        };
        if all_stopped && !shutdown.is_cancelled() {
            shutdown.cancel();
            self.sink.close().await;
            anyhow::bail!("every bot has stopped; see the errors above");
        }
        tracing::info!(deadline = %humantime::format_duration(self.config.drain_timeout), "shutting down: draining");
        if tokio::time::timeout(self.config.drain_timeout, bots.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain deadline passed; unconfirmed updates will be relayed again on restart"
            );
        }
        self.sink.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
