//! A relay on a three-node JetStream cluster, as production NATS runs: losing any one
//! node (SIGKILL) stops no bot. The relay names every node in `sink.nats.url`, and
//! what it creates there (the updates' stream) is replicated, so the stream has a
//! leader again within seconds and updates keep being stored and confirmed while the
//! node is away.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::nats::{read_all, unique};
use support::nats_cluster::NatsCluster;
use support::relay::{config, token};
use tgrelay::app::Relay;
use tokio_util::sync::CancellationToken;

const BOTS: u64 = 3;

fn sink_toml(urls: &str, stream: &str, prefix: &str) -> String {
    format!(
        "[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{urls}\"\nstream = \"{stream}\"\n\
         stream_subjects = [\"{prefix}.>\"]\nsubject = \"{prefix}.{{bot}}.{{kind}}\"\n\
         dead_letter_subject = \"{prefix}.{{bot}}.deadletter\"\n"
    )
}

/// Feeds `count` updates to every bot, from `first` on, and waits until all are confirmed.
async fn feed_and_confirm(api: &FakeBotApi, tokens: &[String], first: i64, count: i64) {
    let corpus = Corpus::load();
    for (b, token) in tokens.iter().enumerate() {
        let updates = (first..first + count)
            .map(|id| corpus.update("message", id, b as u64 * 1000 + id as u64))
            .collect();
        api.push_updates(token, updates);
    }
    for token in tokens {
        let total = (first + count - 1) as usize;
        assert!(
            api.wait_for_confirmed(token, total, Duration::from_secs(60))
                .await,
            "bot {token}: confirmed {:?} of {total}",
            api.confirmed(token).len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_node_that_leads_the_stream_stops_no_bot() {
    let mut cluster = NatsCluster::start(3).await;
    let api = FakeBotApi::start().await;
    let tokens: Vec<String> = (0..BOTS).map(|i| token(778_100 + i)).collect();
    for t in &tokens {
        api.add_bot(t);
    }
    let names: Vec<String> = (0..BOTS).map(|i| format!("b{i}")).collect();
    let bots: Vec<(&str, &str)> = names
        .iter()
        .zip(&tokens)
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let (stream, prefix) = (unique("TGRELAY_HA"), unique("ha"));
    let relay_config = config(
        &api.base_url(),
        &bots,
        &sink_toml(&cluster.urls(), &stream, &prefix),
    );
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(Relay::new(relay_config).run(shutdown.clone()));
    feed_and_confirm(&api, &tokens, 1, 2).await;

    let js = cluster.jetstream().await;
    let info = js
        .get_stream(&stream)
        .await
        .expect("the relay created the stream")
        .info()
        .await
        .expect("stream info")
        .clone();
    let placement = info.cluster.expect("a clustered stream");
    assert_eq!(
        placement.replicas.len(),
        2,
        "the stream is replicated on every node: {placement:?}"
    );
    let leader = cluster.index_of(&placement.leader.expect("a leader"));
    cluster.kill(leader);

    // While the leader's node is gone: every bot's updates are stored and confirmed.
    feed_and_confirm(&api, &tokens, 3, 5).await;
    let js = cluster.jetstream().await;
    let stored: BTreeSet<String> = read_all(&js, &stream)
        .await
        .into_iter()
        .map(|m| m.headers["ce-id"].clone())
        .collect();
    assert_eq!(stored.len(), (BOTS * 7) as usize, "{stored:?}");

    shutdown.cancel();
    relay.await.expect("no panic").expect("a clean stop");
    cluster.restart(leader).await;
}
