//! Bringing the relay up once its listeners are bound: the broker connected (retried
//! while it is away), the sink handed to the waiting bots, the gateway set, the
//! provisioning that follows the bot set started, then the ownership that runs the bots.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::broker::{BotRoutes, Broker};
use crate::cluster::{self, Bots, Ownership, Single};
use crate::config::Config;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::outbound::{Outbound, OutboundSetup, OutboundSlot};
use crate::sink::connecting::ConnectingSink;
use crate::supervisor::Supervisor;

/// What happens once the listeners are bound: the broker connected (retried while it is
/// away), then the ownership that starts the bots.
pub(super) struct BringUp {
    /// The configuration, its bots left out: they are the bot set's.
    pub(super) config: Config,
    pub(super) connecting: Option<Arc<ConnectingSink>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) lease: Lease,
    /// Set once connected, before any bot starts.
    pub(super) outbound: OutboundSlot,
}

impl BringUp {
    pub(super) async fn run(self, bots: Bots, supervisor: Supervisor, shutdown: CancellationToken) {
        let ownership = tokio::select! {
            _ = shutdown.cancelled() => return,
            ownership = self.connect(&bots, &shutdown) => ownership,
        };
        ownership.run(bots, supervisor, shutdown).await;
    }

    /// `[outbound]` with what the relay reads and writes itself, where no result may go.
    fn outbound_config(&self) -> crate::outbound::OutboundConfig {
        let mut outbound = self.config.outbound.clone();
        let c = &self.config;
        outbound.guarded = crate::outbound::reply_to::guarded(&c.sink, &c.cluster.name, &outbound);
        outbound
    }

    /// Connects the sink and the ownership, retrying with backoff until both answer;
    /// then keeps the broker provisioned for the bot set as it changes.
    async fn connect(&self, bots: &Bots, shutdown: &CancellationToken) -> Box<dyn Ownership> {
        let Some(connecting) = &self.connecting else {
            // A sink handed over ready (tests): nothing to connect, one process.
            return Box::new(Single);
        };
        let mut failures = 0;
        loop {
            // The bots as they are now: some may have come while the broker was away.
            let configured = Arc::clone(&bots.borrow());
            let routes: Vec<BotRoutes> = configured.iter().map(|(n, b)| b.routes(n)).collect();
            let connected = async {
                let broker = Broker::connect(self.config.sink.broker(), &routes).await?;
                let sink = crate::sink::on(&self.config.sink, &broker)?;
                let ownership = cluster::connect(
                    &self.config.cluster,
                    &broker,
                    self.lease.clone(),
                    Arc::clone(&self.metrics),
                )
                .await?;
                // Last: it registers its metrics once it connected.
                let outbound = self.outbound_config();
                let setup = OutboundSetup {
                    config: &outbound,
                    bots: configured
                        .iter()
                        .map(|(n, b)| (n.clone(), b.bot_id()))
                        .collect(),
                    drain_timeout: self.config.drain_timeout,
                };
                let outbound = Outbound::connect(setup, &broker, &self.metrics).await?;
                anyhow::Ok((broker, sink, ownership, outbound))
            };
            match connected.await {
                Ok((broker, sink, ownership, outbound)) => {
                    if let Some(outbound) = outbound {
                        let _ = self.outbound.set(outbound);
                    }
                    let provisioning = crate::reload::provision::follow(
                        broker,
                        bots.clone(),
                        routes,
                        shutdown.clone(),
                    );
                    tokio::spawn(provisioning);
                    connecting.connected(sink);
                    if failures > 0 {
                        tracing::info!(
                            sink = self.config.sink.kind.name(),
                            "the broker answers; starting the bots"
                        );
                    }
                    return ownership;
                }
                Err(e) => {
                    let wait = Backoff::DEFAULT.next_delay(failures);
                    let wait_ms = wait.as_millis() as u64;
                    // Loud once, then quieter: an outage at start logs like any other.
                    if failures == 0 {
                        tracing::error!(
                            error = format!("{e:#}"),
                            wait_ms,
                            "cannot reach the broker; not ready, retrying"
                        );
                    } else {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            wait_ms,
                            "still cannot reach the broker"
                        );
                    }
                    failures += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
