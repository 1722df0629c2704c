//! Cluster nodes as `ferry gateway` processes on a real 3-member etcd (Debian's
//! `etcd-server`): the node holding a listener is killed with SIGKILL while senders keep
//! coming through the other nodes; the listener (an SDK endpoint naming every node) moves
//! and the senders reach it again, well within the lease's time to live.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ferry, free_port, iperf_client, pattern, within};
use ferry_interop::cluster::{Etcd, Netns, SharedTls, TestCluster};
use ferry_interop::serve_echo;
use ferry_sdk::{ConnectError, Endpoint, Listener, Message, SasKeyProvider};
use tokio::process::Child;
use tokio::time::Instant;

const RULE: &str = "RootManageSharedAccessKey";
const LEASE_TTL: Duration = Duration::from_secs(3);

/// Where a node listens and what it reaches.
struct Spec {
    i: usize,
    /// The address its TLS port and its node-to-node port are on.
    ip: String,
    tls_port: u16,
    /// etcd's client URLs as this node reaches them.
    etcd: Vec<String>,
}

impl Spec {
    /// Node `i` on loopback.
    fn local(i: usize, tls_port: u16, etcd: &Etcd) -> Self {
        Self {
            i,
            ip: "127.0.0.1".into(),
            tls_port,
            etcd: etcd.endpoints(),
        }
    }

    /// `wss://` base of its TLS port.
    fn base(&self) -> String {
        let host = if self.ip == "127.0.0.1" {
            "localhost"
        } else {
            &self.ip
        };
        format!("wss://{host}:{}", self.tls_port)
    }
}

/// Writes a node's configuration file.
fn config(dir: &Path, spec: &Spec, tls: &SharedTls, key: &str) -> PathBuf {
    let endpoints = spec
        .etcd
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"namespace = "localhost"
dynamic_paths = true
[listen]
tls = "{ip}:{tls_port}"
[tls]
cert = {cert:?}
key = {tls_key:?}
[[rules]]
name = "{RULE}"
key = "{key}"
rights = ["Manage"]
[cluster]
node = "node-{i}"
advertise = "{advertise}"
rpc = "{ip}:{rpc}"
secret = "the cluster's shared secret, test only"
lease_ttl = {ttl}
[cluster.etcd]
endpoints = [{endpoints}]
"#,
        ip = spec.ip,
        i = spec.i,
        tls_port = spec.tls_port,
        advertise = spec.base(),
        cert = tls.cert.display().to_string(),
        tls_key = tls.key.display().to_string(),
        rpc = free_port(),
        ttl = LEASE_TTL.as_secs(),
    );
    let path = dir.join(format!("node-{}.toml", spec.i));
    std::fs::write(&path, text).expect("write config");
    path
}

async fn start(config: &Path) -> Child {
    let config = config.display().to_string();
    ferry(&["gateway", "--config", &config], &[], "joined the cluster").await
}

fn endpoint(bases: &[String], path: &str, tls: &SharedTls, key: &str) -> Endpoint {
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

/// Sends through each of `nodes` until a sender through every one has had its echo; fails
/// the test after `limit`. Returns how many senders tried.
async fn until_echoed(
    through: &impl Fn(usize) -> Endpoint,
    nodes: &[usize],
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    for &i in nodes {
        loop {
            attempts += 1;
            if echo(&through(i), b"through").await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no sender through node {i} reached the listener within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_listener_moves_and_senders_reach_it_again_within_the_lease() {
    within(async {
        let etcd = Etcd::start(3).await;
        let tls = SharedTls::generate();
        let key = ferry_gateway::config::random_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let specs: Vec<Spec> = (0..3).map(|i| Spec::local(i, free_port(), &etcd)).collect();
        let mut nodes = Vec::new();
        for spec in &specs {
            nodes.push(start(&config(dir.path(), spec, &tls, &key)).await);
        }
        let bases: Vec<String> = specs.iter().map(Spec::base).collect();
        // The listener names every node and starts on node 0.
        let listening = endpoint(&bases, "moving", &tls, &key).on_gateway(0);
        serve_echo(Listener::open(listening).await.expect("listener opens"));
        let through = |i: usize| endpoint(&bases, "moving", &tls, &key).on_gateway(i);
        until_echoed(&through, &[0, 1, 2], Duration::from_secs(10)).await;

        nodes[0].start_kill().expect("SIGKILL");
        let killed = Instant::now();
        let _ = nodes[0].wait().await;
        // Senders keep coming through the two other nodes until both reach the listener.
        let attempts = until_echoed(&through, &[1, 2], LEASE_TTL + Duration::from_secs(10)).await;
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

/// Starts `ferry gateway` inside `ns`; returns it once it joined the cluster, and the moment
/// it logs that it let its listeners go, when it does.
async fn start_inside(
    ns: &Netns,
    config: &Path,
) -> (Child, tokio::sync::oneshot::Receiver<Instant>) {
    let mut child = ns
        .command(common::FERRY)
        .args(["gateway", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ferry starts in the namespace");
    let stderr = child.stderr.take().expect("stderr piped");
    let (fenced_tx, fenced) = tokio::sync::oneshot::channel();
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let (mut joined_tx, mut fenced_tx) = (Some(joined_tx), Some(fenced_tx));
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("joined the cluster")
                && let Some(tx) = joined_tx.take()
            {
                let _ = tx.send(());
            }
            if line.contains("letting this node's listeners go")
                && let Some(tx) = fenced_tx.take()
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), joined)
        .await
        .expect("the node in the namespace joins in time")
        .expect("the node in the namespace joins");
    (child, fenced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_lets_its_listeners_go_within_the_lease() {
    within(async {
        // Node 0 on a host of its own (a network namespace) that reaches the store at one
        // address and the other nodes at another; nodes 1 and 2 here.
        let ns = Netns::create();
        let etcd = Etcd::start_also_on(3, &[&ns.store_ip]).await;
        let tls = SharedTls::generate_for(&[ns.inner_ip.clone(), ns.host_ip.clone()]);
        let key = ferry_gateway::config::random_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let inside = Spec {
            i: 0,
            ip: ns.inner_ip.clone(),
            tls_port: free_port(),
            etcd: etcd.endpoints_on(&ns.store_ip),
        };
        let outside: Vec<Spec> = (1..3)
            .map(|i| Spec {
                ip: ns.host_ip.clone(),
                ..Spec::local(i, free_port(), &etcd)
            })
            .collect();
        let (_node0, fenced) = start_inside(&ns, &config(dir.path(), &inside, &tls, &key)).await;
        let mut nodes = Vec::new();
        for spec in &outside {
            nodes.push(start(&config(dir.path(), spec, &tls, &key)).await);
        }
        let bases: Vec<String> = std::iter::once(&inside)
            .chain(&outside)
            .map(Spec::base)
            .collect();
        let listening = endpoint(&bases, "cut", &tls, &key).on_gateway(0);
        serve_echo(
            Listener::open(listening)
                .await
                .expect("listener opens on node 0"),
        );
        let through = |i: usize| endpoint(&bases, "cut", &tls, &key).on_gateway(i);
        until_echoed(&through, &[1, 2], Duration::from_secs(10)).await;

        ns.cut_from(&ns.store_ip);
        let cut = Instant::now();
        let fenced_at = tokio::time::timeout(LEASE_TTL + Duration::from_secs(10), fenced)
            .await
            .expect("node 0 lets its listeners go")
            .expect("node 0's log");
        let fence = fenced_at - cut;
        // Senders through the other nodes reach the listener again once it moved.
        until_echoed(&through, &[1, 2], LEASE_TTL + Duration::from_secs(15)).await;
        let recovered = cut.elapsed();
        eprintln!(
            "cut off from the store: fenced after {fence:?}, senders back after {recovered:?}"
        );
        // While cut off, node 0 takes no listener; once healed, it takes them again.
        let only_node0 = |path: &str| {
            let mut e = endpoint(&bases[..1], path, &tls, &key);
            e.set_connect_timeout(Duration::from_secs(5));
            e
        };
        let refused = Listener::open(only_node0("while-cut")).await;
        assert!(
            matches!(refused, Err(ConnectError::Status { status: 503, .. })),
            "node 0 refuses listeners while cut off: {:?}",
            refused.err()
        );
        ns.heal(&ns.store_ip);
        let deadline = Instant::now() + LEASE_TTL + Duration::from_secs(10);
        loop {
            match Listener::open(only_node0("healed")).await {
                Ok(l) => {
                    l.close().await;
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "node 0 did not come back: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert!(
            fence <= LEASE_TTL + Duration::from_secs(1),
            "node 0 fenced {fence:?} after the cut, not within the lease's {LEASE_TTL:?}"
        );
        assert!(
            recovered <= LEASE_TTL + Duration::from_secs(4),
            "senders were back only {recovered:?} after the cut"
        );
        for node in &mut nodes {
            let _ = node.start_kill();
        }
    })
    .await;
}

/// [`iperf_client`] off the runtime's threads.
async fn iperf(port: u16, extra: &'static [&'static str]) -> serde_json::Value {
    tokio::task::spawn_blocking(move || iperf_client(port, extra))
        .await
        .expect("iperf3 thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_bridge_across_cluster_nodes_carries_iperf3_and_exact_bytes() {
    within(async {
        ferry_interop::require_tool("iperf3", "iperf3");
        let c = TestCluster::start(2).await;
        let (name, key) = c.rule();
        let env = |i: usize| {
            vec![
                ("FERRY_GATEWAY", c.wss_base(i)),
                ("FERRY_KEY_NAME", name.to_owned()),
                ("FERRY_KEY", key.to_owned()),
                ("FERRY_CA", c.tls.ca_file.display().to_string()),
            ]
        };
        // The remote sides on node 0, the local sides on node 1.
        let iperf_port = free_port();
        let _iperf_server = tokio::process::Command::new("iperf3")
            .args(["-s", "-p", &iperf_port.to_string()])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("iperf3 server");
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("echo");
        let echo_addr = echo.local_addr().expect("echo address");
        tokio::spawn(async move {
            while let Ok((conn, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                });
            }
        });
        let mut bridges = Vec::new();
        for (path, target) in [
            ("perf", format!("127.0.0.1:{iperf_port}")),
            ("exact", echo_addr.to_string()),
        ] {
            bridges.push(
                ferry(&["bridge", "remote", path, &target], &env(0), "bridge remote side running").await,
            );
        }
        c.wait_listeners("perf", 1).await;
        c.wait_listeners("exact", 1).await;
        let (perf_port, exact_port) = (free_port(), free_port());
        for (path, port) in [("perf", perf_port), ("exact", exact_port)] {
            let listen = format!("127.0.0.1:{port}");
            bridges.push(
                ferry(&["bridge", "local", &listen, path], &env(1), "bridge local side running").await,
            );
        }

        // Checksummed streams both ways, several at once.
        let streams = (0..4u32).map(|n| async move {
            let sent = pattern(n, 8 << 20);
            let conn = tokio::net::TcpStream::connect(("127.0.0.1", exact_port))
                .await
                .expect("bridge local port");
            let (mut r, mut w) = conn.into_split();
            let to_send = sent.clone();
            let write = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                w.write_all(&to_send).await.expect("send");
                w.shutdown().await.expect("half-close");
            });
            let mut back = Vec::with_capacity(sent.len());
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
                .await
                .expect("echo");
            write.await.expect("writer");
            (n, sent == back)
        });
        for (n, same) in futures_util::future::join_all(streams).await {
            assert!(same, "stream {n} came back exactly");
        }

        let forward = iperf(perf_port, &["-t", "2"]).await["end"]["sum_received"]["bytes"]
            .as_u64()
            .expect("received bytes");
        assert!(forward > 1 << 20, "at least 1 MiB crossed: {forward}");
        let reverse = iperf(perf_port, &["-R", "-P", "4", "-t", "2"]).await["end"]["sum_received"]
            ["bits_per_second"]
            .as_f64()
            .expect("rate");
        assert!(reverse > 0.0, "the reverse run moved data");
        eprintln!(
            "iperf3 through ferry bridge across two nodes (debug build): forward {forward} bytes, reverse 4 streams {:.0} Mbit/s",
            reverse / 1e6
        );
        drop(bridges);
        c.shutdown().await;
    })
    .await;
}
