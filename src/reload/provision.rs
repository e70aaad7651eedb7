//! Keeping the broker provisioned for the bot set as it changes: what a bot added at
//! runtime publishes to (its Kafka topics; the stream on NATS) is provisioned before
//! anything else is asked of it, and a failure is retried with backoff until the
//! broker takes it. Meanwhile the bot's publishes fail and are held (nothing is
//! confirmed to Telegram), so a slow or refusing broker delays its updates, never
//! loses them.

use std::collections::BTreeSet;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::BotSet;
use crate::backoff::Backoff;
use crate::broker::{BotRoutes, Broker};

/// A bot's routes as provisioned: its name, id and kinds.
type Provisioned = (String, u64, Vec<String>);

fn key(routes: &BotRoutes) -> Provisioned {
    (routes.name.clone(), routes.id, routes.kinds.clone())
}

/// Runs until `shutdown`; `done` are the routes provisioned when the broker connected.
pub(crate) async fn follow(
    broker: Broker,
    mut bots: watch::Receiver<BotSet>,
    done: Vec<BotRoutes>,
    shutdown: CancellationToken,
) {
    let mut done: BTreeSet<Provisioned> = done.iter().map(key).collect();
    let mut failures = 0;
    loop {
        let set = std::sync::Arc::clone(&bots.borrow_and_update());
        let pending: Vec<BotRoutes> = set
            .iter()
            .map(|(name, bot)| bot.routes(name))
            .filter(|routes| !done.contains(&key(routes)))
            .collect();
        let wait = if pending.is_empty() {
            None
        } else {
            match broker.provision(&pending).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(
                            bots = pending.len(),
                            "provisioned the broker for the new bots"
                        );
                    }
                    failures = 0;
                    done.extend(pending.iter().map(key));
                    None
                }
                Err(e) => {
                    let wait = Backoff::DEFAULT.next_delay(failures);
                    failures += 1;
                    tracing::error!(error = %e, bots = pending.len(), wait_ms = wait.as_millis() as u64,
                        "provisioning the broker for new bots failed; they hold their updates, retrying");
                    Some(wait)
                }
            }
        };
        let retry = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = bots.changed() => if changed.is_err() { return },
            _ = retry => {}
        }
    }
}
