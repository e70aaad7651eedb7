//! The broker checks: NATS has the stream and it captures every subject the routes can
//! reach; Kafka has every topic they can reach. Asking only: what the relay would
//! create at start is a note.

use std::collections::BTreeSet;

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use futures::stream::{self, StreamExt};

use super::{within, Finding, CHECK_TIMEOUT};
use crate::broker::kafka::{topics, KafkaBroker};
use crate::broker::nats::{NatsBroker, NatsSinkError, StreamState};
use crate::broker::BotRoutes;
use crate::config::Config;
use crate::route::RouteTemplate;

/// Subject lookups in flight at once (each is one JetStream API request).
const LOOKUPS: usize = 32;

/// What each bot can publish: its name, id and asked-for kinds.
fn routes(config: &Config) -> Vec<BotRoutes> {
    config
        .bots
        .iter()
        .map(|(name, bot)| bot.routes(name))
        .collect()
}

pub(super) async fn check_nats(config: &Config) -> Finding {
    match within(nats_stream(config)).await {
        None => Finding::Problem(format!(
            "sink.nats: no answer from {} within {}s",
            config.sink.nats.url,
            CHECK_TIMEOUT.as_secs()
        )),
        Some(Err(e)) => Finding::Problem(format!("sink.nats: {e}")),
        Some(Ok(finding)) => finding,
    }
}

async fn nats_stream(config: &Config) -> Result<Finding, NatsSinkError> {
    let nats = &config.sink.nats;
    let stream = &nats.stream;
    let error = |message: String| NatsSinkError::Stream {
        stream: stream.clone(),
        message,
    };
    let broker = NatsBroker::connect(nats).await?;
    let js = broker.jetstream();
    match (broker.updates_stream_state().await?, nats.create_stream) {
        (StreamState::Exists, _) => {}
        (StreamState::Missing, true) => {
            return Ok(Finding::Note(format!(
                "sink.nats: stream {stream} is missing; the relay creates it at start \
                 (create_stream = true)"
            )))
        }
        (StreamState::Missing, false) => {
            return Ok(Finding::Problem(format!(
                "sink.nats: stream {stream} is missing (create it, or set \
                 sink.nats.create_stream = true)"
            )))
        }
    }
    let subjects = nats_subjects(config);
    let answers: Vec<_> = stream::iter(&subjects)
        .map(|subject| {
            let js = js.clone();
            async move { (subject, js.stream_by_subject(subject.as_str()).await) }
        })
        .buffer_unordered(LOOKUPS)
        .collect()
        .await;
    let mut stray = Vec::new();
    for (subject, answer) in answers {
        match answer {
            Ok(name) if &name == stream => {}
            Ok(name) => stray.push(format!("{subject} (stream {name})")),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                stray.push(format!("{subject} (no stream)"))
            }
            Err(e) => return Err(error(format!("looking up {subject}: {e}"))),
        }
    }
    stray.sort();
    Ok(if stray.is_empty() {
        Finding::Ok(format!(
            "sink.nats: stream {stream} exists and captures all {} subjects",
            subjects.len()
        ))
    } else {
        Finding::Problem(format!(
            "sink.nats: stream {stream} does not capture {}",
            stray.join(", ")
        ))
    })
}

/// Every subject an update of these bots can go to, as the Kafka sink's topics.
fn nats_subjects(config: &Config) -> BTreeSet<String> {
    let nats = &config.sink.nats;
    let subject = RouteTemplate::parse(&nats.subject).expect("validated template");
    let dead = RouteTemplate::parse(&nats.dead_letter_subject).expect("validated template");
    let mut subjects = BTreeSet::new();
    for bot in routes(config) {
        for kind in bot.kinds.iter().map(String::as_str).chain(["unknown"]) {
            subjects.insert(subject.render_with(&bot.name, bot.id, kind));
        }
        subjects.insert(dead.render_with(&bot.name, bot.id, "unknown"));
    }
    subjects
}

pub(super) async fn check_kafka(config: &Config) -> Finding {
    let kafka = &config.sink.kafka;
    let routes = routes(config);
    let missing = async {
        KafkaBroker::connect(kafka)
            .await?
            .missing_update_topics(&routes)
            .await
    };
    match within(missing).await {
        None => Finding::Problem(format!(
            "sink.kafka: no answer from brokers {} within {}s",
            kafka.brokers,
            CHECK_TIMEOUT.as_secs()
        )),
        Some(Err(e)) => Finding::Problem(format!("sink.kafka: {e}")),
        Some(Ok(missing)) if missing.is_empty() => Finding::Ok(format!(
            "sink.kafka: all {} topics exist",
            topics::required(kafka, &routes).len()
        )),
        Some(Ok(missing)) if kafka.create_topics => Finding::Note(format!(
            "sink.kafka: missing topics {}; the relay creates them at start \
             (create_topics = true)",
            missing.join(", ")
        )),
        Some(Ok(missing)) => Finding::Problem(format!(
            "sink.kafka: missing topics {} (create them, or set \
             sink.kafka.create_topics = true)",
            missing.join(", ")
        )),
    }
}
