//! Envelopes against the Bot API's own type data: every kind is known, and every
//! generated update keeps its bytes and its routing facts.

mod support;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use support::corpus::{expected_routing, Corpus};
use tgrelay::envelope::{BotIdentity, Envelope, UpdateKind};

/// The release tests/data/bot-api-types.json is extracted from (its api.json).
const BASE_RELEASE: &str = "Bot API 10.1";
/// Kinds added since, named here so each one is a deliberate step: a new kind goes in
/// src/envelope/kind.rs, here, and (with its type) in tests/data/bot-api-later.json.
const LATER_KINDS: [(&str, &str); 2] = [
    ("Bot API 10.2", "subscription"),
    ("Bot API 10.3", "stopped_message_generation"),
];

#[test]
fn the_known_kinds_are_exactly_the_update_fields_of_the_bot_api() {
    let corpus = Corpus::load();
    assert_eq!(corpus.base_version(), BASE_RELEASE);
    assert_eq!(corpus.later_kinds(), LATER_KINDS);
    let known: Vec<&str> = UpdateKind::KNOWN.iter().map(UpdateKind::as_str).collect();
    assert_eq!(
        known,
        corpus.kinds(),
        "update src/envelope/kind.rs from the Bot API"
    );
    // The explicit additions are the end of the list; all before them is the api.json's.
    let later: Vec<&str> = LATER_KINDS.iter().map(|(_, kind)| *kind).collect();
    assert_eq!(&known[known.len() - later.len()..], later.as_slice());
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
