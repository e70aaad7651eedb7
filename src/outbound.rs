//! The Bot API gateway: services publish Bot API calls to the broker, and the owner
//! replica of each bot executes them within Telegram's flood limits, publishing each
//! answer back (see README, "Calling the Bot API through the broker").
//!
//! A third direction beside sources and sinks, sharing their parts: the sink's broker
//! connection, the Bot API client (its token safety and error classes), and the
//! supervisor, which runs a bot's calls beside its source under the bot's own token,
//! so that only the bot's owner executes them and a handover stops them cleanly.
//!
//! Modules: [`config`] and [`methods`] say what runs; [`call`] reads a call (its
//! [`body`], its [`options`]) and shapes its result ([`answer`]); [`reply_to`] says
//! where a result may go; [`limiter`] and [`snapshot`] keep the flood limits, across
//! owners too; [`executor`] runs one bot's calls; [`nats`] and [`kafka`] are the
//! brokers' sides of [`broker`]'s traits; [`recent`] answers a repeated call from
//! memory, and [`journal`] from the broker, whoever owned the bot before.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker as Connected;
use crate::envelope::BotIdentity;
use crate::metrics::Metrics;
use crate::route::RouteTemplate;
use crate::source::BotContext;

pub mod answer;
pub mod body;
pub mod broker;
pub mod call;
pub mod config;
pub mod executor;
pub mod journal;
pub mod kafka;
pub mod limiter;
pub mod methods;
pub mod metrics;
pub mod nats;
pub mod options;
pub mod recent;
pub mod reply_to;
pub mod snapshot;

pub use config::OutboundConfig;

use broker::{LimitsStore, Results};
use executor::{Executor, Parts, Settings};
use journal::Journal;
use limiter::Limits;
use metrics::OutboundMetrics;

/// What the gateway is set up from: its section and the bots.
pub struct OutboundSetup<'a> {
    pub config: &'a OutboundConfig,
    /// The configured bots' names and ids.
    pub bots: Vec<(String, u64)>,
    pub drain_timeout: Duration,
}

/// Calls the executor may hold between the broker and its lanes.
const INTAKE: usize = 64;

/// The gateway once the broker is connected; empty before, and when it is off. Bots
/// started after it is set run their calls.
pub type OutboundSlot = Arc<OnceLock<Arc<Outbound>>>;

/// The gateway's shared parts: its settings, its side of the broker, its metrics.
pub struct Outbound {
    config: OutboundConfig,
    broker: Broker,
    metrics: Arc<OutboundMetrics>,
    relay_metrics: Arc<Metrics>,
    drain_timeout: Duration,
}

enum Broker {
    Nats(Box<nats::NatsOutbound>),
    Kafka(Box<kafka::KafkaOutbound>),
}

/// One bot's side of the broker: where its calls come from and results go.
struct BotSide {
    results: Arc<dyn Results>,
    store: Arc<dyn LimitsStore>,
    journal: Arc<dyn Journal>,
    /// Takes calls until the stop token is cancelled.
    intake: BoxFuture<'static, ()>,
    /// Once the executor stopped: settles what the broker needs to know.
    close: BoxFuture<'static, ()>,
}

impl Outbound {
    /// The gateway on the broker the sink connected to, when `[outbound]` is enabled:
    /// the calls' stream or topics checked (or created). Registers its metrics, so it
    /// is called once it is the last step that can fail. `bots` are the configured
    /// bots' names and ids.
    pub async fn connect(
        setup: OutboundSetup<'_>,
        broker: &Connected,
        relay_metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Outbound>>> {
        let out = setup.config;
        if !out.enabled {
            return Ok(None);
        }
        let broker = match broker {
            Connected::Nats(n) => {
                Broker::Nats(Box::new(nats::NatsOutbound::connect(n, out).await?))
            }
            Connected::Kafka(k) => Broker::Kafka(Box::new(
                kafka::KafkaOutbound::connect(k, out, &setup.bots).await?,
            )),
            Connected::None => {
                anyhow::bail!("outbound calls need sink.kind = \"nats\" or \"kafka\"")
            }
        };
        Ok(Some(Arc::new(Outbound {
            config: out.clone(),
            broker,
            metrics: Arc::new(OutboundMetrics::new(relay_metrics.registry())),
            relay_metrics: Arc::clone(relay_metrics),
            drain_timeout: setup.drain_timeout,
        })))
    }

    /// Runs bot `ctx`'s calls until `stop`, then gives back what it did not send and
    /// lets the rest finish.
    pub async fn run_bot(self: Arc<Self>, ctx: BotContext, stop: CancellationToken) {
        let bot = Arc::clone(&ctx.bot);
        let render = |template: &str| {
            RouteTemplate::parse(template)
                .expect("validated template")
                .render_with(&bot.name, bot.id, "")
        };
        let own_route = render(&self.config.subject);
        let settings = self.settings(&bot.name, bot.id, render(&self.config.results));
        if let Broker::Kafka(k) = &self.broker {
            // A bot added while the relay runs: its topics were not there at start.
            if let Err(e) = k.ensure_topics(&[(bot.name.clone(), bot.id)]).await {
                tracing::error!(bot = %bot.name, error = %e, "the outbound calls' topics are missing");
                return;
            }
        }
        let (tx, rx) = mpsc::channel(INTAKE);
        let Some(side) = self.side(&bot, &render, own_route, tx, &stop) else {
            return;
        };
        let executor = Executor::new(Parts {
            bot: Arc::clone(&bot),
            api: ctx.api.clone(),
            settings,
            results: side.results,
            store: side.store,
            journal: side.journal,
            metrics: Arc::clone(&self.metrics),
            relay_metrics: Arc::clone(&self.relay_metrics),
            lease: ctx.lease.clone(),
        });
        let intake = tokio::spawn(side.intake);
        tracing::info!(bot = %bot.name, "executing outbound calls");
        executor.run(rx, stop).await;
        let _ = intake.await;
        side.close.await;
    }

    /// The broker's side of one bot; `None` when it cannot be made (logged).
    fn side(
        &self,
        bot: &BotIdentity,
        render: &dyn Fn(&str) -> String,
        own_route: String,
        tx: mpsc::Sender<broker::Taken>,
        stop: &CancellationToken,
    ) -> Option<BotSide> {
        match &self.broker {
            Broker::Nats(n) => {
                let intake = n.intake(&bot.name, render(&self.config.consumer), own_route);
                Some(BotSide {
                    results: n.results(),
                    store: n.limits(&bot.name),
                    journal: n.journal(bot.id),
                    intake: intake.run(tx, stop.clone()).boxed(),
                    close: futures::future::ready(()).boxed(),
                })
            }
            Broker::Kafka(k) => {
                match k.bot(&bot.name, render(&self.config.group), own_route.clone()) {
                    Ok((intake, memory)) => {
                        let intake = Arc::new(intake);
                        Some(BotSide {
                            results: k.results(),
                            store: memory,
                            journal: k.journal(&own_route),
                            intake: Arc::clone(&intake).run(tx, stop.clone()).boxed(),
                            close: async move { intake.close().await }.boxed(),
                        })
                    }
                    Err(e) => {
                        tracing::error!(bot = %bot.name, error = %e, "cannot create the outbound calls' consumer");
                        None
                    }
                }
            }
        }
    }

    fn settings(&self, name: &str, id: u64, results_route: String) -> Settings {
        let c = &self.config;
        Settings {
            allow: c.allow.clone(),
            limits: Limits::new(c.rate_of(name), c.chat_rate, c.group_chat_rate)
                .with_paid(c.paid_broadcast_rates.get(name).copied()),
            replies: reply_to::ReplyPolicy::new(c, name, id),
            results_route,
            concurrency: c.concurrency,
            max_pending: c.max_pending,
            max_pending_per_chat: c.max_pending_per_chat,
            call_timeout: c.call_timeout,
            max_attempts: c.max_attempts,
            max_retry_after: c.max_retry_after,
            dedup_window: c.dedup_window,
            drain_timeout: self.drain_timeout,
        }
    }
}
