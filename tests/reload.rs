//! Bots changed while the relay runs: SIGHUP re-reads the configuration; an added bot
//! starts, a removed one confirms and stops, a re-tokened one restarts alone, an
//! invalid change is refused, and no other bot's long poll is touched.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::process::RelayProcess;
use support::relay::{eventually, token};

const WAIT: Duration = Duration::from_secs(30);

fn config(api: &FakeBotApi, dir: &Path, bots: &[(&str, &str)]) -> String {
    let mut toml = format!(
        "drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n[sink]\nkind = \"file\"\n\
         [sink.file]\npath = \"{}\"\n",
        dir.join("updates.jsonl").display()
    );
    for (name, token) in bots {
        toml.push_str(&format!(
            "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout = \"30s\"\n",
            api.base_url()
        ));
    }
    toml
}

/// getUpdates calls that got no answer: the one in flight, and any given up on.
fn unanswered(api: &FakeBotApi, token: &str) -> usize {
    api.calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates" && c.status == 0)
        .count()
}

/// The `<bot_id>:<update_id>` of every update in the file sink.
fn relayed(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("updates.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some(v["id"].as_str()?.to_owned()))
        .collect()
}

/// Each bot's updates 1..=n are in the file sink.
fn assert_relayed(dir: &Path, bots: &[(&String, i64)]) {
    let ids = relayed(dir);
    for (bot, n) in bots {
        let id = bot.split(':').next().unwrap();
        for u in 1..=*n {
            assert!(ids.contains(&format!("{id}:{u}")), "{id}:{u} relayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_retokens_bots_without_touching_the_others() {
    let api = FakeBotApi::start().await;
    let (a, b, c, c2) = (token(8101), token(8102), token(8103), token(8104));
    for t in [&a, &b, &c, &c2] {
        api.add_bot(t);
    }
    let corpus = Corpus::load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config(&api, dir.path(), &[("a", &a), ("b", &b)])).unwrap();
    let relay = RelayProcess::spawn_file(dir.path(), "relay", &path, &[]);
    api.push_updates(&a, corpus.mixed(1, 3, 1));
    api.push_updates(&b, corpus.mixed(1, 3, 2));
    assert!(api.wait_for_confirmed(&a, 3, WAIT).await);
    assert!(api.wait_for_confirmed(&b, 3, WAIT).await);
    assert!(
        eventually(10, || unanswered(&api, &b) == 1).await,
        "b long-polls"
    );
    let b_polls = api.calls(&b).len();

    // Remove a (with an update in hand), add c.
    api.push_updates(&a, corpus.mixed(4, 2, 3));
    assert!(api.wait_for_confirmed(&a, 5, WAIT).await);
    std::fs::write(&path, config(&api, dir.path(), &[("b", &b), ("c", &c)])).unwrap();
    relay.signal("HUP");
    api.push_updates(&c, corpus.mixed(1, 4, 4));
    assert!(
        api.wait_for_confirmed(&c, 4, WAIT).await,
        "an added bot polls"
    );
    let a_calls = api.calls(&a).len();

    // An invalid change is refused: everything keeps running as it was.
    std::fs::write(
        &path,
        config(&api, dir.path(), &[("b", &b), ("c", "not-a-token")]),
    )
    .unwrap();
    relay.signal("HUP");
    assert!(
        eventually(10, || relay
            .log_text()
            .contains("configuration change refused"))
        .await
    );
    api.push_updates(&c, corpus.mixed(5, 1, 5));
    assert!(api.wait_for_confirmed(&c, 5, WAIT).await, "c still runs");

    // c gets a new token (another bot id): it restarts alone.
    std::fs::write(&path, config(&api, dir.path(), &[("b", &b), ("c", &c2)])).unwrap();
    relay.signal("HUP");
    api.push_updates(&c2, corpus.mixed(1, 2, 6));
    assert!(api.wait_for_confirmed(&c2, 2, WAIT).await, "re-tokened");

    api.push_updates(&b, corpus.mixed(4, 2, 7));
    assert!(api.wait_for_confirmed(&b, 5, WAIT).await);
    assert_eq!(api.calls(&a).len(), a_calls, "a removed bot polls no more");
    assert_eq!(
        api.calls(&b)[..b_polls]
            .iter()
            .filter(|c| c.status == 0)
            .count(),
        0,
        "b's long poll in flight through every change was answered, not cut short"
    );
    let log = relay.log_text();
    assert!(!log.contains("AAE-test_token"), "no token in the log");
    assert_eq!(relay.terminate().await.code(), Some(0));

    assert_relayed(dir.path(), &[(&a, 5), (&b, 5), (&c, 5), (&c2, 2)]);
}

/// A token directory laid out as the kubelet mounts a Secret: the files live in a
/// timestamped directory, `..data` links to it, and each key links through `..data`.
/// An update writes a new directory and swaps the `..data` link in one rename.
struct SecretMount {
    dir: std::path::PathBuf,
    generation: u32,
}

impl SecretMount {
    fn new(dir: &Path) -> SecretMount {
        std::fs::create_dir_all(dir).unwrap();
        SecretMount {
            dir: dir.to_owned(),
            generation: 0,
        }
    }

    fn publish(&mut self, keys: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let data = format!("..2026_11_26_{}", self.generation);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        for (key, value) in keys {
            std::fs::write(self.dir.join(&data).join(key), format!("{value}\n")).unwrap();
        }
        symlink(&data, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !keys.iter().any(|(k, _)| *k == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        for (key, _) in keys {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(key), link).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_directory_adds_retokens_and_removes_bots_as_its_files_change() {
    let api = FakeBotApi::start().await;
    let (a, b, c, c2) = (token(8201), token(8202), token(8203), token(8204));
    for t in [&a, &b, &c, &c2] {
        api.add_bot(t);
    }
    let corpus = Corpus::load();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let mut mount = SecretMount::new(&tokens);
    mount.publish(&[("a", &a), ("b", &b)]);
    // Every bot from the directory takes the defaults; b's own table overrides one.
    let toml = format!(
        "tokens_dir = \"{}\"\ndrain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n\
         [sink]\nkind = \"file\"\n[sink.file]\npath = \"{}\"\n\
         [bot_defaults]\napi_url = \"{}\"\npoll_timeout = \"30s\"\n[bots.b]\npoll_limit = 50\n",
        tokens.display(),
        dir.path().join("updates.jsonl").display(),
        api.base_url()
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, toml).unwrap();
    let relay = RelayProcess::spawn_file(dir.path(), "relay", &path, &[]);
    api.push_updates(&a, corpus.mixed(1, 3, 1));
    api.push_updates(&b, corpus.mixed(1, 3, 2));
    assert!(api.wait_for_confirmed(&a, 3, WAIT).await);
    assert!(api.wait_for_confirmed(&b, 3, WAIT).await);
    assert!(
        eventually(10, || unanswered(&api, &b) == 1).await,
        "b long-polls"
    );
    let b_polls = api.calls(&b).len();

    // A key added to the Secret is a bot.
    mount.publish(&[("a", &a), ("b", &b), ("c", &c)]);
    api.push_updates(&c, corpus.mixed(1, 4, 3));
    assert!(
        api.wait_for_confirmed(&c, 4, WAIT).await,
        "an added file's bot polls"
    );

    // A file that is not a token is refused whole; the running bots go on.
    mount.publish(&[("a", &a), ("b", &b), ("c", &c), ("d", "not-a-token")]);
    assert!(
        eventually(10, || relay
            .log_text()
            .contains("configuration change refused"))
        .await
    );
    api.push_updates(&c, corpus.mixed(5, 1, 4));
    assert!(api.wait_for_confirmed(&c, 5, WAIT).await, "c still runs");

    // c re-tokened and a removed (with an update just relayed) in one update.
    api.push_updates(&a, corpus.mixed(4, 2, 5));
    assert!(api.wait_for_confirmed(&a, 5, WAIT).await);
    mount.publish(&[("b", &b), ("c", &c2)]);
    api.push_updates(&c2, corpus.mixed(1, 2, 6));
    assert!(api.wait_for_confirmed(&c2, 2, WAIT).await, "re-tokened");
    assert!(
        eventually(10, || relay.log_text().contains("bot=a change=\"removed\"")
            || relay.log_text().contains("bot=a change=removed"))
        .await,
        "the removal is logged by name"
    );
    let a_calls = api.calls(&a).len();

    api.push_updates(&b, corpus.mixed(4, 2, 7));
    assert!(api.wait_for_confirmed(&b, 5, WAIT).await);
    assert!(
        api.calls(&b)
            .iter()
            .filter(|c| c.method == "getUpdates")
            .all(|c| c.params["limit"] == 50),
        "b's own table applies over the defaults"
    );
    assert_eq!(api.calls(&a).len(), a_calls, "a removed bot polls no more");
    assert_eq!(
        api.calls(&b)[..b_polls]
            .iter()
            .filter(|c| c.status == 0)
            .count(),
        0,
        "b's long poll in flight through every change was answered, not cut short"
    );
    assert!(
        !relay.log_text().contains("AAE-test_token"),
        "no token in the log"
    );
    assert_eq!(relay.terminate().await.code(), Some(0));

    assert_relayed(dir.path(), &[(&a, 5), (&b, 5), (&c, 5), (&c2, 2)]);
}

/// Webhook bots from a token directory: the listener is up before the first file
/// arrives, a bot's route appears with its file (and its webhook is registered at the
/// URL its defaults name) and goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_bot_from_a_token_file_gets_its_route_on_the_live_listener() {
    let api = FakeBotApi::start().await;
    let shop = token(8301);
    api.add_bot(&shop);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let listen = format!("127.0.0.1:{}", support::relay::free_port());
    let toml = format!(
        "tokens_dir = \"{}\"\ndrain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n\
         [webhook]\nlisten = \"{listen}\"\n\
         [sink]\nkind = \"file\"\n[sink.file]\npath = \"{}\"\n\
         [bot_defaults]\napi_url = \"{}\"\nmode = \"webhook\"\n\
         [bot_defaults.webhook]\nurl = \"http://relay.example/telegram/{{bot}}\"\nsecret_token = \"s3cret\"\n",
        tokens.display(),
        dir.path().join("updates.jsonl").display(),
        api.base_url()
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, toml).unwrap();
    let relay = RelayProcess::spawn_file(dir.path(), "relay", &path, &[]);
    let http = reqwest::Client::new();
    let post = |update_id: i64| {
        http.post(format!("http://{listen}/telegram/shop"))
            .header("X-Telegram-Bot-Api-Secret-Token", "s3cret")
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"update_id":{update_id},"message":{{"message_id":1,"date":0,"chat":{{"id":1,"type":"private"}},"text":"hi"}}}}"#
            ))
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.map(|r| r.status().as_u16()).ok();
    assert!(
        eventually(10, || std::net::TcpStream::connect(&listen).is_ok()).await,
        "the listener is up with no bot yet"
    );
    assert_eq!(status(post(1).await), Some(404), "no route before the file");

    std::fs::write(tokens.join("shop"), format!("{shop}\n")).unwrap();
    let mut answered = None;
    for _ in 0..100 {
        answered = status(post(1).await);
        if answered == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, Some(200), "the route came with the file");
    assert!(
        eventually(10, || api
            .calls(&shop)
            .iter()
            .any(|c| c.method == "setWebhook"
                && c.params["url"] == "http://relay.example/telegram/shop"))
        .await,
        "registered at the URL its defaults name, {{bot}} filled in"
    );
    assert!(relayed(dir.path()).contains("8301:1"), "relayed");

    std::fs::remove_file(tokens.join("shop")).unwrap();
    let mut answered = None;
    for _ in 0..100 {
        answered = status(post(2).await);
        if answered == Some(404) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, Some(404), "the route went with the file");
    assert_eq!(relay.terminate().await.code(), Some(0));
}
