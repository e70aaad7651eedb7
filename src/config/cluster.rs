//! `[cluster]`: whether this process owns every bot, or shares them with other replicas
//! through the broker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `single`: this process owns every configured bot. `shared`: every replica loads
    /// the same bots and each bot is owned by one live replica at a time, coordinated
    /// through the configured broker (NATS or Kafka).
    pub mode: ClusterMode,
    /// This replica's name among the others; empty: the host name (a pod's name).
    pub instance: String,
    /// Names what the replicas coordinate through (NATS key-value buckets
    /// `<name>-members` and `<name>-owners`; Kafka topics `<name>.members` and
    /// `<name>.owners`): two relays sharing a broker but not their bots need two names.
    pub name: String,
    /// Longest a replica can be gone (killed, frozen, cut off) before the others take
    /// its bots over. It renews its lease five times per period and stops polling when
    /// 60 % of it passed without a renewal, before anyone else may start.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            mode: ClusterMode::Single,
            instance: String::new(),
            name: "tgrelay".into(),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    #[default]
    Single,
    Shared,
}

/// Keys and bucket names allow these; instance and cluster names become both.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterConfig {
    /// Fills the instance name from the host name when unset.
    pub fn resolve_instance(&mut self) {
        if self.instance.is_empty() {
            self.instance = host_name();
        }
    }

    /// Every problem of these settings, each naming its key and environment variable.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.mode == ClusterMode::Single {
            return errors;
        }
        if !is_name(&self.instance) {
            errors.push(format!(
                "cluster.instance (TGRELAY_CLUSTER__INSTANCE): {:?} must be 1-64 of A-Z a-z 0-9 _ -",
                self.instance
            ));
        }
        if !is_name(&self.name) {
            errors.push(format!(
                "cluster.name (TGRELAY_CLUSTER__NAME): {:?} must be 1-64 of A-Z a-z 0-9 _ -",
                self.name
            ));
        }
        if self.lease_ttl < Duration::from_secs(3) || self.lease_ttl > Duration::from_secs(300) {
            errors.push(format!(
                "cluster.lease_ttl (TGRELAY_CLUSTER__LEASE_TTL): {} must be from 3s to 5m",
                humantime::format_duration(self.lease_ttl)
            ));
        }
        errors
    }

    /// How often the lease is renewed: five times per period.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 5
    }

    /// How long after its last renewal a replica still polls: 60 % of the period.
    pub fn owner_grace(&self) -> Duration {
        self.lease_ttl * 3 / 5
    }

    /// How long another replica's silence must last before its bots are taken over:
    /// 80 % of the period, so that with up to one renewal interval between its last
    /// renewal and its end, its bots move within `lease_ttl`.
    pub fn takeover_after(&self) -> Duration {
        self.lease_ttl * 4 / 5
    }
}

/// The host name (in Kubernetes, the pod's name), made fit for a key; a random name
/// when it cannot be read.
fn host_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        format!("tgrelay-{:08x}", rand::random::<u32>())
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_needs_names_and_a_sane_lease() {
        let mut c = ClusterConfig {
            mode: ClusterMode::Shared,
            ..Default::default()
        };
        c.resolve_instance();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.instance = "a.b".into();
        c.lease_ttl = Duration::from_secs(1);
        let errors = c.validate();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("TGRELAY_CLUSTER__INSTANCE"));
        assert!(errors[1].contains("lease_ttl"));
    }

    #[test]
    fn the_owner_stops_before_anyone_may_take_over() {
        let c = ClusterConfig::default();
        assert!(c.owner_grace() + c.renew_every() <= c.takeover_after());
        assert!(c.takeover_after() + c.renew_every() <= c.lease_ttl);
    }
}
