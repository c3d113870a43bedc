//! A real 3-node nats-server cluster on loopback, for the tests of vigil on replicated streams:
//! each node with its own client port, route port and JetStream store directory, routed to the
//! others. A node can be killed with SIGKILL and started again on the same ports and store, as a
//! failed machine comes back. Every node is killed when the cluster is dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::nats::{free_port, nats_server_bin};

/// One node of the cluster.
struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until JetStream answers (a meta leader
    /// is elected).
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes =
            ports.iter().map(|(_, route)| format!("nats-route://127.0.0.1:{route}")).collect::<Vec<_>>().join(", ");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, route))| {
                let name = format!("n{}", i + 1);
                let store = dir.path().join(&name);
                let config = dir.path().join(format!("{name}.conf"));
                let text = format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
                     cluster {{ name: vigil-test, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                    store.display()
                );
                std::fs::write(&config, text).unwrap();
                Node { name, port, config, child: None }
            })
            .collect();
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let bin = nats_server_bin();
        let node = &mut self.nodes[i];
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); `make nats-server` fetches one", bin.display()));
        node.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "node {} never listened", node.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's client URL, comma-separated (how vigil and clients are given a cluster).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// A client of the whole cluster, which reconnects to another node when its own goes.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<async_nats::ServerAddr> = self.urls().split(',').map(|u| u.parse().unwrap()).collect();
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(urls).await.unwrap()
    }

    /// Waits (bounded: 30 s) until the cluster's JetStream answers requests through `js`.
    pub async fn wait_ready(&self, js: &jetstream::Context) {
        let started = Instant::now();
        while js.query_account().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the cluster's JetStream never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the node leading stream `name` (waits, bounded, while it has none).
    pub async fn leader_of(&self, js: &jetstream::Context, name: &str) -> usize {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = js.get_stream(name).await
                && let Ok(info) = stream.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                && let Some(i) = self.nodes.iter().position(|n| n.name == leader)
            {
                return i;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "stream {name} has no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts node `i` again on its ports and store.
    pub fn start_again(&mut self, i: usize) {
        self.spawn(i);
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
