//! Topics: which ones the routes can reach, checking (or creating) them at start, and
//! the periodic reachability probe behind readiness.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::{KafkaSinkConfig, KafkaSinkError};
use crate::broker::BotRoutes;
use crate::route::RouteTemplate;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Every topic an update of these bots can go to: each asked-for kind, `unknown`, and
/// the dead-letter topic.
pub fn required(config: &KafkaSinkConfig, routes: &[BotRoutes]) -> BTreeSet<String> {
    let topic = RouteTemplate::parse(&config.topic).expect("validated template");
    let dead = RouteTemplate::parse(&config.dead_letter_topic).expect("validated template");
    let mut topics = BTreeSet::new();
    for bot in routes {
        for kind in bot.kinds.iter().map(String::as_str).chain(["unknown"]) {
            topics.insert(topic.render_with(&bot.name, bot.id, kind));
        }
        topics.insert(dead.render_with(&bot.name, bot.id, "unknown"));
    }
    topics
}

/// Fails (or, with `create_topics`, creates them) when required topics are missing.
pub async fn ensure(config: &KafkaSinkConfig, routes: &[BotRoutes]) -> Result<(), KafkaSinkError> {
    ensure_named(config, &required(config, routes)).await
}

/// `ensure` for any topics (the outbound calls' ones, say).
pub async fn ensure_named(
    config: &KafkaSinkConfig,
    names: &BTreeSet<String>,
) -> Result<(), KafkaSinkError> {
    let error = |message: String| KafkaSinkError::Topics {
        brokers: config.brokers.clone(),
        message,
    };
    let missing = missing_named(config, names).await?;
    if missing.is_empty() {
        return Ok(());
    }
    if !config.create_topics {
        return Err(error(format!(
            "missing topics: {} (create them, or set sink.kafka.create_topics = true)",
            missing.join(", ")
        )));
    }
    create(config, &missing).await.map_err(error)?;
    tracing::info!(topics = %missing.join(", "), "created Kafka topics");
    Ok(())
}

/// The required topics the brokers do not have; reads metadata only, changes nothing.
pub async fn missing(
    config: &KafkaSinkConfig,
    routes: &[BotRoutes],
) -> Result<Vec<String>, KafkaSinkError> {
    missing_named(config, &required(config, routes)).await
}

async fn missing_named(
    config: &KafkaSinkConfig,
    names: &BTreeSet<String>,
) -> Result<Vec<String>, KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(KafkaSinkError::Producer)?;
    let existing: BTreeSet<String> = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
        Ok::<_, rdkafka::error::KafkaError>(
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .collect(),
        )
    })
    .await
    .expect("metadata task does not panic")
    .map_err(|e| KafkaSinkError::Topics {
        brokers: config.brokers.clone(),
        message: format!("cannot read topic metadata: {e}"),
    })?;
    Ok(names.difference(&existing).cloned().collect())
}

async fn create(config: &KafkaSinkConfig, names: &[String]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        config.client_config().create().map_err(|e| e.to_string())?;
    let min_insync = config.min_insync_replicas.to_string();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let topic = NewTopic::new(
                n,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            );
            with_min_insync(topic, config, &min_insync)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| format!("creating topics: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
        }
    }
    Ok(())
}

/// Every few seconds, asks the brokers for metadata: the sink is reachable while they
/// answer. Ends when the sink is dropped.
pub async fn probe(config: ClientConfig, reachable: Weak<AtomicBool>) {
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(admin) => admin,
        Err(e) => return tracing::error!(error = %e, "cannot start the Kafka reachability probe"),
    };
    let admin = std::sync::Arc::new(admin);
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(reachable) = reachable.upgrade() else {
            return;
        };
        let client = std::sync::Arc::clone(&admin);
        let answered = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        let was = reachable.swap(answered, Ordering::Relaxed);
        if was != answered {
            if answered {
                tracing::info!("Kafka brokers answer again");
            } else {
                tracing::warn!("Kafka brokers do not answer");
            }
        }
    }
}

/// `min.insync.replicas` when one is configured.
fn with_min_insync<'a>(
    topic: NewTopic<'a>,
    config: &KafkaSinkConfig,
    value: &'a str,
) -> NewTopic<'a> {
    match config.min_insync_replicas {
        -1 => topic,
        _ => topic.set("min.insync.replicas", value),
    }
}

/// Creates a one-partition topic (a log every replica reads whole, in order) unless
/// it exists, keeping records `retention_ms` (`-1`: for good) under `cleanup_policy`,
/// replicated as the sink's topics are.
pub async fn ensure_log(
    config: &KafkaSinkConfig,
    topic: &str,
    retention_ms: &str,
    cleanup_policy: &str,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config
        .connection_config()
        .create()
        .map_err(|e| e.to_string())?;
    let min_insync = config.min_insync_replicas.to_string();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(config.replication_factor))
        .set("retention.ms", retention_ms)
        .set("cleanup.policy", cleanup_policy);
    let new = with_min_insync(new, config, &min_insync);
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) | None => Ok(()),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
        Some(Err((_, code))) => Err(code.to_string()),
    }
}

/// Checks that a one-partition log still holds every record from offset 0 and will
/// keep them (no compaction, no time or size limit): the cluster's owners log
/// decides each compare-and-set by reading it whole, so a record deleted from it
/// would let two replicas own one bot. Returns the high watermark: the records there
/// are now.
pub async fn check_log_intact(config: &KafkaSinkConfig, topic: &str) -> Result<i64, String> {
    let admin: AdminClient<DefaultClientContext> = config
        .connection_config()
        .create()
        .map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|e| format!("reading its settings: {e}"))?;
    let fix = "delete it (the replicas rebuild it) or recreate it with cleanup.policy=delete, \
               retention.ms=-1 and retention.bytes=-1";
    if let Some(Ok(resource)) = described.first() {
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        if let Some(policy) = value("cleanup.policy").filter(|p| p.contains("compact")) {
            return Err(format!(
                "cleanup.policy is {policy}: compaction deletes owner records; {fix}"
            ));
        }
        for limit in ["retention.ms", "retention.bytes"] {
            if let Some(v) = value(limit).filter(|v| v.parse::<i64>().is_ok_and(|n| n >= 0)) {
                return Err(format!(
                    "{limit} is {v}: old owner records would be deleted; {fix}"
                ));
            }
        }
    }
    use rdkafka::consumer::Consumer as _;
    let consumer: rdkafka::consumer::BaseConsumer = config
        .connection_config()
        .create()
        .map_err(|e| e.to_string())?;
    let topic_owned = topic.to_owned();
    let (low, high) = tokio::task::spawn_blocking(move || {
        consumer.fetch_watermarks(&topic_owned, 0, METADATA_TIMEOUT)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading its offsets: {e}"))?;
    if low > 0 {
        return Err(format!(
            "its records before offset {low} were deleted, so the owners it records cannot be trusted; {fix}"
        ));
    }
    Ok(high)
}
