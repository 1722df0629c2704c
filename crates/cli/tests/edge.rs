//! The gateway at the edge of a real deployment: its diagnostic events as JSON lines, with
//! the tracking id its clients are told; the .NET SDK's runtime information; and the client's
//! address as HAProxy (Debian `haproxy`) names it, by PROXY protocol v1 and v2 and by
//! `X-Forwarded-For`, held to the namespace's and a path's IP rules.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FERRY, free_port, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A gateway started from a file, logging JSON lines, every line kept.
struct Logged {
    _child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The port it listens on (configured as port 0: no other process can take it first).
    port: u16,
}

impl Logged {
    async fn start(config: &Path) -> Self {
        let mut child = Command::new(FERRY)
            .args(["--log-format", "json", "gateway", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ferry starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        let mut logged = Self {
            _child: child,
            lines,
            port: 0,
        };
        let listening = logged
            .wait_for(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("listening"))
            })
            .await;
        // `addr = Some(127.0.0.1:PORT)`.
        let addr = listening["addr"].as_str().unwrap_or_default();
        logged.port = addr
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|e| panic!("{e}: {listening}"))
            .port();
        logged
    }

    /// Every line so far, each of which must be one JSON object.
    fn json(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap().clone();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The first line `wanted` holds for, waiting up to 20 s for it.
    async fn wait_for(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            if let Some(v) = self.json().into_iter().find(|v| wanted(v)) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no such log line in: {:#?}", self.lines.lock().unwrap());
    }

    /// The diagnostic event `operation` on `entity`, waiting for it.
    async fn event(&self, operation: &str, entity: &str) -> Value {
        self.wait_for(|v| {
            v["target"] == "ferry::diagnostics"
                && v["operation_name"] == operation
                && v["entity"] == entity
        })
        .await
    }

    /// The diagnostic event whose tracking id is `id`.
    async fn tracked(&self, id: &str) -> Value {
        self.wait_for(|v| v["target"] == "ferry::diagnostics" && v["tracking_id"] == id)
            .await
    }
}

/// `curl ARGS`: its exit code, the HTTP status (0: none), the body.
async fn curl(args: &[&str]) -> (i32, u16, String) {
    ferry_interop::require_tool("curl", "curl");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("curl")
            .args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        status.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

/// The tracking id in an error description the gateway sent.
fn tracking_id(body: &str) -> String {
    body.split("TrackingId:")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no tracking id in {body:?}"))
        .to_owned()
}

/// `node SCRIPT ARGS` in interop/node, trusting `ca`.
fn node(script: &str, args: &[&str], ca: &Path) -> Child {
    ferry_interop::require_tool("node", "nodejs");
    Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(ferry_interop::node_dir())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts")
}

const RULE: &str =
    "[[rules]]\nname = \"root\"\nkey = \"k\"\nrights = [\"Manage\", \"Listen\", \"Send\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostic_events_are_json_lines_with_azures_names_and_the_clients_tracking_id() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            format!(
                "namespace = \"localhost\"\n[listen]\ntls = \"127.0.0.1:0\"\n[tls]\ndev = true\n\
                 dev_ca_out = \"{ca}\"\n{RULE}[[paths]]\nname = \"events\"\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        let gw = Logged::start(&config).await;
        let tls = gw.port;
        let base = format!("wss://localhost:{tls}/$hc/events");

        let mut listener = node(
            "listener.js",
            &[&format!("{base}?sb-hc-action=listen"), "root", "k"],
            &ca,
        );
        ferry_interop::wait_for_line(&mut listener, "LISTENING").await;
        let registered = gw.event("NewListenerRegistered", "events").await;
        assert_eq!(registered["category"], "HybridConnectionsEvent");
        assert_eq!(registered["namespace"], "localhost");
        let sender = node(
            "sender.js",
            &[&format!("{base}?sb-hc-action=connect"), "root", "k"],
            &ca,
        );
        let (ok, out) = ferry_interop::finish(sender).await;
        assert!(ok, "hyco-ws sender: {out}");
        gw.event("SenderListenerConnectionEstablished", "events")
            .await;

        // The .NET SDK's runtime information: answered by the gateway, with the live count,
        // read here by Python's own XML parser.
        let url = format!("https://localhost:{tls}/events?api-version=2016-07");
        let cacert = ca.to_str().unwrap();
        let expiry = ferry_interop::now() + 3600;
        let token = ferry_hc::SasToken::create("http://localhost/events", "root", "k", expiry);
        let auth = format!("Authorization: {token}");
        let (_, status, xml) = curl(&["--cacert", cacert, "-H", &auth, &url]).await;
        assert_eq!(status, 200, "{xml}");
        let parsed = Command::new("python3")
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as T\n\
                 e = T.fromstring(sys.stdin.read())\n\
                 A = '{http://www.w3.org/2005/Atom}'\n\
                 S = '{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}'\n\
                 d = e.find(A + 'content').find(S + 'HybridConnectionDescription')\n\
                 print(e.find(A + 'title').text, d.find(S + 'ListenerCount').text, \
                 d.find(S + 'RequiresClientAuthorization').text)",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = {
            let mut parsed = parsed;
            let mut stdin = parsed.stdin.take().unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stdin, xml.as_bytes())
                .await
                .unwrap();
            drop(stdin);
            parsed.wait_with_output().await.unwrap()
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "events 1 true",
            "{xml}"
        );
        let (_, status, _) = curl(&["--cacert", cacert, &url]).await;
        assert_eq!(status, 401, "runtime information needs a token");

        // A refused request: the client is told a tracking id, and the log has it.
        let (_, status, body) = curl(&[
            "--cacert",
            cacert,
            &format!("https://localhost:{tls}/events/orders"),
        ])
        .await;
        assert_eq!(status, 401, "{body}");
        // The namespace only: a refusal reads the same whether the path exists or not.
        assert!(
            body.contains("SystemTracker:localhost, Timestamp:"),
            "{body}"
        );
        let event = gw.tracked(&tracking_id(&body)).await;
        assert_eq!(event["operation_name"], "InvalidSasToken", "{event}");
        assert_eq!(event["entity"], "events", "{event}");
        assert_eq!(event["status"], 401, "{event}");
        let bad = ferry_hc::SasToken::create("http://localhost/events", "root", "wrong", expiry);
        let (_, status, body) = curl(&[
            "--cacert",
            cacert,
            "-H",
            &format!("ServiceBusAuthorization: {bad}"),
            &format!("https://localhost:{tls}/events/orders"),
        ])
        .await;
        assert_eq!(status, 401, "{body}");
        let event = gw.tracked(&tracking_id(&body)).await;
        assert_eq!(event["operation_name"], "InvalidSasToken", "{event}");

        drop(listener);
        gw.event("ListenerUnregistered", "events").await;
        // A sender with nobody listening is refused, tracked too.
        let (_, status, body) = curl(&[
            "--cacert",
            cacert,
            "-H",
            &format!("ServiceBusAuthorization: {token}"),
            &format!("https://localhost:{tls}/events/orders"),
        ])
        .await;
        assert_eq!(status, 502, "{body}");
        let event = gw.tracked(&tracking_id(&body)).await;
        assert_eq!(
            event["operation_name"], "ProcessingRequestFailed",
            "{event}"
        );
        // Nothing secret in the log: no key, no token signature.
        let log = gw.lines.lock().unwrap().join("\n");
        let signature = token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(!log.contains(signature), "a token reached the log");
    })
    .await;
}

/// A gateway's file: a plain port, a namespace rule set turning 127.0.0.66 away, 127.0.0.1
/// trusted as a load balancer, a path `open`, and paths `guarded` and `public` (anonymous
/// senders) that only 127.0.0.77 may reach.
fn edge_config(dir: &Path, name: &str, plain: u16, proxy_protocol: bool) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(
            "namespace = \"localhost\"\n[listen]\nplain = \"127.0.0.1:{plain}\"\n{RULE}\
             [network]\ndefault_action = \"Allow\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
             proxy_protocol = {proxy_protocol}\n\
             [[network.rules]]\nip_mask = \"127.0.0.66\"\naction = \"Deny\"\n\
             [[paths]]\nname = \"open\"\n\
             [[paths]]\nname = \"guarded\"\n[paths.network]\ndefault_action = \"Deny\"\n\
             [[paths.network.rules]]\nip_mask = \"127.0.0.77/32\"\naction = \"Allow\"\n\
             [[paths]]\nname = \"public\"\nanonymous_senders = true\n[paths.network]\n\
             default_action = \"Deny\"\n\
             [[paths.network.rules]]\nip_mask = \"127.0.0.77/32\"\naction = \"Allow\"\n"
        ),
    )
    .unwrap();
    file
}

/// `curl` from `source` (a loopback address of its own) to `url`.
async fn from(source: &str, url: &str, extra: &[&str]) -> (i32, u16, String) {
    let mut args = vec!["--interface", source];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_names_the_client_by_proxy_protocol_and_forwarded_for() {
    within(async {
        ferry_interop::require_tool("haproxy", "haproxy");
        let dir = tempfile::tempdir().unwrap();
        let pp = Logged::start(&edge_config(dir.path(), "pp.toml", 0, true)).await;
        let xff = Logged::start(&edge_config(dir.path(), "xff.toml", 0, false)).await;
        let (pp_port, xff_port) = (pp.port, xff.port);
        // HAProxy cannot bind port 0 and say which it got: free ports are picked, and picked
        // again if another process takes one first.
        let mut haproxy = None;
        let (mut v1, mut v2, mut http) = (0, 0, 0);
        for _ in 0..3 {
            (v1, v2, http) = (free_port(), free_port(), free_port());
            let haproxy_cfg = dir.path().join("haproxy.cfg");
            std::fs::write(
                &haproxy_cfg,
                format!(
                    "global\n  maxconn 256\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  \
                     timeout server 30s\n\
                     frontend v1\n  mode tcp\n  bind 127.0.0.1:{v1}\n  default_backend gw_v1\n\
                     backend gw_v1\n  mode tcp\n  server gw 127.0.0.1:{pp_port} send-proxy\n\
                     frontend v2\n  mode tcp\n  bind 127.0.0.1:{v2}\n  default_backend gw_v2\n\
                     backend gw_v2\n  mode tcp\n  server gw 127.0.0.1:{pp_port} send-proxy-v2\n\
                     frontend web\n  mode http\n  option forwardfor\n  bind 127.0.0.1:{http}\n  \
                     default_backend gw_http\n\
                     backend gw_http\n  mode http\n  server gw 127.0.0.1:{xff_port}\n"
                ),
            )
            .unwrap();
            let mut child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&haproxy_cfg)
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("haproxy starts");
            let mut up = true;
            for port in [v1, v2, http] {
                let mut listening = false;
                for _ in 0..100 {
                    if tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                    {
                        listening = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                up &= listening;
            }
            // A port another process held answers too: haproxy must also still be running.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if up && matches!(child.try_wait(), Ok(None)) {
                haproxy = Some(child);
                break;
            }
        }
        let _haproxy = haproxy.expect("haproxy listens on free ports");

        for (version, port) in [("v1", v1), ("v2", v2)] {
            let url = |path: &str| format!("http://127.0.0.1:{port}/{path}/x");
            // The client haproxy names is the one the rules and the log see.
            let (_, status, body) = from("127.0.0.77", &url("open"), &[]).await;
            assert_eq!(status, 401, "{version}: {body}");
            let event = pp.tracked(&tracking_id(&body)).await;
            assert_eq!(event["client"], "127.0.0.77", "{version}: {event}");
            // The namespace's rules turn 127.0.0.66 away before anything is read for it.
            let (code, status, body) = from("127.0.0.66", &url("open"), &[]).await;
            assert_eq!(status, 0, "{version}: a denied client got {status} {body}");
            assert_ne!(code, 0, "{version}");
            // The path's rules: only 127.0.0.77 reaches `guarded`.
            let (_, status, body) = from("127.0.0.88", &url("guarded"), &[]).await;
            assert_eq!(status, 403, "{version}: {body}");
            assert!(body.contains("address"), "{version}: {body}");
            let (_, status, body) = from("127.0.0.77", &url("guarded"), &[]).await;
            assert_eq!(status, 401, "{version}: {body}");
            // Anonymous senders are held to the path's rules too.
            let (_, status, body) = from("127.0.0.88", &url("public"), &[]).await;
            assert_eq!(status, 403, "{version}: {body}");
            let (_, status, body) = from("127.0.0.77", &url("public"), &[]).await;
            assert_eq!(status, 502, "{version}: nobody listens: {body}");
        }
        // A trusted proxy's connection without the header is closed; anyone else's header is
        // not believed (it is read as the start of an HTTP request).
        let direct = format!("http://127.0.0.1:{pp_port}/open/x");
        let (_, status, _) = from("127.0.0.1", &direct, &[]).await;
        assert_eq!(
            status, 0,
            "a trusted proxy's connection without a PROXY header"
        );
        let (_, status, body) = from("127.0.0.88", &direct, &["--haproxy-protocol"]).await;
        assert_eq!(status, 400, "a forged PROXY header: {body}");

        // X-Forwarded-For from the trusted load balancer, in HTTP mode.
        let url = |path: &str| format!("http://127.0.0.1:{http}/{path}/x");
        let (_, status, body) = from("127.0.0.77", &url("open"), &[]).await;
        assert_eq!(status, 401, "{body}");
        let event = xff.tracked(&tracking_id(&body)).await;
        assert_eq!(event["client"], "127.0.0.77", "{event}");
        let (_, status, body) = from("127.0.0.66", &url("open"), &[]).await;
        assert_eq!(
            status, 403,
            "the namespace's rules, by forwarded address: {body}"
        );
        let (_, status, body) = from("127.0.0.88", &url("guarded"), &[]).await;
        assert_eq!(
            status, 403,
            "the path's rules, by forwarded address: {body}"
        );
        let (_, status, body) = from("127.0.0.88", &url("public"), &[]).await;
        assert_eq!(
            status, 403,
            "an anonymous path's rules, by forwarded address: {body}"
        );
        // One load balancer connection carries several clients' requests: each is judged by
        // its own X-Forwarded-For (curl --next reuses the connection, as the balancer would).
        let direct = format!("http://127.0.0.1:{xff_port}/open/x");
        let each = [
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
        ];
        let out = Command::new("curl")
            .args(["--interface", "127.0.0.1"])
            .args(each)
            .args(["-H", "X-Forwarded-For: 127.0.0.77", &direct, "--next"])
            .args(each)
            .args(["-H", "X-Forwarded-For: 127.0.0.66", &direct])
            .output()
            .await
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "401 1\n403 0\n",
            "two clients on one connection"
        );
        // A client's own X-Forwarded-For, straight to the gateway, names nobody.
        let direct = format!("http://127.0.0.1:{xff_port}/open/x");
        let forged = ["-H", "X-Forwarded-For: 127.0.0.66"];
        let (_, status, body) = from("127.0.0.88", &direct, &forged).await;
        assert_eq!(status, 401, "{body}");
        let event = xff.tracked(&tracking_id(&body)).await;
        assert_eq!(event["client"], "127.0.0.88", "{event}");
    })
    .await;
}
