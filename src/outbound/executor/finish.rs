//! Finishing a call: its answer written to the request journal, its result published
//! (each retried until the broker takes it), then the call acknowledged. Never the
//! other way round: a crash in between hands the call to the next owner, which finds
//! its answer in the journal; it never loses its result.

use std::sync::Arc;

use super::super::broker::{PublishError, Results, Taken};
use super::super::call::{Reply, RELAY_ERROR};
use super::super::journal::{Entry, Journal};
use super::super::metrics::OutboundMetrics;
use crate::backoff::Backoff;

pub struct Finisher {
    pub bot: String,
    pub results: Arc<dyn Results>,
    /// Where results go when their `tg-reply-to` refuses them.
    pub default_route: String,
    pub journal: Arc<dyn Journal>,
    pub metrics: Arc<OutboundMetrics>,
}

impl Finisher {
    /// Writes the call's journal `entry`, publishes `reply`, then acknowledges the
    /// call. Runs until done (or aborted by a drain deadline, which leaves the call to
    /// the broker's redelivery, and its next owner to the journal).
    pub async fn finish(self: Arc<Self>, taken: Taken, mut reply: Reply, entry: Option<Entry>) {
        let mut failures = 0u32;
        if let Some(entry) = entry {
            while let Err(error) = entry.write(&*self.journal).await {
                if failures % 10 == 0 {
                    tracing::warn!(bot = %self.bot, %error, failures,
                        "the broker did not take a call's journal entry; retrying");
                }
                tokio::time::sleep(Backoff::DEFAULT.next_delay(failures)).await;
                failures += 1;
            }
            failures = 0;
        }
        loop {
            match self.results.publish(&reply).await {
                Ok(()) => break,
                Err(PublishError::Refused(why)) if reply.route != self.default_route => {
                    tracing::warn!(bot = %self.bot, route = %reply.route, error = %why,
                        "tg-reply-to refuses results; publishing to the default route");
                    let note = format!("tg-reply-to {} refused the result: {why}", reply.route);
                    reply.headers.retain(|(name, _)| *name != RELAY_ERROR);
                    reply
                        .headers
                        .push((RELAY_ERROR, note.replace(['\r', '\n'], " ")));
                    reply.route = self.default_route.clone();
                }
                Err(error) => {
                    self.metrics
                        .result_failures
                        .with_label_values(&[&self.bot])
                        .inc();
                    if failures % 10 == 0 {
                        tracing::warn!(bot = %self.bot, route = %reply.route, %error, failures,
                            "the broker did not take a result; retrying");
                    }
                    tokio::time::sleep(Backoff::DEFAULT.next_delay(failures)).await;
                    failures += 1;
                }
            }
        }
        if let Err(error) = taken.delivery.ack().await {
            // Redelivered later; the owner that gets it answers from memory or runs it again.
            tracing::warn!(bot = %self.bot, %error, "acknowledging a finished call failed");
        }
    }
}
