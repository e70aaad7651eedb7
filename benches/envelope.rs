//! Envelope building vs. a plain serde_json validation pass over the same bytes.
//!
//! Input: getUpdates replies of 100 updates (~1 KB each, every kind) generated from
//! the Bot API's types. Target: building envelopes costs at most 1.5x validating.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde::de::IgnoredAny;
use tgrelay::envelope::{BotIdentity, Envelope};
use tgrelay::telegram::reply::parse_updates;

#[allow(dead_code)]
#[path = "../tests/support/corpus.rs"]
mod corpus;

// The relay binary's allocator: envelope building allocates (the split's vector, the
// envelopes) where the validation pass does not, so the bench runs it as the relay does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn reply(first_id: i64) -> Bytes {
    let updates = corpus::Corpus::load().mixed(first_id, 100, 42);
    let mut body = b"{\"ok\":true,\"result\":[".to_vec();
    body.extend(updates.join(&b","[..]));
    body.extend(b"]}");
    Bytes::from(body)
}

fn envelopes(c: &mut Criterion) {
    let body = reply(1_000_000);
    let bot = Arc::new(BotIdentity::new("main", 123456));
    let mut group = c.benchmark_group("getUpdates reply of 100 updates");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("serde_json IgnoredAny (validation only)", |b| {
        b.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(&body)).unwrap())
    });
    group.bench_function("tgrelay envelopes (split + routing facts)", |b| {
        b.iter(|| {
            let now = SystemTime::now();
            let updates = parse_updates(black_box(&body)).unwrap().unwrap();
            updates
                .into_iter()
                .map(|u| Envelope::from_head(&bot, u.head.unwrap(), u.bytes, now))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group!(benches, envelopes);
criterion_main!(benches);
