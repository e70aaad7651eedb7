//! The one place that decides what may be confirmed to Telegram.
//!
//! Telegram forgets an update once it is confirmed, so a polling relay may confirm
//! an update only when it, and every update of the batch before it, is safe in a
//! broker. `getUpdates(offset)` confirms every update whose id is *below* the
//! offset, so the offset must stop at the first update that is not safe.
//!
//! **Why two pollers of one bot cannot lose an update.** Replicas share bots through
//! leases (see `cluster`), but no update's safety rests on them. Suppose two pollers
//! A and B of one bot, with nothing keeping them apart, and A sends `offset = n`.
//! A's offset only ever moves past updates A itself published and saw acknowledged
//! (this function), so every update below `n` is one of two kinds:
//! - an update A received in a batch: A published it, it is safe;
//! - an update below the first id of every batch A received: Telegram answers a
//!   getUpdates with *every* unconfirmed update from the offset on, in id order, so
//!   an update missing from the front of A's batch had already been confirmed by
//!   someone, and by the same argument that someone (B) had published it.
//!
//! So whatever A confirms is in the broker, and the same holds for B. What two
//! pollers do cause is 409 Conflicts (Telegram ends the older long poll) and updates
//! published twice, each copy with the same id. Both replicas must ask for the same
//! `allowed_updates` (they load the same configuration), since Telegram drops an
//! update of a kind the current caller did not ask for. The test
//! `two_unsynchronised_pollers_cause_duplicates_and_409s_never_loss` runs this.

/// What became of one update's publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The broker acknowledged it on its route.
    Delivered,
    /// The broker refused it for good; it is safe on the dead-letter route instead.
    DeadLettered { reason: String },
    /// Not safe anywhere yet (broker down, timeout...): must be fetched again.
    Failed { reason: String, fatal: bool },
}

impl Outcome {
    /// Safe in a broker, so Telegram may forget it.
    pub fn is_safe(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::DeadLettered { .. })
    }
}

/// The getUpdates offset that confirms exactly the updates that are safe, or `None`
/// when nothing new may be confirmed.
///
/// `batch` pairs each update id with whether it is safe. Ids within a batch ascend,
/// but this does not rely on it: every update whose id is below the returned offset
/// is safe.
pub fn confirm_offset(batch: &[(i64, bool)]) -> Option<i64> {
    let first_unsafe = batch
        .iter()
        .filter(|(_, safe)| !safe)
        .map(|(id, _)| *id)
        .min();
    batch
        .iter()
        .filter(|(id, safe)| *safe && first_unsafe.is_none_or(|stop| *id < stop))
        .map(|(id, _)| id.saturating_add(1))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_the_unbroken_run_of_safe_updates() {
        type Batch = &'static [(i64, bool)];
        let table: &[(Batch, Option<i64>)] = &[
            (&[], None),
            (&[(10, true)], Some(11)),
            (&[(10, true), (11, true), (12, true)], Some(13)),
            (&[(10, true), (11, false), (12, true)], Some(11)),
            (&[(10, false), (11, true), (12, true)], None),
            (&[(10, false)], None),
            (&[(10, true), (11, true), (12, false)], Some(12)),
            // Out of order (never seen from Telegram): still nothing unsafe below the offset.
            (&[(12, true), (10, false), (11, true)], None),
            (&[(12, false), (10, true), (11, true)], Some(12)),
            (&[(i64::MAX, true)], Some(i64::MAX)),
        ];
        for (batch, expected) in table {
            assert_eq!(confirm_offset(batch), *expected, "{batch:?}");
        }
    }

    #[test]
    fn dead_lettered_is_safe_failed_is_not() {
        assert!(Outcome::Delivered.is_safe());
        assert!(Outcome::DeadLettered {
            reason: "too large".into()
        }
        .is_safe());
        assert!(!Outcome::Failed {
            reason: "timeout".into(),
            fatal: false
        }
        .is_safe());
    }
}
