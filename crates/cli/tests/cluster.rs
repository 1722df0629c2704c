//! Cluster nodes as `ferry gateway` processes on a real 3-member etcd (Debian's
//! `etcd-server`): the node holding a listener is killed with SIGKILL while senders keep
//! coming through the other nodes; the listener (an SDK endpoint naming every node) moves
//! and the senders reach it again, well within the lease's time to live.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ferry, free_port, within};
use ferry_interop::cluster::{Etcd, SharedTls};
use ferry_interop::serve_echo;
use ferry_sdk::{Endpoint, Listener, Message, SasKeyProvider};
use tokio::process::Child;
use tokio::time::Instant;

const RULE: &str = "RootManageSharedAccessKey";
const LEASE_TTL: Duration = Duration::from_secs(3);

/// Writes node `i`'s configuration file.
fn config(dir: &Path, i: usize, tls_port: u16, etcd: &Etcd, tls: &SharedTls, key: &str) -> PathBuf {
    let endpoints = etcd
        .endpoints()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"namespace = "localhost"
dynamic_paths = true
[listen]
tls = "127.0.0.1:{tls_port}"
[tls]
cert = {cert:?}
key = {tls_key:?}
[[rules]]
name = "{RULE}"
key = "{key}"
rights = ["Manage"]
[cluster]
node = "node-{i}"
rpc = "127.0.0.1:{rpc}"
secret = "the cluster's shared secret, test only"
lease_ttl = {ttl}
[cluster.etcd]
endpoints = [{endpoints}]
"#,
        cert = tls.cert.display().to_string(),
        tls_key = tls.key.display().to_string(),
        rpc = free_port(),
        ttl = LEASE_TTL.as_secs(),
    );
    let path = dir.join(format!("node-{i}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

async fn start(config: &Path) -> Child {
    let config = config.display().to_string();
    ferry(&["gateway", "--config", &config], &[], "joined the cluster").await
}

fn endpoint(ports: &[u16], path: &str, tls: &SharedTls, key: &str) -> Endpoint {
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("wss://localhost:{p}"))
        .collect();
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    let mut endpoint = Endpoint::cluster(&bases, path).expect("cluster endpoint");
    endpoint.set_token_provider(SasKeyProvider::new(RULE, key, Duration::from_secs(3600)));
    let roots = ferry_net::tls::roots_from_pem(tls.ca_pem.as_bytes()).expect("CA");
    endpoint.set_tls_config(
        ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11]).expect("client"),
    );
    endpoint
}

/// One echo round trip through `endpoint`; whether it came back intact.
async fn echo(endpoint: &Endpoint, payload: &[u8]) -> bool {
    let exchange = async {
        let mut stream = ferry_sdk::connect(endpoint, &[]).await.ok()?;
        stream
            .send(Message::Binary(payload.to_vec().into()))
            .await
            .ok()?;
        let back = stream.recv().await.ok()??;
        let _ = stream.close(1000, "done").await;
        Some(back == Message::Binary(payload.to_vec().into()))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Some(true))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_listener_moves_and_senders_reach_it_again_within_the_lease() {
    within(async {
        let etcd = Etcd::start(3).await;
        let tls = SharedTls::generate();
        let key = ferry_gateway::config::random_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let file = config(dir.path(), i, *port, &etcd, &tls, &key);
            nodes.push(start(&file).await);
        }
        // The listener names every node and starts on node 0.
        let listening = endpoint(&ports, "moving", &tls, &key).on_gateway(0);
        serve_echo(Listener::open(listening).await.expect("listener opens"));
        let through = |i: usize| endpoint(&ports, "moving", &tls, &key).on_gateway(i);
        for i in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !echo(&through(i), b"before").await {
                assert!(Instant::now() < deadline, "no echo through node {i}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        nodes[0].start_kill().expect("SIGKILL");
        let killed = Instant::now();
        let _ = nodes[0].wait().await;
        // Senders keep coming through the two other nodes until both reach the listener.
        let mut back = [false; 3];
        let mut attempts = 0;
        while !(back[1] && back[2]) {
            assert!(
                killed.elapsed() < LEASE_TTL + Duration::from_secs(10),
                "senders still cannot reach the listener {:?} after the kill",
                killed.elapsed()
            );
            for i in [1, 2] {
                if !back[i] {
                    attempts += 1;
                    back[i] = echo(&through(i), b"after").await;
                }
            }
        }
        let recovered = killed.elapsed();
        eprintln!(
            "listener reachable through both surviving nodes {recovered:?} after SIGKILL ({attempts} sender attempts)"
        );
        assert!(
            recovered <= LEASE_TTL + Duration::from_secs(2),
            "recovery took {recovered:?}, over the lease's {LEASE_TTL:?} + 2 s"
        );
        for node in &mut nodes {
            let _ = node.start_kill();
        }
    })
    .await;
}
