//! A JetStream cluster of three nats-servers of the test's own, as production NATS
//! runs: each node on free client and route ports with its own store. A node can be
//! killed (SIGKILL) and started again on the same ports and store.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::private_broker::nats_server;

pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

struct Node {
    name: String,
    port: u16,
    route_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream answers through every one.
    pub async fn start(size: usize) -> NatsCluster {
        let nodes = (0..size)
            .map(|i| Node {
                name: format!("n{i}"),
                port: free_port(),
                route_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster {
            dir: tempfile::tempdir().expect("a temporary directory"),
            nodes,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_jetstream(&cluster.node_url(i)).await;
        }
        cluster
    }

    /// Every node's client URL, comma-separated, as `sink.nats.url` takes them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The node named `name` (`n0`, `n1`, ...), as stream infos name their leader.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// A JetStream context through the nodes still running.
    pub async fn jetstream(&self) -> jetstream::Context {
        let urls: Vec<async_nats::ServerAddr> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .map(|i| self.node_url(i).parse().expect("a server address"))
            .collect();
        let client = async_nats::connect(urls)
            .await
            .expect("the cluster answers");
        jetstream::new(client)
    }

    /// SIGKILL: the node is gone at once, as a crashed machine is.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a killed node again, on its ports and store.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_jetstream(&self.node_url(i)).await;
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.route_port))
            .collect();
        let node = &self.nodes[i];
        let store = self.dir.path().join(&node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))
            .expect("a log file");
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-n", &node.name, "--cluster_name", "c"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route_port),
            ])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(store)
            .stdout(log.try_clone().expect("a second handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("nats-server starts (scripts/test installs it)");
        let port = node.port;
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the JetStream API answers through `url` (a meta leader exists).
    async fn wait_jetstream(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(client) = async_nats::connect(url).await {
                if jetstream::new(client).query_account().await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "JetStream never answered at {url}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
