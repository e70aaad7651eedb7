//! Enterprise networks: a Bot API behind a private CA (a TLS-inspecting egress proxy, or a
//! local Bot API server behind a TLS front), Bot API calls through `HTTPS_PROXY` except
//! for `NO_PROXY` hosts, and a NATS server that requires TLS with client certificates.
//! Certificates come from openssl, the proxy and the TLS front are the test's own, the
//! NATS server is a nats-server of the test's own.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::nats::{read_all, unique};
use support::private_broker::{BrokerKind, PrivateBroker};
use support::proxy::ConnectProxy;
use support::relay::{eventually, relay_until_confirmed, token, RunningRelay};
use support::tls::{https_front, Pki};
use tgrelay::config::Config;
use tgrelay::sink::memory::MemorySink;

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");
const WAIT: Duration = Duration::from_secs(30);

/// One polling bot at `api_url`, and `extra` TOML.
fn bot_toml(token: &str, api_url: &str, extra: &str) -> String {
    format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n{extra}\n[bots.main]\n\
         token = \"{token}\"\napi_url = \"{api_url}\"\npoll_timeout = \"1s\"\n"
    )
}

fn config(toml: &str) -> Config {
    Config::from_figment(Figment::from(Toml::string(toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn ca_toml(ca: &Path) -> String {
    format!("[telegram]\nca_file = \"{}\"\n", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_api_behind_a_private_ca_is_reached_with_its_ca_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let api = FakeBotApi::start().await;
    let upstream = api
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let front = https_front(&pki.server_cert, &pki.server_key, upstream).await;
    let url = format!("https://{front}");
    let token = token(919191);
    api.add_bot(&token);
    api.push_updates(&token, Corpus::load().mixed(1, 5, 41));

    // The built-in roots alone do not trust the private CA: getMe never gets through.
    let untrusting = RunningRelay::started(
        config(&bot_toml(&token, &url, "")),
        Arc::new(MemorySink::new()),
    )
    .await;
    let refused = "tgrelay_telegram_errors_total{bot=\"main\",code=\"transport\",method=\"getMe\"}";
    assert!(
        eventually(30, || untrusting.metric(refused) >= 1.0).await,
        "{}",
        untrusting.metrics.render()
    );
    untrusting.stop().await.unwrap();
    assert!(api.confirmed(&token).is_empty());

    let sink = Arc::new(MemorySink::new());
    let trusting = RunningRelay::started(
        config(&bot_toml(&token, &url, &ca_toml(&pki.ca))),
        sink.clone(),
    )
    .await;
    assert!(api.wait_for_confirmed(&token, 5, WAIT).await);
    trusting.stop().await.unwrap();
    assert_eq!(sink.delivered().len(), 5);
}

/// The relay binary with `toml`, in an environment whose only proxy settings are `env`.
fn spawn(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Child {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut command = Command::new(BIN);
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(var).env_remove(var.to_lowercase());
    }
    command
        .args(["run", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the relay binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_api_calls_go_through_https_proxy_unless_no_proxy_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let api = FakeBotApi::start().await;
    let upstream = api
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let front = https_front(&pki.server_cert, &pki.server_key, upstream).await;
    let proxy = ConnectProxy::start().await;
    let token = token(929292);
    api.add_bot(&token);
    let sink = format!(
        "[sink.file]\npath = \"{}\"\n",
        dir.path().join("updates.jsonl").display()
    );
    let toml = bot_toml(
        &token,
        &format!("https://localhost:{}", front.port()),
        &format!("{}{sink}", ca_toml(&pki.ca)),
    );
    let corpus = Corpus::load();

    api.push_updates(&token, corpus.mixed(1, 5, 42));
    let mut relay = spawn(dir.path(), &toml, &[("HTTPS_PROXY", &proxy.url())]);
    let through_proxy = api.wait_for_confirmed(&token, 5, WAIT).await;
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(through_proxy, "relayed through the proxy");
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty());
    let target = format!("localhost:{}", front.port());
    assert!(tunnels.iter().all(|t| *t == target), "{tunnels:?}");

    api.push_updates(&token, corpus.mixed(6, 5, 43));
    let env = [
        ("https_proxy", proxy.url()),
        ("no_proxy", "localhost".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut relay = spawn(dir.path(), &toml, &env);
    let direct = api.wait_for_confirmed(&token, 10, WAIT).await;
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(direct, "relayed without the proxy");
    assert_eq!(proxy.tunnels().len(), tunnels.len(), "no_proxy bypasses it");
}

/// nats-server arguments: TLS with `pki`'s server certificate, verifying clients.
fn mutual_tls_args(pki: &Pki) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        "--tls".into(),
        "--tlscert".into(),
        p(&pki.server_cert),
        "--tlskey".into(),
        p(&pki.server_key),
        "--tlscacert".into(),
        p(&pki.ca),
        "--tlsverify".into(),
    ]
}

fn nats_tls_toml(broker: &PrivateBroker, stream: &str, prefix: &str, tls: &str) -> String {
    format!(
        "[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{}\"\nstream = \"{stream}\"\n\
         stream_subjects = [\"{prefix}.>\"]\nsubject = \"{prefix}.{{bot}}.{{kind}}\"\n{tls}\n",
        broker.address()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_mutual_tls_takes_updates_from_a_client_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let args = mutual_tls_args(&pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = PrivateBroker::start_with(BrokerKind::Nats, &args);
    let (stream, prefix) = (unique("TGRELAY_MTLS"), unique("mtls"));
    let mutual = format!(
        "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );

    let api = FakeBotApi::start().await;
    let token = token(939393);
    api.add_bot(&token);
    api.push_updates(&token, Corpus::load().mixed(1, 7, 44));
    relay_until_confirmed(
        &api,
        &token,
        &nats_tls_toml(&broker, &stream, &prefix, &mutual),
        7,
    )
    .await;
    let consumer = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .connect(broker.address())
        .await
        .expect("the consumer connects with its certificate");
    let stored = read_all(&async_nats::jetstream::new(consumer), &stream).await;
    assert_eq!(stored.len(), 7);

    // The CA alone: the server asks for a client certificate and gets none. A client
    // certificate without the CA: the server's certificate is not trusted.
    let refusal = |tls: String| {
        let toml =
            bot_toml(&token, &api.base_url(), "") + &nats_tls_toml(&broker, &stream, &prefix, &tls);
        async move {
            match tgrelay::sink::connect(&config(&toml).sink, &[]).await {
                Ok(_) => panic!("connected with only {tls}"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let ca_only = format!("tls_ca_file = \"{}\"\n", pki.ca.display());
    let error = refusal(ca_only).await;
    assert!(
        error.contains("connecting to NATS") && error.contains("set sink.nats.tls_cert_file"),
        "{error}"
    );
    let no_ca = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let error = refusal(no_ca).await;
    assert!(error.contains("set sink.nats.tls_ca_file"), "{error}");
}
