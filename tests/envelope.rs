//! Envelopes against the Bot API's own type data: every kind is known, and every
//! generated update keeps its bytes and its routing facts.

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use support::corpus::{expected_routing, Corpus};
use tgrelay::envelope::{BotIdentity, Envelope, UpdateKind};

#[test]
fn the_known_kinds_are_exactly_the_update_fields_of_the_bot_api() {
    let known: Vec<&str> = UpdateKind::KNOWN.iter().map(UpdateKind::as_str).collect();
    assert_eq!(
        known,
        Corpus::load().kinds(),
        "update src/envelope/kind.rs from the Bot API"
    );
}

#[test]
fn every_kind_keeps_its_bytes_and_routing_facts() {
    let corpus = Corpus::load();
    let bot = Arc::new(BotIdentity::new("main", 1));
    for seed in 0..20 {
        for (i, kind) in corpus.kinds().iter().enumerate() {
            let raw = corpus.update(kind, 1000 + i as i64, seed);
            let envelope = Envelope::from_update(&bot, Bytes::from(raw.clone()), SystemTime::now())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(&envelope.payload[..], &raw[..]);
            let (kind_name, chat, user) = expected_routing(&serde_json::from_slice(&raw).unwrap());
            assert!(
                !matches!(envelope.kind, UpdateKind::Other(_) | UpdateKind::Unknown),
                "{kind}"
            );
            assert_eq!(envelope.kind.as_str(), kind_name);
            assert_eq!(
                (envelope.chat_id, envelope.user_id),
                (chat, user),
                "{kind} seed {seed}"
            );
        }
    }
}
