//! What a replica needs of the broker to share bots: heartbeats, and an owner key
//! per bot that is only written with the revision last seen (compare-and-set).
//!
//! NATS keeps both in key-value buckets; Kafka in two topics whose records every
//! replica reads in the same order, so that each decides the same compare-and-set.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

/// A change every replica sees, in the order the broker holds them.
#[derive(Debug, Clone)]
pub enum Change {
    /// A replica's heartbeat (`alive`, with what it says of itself), or its leaving.
    Member {
        instance: String,
        alive: bool,
        beat: Heartbeat,
    },
    /// A bot's owner key as it stands now (`owner` is `None` once freed).
    Owner {
        bot: String,
        owner: Option<String>,
        revision: u64,
        /// Past the history read at start: a live change.
        live: bool,
    },
}

/// What a heartbeat says of its sender: which process runs under the name (two
/// processes given one `cluster.instance` tell apart by it), and the sender's own
/// `lease_ttl`, by which the others judge its silence (replicas mid-rollout may run
/// with different ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Random per process start; 0 for a heartbeat of an older version that says nothing.
    pub incarnation: u64,
    pub lease_ttl: Option<Duration>,
}

impl Heartbeat {
    /// `<incarnation> <lease_ttl in ms>`.
    pub fn encode(&self) -> String {
        let ttl = self.lease_ttl.map_or(0, |t| t.as_millis() as u64);
        format!("{} {ttl}", self.incarnation)
    }

    /// Reads [`Heartbeat::encode`]'s form; anything else (an older version's
    /// heartbeat) says nothing.
    pub fn decode(value: &str) -> Heartbeat {
        let mut fields = value.split(' ').map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(incarnation)), Some(Ok(ttl)), None) => Heartbeat {
                incarnation,
                lease_ttl: (ttl > 0).then(|| Duration::from_millis(ttl)),
            },
            _ => Heartbeat::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key moved on since the revision given: someone else wrote it first.
    #[error("the owner key changed meanwhile")]
    Conflict,
    #[error("{0}")]
    Broker(String),
}

pub trait Store: Send + Sync + 'static {
    /// Every change from the current state on, for as long as the store lives.
    fn changes(&self) -> mpsc::UnboundedReceiver<Change>;

    /// Whether the changes have caught up with what the store held at start; a
    /// replica plans only then (Kafka replays its owners log first).
    fn caught_up(&self) -> bool {
        true
    }

    /// Says this replica is alive; done once the broker stored it.
    fn heartbeat(
        &self,
        instance: &str,
        beat: Heartbeat,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Says this replica left (its bots were freed first).
    fn leave(&self, instance: &str) -> impl Future<Output = ()> + Send;

    /// Writes `bot`'s owner (`None` frees it) if its revision is still `revision`
    /// (0: never written); returns the new revision.
    fn write_owner(
        &self,
        bot: &str,
        owner: Option<&str>,
        revision: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_carries_its_process_and_lease() {
        let beat = Heartbeat {
            incarnation: 42,
            lease_ttl: Some(Duration::from_secs(10)),
        };
        assert_eq!(Heartbeat::decode(&beat.encode()), beat);
        // An older version's heartbeats: the instance name (NATS) or "1" (Kafka).
        assert_eq!(Heartbeat::decode("r1"), Heartbeat::default());
        assert_eq!(Heartbeat::decode("1"), Heartbeat::default());
    }
}
