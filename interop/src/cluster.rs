//! A real etcd cluster (Debian's `etcd-server`, each member its own process) and gateway
//! nodes joined to it, for the cluster tests.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_gateway::{ClusterConfig, Config, Gateway, RunningGateway, TlsSetup};
use ferry_hc::{Rights, Rule};
use ferry_sdk::{Endpoint, SasKeyProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{node_dir, require_node, require_tool};

/// A free loopback port (bound, then let go: the caller binds it again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An etcd cluster on loopback, its members killed when it drops.
pub struct Etcd {
    members: Vec<Member>,
    /// Addresses besides loopback the members also serve clients on.
    also: Vec<String>,
    /// The certificate and key clients are served with (`https://`), when secured.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    process: Option<Child>,
}

impl Etcd {
    /// Starts `members` etcd members as one cluster and waits until each reports healthy.
    pub async fn start(members: usize) -> Self {
        Self::start_also_on(members, &[]).await
    }

    /// As [`Etcd::start`], the members serving clients on the addresses `also` too.
    pub async fn start_also_on(members: usize, also: &[&str]) -> Self {
        Self::launch(members, also, None).await
    }

    /// As [`Etcd::start`], serving clients over TLS with `tls`'s certificate; then with
    /// authentication on, `root` having `password` (set up with Debian's `etcdctl`).
    pub async fn start_secured(members: usize, tls: &SharedTls, password: &str) -> Self {
        let files = (tls.cert.clone(), tls.key.clone(), tls.ca_file.clone());
        let etcd = Self::launch(members, &[], Some(files)).await;
        require_tool("etcdctl", "etcd-client");
        for args in [
            vec!["user", "add", &format!("root:{password}")],
            vec!["auth", "enable"],
        ] {
            let out = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(etcd.endpoints().join(","))
                .arg("--cacert")
                .arg(&tls.ca_file)
                .args(&args)
                .output()
                .expect("etcdctl runs");
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        etcd
    }

    async fn launch(
        members: usize,
        also: &[&str],
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> Self {
        require_tool("etcd", "etcd-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            members,
            also: also.iter().map(|a| (*a).to_owned()).collect(),
            tls,
            initial_cluster,
            token: format!("ferry-test-{}", std::process::id()),
            dir,
        };
        for i in 0..etcd.members.len() {
            etcd.spawn(i);
        }
        for i in 0..etcd.members.len() {
            etcd.wait_healthy(i).await;
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(&self.members[i].name);
        let m = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let listen = std::iter::once(client.clone())
            .chain(
                self.also
                    .iter()
                    .map(|a| format!("{scheme}://{a}:{}", m.client)),
            )
            .collect::<Vec<_>>()
            .join(",");
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut command = Command::new("etcd");
        if let Some((cert, key, _)) = &self.tls {
            command
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key);
        }
        let child = command
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd starts");
        m.process = Some(child);
    }

    /// Waits until member `i` answers `/health` with `"health":"true"`.
    async fn wait_healthy(&self, i: usize) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.members[i].client));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = match &self.tls {
                None => health(addr).await,
                Some((_, _, ca)) => health_tls(addr, ca).await,
            };
            if healthy {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd member {} not healthy within 30 s",
                self.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints_on("127.0.0.1")
    }

    /// The members' client URLs on address `at` (loopback, or one of `also`).
    pub fn endpoints_on(&self, at: &str) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://{at}:{}", m.client))
            .collect()
    }

    /// Stops every member (SIGKILL): the store is down.
    pub async fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.process.take() {
                let _ = p.kill().await;
            }
        }
    }

    /// Stops member `i` (SIGKILL): the others keep a quorum.
    pub async fn stop_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            let _ = p.kill().await;
        }
    }

    /// Starts the stopped members again, with their data, and waits until they are healthy.
    pub async fn restart(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                self.spawn(i);
            }
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i).await;
        }
    }
}

/// Whether the etcd member at `addr` reports itself healthy.
async fn health(addr: SocketAddr) -> bool {
    let ask = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.ok()?;
        Some(String::from_utf8_lossy(&reply).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Some(true))
    )
}

/// Whether the TLS etcd member at `addr` reports itself healthy (asked with curl).
async fn health_tls(addr: SocketAddr, ca: &std::path::Path) -> bool {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{}/health", addr.port()))
        .output()
        .await;
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""))
}

/// A TCP proxy in front of one address, counting the bytes it carries both ways: the
/// node-to-node links of a test cluster go through one each.
pub struct CountingProxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
}

impl CountingProxy {
    /// A proxy to `target`, serving until the test ends.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy address");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, &counted), pump(ro, wi, &counted));
                });
            }
        });
        Self { addr, bytes }
    }

    /// Bytes carried so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counted.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A certificate every node of a test cluster serves (the nodes are all `localhost`).
pub struct SharedTls {
    /// The CA, PEM.
    pub ca_pem: String,
    /// The CA file, for `NODE_EXTRA_CA_CERTS` and curl.
    pub ca_file: PathBuf,
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its key, PEM.
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl SharedTls {
    /// A CA and a `localhost` certificate, written to files.
    pub fn generate() -> Self {
        Self::generate_for(&[])
    }

    /// As [`SharedTls::generate`], the certificate naming `names` too.
    pub fn generate_for(names: &[String]) -> Self {
        let pki = ferry_net::tls::DevPki::generate(names).expect("dev PKI");
        let dir = tempfile::tempdir().expect("temp dir");
        let pem = |label: &str, der: &[u8]| {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD.encode(der);
            let mut out = format!("-----BEGIN {label}-----\n");
            for line in text.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                out.push('\n');
            }
            out.push_str(&format!("-----END {label}-----\n"));
            out
        };
        let chain: String = pki
            .identity
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c.as_ref()))
            .collect();
        let key = pem("PRIVATE KEY", pki.identity.key.secret_der());
        let (ca_file, cert, key_file) = (
            dir.path().join("ca.pem"),
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
        );
        std::fs::write(&ca_file, &pki.ca_pem).expect("write CA");
        std::fs::write(&cert, chain).expect("write certificate");
        std::fs::write(&key_file, key).expect("write key");
        Self {
            ca_pem: pki.ca_pem,
            ca_file,
            cert,
            key: key_file,
            _dir: dir,
        }
    }
}

/// A change to every node's configuration.
type Tweak = Box<dyn Fn(&mut Config) + Send + Sync>;

/// An etcd cluster and gateway nodes joined to it, sharing one rule and one certificate.
pub struct TestCluster {
    /// The store.
    pub etcd: Etcd,
    /// The nodes; `None` where a test stopped one.
    pub nodes: Vec<Option<RunningGateway>>,
    /// The certificate the nodes serve.
    pub tls: SharedTls,
    /// The node-to-node links, one proxy in front of each node, when counted.
    links: Vec<(u16, CountingProxy)>,
    rule: Rule,
    secret: String,
    lease_ttl: Duration,
    /// Applied to every node's configuration last.
    tweak: Option<Tweak>,
    /// Each node's TLS port once it started, kept across restarts.
    tls_ports: std::sync::Mutex<Vec<Option<u16>>>,
    /// The user and password the nodes give etcd, when it asks.
    etcd_user: Option<(String, String)>,
}

impl TestCluster {
    /// A 3-member etcd cluster and `nodes` gateway nodes.
    pub async fn start(nodes: usize) -> Self {
        Self::start_with(nodes, Duration::from_secs(10)).await
    }

    /// As [`TestCluster::start`], the nodes' leases lasting `lease_ttl`.
    pub async fn start_with(nodes: usize, lease_ttl: Duration) -> Self {
        Self::launch(nodes, lease_ttl, false).await
    }

    /// As [`TestCluster::start`], every node-to-node call going through a
    /// [`CountingProxy`] (see [`TestCluster::link_bytes`]).
    pub async fn start_counted(nodes: usize) -> Self {
        Self::launch(nodes, Duration::from_secs(10), true).await
    }

    /// Bytes the node-to-node links carried so far.
    pub fn link_bytes(&self) -> u64 {
        self.links.iter().map(|(_, p)| p.bytes()).sum()
    }

    /// As [`TestCluster::start`], `tweak` applied to every node's configuration.
    pub async fn start_tweaked(
        nodes: usize,
        tweak: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Self {
        let mut cluster = Self::launch(0, Duration::from_secs(10), false).await;
        cluster.tweak = Some(Box::new(tweak));
        for i in 0..nodes {
            let node = cluster.start_node(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// As [`TestCluster::start`], etcd serving its clients over TLS (the nodes' CA) and
    /// asking them for a user name and password.
    pub async fn start_secured(nodes: usize) -> Self {
        let tls = SharedTls::generate();
        let password = ferry_gateway::config::random_key();
        let etcd = Etcd::start_secured(3, &tls, &password).await;
        let mut cluster = Self::with_store(etcd, tls, Duration::from_secs(10));
        cluster.etcd_user = Some(("root".into(), password));
        for i in 0..nodes {
            let node = cluster.start_node(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    async fn launch(nodes: usize, lease_ttl: Duration, counted: bool) -> Self {
        let etcd = Etcd::start(3).await;
        let mut cluster = Self::with_store(etcd, SharedTls::generate(), lease_ttl);
        if counted {
            for _ in 0..nodes {
                let port = free_port();
                let proxy = CountingProxy::start(SocketAddr::from(([127, 0, 0, 1], port)));
                cluster.links.push((port, proxy));
            }
        }
        for i in 0..nodes {
            let node = cluster.start_node(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn with_store(etcd: Etcd, tls: SharedTls, lease_ttl: Duration) -> Self {
        Self {
            etcd,
            nodes: Vec::new(),
            tls,
            links: Vec::new(),
            rule: Rule::new(
                "RootManageSharedAccessKey",
                ferry_gateway::config::random_key(),
                Rights::MANAGE,
            ),
            secret: ferry_gateway::config::random_key(),
            lease_ttl,
            tweak: None,
            tls_ports: std::sync::Mutex::default(),
            etcd_user: None,
        }
    }

    /// The configuration of node `i`.
    pub fn config(&self, i: usize) -> Config {
        let mut config = Config::dev();
        config.timeouts.close = Duration::from_millis(500);
        config.tls = TlsSetup::Files {
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        };
        config.rules = vec![self.rule.clone()];
        let mut cluster = ClusterConfig::new(
            format!("node-{i}"),
            "",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.secret.clone(),
            self.etcd.endpoints(),
        );
        cluster.lease_ttl = self.lease_ttl;
        cluster.drain = Duration::from_secs(2);
        if let Some(user) = &self.etcd_user {
            cluster.etcd.ca = Some(self.tls.ca_file.clone());
            cluster.etcd.user = Some(user.clone());
        }
        if let Some((port, proxy)) = self.links.get(i) {
            cluster.rpc = SocketAddr::from(([127, 0, 0, 1], *port));
            cluster.rpc_advertise = Some(format!("http://{}", proxy.addr));
        }
        config.cluster = Some(cluster);
        let port = self
            .tls_ports
            .lock()
            .expect("ports")
            .get(i)
            .copied()
            .flatten();
        if let Some(port) = port {
            config.tls_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if let Some(tweak) = &self.tweak {
            tweak(&mut config);
        }
        config
    }

    /// Starts node `i` (again).
    pub async fn start_node(&self, i: usize) -> RunningGateway {
        let node = Gateway::start(self.config(i))
            .await
            .expect("cluster node starts");
        let mut ports = self.tls_ports.lock().expect("ports");
        if ports.len() <= i {
            ports.resize(i + 1, None);
        }
        ports[i] = node.tls_addr().map(|a| a.port());
        node
    }

    /// Stops node `i` the way a restart does (it leaves the cluster, its connections
    /// close) and starts it again on the same TLS port.
    pub async fn restart(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
        let node = self.start_node(i).await;
        self.nodes[i] = Some(node);
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RunningGateway {
        self.nodes[i].as_ref().expect("node running")
    }

    /// `wss://localhost:PORT` of node `i`.
    pub fn wss_base(&self, i: usize) -> String {
        format!(
            "wss://localhost:{}",
            self.node(i).tls_addr().expect("tls port").port()
        )
    }

    /// The rule's name and key.
    pub fn rule(&self) -> (&str, &str) {
        (&self.rule.name, self.rule.primary_key())
    }

    /// An SDK endpoint for `path` on node `i`.
    pub fn endpoint(&self, i: usize, path: &str) -> Endpoint {
        let mut endpoint = Endpoint::new(&self.wss_base(i), path).expect("valid endpoint");
        self.trust_and_sign(&mut endpoint);
        endpoint
    }

    /// An SDK endpoint for `path` naming every node, on node `i` first.
    pub fn cluster_endpoint(&self, i: usize, path: &str) -> Endpoint {
        let bases: Vec<String> = (0..self.nodes.len()).map(|n| self.wss_base(n)).collect();
        let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
        let mut endpoint = Endpoint::cluster(&bases, path).expect("valid endpoint");
        self.trust_and_sign(&mut endpoint);
        endpoint.on_gateway(i)
    }

    fn trust_and_sign(&self, endpoint: &mut Endpoint) {
        endpoint.set_token_provider(SasKeyProvider::new(
            &self.rule.name,
            self.rule.primary_key(),
            Duration::from_secs(3600),
        ));
        let roots = ferry_net::tls::roots_from_pem(self.tls.ca_pem.as_bytes()).expect("CA");
        endpoint.set_tls_config(
            ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11])
                .expect("client config"),
        );
    }

    /// Waits until every running node sees `count` listeners on `path`.
    pub async fn wait_listeners(&self, path: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seen: Vec<usize> = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.listener_count(path))
                .collect();
            if seen.iter().all(|&n| n == count) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes see {seen:?} listeners on {path}, not {count} each"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `node SCRIPT args...` in `interop/node`, trusting the nodes' CA.
    pub fn node_script(&self, script: &str, args: &[&str]) -> Child {
        require_node();
        Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(node_dir())
            .env("NODE_EXTRA_CA_CERTS", &self.tls.ca_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts")
    }

    /// Shuts every node down, then the store.
    pub async fn shutdown(mut self) {
        for node in self.nodes.drain(..).flatten() {
            node.shutdown().await;
        }
        self.etcd.stop().await;
    }
}

/// A second test host: a network namespace joined to this one by a veth pair. This side has
/// two addresses, [`Netns::host_ip`] and [`Netns::store_ip`], so the namespace can be cut
/// off from a service on one (the store) and still reach the rest on the other. Removed when
/// it drops.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    host_if: String,
    /// This side's address for everything but the store.
    pub host_ip: String,
    /// This side's address the store also listens on.
    pub store_ip: String,
    /// The namespace's own address.
    pub inner_ip: String,
}

impl Netns {
    /// Creates the namespace and its link (needs root, as the test command runs).
    pub fn create() -> Self {
        require_tool("ip", "iproute2");
        let id = std::process::id();
        let net = format!("10.{}.{}", 200 + (id >> 8) % 50, id % 256);
        let ns = Self {
            name: format!("ferry-{id}"),
            host_if: format!("fh{}", id % 100_000),
            host_ip: format!("{net}.1"),
            store_ip: format!("{net}.3"),
            inner_ip: format!("{net}.2"),
        };
        let inner_if = format!("fn{}", id % 100_000);
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
        ]);
        ns.ip(&["link", "set", &inner_if, "netns", &ns.name]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.store_ip),
            "dev",
            &ns.host_if,
        ]);
        ns.ip(&["link", "set", &ns.host_if, "up"]);
        ns.inside(&[
            "addr",
            "add",
            &format!("{}/24", ns.inner_ip),
            "dev",
            &inner_if,
        ]);
        ns.inside(&["link", "set", &inner_if, "up"]);
        ns.inside(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "ip {args:?}: {} (network namespaces need root, as scripts/test.sh runs)",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn inside(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Cuts the namespace off from `addr` (a blackhole route inside it).
    pub fn cut_from(&self, addr: &str) {
        self.inside(&["route", "add", "blackhole", &format!("{addr}/32")]);
    }

    /// Undoes [`Netns::cut_from`].
    pub fn heal(&self, addr: &str) {
        self.inside(&["route", "del", "blackhole", &format!("{addr}/32")]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
