//! Cluster mode against a real 3-member etcd cluster (Debian's `etcd-server`, each member its
//! own process), with real peers on different gateway nodes: npm hyco-ws in both roles,
//! hyco-https answering curl, and the SDK.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ferry_hc::SasToken;
use ferry_interop::cluster::TestCluster;
use ferry_interop::{PEER_TIMEOUT, finish, require_tool, serve_echo, wait_for_line};
use ferry_sdk::{ConnectError, Listener, Message};

/// Awaits `f`, failing the test if it takes longer than [`PEER_TIMEOUT`].
async fn step<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PEER_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
}

/// Opens an SDK listener on `path` through node `i`.
async fn open_listener(c: &TestCluster, i: usize, path: &str) -> Listener {
    open(c.endpoint(i, path)).await
}

/// Opens an SDK listener on `endpoint`.
async fn open(endpoint: ferry_sdk::Endpoint) -> Listener {
    step("listener opens", Listener::open(endpoint))
        .await
        .expect("listener opens")
}

/// One echo round trip through node `i` to `path`.
async fn echo_through(c: &TestCluster, i: usize, path: &str, payload: &[u8]) {
    let mut stream = step("connect", ferry_sdk::connect(&c.endpoint(i, path), &[]))
        .await
        .unwrap_or_else(|e| {
            let payload = String::from_utf8_lossy(payload);
            panic!("sender through node {i} ({payload}) connects: {e}")
        });
    stream
        .send(Message::Binary(payload.to_vec().into()))
        .await
        .expect("send");
    let back = step("echo", stream.recv()).await.expect("relay healthy");
    assert_eq!(back, Some(Message::Binary(payload.to_vec().into())));
    stream.close(1000, "done").await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyco_ws_listener_on_one_node_takes_hyco_ws_senders_on_every_node() {
    let c = TestCluster::start(3).await;
    let (name, key) = c.rule();
    let listen = format!("{}/$hc/cross?sb-hc-action=listen", c.wss_base(0));
    let mut listener = c.node_script("listener.js", &[&listen, name, key]);
    wait_for_line(&mut listener, "LISTENING").await;
    c.wait_listeners("cross", 1).await;
    for i in [1, 2, 0] {
        let connect = format!("{}/$hc/cross?sb-hc-action=connect", c.wss_base(i));
        let sender = c.node_script("sender.js", &[&connect, name, key]);
        let (ok, out) = finish(sender).await;
        assert!(ok, "hyco-ws sender through node {i}: {out}");
        assert!(out.contains("\"binaryOk\":true"), "{out}");
    }
    drop(listener);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyco_https_listener_on_one_node_answers_curl_on_another() {
    require_tool("curl", "curl");
    let c = TestCluster::start(2).await;
    let (name, key) = c.rule();
    let listen = format!("{}/$hc/web?sb-hc-action=listen", c.wss_base(0));
    let mut listener = c.node_script("https_listener.js", &[&listen, name, key]);
    wait_for_line(&mut listener, "LISTENING").await;
    c.wait_listeners("web", 1).await;
    let token = SasToken::create(
        "http://localhost/web",
        name,
        key,
        ferry_interop::now() + 600,
    );
    let port = c.node(1).tls_addr().expect("tls").port();
    let ca = c.tls.ca_file.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let body_file = dir.path().join("body");
    let body: Vec<u8> = (0..70_000u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&body_file, &body).expect("write body");
    let curl = move |args: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("ServiceBusAuthorization: {token}")])
            .args(args)
            .arg(url)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let base = format!("https://localhost:{port}/web");
    let (small, large, big) = tokio::task::spawn_blocking(move || {
        let small = curl(&["-d", "hello"], format!("{base}/small?x=1"));
        let at = format!("@{}", body_file.display());
        let large = curl(&["--data-binary", &at], format!("{base}/large"));
        let big = curl(&[], format!("{base}/big?n=200000"));
        (small, large, big)
    })
    .await
    .expect("curl thread");
    let small: serde_json::Value = serde_json::from_slice(&small).expect("JSON answer");
    assert_eq!(small["method"], "POST", "{small}");
    assert_eq!(small["url"], "/web/small?x=1", "{small}");
    assert_eq!(small["length"], 5, "{small}");
    let large: serde_json::Value = serde_json::from_slice(&large).expect("JSON answer");
    assert_eq!(large["length"], 70_000, "{large}");
    let expected: Vec<u8> = (0..200_000usize).map(|i| (i * 31 + 7) as u8).collect();
    assert!(big == expected, "200 kB answer through node 1 intact");
    drop(listener);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_listeners_per_path_hold_across_the_cluster() {
    let c = TestCluster::start(3).await;
    // Thirty listeners race for the path's 25 slots through three nodes.
    let opens = (0..30).map(|n| {
        let endpoint = c.endpoint(n % 3, "race");
        async move { Listener::open(endpoint).await }
    });
    let results = step("listeners open", futures_util::future::join_all(opens)).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for r in results {
        match r {
            Ok(l) => open.push(l),
            Err(ConnectError::Status { status: 403, .. }) => refused += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert_eq!((open.len(), refused), (25, 5));
    c.wait_listeners("race", 25).await;
    // A place freed on one node is taken through another.
    open.pop().expect("one").close().await;
    c.wait_listeners("race", 24).await;
    let again = step("listener opens", Listener::open(c.endpoint(2, "race"))).await;
    assert!(again.is_ok(), "the freed slot is taken: {:?}", again.err());
    c.wait_listeners("race", 25).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_is_forgotten_at_once() {
    let mut c = TestCluster::start(2).await;
    serve_echo(open_listener(&c, 0, "leaving").await);
    c.wait_listeners("leaving", 1).await;
    echo_through(&c, 1, "leaving", b"before").await;
    let node = c.nodes[0].take().expect("node 0");
    let stopped = tokio::time::Instant::now();
    node.shutdown().await;
    c.wait_listeners("leaving", 0).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "its listeners vanish when it leaves, not at lease expiry ({:?})",
        stopped.elapsed()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_known_listeners_keep_working_and_new_ones_are_refused() {
    let mut c = TestCluster::start_with(3, Duration::from_secs(3)).await;
    serve_echo(open_listener(&c, 0, "steady").await);
    c.wait_listeners("steady", 1).await;
    echo_through(&c, 1, "steady", b"store up").await;

    c.etcd.stop().await;
    // Past the lease's time to live: no node can renew, none fences (no node holds a lease).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..3 {
        echo_through(&c, i, "steady", format!("store down, node {i}").as_bytes()).await;
    }
    let refused = step("listener refused", Listener::open(c.endpoint(2, "fresh"))).await;
    assert!(
        matches!(refused, Err(ConnectError::Status { status: 503, .. })),
        "a new listener is told to go elsewhere: {:?}",
        refused.err()
    );

    c.etcd.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        match Listener::open(c.endpoint(2, "fresh")).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store is back and the node still refuses: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    serve_echo(fresh);
    c.wait_listeners("fresh", 1).await;
    // Every node sees both listeners again once the store is back (a lease that lapsed
    // while the store restarted is taken again, with the listener's slot).
    c.wait_listeners("steady", 1).await;
    echo_through(&c, 0, "fresh", b"store back").await;
    echo_through(&c, 2, "steady", b"still there").await;
    c.shutdown().await;
}

/// The byte at offset `at` of the bulk transfer: a pattern with a prime period, so a chunk
/// cannot match by landing on the wrong offset.
fn bulk_pattern(at: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((at + i) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_across_nodes_leaves_the_node_links_nearly_idle() {
    const TOTAL: u64 = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let c = TestCluster::start_counted(2).await;
    let mut listener = open_listener(&c, 0, "bulk").await;
    c.wait_listeners("bulk", 1).await;
    let before = c.link_bytes();

    let receiver = tokio::spawn(async move {
        let incoming = listener.accept().await.expect("a sender");
        let mut stream = incoming.accept().await.expect("rendezvous");
        // One period-aligned window of the pattern is compared against each read.
        let window = bulk_pattern(0, CHUNK + 251);
        let mut buf = vec![0u8; CHUNK];
        let (mut at, mut intact) = (0u64, true);
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            let start = (at % 251) as usize;
            intact &= buf[..n] == window[start..start + n];
            at += n as u64;
        }
        (at, intact)
    });
    let mut sender = step("connect", ferry_sdk::connect(&c.endpoint(1, "bulk"), &[]))
        .await
        .expect("sender through node 1");
    let chunk = bulk_pattern(0, CHUNK + 251);
    let mut at = 0u64;
    while at < TOTAL {
        let start = (at % 251) as usize;
        sender
            .write_all(&chunk[start..start + CHUNK])
            .await
            .expect("write");
        at += CHUNK as u64;
    }
    sender.shutdown().await.expect("end of stream");
    let (received, intact) = step("receive", receiver).await.expect("receiver");
    assert_eq!(received, TOTAL);
    assert!(intact, "the gibibyte arrived unaltered");
    let carried = c.link_bytes() - before;
    eprintln!("node-to-node bytes while 1 GiB crossed from node 1 to node 0: {carried}");
    assert!(
        carried < 1 << 20,
        "the node-to-node links carried {carried} bytes for a 1 GiB relay"
    );
    assert!(carried > 0, "the accept did cross between the nodes");
    c.shutdown().await;
}

/// A checksummed transfer's fate.
struct Transfer {
    node: usize,
    started: tokio::time::Instant,
    ended: tokio::time::Instant,
    /// `Ok(true)`: came back exactly; `Ok(false)`: came back different; `Err`: failed loudly.
    outcome: Result<bool, String>,
}

/// One transfer through `endpoint`: 64 KiB out, the same back.
async fn transfer(endpoint: &ferry_sdk::Endpoint, seed: u64) -> Result<bool, String> {
    let payload = bulk_pattern(seed, 64 * 1024);
    let exchange = async {
        let mut stream = ferry_sdk::connect(endpoint, &[])
            .await
            .map_err(|e| e.to_string())?;
        stream
            .send(Message::Binary(payload.clone().into()))
            .await
            .map_err(|e| e.to_string())?;
        let back = stream
            .recv()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("closed without an echo")?;
        let _ = stream.close(1000, "done").await;
        Ok(back == Message::Binary(payload.into()))
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_only_transfers_through_the_restarting_node() {
    let mut c = TestCluster::start_with(3, Duration::from_secs(3)).await;
    // Three echo listeners, each naming every node, one starting on each.
    let endpoints: Vec<ferry_sdk::Endpoint> = (0..3).map(|i| c.endpoint(i, "rolling")).collect();
    for i in 0..3 {
        serve_echo(open(c.cluster_endpoint(i, "rolling")).await);
    }
    c.wait_listeners("rolling", 3).await;

    // Steady load: four senders, each going round the nodes.
    let stop = tokio_util::sync::CancellationToken::new();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Transfer>::new()));
    let mut load = Vec::new();
    for s in 0..4u64 {
        let (endpoints, stop, log) = (endpoints.clone(), stop.clone(), log.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let node = ((s + n) % 3) as usize;
                let started = tokio::time::Instant::now();
                let outcome = transfer(&endpoints[node], s * 1_000_000 + n).await;
                log.lock().expect("log").push(Transfer {
                    node,
                    started,
                    ended: tokio::time::Instant::now(),
                    outcome,
                });
                n += 1;
            }
        }));
    }
    // Each node in turn restarts; the load runs on between restarts.
    let mut restarts = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let from = tokio::time::Instant::now();
        c.restart(i).await;
        c.wait_listeners("rolling", 3).await;
        restarts.push((i, from, tokio::time::Instant::now()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    for task in load {
        task.await.expect("sender task");
    }
    let log = std::mem::take(&mut *log.lock().expect("log"));
    let cut_by_own_restart = |t: &Transfer| {
        restarts
            .iter()
            .any(|(i, from, to)| *i == t.node && t.started <= *to && t.ended >= *from)
    };
    let exact = log.iter().filter(|t| matches!(t.outcome, Ok(true))).count();
    let corrupt = log
        .iter()
        .filter(|t| matches!(t.outcome, Ok(false)))
        .count();
    let lost: Vec<String> = log
        .iter()
        .filter(|t| t.outcome.is_err() && !cut_by_own_restart(t))
        .map(|t| format!("via node {}: {:?}", t.node, t.outcome))
        .collect();
    let cut = log
        .iter()
        .filter(|t| t.outcome.is_err() && cut_by_own_restart(t))
        .count();
    eprintln!(
        "rolling restart: {exact} transfers exact, {cut} cut by their own node's restart, {} lost elsewhere, {corrupt} corrupt",
        lost.len()
    );
    for t in log
        .iter()
        .filter(|t| t.outcome.is_err() && !cut_by_own_restart(t))
    {
        let since = |at: tokio::time::Instant| {
            restarts
                .iter()
                .map(|(i, from, _)| format!("node {i} {:?}", at.saturating_duration_since(*from)))
                .collect::<Vec<_>>()
        };
        eprintln!(
            "lost via node {}: {:?}; started after restarts {:?}, ended {:?}",
            t.node,
            t.outcome,
            since(t.started),
            since(t.ended)
        );
    }
    assert_eq!(corrupt, 0, "no transfer may come back altered");
    assert!(
        lost.is_empty(),
        "transfers lost through nodes not restarting: {lost:?}"
    );
    assert!(exact > 30, "the load kept running: {exact} transfers");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_etcd_member_down_every_registration_and_pairing_works() {
    let mut c = TestCluster::start(2).await;
    c.etcd.stop_member(2).await;
    // Every call a node makes may land on the dead member first: none may fail for it.
    let mut listeners = Vec::new();
    for n in 0..10 {
        listeners.push(open_listener(&c, n % 2, "quorum").await);
    }
    c.wait_listeners("quorum", 10).await;
    for listener in listeners {
        serve_echo(listener);
    }
    for n in 0..20 {
        echo_through(&c, n % 2, "quorum", format!("quorum {n}").as_bytes()).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_an_etcd_that_asks_for_tls_and_a_password() {
    let c = TestCluster::start_secured(2).await;
    serve_echo(open_listener(&c, 0, "secured").await);
    c.wait_listeners("secured", 1).await;
    echo_through(&c, 1, "secured", b"through a secured store").await;
    c.shutdown().await;
}
