//! Writes the starting corpus of the fuzz targets: realistic updates of every kind,
//! generated from the Bot API's type data by the tests' own generator, and a few
//! replies no well-behaved server sends.
//!
//! Usage: tgrelay-fuzz-seed CORPUS_DIR (writes CORPUS_DIR/envelope and CORPUS_DIR/webhook)

use std::path::{Path, PathBuf};

// The generator finds its type data through CARGO_MANIFEST_DIR, which names this
// package; point it at the repository root, two levels up.
macro_rules! env {
    ("CARGO_MANIFEST_DIR") => {
        concat!(::std::env!("CARGO_MANIFEST_DIR"), "/../..")
    };
}

#[allow(dead_code)]
#[path = "../../../tests/support/corpus.rs"]
mod corpus;

/// The webhook target's control bytes for a plain delivery: POST to the bot's path with
/// the right secret, JSON content type, a broker that is up, no proxy (see webhook.rs).
const WEBHOOK_PLAIN: [u8; 6] = [0, 0, 0, 0, 0, 0];

const ODD_REPLIES: [&str; 8] = [
    r#"{"ok":true,"result":[]}"#,
    r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
    r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001234567890}}"#,
    r#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}"#,
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    r#"{"ok":true,"result":[{"update_id":1,"message":{}},{"nope":true},{"update_id":18446744073709551615},{"update_id":"4"},[],null,{"update_id":5,"poll":{},"message":{}},{"update_id":6,"callback_query":{"message":{"chat":{"id":[7]}},"from":{"id":1.5}}}]}"#,
    r#"{"result":[[[{"update_id":[{"a":{}}]}]],{"update_id":-0,"x":{"chat":{"id":{"id":1}},"user":{"id":-9223372036854775808}}},"\ud83d\ude00\u00e9\/",1e-7],"ok":true,"ok":true,"description":{"a":[1,{"b":null}]}}"#,
    r#"{"ok":true,"result":[{"update_id":9,"business_connection":{"user_chat_id":42,"user":{"id":7}}},{"update_id":10,"poll_answer":{"voter_chat":{"id":-100},"user":{"id":8}}}]} "#,
];

const ODD_WEBHOOK_BODIES: [&str; 6] = [
    "not json",
    "[1,2]",
    r#"{"message":{}}"#,
    r#"{"update_id":"1"}"#,
    "",
    r#"{"update_id":9223372036854775807,"story_reaction":{"chat":{"id":1}}}"#,
];

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: tgrelay-fuzz-seed CORPUS_DIR"),
    );
    let corpus = corpus::Corpus::load();
    let kinds = corpus.kinds();
    let envelope = dir.join("envelope");
    let webhook = dir.join("webhook");
    for dir in [&envelope, &webhook] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }

    // Every kind alone (a webhook body; the envelope target reads it that way too),
    // plus a future kind the generator mixes in.
    for (i, kind) in kinds.iter().enumerate() {
        let update = corpus.update(kind, 1000 + i as i64, 1);
        write(&envelope, &format!("update-{kind}"), &update);
        write(
            &webhook,
            &format!("update-{kind}"),
            &[&WEBHOOK_PLAIN[..], &update].concat(),
        );
    }
    let future = &corpus.mixed(1, 50, 1)[49];
    write(
        &webhook,
        "update-future-kind",
        &[&WEBHOOK_PLAIN[..], future].concat(),
    );

    // getUpdates replies of 1 to 5 updates, every kind in turn.
    let updates = corpus.mixed(1, 150, 2);
    let mut rest = &updates[..];
    for n in (1..=5).cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        let reply = [
            &br#"{"ok":true,"result":["#[..],
            &batch.join(&b","[..]),
            b"]}",
        ]
        .concat();
        write(
            &envelope,
            &format!("reply-{:03}", updates.len() - rest.len()),
            &reply,
        );
    }

    for (i, reply) in ODD_REPLIES.iter().enumerate() {
        write(&envelope, &format!("odd-reply-{i}"), reply.as_bytes());
    }
    for (i, body) in ODD_WEBHOOK_BODIES.iter().enumerate() {
        write(
            &webhook,
            &format!("odd-body-{i}"),
            &[&WEBHOOK_PLAIN[..], body.as_bytes()].concat(),
        );
    }
    // Over the target's 4 KiB body limit (413), which also lets inputs grow that large.
    let large = format!(
        r#"{{"update_id":8,"message":{{"text":"{}"}}}}"#,
        "x".repeat(5000)
    );
    write(
        &webhook,
        "too-large",
        &[&WEBHOOK_PLAIN[..], large.as_bytes()].concat(),
    );
    // A retry after a 200, and a delivery through the trusted proxy with only
    // Telegram's networks allowed (peer 3, X-Forwarded-For of 15 bytes).
    let update = corpus.update("message", 77, 3);
    write(
        &webhook,
        "retry",
        &[&[0, 0, 0, 8, 0, 0][..], &update].concat(),
    );
    let xff = b"149.154.167.220";
    let proxied = [&[0, 0, 0, 16, 3, xff.len() as u8][..], xff, &update].concat();
    write(&webhook, "proxied", &proxied);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
