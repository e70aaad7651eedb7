//! Wiring: one sink, a supervisor running each bot, the webhook listener, the admin
//! server, and shutdown.
//!
//! Shutdown is one `CancellationToken`, the parent of every bot's own token. Bots
//! stop fetching, finish the batch in hand and confirm; the relay waits for them up
//! to the drain deadline, then flushes the sink. Bots are isolated: one bot failing
//! (a revoked token) leaves the others running; only when every configured bot has
//! failed does the relay exit with an error.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterMode, Config, Mode};
use crate::health::Health;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::outbound::OutboundSlot;
use crate::reload::{BotSet, ConfigSource, Reloader};
use crate::sink::connecting::ConnectingSink;
use crate::sink::Sink;
use crate::source::webhook::{self, WebhookBot, WebhookServer};
use crate::source::StartGate;
use crate::supervisor::{BotDeps, Supervisor};
use crate::telegram::BotApi;

mod bring_up;

use bring_up::BringUp;

/// The longest the final flush may take at shutdown (the Kafka sink bounds its own at 5 s).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(6);

/// A configured relay, ready to run.
pub struct Relay {
    config: Config,
    sink: Arc<dyn Sink>,
    /// Set when the relay connects its sink itself (rather than being handed one).
    connecting: Option<Arc<ConnectingSink>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// This replica's lease on the bots it owns (never lapses in single mode).
    lease: Lease,
    /// Where to read the configuration again (SIGHUP, `tokens_dir`).
    source: Option<ConfigSource>,
}

impl Relay {
    /// A relay that connects its configured sink once started, retrying while the
    /// broker is away.
    pub fn new(config: Config) -> Relay {
        let connecting = Arc::new(ConnectingSink::new(config.sink.kind));
        Relay {
            connecting: Some(Arc::clone(&connecting)),
            ..Self::with_sink(config, connecting)
        }
    }

    /// A relay publishing to a given sink (tests use the memory sink).
    pub fn with_sink(config: Config, sink: Arc<dyn Sink>) -> Relay {
        let lease = match config.cluster.mode {
            ClusterMode::Single => Lease::unbounded(),
            ClusterMode::Shared => Lease::lapsed_until_renewed(),
        };
        Relay {
            config,
            sink,
            connecting: None,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new()),
            lease,
            source: None,
        }
    }

    /// Reads the configuration again from `source` on SIGHUP and when its `tokens_dir`
    /// changes, applying what changed about the bots.
    pub fn reloading_from(mut self, source: ConfigSource) -> Relay {
        self.source = Some(source);
        self
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

    /// Binds the listeners and starts every bot; a taken port or a bad TLS file
    /// fails here, before anything is fetched.
    pub async fn start(mut self, shutdown: CancellationToken) -> anyhow::Result<Running> {
        let takes_webhooks = self.config.may_have_webhook_bots();
        if takes_webhooks {
            // Not ready until it is bound, from the admin server's first answer on.
            self.health.expect_listener();
        }
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
        let deps = BotDeps {
            http: BotApi::http_client_with(&self.config.telegram)?,
            sink: Arc::clone(&self.sink),
            metrics: Arc::clone(&self.metrics),
            health: Arc::clone(&self.health),
            lease: self.lease.clone(),
            outbound: OutboundSlot::default(),
            starting: StartGate::default(),
        };
        let supervisor = Supervisor::new(deps.clone(), shutdown.clone());
        // What a reload compares with needs the bots; nothing else keeps a copy of
        // them but the bot set itself (at ten thousand bots, each copy counts).
        let applied = self.source.is_some().then(|| self.config.clone());
        let configured = std::mem::take(&mut self.config.bots);
        let count = configured.len();
        let (bots, watched) = watch::channel(Arc::new(configured));
        let bots = Arc::new(bots);
        self.metrics.bots_configured.set(count as i64);
        let (webhook_addr, webhook_task) = if takes_webhooks {
            let (addr, task) =
                webhook_listener(&self.config, &deps, &bots, shutdown.clone()).await?;
            self.health.listener_bound(addr);
            (Some(addr), Some(task))
        } else {
            (None, None)
        };
        let bring_up = BringUp {
            config: self.config.clone(),
            connecting: self.connecting.clone(),
            metrics: Arc::clone(&self.metrics),
            lease: self.lease.clone(),
            outbound: Arc::clone(&deps.outbound),
        };
        let ownership = tokio::spawn(bring_up.run(watched, supervisor.clone(), shutdown.clone()));
        if let (Some(source), Some(applied)) = (self.source, applied) {
            let reloader = Reloader {
                source,
                applied,
                bots: Arc::clone(&bots),
                metrics: Arc::clone(&self.metrics),
            };
            tokio::spawn(reloader.run(shutdown.clone()));
        }
        tracing::info!(
            sink = self.sink.name(),
            bots = count,
            // What the runtime runs on (main picked it from the config), not a second pick.
            threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "tgrelay started"
        );
        Ok(Running {
            webhook_addr,
            webhook_task,
            bots,
            ownership,
            supervisor,
            shutdown,
            sink: self.sink,
            drain_timeout: self
                .config
                .outbound
                .stop_deadline(self.config.drain_timeout),
        })
    }
}

/// A started relay.
pub struct Running {
    /// Where the webhook listener is bound, when any bot uses webhooks.
    pub webhook_addr: Option<SocketAddr>,
    webhook_task: Option<tokio::task::JoinHandle<()>>,
    /// The bot set everything follows; when all of them have failed, the relay has
    /// nothing to do.
    bots: Arc<watch::Sender<BotSet>>,
    /// The ownership's task: on shutdown it hands this replica's bots over.
    ownership: tokio::task::JoinHandle<()>,
    supervisor: Supervisor,
    shutdown: CancellationToken,
    sink: Arc<dyn Sink>,
    drain_timeout: Duration,
}

impl Running {
    /// The supervisor of this relay's bots.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Waits for `shutdown` (then drains) or for every configured bot to fail (an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut configured = self.bots.subscribe();
        let all_failed = loop {
            let names: BTreeSet<String> = configured.borrow_and_update().keys().cloned().collect();
            tokio::select! {
                _ = self.shutdown.cancelled() => break false,
                _ = self.supervisor.all_failed(&names) => break true,
                _ = configured.changed() => {}
            }
        };
        if all_failed && !self.shutdown.is_cancelled() {
            self.shutdown.cancel();
            close(&*self.sink).await;
            anyhow::bail!("every bot has stopped; see the errors above");
        }
        tracing::info!(deadline = %humantime::format_duration(self.drain_timeout), "shutting down: draining");
        let drained = async {
            self.supervisor.drained().await;
            let _ = self.ownership.await;
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

/// Binds the webhook listener (when a bot takes webhooks, or one from `tokens_dir`
/// may), and keeps its routes the bot set's. Every replica answers every webhook bot's POSTs; running a bot is what
/// registers and reconciles its webhook.
async fn webhook_listener(
    config: &Config,
    deps: &BotDeps,
    bots: &watch::Sender<BotSet>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let metrics = Arc::clone(&deps.metrics);
    let deps = deps.clone();
    let routes = move |set: &BotSet| -> Vec<WebhookBot> {
        set.iter()
            .filter(|(_, bot)| bot.mode == Mode::Webhook)
            .map(|(name, bot)| {
                let secret = bot
                    .webhook
                    .secret_token
                    .clone()
                    .expect("validated: a secret");
                WebhookBot::new(deps.context(name, bot), bot.webhook.path_for(name), secret)
            })
            .collect()
    };
    let first = routes(&bots.borrow());
    let server = WebhookServer::new(&config.webhook, first, shutdown.clone());
    let (addr, task) = webhook::serve(
        &config.webhook,
        server.clone(),
        metrics,
        shutdown,
        config.drain_timeout,
    )
    .await?;
    tracing::info!(%addr, tls = config.webhook.tls_cert.is_some(), "webhook listener bound");
    let mut changes = bots.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let set = Arc::clone(&changes.borrow_and_update());
            server.set_bots(routes(&set));
        }
    });
    Ok((addr, task))
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
