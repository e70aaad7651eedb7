//! Changing the bot set while the relay runs.
//!
//! SIGHUP re-reads the configuration (file, environment and `tokens_dir`); a
//! `tokens_dir` is also watched, so adding a token file adds a bot (a Kubernetes Secret
//! mounted as a directory: adding a key adds a bot, and the kubelet updates it in
//! place). A new configuration is validated whole first: an invalid one is logged and
//! refused, and every bot keeps running as it was. A valid one changes only the bots:
//! an added bot starts, a removed one finishes its batch, confirms and stops, a bot
//! whose settings changed (a new token) restarts alone, and no other bot's long poll
//! is touched. Everything else (sink, listeners, cluster) is read at start only. What
//! an added bot publishes to is provisioned by [`provision`], which retries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{BotConfig, Config};
use crate::metrics::Metrics;

pub(crate) mod provision;

/// How often a `tokens_dir` is looked at; every fifth look reads each file's size and
/// time too (an edit in place does not change the directory itself).
const LOOK_EVERY: Duration = Duration::from_secs(1);
const FULL_LOOK_EVERY: u32 = 5;

/// Where the configuration comes from, to read it again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The file must exist (it was named), rather than being the optional default.
    pub required: bool,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, crate::config::ConfigErrors> {
        Config::load(&self.path, self.required)
    }
}

/// The bot set every part of a running relay follows.
pub type BotSet = Arc<BTreeMap<String, BotConfig>>;

pub(crate) struct Reloader {
    pub source: ConfigSource,
    pub applied: Config,
    pub bots: Arc<watch::Sender<BotSet>>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    pub async fn run(mut self, shutdown: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        let mut looks = tokio::time::interval(LOOK_EVERY);
        let mut seen = self.look(true);
        let mut count = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangups.recv() => {
                    self.reload("SIGHUP").await;
                    seen = self.look(true);
                }
                _ = looks.tick() => {
                    count = count.wrapping_add(1);
                    let now = self.look(count % FULL_LOOK_EVERY == 0);
                    // A cheap look only compares the directory's own time.
                    if now.differs(&seen) {
                        self.reload("tokens_dir").await;
                        seen = self.look(true);
                    }
                }
            }
        }
    }

    fn look(&self, full: bool) -> Fingerprint {
        match &self.applied.tokens_dir {
            Some(dir) => Fingerprint::of(dir, full),
            None => Fingerprint::default(),
        }
    }

    async fn reload(&mut self, cause: &'static str) {
        let source = self.source.clone();
        let loaded = tokio::task::spawn_blocking(move || source.load())
            .await
            .expect("loading the configuration does not panic");
        match loaded {
            Ok(config) => self.apply(config, cause).await,
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["refused"])
                    .inc();
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!(cause, error = %errors,
                    "configuration change refused; every bot keeps running as it was");
            }
        }
    }

    async fn apply(&mut self, config: Config, cause: &'static str) {
        let (old, new) = (&self.applied.bots, &config.bots);
        let added: Vec<&String> = new.keys().filter(|n| !old.contains_key(*n)).collect();
        let removed: Vec<&String> = old.keys().filter(|n| !new.contains_key(*n)).collect();
        let changed: Vec<&String> = new
            .iter()
            .filter(|(n, b)| old.get(*n).is_some_and(|o| o != *b))
            .map(|(n, _)| n)
            .collect();
        let m = &self.metrics;
        m.config_reloads.with_label_values(&["applied"]).inc();
        m.config_last_reload_successful.set(1);
        for (change, bots) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
        ] {
            m.bot_changes
                .with_label_values(&[change])
                .inc_by(bots.len() as u64);
            for bot in bots {
                tracing::info!(%bot, change, cause, "bot set changed");
            }
        }
        m.bots_configured.set(new.len() as i64);
        if unchanged_beyond_bots(&self.applied, &config) {
            tracing::info!(cause, bots = new.len(), "configuration reloaded");
        } else {
            tracing::warn!(cause, "configuration reloaded: only the bots changed; other settings take effect at the next start");
        }
        self.bots.send_replace(Arc::new(config.bots.clone()));
        self.applied = config;
    }
}

/// Whether two configurations differ in their bots only.
fn unchanged_beyond_bots(a: &Config, b: &Config) -> bool {
    let without_bots = |c: &Config| {
        let mut c = c.clone();
        c.bots.clear();
        c.to_redacted_toml()
    };
    without_bots(a) == without_bots(b)
}

/// What a token directory looks like: its own modification time and, on a full look, a
/// digest of each entry's name, size and time.
///
/// The digest is a sum of one hash per entry, so it needs neither the entries' names
/// kept nor sorted (with ten thousand files, a full look is a stat each and no more).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Fingerprint {
    dir: Option<SystemTime>,
    entries: Option<(usize, u64)>,
}

impl Fingerprint {
    fn of(dir: &Path, full: bool) -> Fingerprint {
        use std::hash::{BuildHasher, Hash, Hasher};
        let modified = |p: &Path| std::fs::metadata(p).ok()?.modified().ok();
        let entries = full.then(|| {
            // A fixed hasher: the digests of two looks must compare.
            let state =
                std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(
                );
            let (mut count, mut digest) = (0usize, 0u64);
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let meta = std::fs::metadata(entry.path()).ok();
                let mut hasher = state.build_hasher();
                entry.file_name().hash(&mut hasher);
                meta.as_ref().map(|m| m.len()).hash(&mut hasher);
                meta.and_then(|m| m.modified().ok()).hash(&mut hasher);
                count += 1;
                digest = digest.wrapping_add(hasher.finish());
            }
            (count, digest)
        });
        Fingerprint {
            dir: modified(dir),
            entries,
        }
    }

    /// Differs from an earlier full look; a cheap look compares the directory only.
    fn differs(&self, full: &Fingerprint) -> bool {
        self.dir != full.dir || (self.entries.is_some() && self.entries != full.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_look_sees_a_file_edited_in_place_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1:x").unwrap();
        std::fs::write(dir.path().join("b"), "2:y").unwrap();
        let first = Fingerprint::of(dir.path(), true);
        assert!(
            !Fingerprint::of(dir.path(), true).differs(&first),
            "unchanged"
        );
        assert!(
            !Fingerprint::of(dir.path(), false).differs(&first),
            "a cheap look"
        );

        // Rewritten in place: the directory itself does not change.
        std::fs::write(dir.path().join("b"), "2:longer").unwrap();
        assert!(Fingerprint::of(dir.path(), true).differs(&first));
    }
}
