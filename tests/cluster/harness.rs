//! A shared cluster in a test: the fake Bot API with many bots, several relay
//! processes sharing them through the real broker, updates trickling to every bot,
//! and an independent consumer reading the broker back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::support::corpus::Corpus;
use super::support::fake_bot_api::FakeBotApi;
use super::support::kafka as ksupport;
use super::support::nats::{self as jsupport, read_all, unique};
pub use super::support::private_broker::BrokerKind;
use super::support::process::{scrape, scrape_sum, RelayProcess};
use super::support::relay::{free_port, token};

/// A short lease, so that a failover takes seconds in a test.
pub const LEASE: Duration = Duration::from_secs(3);
/// Kafka's heartbeats are produced records, slower on a loaded test machine.
pub const KAFKA_LEASE: Duration = Duration::from_secs(6);
pub const POLL: Duration = Duration::from_secs(2);

pub struct Replica {
    pub process: RelayProcess,
    pub admin: String,
}

pub struct Cluster {
    pub broker: BrokerKind,
    /// `cluster.lease_ttl` and each bot's `poll_timeout` of the replicas started next.
    pub lease: Duration,
    pub poll: Duration,
    pub api: Arc<FakeBotApi>,
    /// Bot name → token.
    pub bots: BTreeMap<String, String>,
    pub replicas: Vec<Option<Replica>>,
    stream: String,
    prefix: String,
    name: String,
    dir: tempfile::TempDir,
    /// Updates fed so far, per bot: ids 1..=n.
    fed: Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
    feeding: Arc<AtomicBool>,
    /// The bots come from token files in this directory, which every replica reads.
    tokens_dir: Option<std::path::PathBuf>,
}

impl Cluster {
    pub async fn new(broker: BrokerKind, bots: usize, first_bot_id: u64) -> Cluster {
        let api = Arc::new(FakeBotApi::start().await);
        let bots: BTreeMap<String, String> = (0..bots as u64)
            .map(|i| (format!("bot{i:02}"), token(first_bot_id + i)))
            .collect();
        for token in bots.values() {
            api.add_bot(token);
        }
        let stream = unique("CLUSTER");
        let prefix = unique("cluster");
        if broker == BrokerKind::Nats {
            jsupport::create_stream(&jsupport::jetstream().await, &stream, &prefix, 1 << 20).await;
        }
        Cluster {
            broker,
            lease: match broker {
                BrokerKind::Nats => LEASE,
                BrokerKind::Kafka => KAFKA_LEASE,
            },
            poll: POLL,
            api,
            fed: Arc::new(std::sync::Mutex::new(
                bots.keys().map(|b| (b.clone(), 0)).collect(),
            )),
            bots,
            replicas: Vec::new(),
            stream,
            name: unique("c"),
            prefix,
            dir: tempfile::tempdir().unwrap(),
            feeding: Arc::new(AtomicBool::new(false)),
            tokens_dir: None,
        }
    }

    /// From now on the bots are token files in one directory all replicas read (a
    /// Secret mounted into every pod), with their settings from `[bot_defaults]`.
    pub fn use_tokens_dir(&mut self) {
        let dir = self.dir.path().join("tokens");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, token) in &self.bots {
            std::fs::write(dir.join(name), format!("{token}\n")).unwrap();
        }
        self.tokens_dir = Some(dir);
    }

    /// A bot added to the token directory while the replicas run.
    pub fn add_bot_file(&mut self, name: &str, token: &str) {
        self.api.add_bot(token);
        let dir = self.tokens_dir.as_ref().expect("use_tokens_dir first");
        std::fs::write(dir.join(name), format!("{token}\n")).unwrap();
        self.bots.insert(name.to_owned(), token.to_owned());
        self.fed.lock().unwrap().insert(name.to_owned(), 0);
    }

    /// A bot removed from the token directory; it is no longer one of `bots`.
    pub fn remove_bot_file(&mut self, name: &str) -> String {
        let dir = self.tokens_dir.as_ref().expect("use_tokens_dir first");
        std::fs::remove_file(dir.join(name)).unwrap();
        self.fed.lock().unwrap().remove(name);
        self.bots.remove(name).expect("a bot of the cluster")
    }

    /// Feeds `n` more updates to one bot.
    pub fn feed(&self, name: &str, n: i64) {
        let corpus = Corpus::load();
        let mut fed = self.fed.lock().unwrap();
        let last = fed.get_mut(name).unwrap();
        self.api.push_updates(
            &self.bots[name],
            corpus.mixed(*last + 1, n as usize, *last as u64),
        );
        *last += n;
    }

    fn config(&self, instance: &str, admin: &str, mode: &str) -> String {
        let mut toml = format!(
            "drain_timeout = \"10s\"\n[admin]\nlisten = \"{admin}\"\n\
             [cluster]\nmode = \"{mode}\"\ninstance = \"{instance}\"\nname = \"{}\"\nlease_ttl = \"{}s\"\n",
            self.name,
            self.lease().as_secs()
        );
        toml.push_str(&match self.broker {
            BrokerKind::Nats => jsupport::sink_toml(&self.stream, &self.prefix, ""),
            // One topic for every bot and kind: reading hundreds back from tansu is slow.
            BrokerKind::Kafka => format!(
                "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\ntopic = \"{p}.all\"\n\
                 dead_letter_topic = \"{p}.dead\"\ncreate_topics = true\npartitions = 3\n\
                 replication_factor = 1\n",
                ksupport::brokers(),
                p = self.prefix
            ),
        });
        if let Some(dir) = &self.tokens_dir {
            toml.insert_str(0, &format!("tokens_dir = \"{}\"\n", dir.display()));
            toml.push_str(&format!(
                "[bot_defaults]\napi_url = \"{}\"\npoll_timeout = \"{}s\"\n",
                self.api.base_url(),
                self.poll.as_secs()
            ));
            return toml;
        }
        for (name, token) in &self.bots {
            toml.push_str(&format!(
                "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout = \"{}s\"\n",
                self.api.base_url(),
                self.poll.as_secs()
            ));
        }
        toml
    }

    /// The lease the replicas run with.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Starts replica `i` (again, if it ran before) under the name `r<i>`.
    pub fn start(&mut self, i: usize) {
        self.start_as(i, "shared");
    }

    /// Starts replica `i` in the given cluster mode.
    pub fn start_as(&mut self, i: usize, mode: &str) {
        self.start_named(i, &format!("r{i}"), mode);
    }

    /// Starts replica `i` under `cluster.instance = name` (two may share one).
    pub fn start_named(&mut self, i: usize, name: &str, mode: &str) {
        let admin = format!("127.0.0.1:{}", free_port());
        let config = self.config(name, &admin, mode);
        let runs = self.replicas.iter().flatten().count();
        let process =
            RelayProcess::spawn(self.dir.path(), &format!("{name}-{i}-{runs}"), &config, &[]);
        if self.replicas.len() <= i {
            self.replicas.resize_with(i + 1, || None);
        }
        self.replicas[i] = Some(Replica { process, admin });
    }

    pub fn replica(&self, i: usize) -> &Replica {
        self.replicas[i].as_ref().expect("replica running")
    }

    pub fn kill(&mut self, i: usize) {
        self.replicas[i]
            .take()
            .expect("replica running")
            .process
            .kill();
    }

    /// The last lines above debug of every replica's log, for a failing test's output.
    pub fn print_logs(&self) {
        for (i, replica) in self.replicas.iter().enumerate() {
            let Some(r) = replica else { continue };
            let text = r.process.log_text();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("DEBUG") || l.contains("tgrelay::cluster"))
                .collect();
            eprintln!(
                "--- r{i} ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }

    /// Waits until the running replicas (but those in `except`) own every bot,
    /// ⌊B/R⌋ or ⌈B/R⌉ each.
    pub async fn balanced(&self, except: &[usize], within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let mut counts = Vec::new();
            for (i, replica) in self.replicas.iter().enumerate() {
                if let (Some(r), false) = (replica, except.contains(&i)) {
                    counts.push(scrape(&r.admin, "tgrelay_bots_owned").await as usize);
                }
            }
            let (b, r) = (self.bots.len(), counts.len().max(1));
            let total: usize = counts.iter().sum();
            if total == b && counts.iter().all(|c| *c == b / r || *c == b.div_ceil(r)) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("not balanced: {counts:?}");
                self.print_logs();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Feeds one update to every bot every `every`, until `stop_feeding`.
    pub fn trickle(&self, every: Duration) {
        self.feeding.store(true, Ordering::SeqCst);
        let (api, bots, fed, feeding) = (
            Arc::clone(&self.api),
            self.bots.clone(),
            Arc::clone(&self.fed),
            Arc::clone(&self.feeding),
        );
        tokio::spawn(async move {
            let corpus = Corpus::load();
            while feeding.load(Ordering::SeqCst) {
                for (name, token) in &bots {
                    let id = {
                        let mut fed = fed.lock().unwrap();
                        let n = fed.get_mut(name).unwrap();
                        *n += 1;
                        *n
                    };
                    api.push_updates(token, corpus.mixed(id, 1, id as u64));
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    pub fn stop_feeding(&self) {
        self.feeding.store(false, Ordering::SeqCst);
    }

    /// Waits until Telegram saw every fed update confirmed; false after `within`.
    pub async fn all_confirmed(&self, within: Duration) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await; // the last push lands
        let fed = self.fed.lock().unwrap().clone();
        for (name, token) in &self.bots {
            if !self
                .api
                .wait_for_confirmed(token, fed[name] as usize, within)
                .await
            {
                eprintln!(
                    "{name}: confirmed {} of {}",
                    self.api.confirmed(token).len(),
                    fed[name]
                );
                self.print_logs();
                return false;
            }
        }
        true
    }

    /// How many updates were fed, over every bot.
    pub fn fed_total(&self) -> usize {
        self.fed.lock().unwrap().values().map(|n| *n as usize).sum()
    }

    /// NATS: when the stream stored the first copy of each update, by `ce-id`.
    pub async fn stored_times(&self) -> std::collections::HashMap<String, std::time::SystemTime> {
        let mut first = std::collections::HashMap::new();
        for m in read_all(&jsupport::jetstream().await, &self.stream).await {
            if let Some(id) = m.headers.get("ce-id") {
                let at = first.entry(id.clone()).or_insert(m.stored_at);
                *at = (*at).min(m.stored_at);
            }
        }
        first
    }

    /// Every fed update that is missing from the broker, as `<bot>:<update_id>`.
    pub async fn missing_from_broker(&self) -> Vec<String> {
        let ids: BTreeSet<String> = match self.broker {
            BrokerKind::Nats => read_all(&jsupport::jetstream().await, &self.stream)
                .await
                .iter()
                .filter_map(|m| m.headers.get("ce-id").cloned())
                .collect(),
            BrokerKind::Kafka => {
                let prefix = self.prefix.clone();
                tokio::task::spawn_blocking(move || ksupport::read_prefix(&prefix))
                    .await
                    .unwrap()
                    .iter()
                    .filter_map(|r| r.headers.get("ce_id").cloned())
                    .collect()
            }
        };
        let fed = self.fed.lock().unwrap().clone();
        let mut missing = Vec::new();
        for (name, token) in &self.bots {
            let bot_id = token.split(':').next().unwrap();
            for id in 1..=fed[name] {
                if !ids.contains(&format!("{bot_id}:{id}")) {
                    missing.push(format!("{name}:{id}"));
                }
            }
        }
        missing
    }

    /// 409 Conflicts the running replicas received from getUpdates so far. (The fake
    /// also answers 409 to a long poll a replica gave up on when it stopped a bot, a
    /// reply nobody reads; those are not conflicts between pollers.)
    pub async fn conflicts_seen(&self, except: &[usize]) -> f64 {
        let mut sum = 0.0;
        for (_, replica) in self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !except.contains(i))
            .filter_map(|(i, r)| Some((i, r.as_ref()?)))
        {
            let labels = ["code=\"409\"", "method=\"getUpdates\""];
            sum += scrape_sum(&replica.admin, "tgrelay_telegram_errors_total", &labels).await;
        }
        sum
    }

    /// getUpdates calls answered 409 that arrived after `since`, over every bot.
    pub fn conflicts_since(&self, since: Instant) -> usize {
        self.bots
            .values()
            .flat_map(|t| self.api.calls(t))
            .filter(|c| c.method == "getUpdates" && c.status == 409 && c.at > since)
            .count()
    }

    /// When the first getUpdates of `bot` after `since` reached the fake.
    pub fn first_poll_after(&self, bot: &str, since: Instant) -> Option<Instant> {
        self.api
            .calls(&self.bots[bot])
            .iter()
            .filter(|c| c.method == "getUpdates" && c.at > since)
            .map(|c| c.at)
            .min()
    }

    /// The longest a bot of `bots` went without a getUpdates arriving, within [from, to].
    pub fn longest_unpolled(&self, bots: &[String], from: Instant, to: Instant) -> Duration {
        let mut worst = Duration::ZERO;
        for name in bots {
            let mut last = from;
            let calls = self.api.calls(&self.bots[name]);
            for c in calls
                .iter()
                .filter(|c| c.method == "getUpdates" && c.at > from && c.at < to)
            {
                worst = worst.max(c.at - last);
                last = c.at;
            }
            worst = worst.max(to - last);
        }
        worst
    }

    /// The bots a replica's log says it owns now (acquisitions minus releases and losses).
    pub fn owned_by_log(&self, i: usize) -> BTreeSet<String> {
        let log = self.replica(i).process.log_text();
        let mut owned = BTreeSet::new();
        for line in log.lines() {
            let Some(bot) = field(line, "bot") else {
                continue;
            };
            if line.contains("owns the bot") || line.contains("took the bot over") {
                owned.insert(bot);
            } else if line.contains("released the bot") || line.contains("lost the bot") {
                owned.remove(&bot);
            }
        }
        owned
    }

    pub fn log(&self, i: usize) -> String {
        self.replica(i).process.log_text()
    }
}

/// `name=value` of a plain-text log line.
fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}
