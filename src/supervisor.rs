//! `Supervisor`: each bot runs as its own task under its own cancellation token, so
//! one bot can be started and stopped without touching the others.
//!
//! Stopping a bot is what shutdown does to every bot: a polling bot stops fetching,
//! finishes the batch in hand and confirms it; a webhook bot stops reconciling its
//! registration (the shared listener keeps answering its POSTs). The relay's shutdown
//! token is the parent of every bot's token, so one cancel still stops them all.
//!
//! A bot whose token Telegram refuses ends by itself and is recorded as failed; the
//! relay decides what that means (see `app`). A bot that is merely not running (not
//! started, or stopped) is no failure: a replica may own no bot at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{BotConfig, Mode};
use crate::envelope::BotIdentity;
use crate::health::Health;
use crate::lease::Lease;
use crate::metrics::{BotSeries, Metrics};
use crate::outbound::{Outbound, OutboundSlot};
use crate::sink::Sink;
use crate::source::polling::{PollingSettings, PollingSource};
use crate::source::webhook::registration::{self, Registration};
use crate::source::{BotContext, StartGate};
use crate::telegram::{AllowedUpdates, BotApi};

/// What every bot shares: the sink, the HTTP client, metrics, health, this
/// replica's lease, the outbound gateway once the broker is connected, and the gate
/// of start-up calls.
#[derive(Clone)]
pub struct BotDeps {
    pub http: reqwest::Client,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub lease: Lease,
    pub outbound: OutboundSlot,
    pub starting: StartGate,
}

impl BotDeps {
    /// The context of one bot's source; its alerting counters exist at 0 from here on.
    pub fn context(&self, name: &str, bot: &BotConfig) -> BotContext {
        let webhook = bot.mode == Mode::Webhook;
        self.metrics.register_bot(&BotSeries {
            name,
            sink: self.sink.name(),
            methods: &bot_methods(bot),
            webhook,
        });
        BotContext {
            bot: Arc::new(BotIdentity::new(name, bot.bot_id())),
            api: BotApi::new(self.http.clone(), &bot.api_url, bot.token().clone()),
            sink: Arc::clone(&self.sink),
            metrics: Arc::clone(&self.metrics),
            health: Arc::clone(&self.health),
            lease: self.lease.clone(),
            taken: CancellationToken::new(),
            starting: self.starting.clone(),
        }
    }
}

/// The Bot API methods a bot may call, as its settings say.
fn bot_methods(bot: &BotConfig) -> Vec<&'static str> {
    match (bot.mode, bot.delete_webhook, bot.webhook.register) {
        (Mode::Polling, true, _) => vec!["getMe", "getWebhookInfo", "deleteWebhook", "getUpdates"],
        (Mode::Polling, false, _) => vec!["getMe", "getUpdates"],
        (Mode::Webhook, _, true) => vec!["getWebhookInfo", "setWebhook"],
        (Mode::Webhook, _, false) => vec!["getWebhookInfo"],
    }
}

/// Starts and stops bots; cheap to clone (every clone is the same supervisor).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    deps: BotDeps,
    /// The relay's shutdown: the parent of every bot's own token.
    shutdown: CancellationToken,
    /// Every bot task ever started, so the drain waits for all of them.
    tracker: TaskTracker,
    running: Mutex<HashMap<String, BotTask>>,
    /// Bots that ended by themselves with an error (their token was refused).
    failed: watch::Sender<BTreeSet<String>>,
    /// Each distinct `allowed_updates` once, shared by the bots asking for it.
    allowed_updates: Mutex<Vec<AllowedUpdates>>,
}

/// The configured bots by name, as the ownership hands them over.
pub type BotConfigs = Arc<BTreeMap<String, BotConfig>>;

struct BotTask {
    stop: CancellationToken,
    /// The bot's `BotContext::taken`.
    taken: CancellationToken,
    task: JoinHandle<()>,
    /// The set it was started from (its own settings are in it), so a changed
    /// configuration restarts it. A reference, not a copy: one set serves every bot.
    started_from: BotConfigs,
}

impl Supervisor {
    pub fn new(deps: BotDeps, shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                deps,
                shutdown,
                tracker: TaskTracker::new(),
                running: Mutex::new(HashMap::new()),
                failed: watch::Sender::new(BTreeSet::new()),
                allowed_updates: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts bot `name` of `bots`, unless it runs already with these settings; one
    /// running with other settings (a new token) is stopped as on shutdown, then started
    /// anew. A failed bot is started again only with other settings: the same token
    /// would be refused again (and the shared ownership asks every few hundred ms).
    pub fn start(&self, bots: &BotConfigs, name: &str) {
        let Some(bot) = bots.get(name) else { return };
        let mut running = self.inner.running.lock().unwrap();
        let previous = match running.remove(name) {
            Some(mut task)
                if task.started_from.get(name) == Some(bot)
                    && (!task.task.is_finished() || self.inner.failed.borrow().contains(name)) =>
            {
                // Follow the newest set, so an older one is freed once no bot uses it.
                task.started_from = Arc::clone(bots);
                running.insert(name.to_owned(), task);
                return;
            }
            Some(task) if !task.task.is_finished() => {
                tracing::info!(bot = %name, "the bot's settings changed; restarting it");
                task.stop.cancel();
                Some(task.task)
            }
            _ => None,
        };
        // Only a change wakes the waiters: a start of thousands of bots changes nothing here.
        self.inner
            .failed
            .send_if_modified(|failed| failed.remove(name));
        let ctx = self.inner.deps.context(name, bot);
        let taken = ctx.taken.clone();
        ctx.set_up(false);
        let stop = self.inner.shutdown.child_token();
        let outbound = self.inner.deps.outbound.get().cloned();
        let settings = polling_settings(bot, self.allowed_updates(&bot.allowed_updates));
        let work = run_bot(ctx, bot, settings, outbound, stop.clone());
        let failed = self.inner.failed.clone();
        let health = Arc::clone(&self.inner.deps.health);
        let owned = name.to_owned();
        let task = self.inner.tracker.spawn(async move {
            // The old run confirms what it relayed before the new one fetches.
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            if let Err(error) = work.await {
                tracing::error!(bot = %owned, %error, "bot stopped");
                health.set_failed(&owned);
                failed.send_modify(|failed| {
                    failed.insert(owned);
                });
            }
        });
        running.insert(
            name.to_owned(),
            BotTask {
                stop,
                taken,
                task,
                started_from: Arc::clone(bots),
            },
        );
    }

    /// `kinds` serialized, shared with every other bot asking for the same ones (a
    /// handful of distinct lists at most, so a linear search).
    fn allowed_updates(&self, kinds: &[String]) -> AllowedUpdates {
        let wanted = AllowedUpdates::new(kinds);
        let mut known = self.inner.allowed_updates.lock().unwrap();
        if let Some(same) = known.iter().find(|k| **k == wanted) {
            return same.clone();
        }
        known.push(wanted.clone());
        wanted
    }

    /// Stops a bot and returns once it has finished its batch and confirmed it. Its
    /// readiness no longer counts: this replica does not run it. Its counters stay, as
    /// they were, so sums over replicas and `increase()` keep reading them right.
    pub async fn stop(&self, name: &str) {
        self.stop_as(name, false).await;
    }

    /// Stops a bot another replica has taken over: at once, calling Telegram no more.
    pub async fn stop_taken(&self, name: &str) {
        self.stop_as(name, true).await;
    }

    async fn stop_as(&self, name: &str, taken: bool) {
        let Some(bot) = self.inner.running.lock().unwrap().remove(name) else {
            return;
        };
        if taken {
            bot.taken.cancel();
        }
        bot.stop.cancel();
        let _ = bot.task.await;
        let deps = &self.inner.deps;
        deps.health.remove_source(name);
        let _ = deps.metrics.source_up.remove_label_values(&[name]);
    }

    /// The bots running now (started, not stopped, not failed).
    pub fn running(&self) -> BTreeSet<String> {
        let failed = self.inner.failed.borrow();
        self.inner
            .running
            .lock()
            .unwrap()
            .keys()
            .filter(|name| !failed.contains(*name))
            .cloned()
            .collect()
    }

    /// Resolves once every bot of `names` has failed (never, for an empty set).
    pub async fn all_failed(&self, names: &BTreeSet<String>) {
        let mut failed = self.inner.failed.subscribe();
        let all = |f: &BTreeSet<String>| !names.is_empty() && names.is_subset(f);
        // The sender lives in `self`, so the channel never closes while we wait.
        let _ = failed.wait_for(all).await;
    }

    /// After shutdown: waits until every bot task has ended.
    pub async fn drained(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// One bot's work until `stop`, or an error that ends it: its source, and its
/// outbound calls beside it (stopped, and drained, when the source ends).
fn run_bot(
    ctx: BotContext,
    bot: &BotConfig,
    settings: PollingSettings,
    outbound: Option<Arc<Outbound>>,
    stop: CancellationToken,
) -> impl Future<Output = Result<(), String>> + Send + 'static {
    let hook = (bot.mode == Mode::Webhook).then(|| {
        let registration = bot.webhook.register.then(|| webhook_registration(bot));
        (registration, bot.webhook.info_interval)
    });
    async move {
        let calls = outbound.map(|outbound| {
            let stop = stop.child_token();
            (
                tokio::spawn(outbound.run_bot(ctx.clone(), stop.clone())),
                stop,
            )
        });
        // Each mode's future boxed: a polling bot's task does not carry the size of a
        // webhook bot's, nor the other way round.
        let source = match hook {
            None => Box::pin(PollingSource::new(ctx, settings).run(stop))
                .await
                .map_err(|e| e.to_string()),
            Some((registration, interval)) => {
                Box::pin(registration::run(ctx, registration, interval, stop))
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if let Some((task, stop)) = calls {
            stop.cancel();
            let _ = task.await;
        }
        source
    }
}

fn polling_settings(bot: &BotConfig, allowed_updates: AllowedUpdates) -> PollingSettings {
    PollingSettings {
        timeout_secs: bot.poll_timeout.as_secs() as u32,
        limit: bot.poll_limit as u8,
        allowed_updates,
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
