//! NetOneway and NetEvent through the gateway's net.tcp front end, with a real WCF sender:
//! Mono's WCF (`interop/mono/OnewaySender.cs`) opens a net.tcp session to the gateway, sends
//! the relay's `Connect` (with its `RelayAccessToken`), the calculator's one-way `Notify`
//! several times with an `OnewayPing` keep-alive among them, and closes. On the other side the
//! Rust host (`ferry_wcf::Host`) serves the calculator (`ferry_wcf::calc::Calc`) over SDK
//! listeners and drops the relay's own messages unanswered.
//!
//! - NetOneway: a normal path, one listener; every Notify arrives, in order (read back with
//!   GetNotifications from a Rust client through the gateway); two senders at once too.
//! - NetEvent: a `fan_out` path with three listeners; each gets the whole session and every
//!   Notify, in order.
//! - A wrong token: the sender reads a SOAP fault from the gateway, and no listener is even
//!   offered the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_gateway::PathConfig;
use ferry_interop::cluster::TestCluster;
use ferry_interop::{PEER_TIMEOUT, TestGateway, finish, mono, now};
use ferry_sdk::{Endpoint, Listener};
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::{
    Calculator as _, CalculatorClient, CalculatorServer, GetNotifications,
};
use ferry_wcf::{ChannelConfig, Host, HostConfig, NetTcpChannel};
use serde_json::Value;
use tokio::time::Instant;

/// How long delivered messages may take to reach a host after the sender is done.
const DELIVERY: Duration = Duration::from_secs(20);
/// Messages each sender sends.
const COUNT: usize = 20;

type Service = Arc<CalculatorServer<Calc>>;

/// The calculator behind one SDK listener on a gateway path, counting the sessions (relayed
/// connections) it was given.
struct RustHost {
    service: Service,
    sessions: Arc<AtomicUsize>,
    host: Host<Service>,
}

impl RustHost {
    async fn start(gw: &TestGateway, path: &str) -> Self {
        Self::on(gw.endpoint(path)).await
    }

    /// The host behind a listener on `endpoint`.
    async fn on(endpoint: Endpoint) -> Self {
        let mut listener = Listener::open(endpoint).await.expect("listener online");
        let service: Service = Arc::new(CalculatorServer(Calc::new()));
        let host = Host::with_config(Arc::clone(&service), HostConfig::default());
        let sessions = Arc::new(AtomicUsize::new(0));
        let (serving, counted) = (host.clone(), Arc::clone(&sessions));
        // `Host::serve_listener`, plus a count of what the gateway handed over.
        tokio::spawn(async move {
            while let Ok(incoming) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let host = serving.clone();
                tokio::spawn(async move {
                    let stream = incoming.accept().await.expect("rendezvous");
                    host.serve_connection(stream).await
                });
            }
        });
        Self {
            service,
            sessions,
            host,
        }
    }

    /// What Notify stored since the last call (drains it).
    async fn drain(&self) -> Vec<String> {
        let drained = self
            .service
            .0
            .get_notifications(GetNotifications {})
            .await
            .expect("GetNotifications");
        drained
            .get_notifications_result
            .into_iter()
            .map(|m| m.expect("a message"))
            .collect()
    }

    /// Waits until `n` notifications arrived (failing after [`DELIVERY`]), then a little
    /// longer to see that no more come; returns them in arrival order.
    async fn notifications(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DELIVERY;
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} notifications within {DELIVERY:?}: {got:?}",
                got.len()
            );
            got.extend(self.drain().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        got.extend(self.drain().await);
        got
    }

    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

/// A SAS token for `path` on the test gateway, signed with `key`.
fn token_with(gw: &TestGateway, path: &str, key: &str) -> String {
    ferry_hc::SasToken::create(
        &format!("http://localhost/{path}"),
        gw.gw.rule_name(),
        key,
        now() + 3600,
    )
}

fn token(gw: &TestGateway, path: &str) -> String {
    token_with(gw, path, gw.gw.rule_key())
}

/// `net.tcp://127.0.0.1:PORT/path` on the gateway's net.tcp front end.
fn address(gw: &TestGateway, path: &str) -> String {
    let port = gw.gw.nettcp_addr().expect("net.tcp port").port();
    format!("net.tcp://127.0.0.1:{port}/{path}")
}

/// Runs the Mono sender; whether it exited 0, and its JSON lines.
async fn mono_sender(address: String, token: String, extra: &[&str]) -> (bool, Vec<Value>) {
    let exe = mono::compile("OnewaySender", &["OnewaySender.cs", "CalcContract.cs"]);
    let mut args = vec![address, token];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let (ok, out) = finish(mono::run(&exe, &args)).await;
    // Shown with --no-capture and on failure (the sender never prints the token).
    println!("{out}");
    let lines = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (ok, lines)
}

/// Checks a sender that should have succeeded: every message sent, no fault or error, the
/// session closed; returns the Notify messages of `client` in the order sent.
fn sent_ok(ok: bool, lines: &[Value], client: u64) -> Vec<String> {
    assert!(ok, "the sender failed: {lines:?}");
    let mine: Vec<&Value> = lines.iter().filter(|l| l["client"] == client).collect();
    for line in &mine {
        assert!(line.get("error").is_none(), "{line}");
        assert!(line.get("received").is_none(), "nothing comes back: {line}");
        if line.get("op").is_some() {
            assert_eq!(line["outcome"], "sent", "{line}");
        }
    }
    let ops: Vec<&str> = mine.iter().filter_map(|l| l["op"].as_str()).collect();
    assert_eq!(ops.first(), Some(&"Connect"), "Connect goes first: {ops:?}");
    assert_eq!(
        ops.iter().filter(|o| **o == "OnewayPing").count(),
        1,
        "one keep-alive among the messages: {ops:?}"
    );
    assert!(
        mine.iter().any(|l| l["note"] == "closed"),
        "the session closed cleanly"
    );
    let done = lines.last().expect("output");
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["faults"], 0, "{done}");
    mine.iter()
        .filter(|l| l["op"] == "Notify")
        .map(|l| l["message"].as_str().expect("message").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_netoneway_sender_through_the_gateway_to_one_host() {
    let gw = TestGateway::start().await;
    let host = RustHost::start(&gw, "oneway").await;
    let count = COUNT.to_string();
    let (ok, lines) = mono_sender(
        address(&gw, "oneway"),
        token(&gw, "oneway"),
        &["--count", &count, "--ping"],
    )
    .await;
    let sent = sent_ok(ok, &lines, 0);
    assert_eq!(sent.len(), COUNT);
    assert_eq!(host.sessions(), 1, "one session, one listener");

    // Read back through the relay, as any client of the service would: a Rust net.tcp client
    // on the gateway's front end drains the store.
    let mut config = ChannelConfig::default();
    config
        .set_relay_token(token(&gw, "oneway"))
        .set_timeout(PEER_TIMEOUT);
    let addr = gw.gw.nettcp_addr().expect("net.tcp port");
    let channel = NetTcpChannel::connect(addr, address(&gw, "oneway"), config)
        .await
        .expect("session through the gateway");
    let client = CalculatorClient::new(channel);
    let deadline = Instant::now() + DELIVERY;
    let mut received = Vec::new();
    while received.len() < sent.len() && Instant::now() < deadline {
        let drained = client
            .get_notifications(GetNotifications {})
            .await
            .expect("GetNotifications through the relay");
        received.extend(
            drained
                .get_notifications_result
                .into_iter()
                .map(|m| m.expect("a message")),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(received, sent, "every Notify, in order, and nothing else");
    client.transport().close().await.expect("End handshake");
    host.host.shutdown().await;
    gw.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mono_netoneway_senders_at_once() {
    let gw = TestGateway::start().await;
    let host = RustHost::start(&gw, "oneway").await;
    let count = COUNT.to_string();
    let (ok, lines) = mono_sender(
        address(&gw, "oneway"),
        token(&gw, "oneway"),
        &["--count", &count, "--ping", "--clients", "2"],
    )
    .await;
    let sent: Vec<Vec<String>> = (0..2).map(|c| sent_ok(ok, &lines, c)).collect();
    let all = host.notifications(2 * COUNT).await;
    assert_eq!(host.sessions(), 2, "a session each");
    // The sessions interleave; each one's messages keep their order.
    for (c, mine) in sent.iter().enumerate() {
        let arrived: Vec<&String> = all
            .iter()
            .filter(|m| m.starts_with(&format!("notify:{c}:")))
            .collect();
        assert_eq!(arrived, mine.iter().collect::<Vec<_>>(), "client {c}");
    }
    assert_eq!(all.len(), 2 * COUNT, "nothing else: {all:?}");
    host.host.shutdown().await;
    gw.gw.shutdown().await;
}

/// A gateway whose `events` path fans each net.tcp session out to every listener, and three
/// Rust hosts listening on it.
async fn netevent_rig() -> (TestGateway, Vec<RustHost>) {
    let gw = TestGateway::start_with(|c| {
        c.paths.push(PathConfig {
            fan_out: true,
            ..PathConfig::new("events")
        });
    })
    .await;
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(RustHost::start(&gw, "events").await);
    }
    (gw, hosts)
}

/// Sends a NetEvent session of [`COUNT`] notifications to `address` and checks that every
/// host got all of them, in order, in one session; shuts the hosts down.
async fn fan_out(address: String, token: String, hosts: &[RustHost]) {
    let count = COUNT.to_string();
    let (ok, lines) = mono_sender(
        address,
        token,
        &["--count", &count, "--ping", "--prefix", "event"],
    )
    .await;
    let sent = sent_ok(ok, &lines, 0);
    assert_eq!(sent.len(), COUNT);
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(
            host.notifications(COUNT).await,
            sent,
            "listener {i}: every Notify, in order"
        );
        assert_eq!(host.sessions(), 1, "listener {i}: the one session");
    }
    for host in hosts {
        host.host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_netevent_sender_fans_out_to_three_hosts() {
    let (gw, hosts) = netevent_rig().await;
    fan_out(address(&gw, "events"), token(&gw, "events"), &hosts).await;
    gw.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_gets_a_fault_and_reaches_no_listener() {
    let (gw, hosts) = netevent_rig().await;
    let oneway = RustHost::start(&gw, "oneway").await;
    // Signed with a key the gateway does not have.
    let forged = "bm90IHRoZSBnYXRld2F5J3Mga2V5IGF0IGFsbCwgbm8=";
    for (path, listeners) in [
        ("events", hosts.iter().collect::<Vec<_>>()),
        ("oneway", vec![&oneway]),
    ] {
        let (ok, lines) = mono_sender(
            address(&gw, path),
            token_with(&gw, path, forged),
            &["--count", "3"],
        )
        .await;
        assert!(!ok, "{path}: the sender must not report success: {lines:?}");
        let faults: Vec<&Value> = lines
            .iter()
            .filter(|l| l["received"]["is_fault"] == true)
            .collect();
        assert_eq!(faults.len(), 1, "{path}: one fault read back: {lines:?}");
        let fault = &faults[0]["received"]["fault"];
        assert_eq!(fault["code"], "Sender", "{fault}");
        assert_eq!(fault["subcode"], "AuthenticationFailed", "{fault}");
        assert_eq!(
            fault["subcode_ns"],
            "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect",
            "{fault}"
        );
        let reason = fault["reason"].as_str().expect("reason");
        assert!(reason.starts_with("401"), "{reason}");
        assert!(!reason.contains(forged), "no token in the fault: {reason}");
        assert_eq!(lines.last().expect("done")["faults"], 1);
        for (i, host) in listeners.iter().enumerate() {
            assert_eq!(
                host.sessions(),
                0,
                "{path} listener {i} was offered nothing"
            );
            assert!(host.drain().await.is_empty(), "{path} listener {i}");
        }
    }
    // The same senders with the right token get through: the silence above was the refusal.
    let (ok, lines) = mono_sender(
        address(&gw, "events"),
        token(&gw, "events"),
        &["--count", "3", "--ping"],
    )
    .await;
    let sent = sent_ok(ok, &lines, 0);
    for host in &hosts {
        assert_eq!(host.notifications(3).await, sent);
        assert_eq!(host.sessions(), 1);
    }
    for host in hosts.iter().chain([&oneway]) {
        host.host.shutdown().await;
    }
    gw.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_netevent_sender_fans_out_to_hosts_on_three_cluster_nodes() {
    let c = TestCluster::start_tweaked(3, |config| {
        config.paths.push(PathConfig {
            fan_out: true,
            ..PathConfig::new("events")
        });
    })
    .await;
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(RustHost::on(c.endpoint(i, "events")).await);
    }
    c.wait_listeners("events", 3).await;
    let (name, key) = c.rule();
    let token = ferry_hc::SasToken::create("http://localhost/events", name, key, now() + 3600);
    // The session enters through node 1 and reaches the listeners on all three nodes, each
    // over a rendezvous on node 1.
    let port = c.node(1).nettcp_addr().expect("net.tcp port").port();
    fan_out(format!("net.tcp://127.0.0.1:{port}/events"), token, &hosts).await;
    c.shutdown().await;
}
