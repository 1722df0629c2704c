//! The management API driven by Microsoft's own management clients: PyPI `azure-mgmt-relay`
//! and npm `@azure/arm-relay`. What they create is then used by hyco-ws, with the connection
//! strings `listKeys` returned.

use std::path::Path;
use std::time::Duration;

use ferry_gateway::{AdminConfig, Config};
use ferry_interop::{TestGateway, finish, node_dir, wait_for_line};
use serde_json::Value;

fn with_admin(config: &mut Config, data: &Path) {
    config.admin = Some(AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
    });
    config.data_dir = Some(data.to_owned());
    // Only the paths the API creates exist.
    config.dynamic_paths = false;
}

fn admin_url(t: &TestGateway) -> String {
    format!(
        "https://localhost:{}",
        t.gw.admin_addr().expect("admin port").port()
    )
}

/// Runs one operation of `interop/arm/mgmt.py` (azure-mgmt-relay) and returns its JSON line.
async fn mgmt(t: &TestGateway, args: &[&str]) -> Value {
    let check = std::process::Command::new("python3")
        .args(["-c", "import azure.mgmt.relay"])
        .status()
        .expect("python3 runs");
    assert!(
        check.success(),
        "PyPI azure-mgmt-relay is missing: pip install -r interop/requirements.txt"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("arm/mgmt.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(admin_url(t))
        .args(["localhost", t.gw.rule_name(), t.gw.rule_key()])
        .args(args)
        .env("REQUESTS_CA_BUNDLE", &t.ca_file)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("azure-mgmt-relay finished in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mgmt.py {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("mgmt.py {args:?}: {e}: {stdout}"))
}

/// `Endpoint=sb://host:port/;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=p` → parts.
fn connection_string(s: &str) -> (String, String, String, String) {
    let field = |name: &str| {
        s.split(';')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {s}"))
            .to_owned()
    };
    let endpoint = field("Endpoint");
    let host = endpoint
        .strip_prefix("sb://")
        .and_then(|e| e.strip_suffix('/'))
        .unwrap_or_else(|| panic!("endpoint {endpoint}"))
        .to_owned();
    (
        host,
        field("SharedAccessKeyName"),
        field("SharedAccessKey"),
        field("EntityPath"),
    )
}

/// Runs the hyco-ws sender against `path` with a key; whether it got through.
async fn hyco_ws_sends(
    t: &TestGateway,
    host: &str,
    path: &str,
    rule: &str,
    key: &str,
) -> (bool, String) {
    let uri = format!("wss://{host}/$hc/{path}?sb-hc-action=connect");
    finish(t.node("sender.js", &[&uri, rule, key])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_mgmt_relay_manages_a_hybrid_connection_that_hyco_ws_then_uses() {
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;

    let ns = mgmt(&t, &["namespace"]).await;
    assert_eq!(ns["name"], "localhost", "{ns}");
    assert_eq!(ns["listed"], serde_json::json!(["localhost"]), "{ns}");

    let created = mgmt(&t, &["create", "orders", "erp orders", "true"]).await;
    assert_eq!(created["name"], "orders", "{created}");
    assert_eq!(created["userMetadata"], "erp orders", "{created}");
    assert_eq!(created["requiresClientAuthorization"], true, "{created}");
    assert_eq!(created["listenerCount"], 0, "{created}");

    let rule = mgmt(&t, &["rule", "orders", "app", "Listen,Send"]).await;
    assert_eq!(
        rule["rights"],
        serde_json::json!(["Listen", "Send"]),
        "{rule}"
    );
    let keys = mgmt(&t, &["keys", "orders", "app"]).await;
    let (host, rule_name, primary, path) =
        connection_string(keys["primaryConnectionString"].as_str().unwrap());
    let tls_port = t.gw.tls_addr().unwrap().port();
    assert_eq!(host, format!("localhost:{tls_port}"));
    assert_eq!((rule_name.as_str(), path.as_str()), ("app", "orders"));
    let secondary = keys["secondaryKey"].as_str().unwrap().to_owned();
    assert_ne!(primary, secondary);

    // A hyco-ws listener signs with the primary key the SDK listed; the count is live.
    let listen = format!("wss://{host}/$hc/{path}?sb-hc-action=listen");
    let mut listener = t.node("listener.js", &[&listen, &rule_name, &primary]);
    wait_for_line(&mut listener, "LISTENING").await;
    let got = mgmt(&t, &["get", "orders"]).await;
    assert_eq!(got["listenerCount"], 1, "{got}");

    // Senders get through with either key.
    let (ok, out) = hyco_ws_sends(&t, &host, &path, &rule_name, &secondary).await;
    assert!(ok, "sender with the secondary key: {out}");

    // Rotating the primary key leaves the secondary valid and retires the old primary at once.
    let rotated = mgmt(&t, &["regenerate", "orders", "app", "PrimaryKey"]).await;
    let new_primary = rotated["primaryKey"].as_str().unwrap().to_owned();
    assert_ne!(new_primary, primary);
    assert_eq!(rotated["secondaryKey"].as_str().unwrap(), secondary);
    let (ok, out) = hyco_ws_sends(&t, &host, &path, &rule_name, &primary).await;
    assert!(!ok, "the old primary key still works: {out}");
    let (ok, out) = hyco_ws_sends(&t, &host, &path, &rule_name, &new_primary).await;
    assert!(ok, "sender with the new primary key: {out}");
    let (ok, out) = hyco_ws_sends(&t, &host, &path, &rule_name, &secondary).await;
    assert!(
        ok,
        "the secondary key stopped working with the primary's rotation: {out}"
    );

    // Deleting the path closes its listener and turns senders away.
    let deleted = mgmt(&t, &["delete", "orders"]).await;
    assert_eq!(deleted["listed"], serde_json::json!([]), "{deleted}");
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while t.gw.listener_count("orders") > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the deleted path's listener is still registered"
    );
    let (ok, out) = hyco_ws_sends(&t, &host, &path, &rule_name, &new_primary).await;
    assert!(!ok, "a sender reached a deleted path: {out}");
    let missing = mgmt(&t, &["get", "orders"]).await;
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["code"], "NotFound", "{missing}");
    assert!(
        missing["message"].as_str().unwrap().contains("TrackingId:"),
        "{missing}"
    );
    drop(listener);
    t.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_rules_and_wcf_relays_through_azure_mgmt_relay() {
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;
    let rule = mgmt(&t, &["namespace-rule", "ops", "Listen,Send,Manage"]).await;
    assert_eq!(
        rule["rights"],
        serde_json::json!(["Listen", "Send", "Manage"]),
        "{rule}"
    );
    let conn = rule["primaryConnectionString"].as_str().unwrap();
    assert!(!conn.contains("EntityPath"), "{conn}");
    // Azure's rule: Manage needs Listen and Send beside it.
    let refused = mgmt(&t, &["namespace-rule", "bad", "Manage"]).await;
    assert_eq!(refused["status"], 400, "{refused}");
    let relay = mgmt(&t, &["wcf", "calc", "NetTcp"]).await;
    assert_eq!(relay["relayType"], "NetTcp", "{relay}");
    assert_eq!(relay["listed"], serde_json::json!(["calc"]), "{relay}");
    // A hybrid connection cannot take a WCF relay's name.
    let clash = mgmt(&t, &["create", "CALC", "", "true"]).await;
    assert_eq!(clash["status"], 409, "{clash}");
    let bad = mgmt(&t, &["create", "bad name", "", "true"]).await;
    assert_eq!(bad["status"], 400, "{bad}");
    t.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_relay_from_npm_creates_lists_and_deletes() {
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;
    assert!(
        node_dir().join("node_modules/@azure/arm-relay").is_dir(),
        "npm @azure/arm-relay is missing: npm ci in interop/node"
    );
    let url = admin_url(&t);
    let (ok, out) = finish(t.node(
        "arm_relay.js",
        &[
            &url,
            "localhost",
            t.gw.rule_name(),
            t.gw.rule_key(),
            "js-made",
        ],
    ))
    .await;
    assert!(ok, "@azure/arm-relay: {out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["created"]["name"], "js-made", "{v}");
    assert_eq!(v["created"]["anonymous"], true, "{v}");
    assert_eq!(v["userMetadata"], "made by @azure/arm-relay", "{v}");
    assert_eq!(v["before"], serde_json::json!(["js-made"]), "{v}");
    assert_eq!(v["after"], serde_json::json!([]), "{v}");
    t.gw.shutdown().await;
}

/// One call to the admin API with curl; `(status, body)`.
async fn curl(
    t: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    auth: Option<&str>,
) -> (u16, Value) {
    curl_at(&admin_url(t), &t.ca_file, method, path, body, auth).await
}

/// One call to the admin API at `base` (trusting `ca`) with curl; `(status, body)`.
async fn curl_at(
    base: &str,
    ca: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    auth: Option<&str>,
) -> (u16, Value) {
    ferry_interop::require_tool("curl", "curl");
    let url = format!("{base}{path}");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--cacert"]).arg(ca).args([
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    if let Some(auth) = auth {
        cmd.args(["-H", &format!("Authorization: {auth}")]);
    }
    let body_file = tempfile::NamedTempFile::new().unwrap();
    if let Some(body) = body {
        std::fs::write(body_file.path(), body).unwrap();
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", body_file.path().display()));
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("curl finished in time")
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status: u16 = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {text}"));
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        // The admin API answers JSON; the relay's own refusals are text.
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
    };
    (status, value)
}

fn manage_token(t: &TestGateway) -> String {
    let token = ferry_hc::SasToken::create(
        "sb://localhost/",
        t.gw.rule_name(),
        t.gw.rule_key(),
        in_an_hour(),
    );
    format!("Bearer {token}")
}

const HC: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Relay/namespaces/localhost/hybridConnections";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_azure_statuses_and_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;
    let auth = manage_token(&t);
    let v = "?api-version=2021-11-01";
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    let (s, b) = curl(&t, "GET", &format!("{HC}{v}"), None, None).await;
    assert_eq!((s, code(&b).as_str()), (401, "AuthenticationFailed"), "{b}");
    let forged = auth.replace("sig=", "sig=A");
    let (s, _) = curl(&t, "GET", &format!("{HC}{v}"), None, Some(&forged)).await;
    assert_eq!(s, 401);
    let (s, b) = curl(&t, "GET", HC, None, Some(&auth)).await;
    assert_eq!(
        (s, code(&b).as_str()),
        (400, "MissingApiVersionParameter"),
        "{b}"
    );
    let (s, b) = curl(
        &t,
        "GET",
        &format!("{HC}?api-version=1999-01-01"),
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (400, "InvalidApiVersionParameter"),
        "{b}"
    );
    let (s, b) = curl(
        &t,
        "PUT",
        &format!("{HC}/a{v}"),
        Some(b"{\"properties\": "),
        Some(&auth),
    )
    .await;
    assert_eq!(
        (s, code(&b).as_str()),
        (400, "InvalidRequestContent"),
        "{b}"
    );
    let wrong = br#"{"properties": {"requiresClientAuthorization": "yes"}}"#;
    let (s, _) = curl(&t, "PUT", &format!("{HC}/a{v}"), Some(wrong), Some(&auth)).await;
    assert_eq!(s, 400);
    let long = format!(
        r#"{{"properties": {{"userMetadata": "{}"}}}}"#,
        "m".repeat(1025)
    );
    let (s, _) = curl(
        &t,
        "PUT",
        &format!("{HC}/a{v}"),
        Some(long.as_bytes()),
        Some(&auth),
    )
    .await;
    assert_eq!(s, 400);
    let huge = vec![b' '; 1 << 20];
    let (s, b) = curl(&t, "PUT", &format!("{HC}/a{v}"), Some(&huge), Some(&auth)).await;
    assert_eq!(s, 413, "{b}");
    let (s, _) = curl(
        &t,
        "PUT",
        &format!("{HC}/{}{v}", "x".repeat(261)),
        Some(b"{}"),
        Some(&auth),
    )
    .await;
    assert_eq!(s, 400);
    let (s, b) = curl(
        &t,
        "GET",
        &format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Relay/namespaces/other{v}"
        ),
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    // None of it made anything.
    let (s, b) = curl(&t, "GET", &format!("{HC}{v}"), None, Some(&auth)).await;
    assert_eq!(
        (s, b["value"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{b}"
    );
    // A rule without Manage may not manage.
    let put_rule = br#"{"properties": {"rights": ["Send"]}}"#;
    let rules = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Relay/namespaces/localhost/authorizationRules";
    let (s, _) = curl(
        &t,
        "PUT",
        &format!("{rules}/sender{v}"),
        Some(put_rule),
        Some(&auth),
    )
    .await;
    assert_eq!(s, 200);
    let (s, keys) = curl(
        &t,
        "POST",
        &format!("{rules}/sender/listKeys{v}"),
        None,
        Some(&auth),
    )
    .await;
    assert_eq!(s, 200);
    let sender = ferry_hc::SasToken::create(
        "sb://localhost/",
        "sender",
        keys["primaryKey"].as_str().unwrap(),
        in_an_hour(),
    );
    let (s, b) = curl(
        &t,
        "GET",
        &format!("{HC}{v}"),
        None,
        Some(&format!("Bearer {sender}")),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (403, "AuthorizationFailed"), "{b}");
    t.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_path_closes_its_listeners_with_1001() {
    use futures_util::StreamExt as _;
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;
    let auth = manage_token(&t);
    let v = "?api-version=2021-11-01";
    let (s, _) = curl(
        &t,
        "PUT",
        &format!("{HC}/gone{v}"),
        Some(b"{}"),
        Some(&auth),
    )
    .await;
    assert_eq!(s, 200);
    let token = ferry_hc::SasToken::create(
        "http://localhost/gone",
        t.gw.rule_name(),
        t.gw.rule_key(),
        in_an_hour(),
    );
    let url = format!(
        "ws://127.0.0.1:{}/$hc/gone?sb-hc-action=listen&sb-hc-token={}",
        t.gw.plain_addr().unwrap().port(),
        percent_encode(&token)
    );
    let tcp = tokio::net::TcpStream::connect(t.gw.plain_addr().unwrap())
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("listener connects");
    while t.gw.listener_count("gone") == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _) = curl(&t, "DELETE", &format!("{HC}/gone{v}"), None, Some(&auth)).await;
    assert_eq!(s, 200);
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("control channel ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001);
    assert!(close.reason.contains("deleted"), "{}", close.reason);
    // Deleting it again finds nothing: 204, as Azure answers.
    let (s, _) = curl(&t, "DELETE", &format!("{HC}/gone{v}"), None, Some(&auth)).await;
    assert_eq!(s, 204);
    t.gw.shutdown().await;
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn in_an_hour() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_secs() + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_entity_made_on_one_node_exists_on_every_node() {
    use ferry_interop::cluster::TestCluster;
    const TOKEN: &str = "cluster-admin-token-0123";
    let cluster = TestCluster::start_tweaked(2, |c| {
        c.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.into()),
        });
        c.dynamic_paths = false;
    })
    .await;
    let auth = format!("Bearer {TOKEN}");
    let base = |i: usize| {
        format!(
            "https://localhost:{}",
            cluster.node(i).admin_addr().unwrap().port()
        )
    };
    let ca = cluster.tls.ca_file.clone();
    let call = |i: usize, method: &'static str, body: Option<Vec<u8>>| {
        let (base, ca, auth) = (base(i), ca.clone(), auth.clone());
        async move {
            let path = format!("{HC}/shared?api-version=2021-11-01");
            curl_at(&base, &ca, method, &path, body.as_deref(), Some(&auth)).await
        }
    };
    // Polls node `i` until the hybrid connection answers `status`.
    let until = |i: usize, status: u16| async move {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (s, b) = call(i, "GET", None).await;
                if s == status {
                    return b;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {i} never answered {status}"))
    };
    let body = br#"{"properties": {"userMetadata": "made on node 0"}}"#.to_vec();
    assert_eq!(call(0, "PUT", Some(body)).await.0, 200);
    // Node 1 has it as soon as its watch brings it: its admin API lists it, and a listener
    // may open there.
    let seen = until(1, 200).await;
    assert_eq!(
        seen["properties"]["userMetadata"], "made on node 0",
        "{seen}"
    );
    let listener = ferry_sdk::Listener::open(cluster.endpoint(1, "shared"))
        .await
        .expect("a listener opens on node 1");
    cluster.wait_listeners("shared", 1).await;
    // Each node reports its hold on the store.
    let (status, text) = curl_at(&base(0), &ca, "GET", "/metrics", None, Some(&auth)).await;
    assert_eq!(status, 200);
    assert!(
        text.as_str()
            .unwrap()
            .contains("\nferry_cluster_store_up 1\n"),
        "{text}"
    );
    // Node 0 counts the listener on node 1.
    let (_, got) = call(0, "GET", None).await;
    assert_eq!(got["properties"]["listenerCount"], 1, "{got}");
    // Deleted through node 1, it is gone from node 0 too, and its listener let go.
    assert_eq!(call(1, "DELETE", None).await.0, 200);
    until(0, 404).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while cluster.node(0).listener_count("shared") + cluster.node(1).listener_count("shared")
            > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the deleted path's listener is still registered"
    );
    drop(listener);

    // Two nodes writing the same entity at once end with the same version on both: the
    // last one etcd applied.
    let mut writers = Vec::new();
    for round in 0..10u8 {
        for i in 0..2 {
            let body = format!(r#"{{"properties": {{"userMetadata": "node {i} round {round}"}}}}"#);
            writers.push(tokio::spawn(call(i, "PUT", Some(body.into_bytes()))));
        }
    }
    for w in writers {
        assert_eq!(w.await.unwrap().0, 200);
    }
    let agreed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (a, b) = (call(0, "GET", None).await.1, call(1, "GET", None).await.1);
            let (a, b) = (
                &a["properties"]["userMetadata"],
                &b["properties"]["userMetadata"],
            );
            if a == b {
                return a.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the nodes agree on the entity");
    assert!(agreed.as_str().unwrap().contains("round"), "{agreed}");
    cluster.shutdown().await;
}

/// A dev gateway (dynamic paths) whose admin port takes `token`.
async fn with_admin_token(token: &str) -> TestGateway {
    let token = token.to_owned();
    TestGateway::start_with(move |c| {
        c.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some(token),
        });
    })
    .await
}

/// The hyco-ws listener on `path`, signing with the dev rule, once it listens.
async fn hyco_ws_listener(t: &TestGateway, path: &str) -> tokio::process::Child {
    let listen = format!("{}/$hc/{path}?sb-hc-action=listen", t.wss_base());
    let mut listener = t.node("listener.js", &[&listen, t.gw.rule_name(), t.gw.rule_key()]);
    wait_for_line(&mut listener, "LISTENING").await;
    listener
}

/// The samples of `/metrics`, parsed by PyPI prometheus-client's OpenMetrics parser.
async fn scrape(t: &TestGateway, token: &str) -> Vec<(String, Value, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("arm/scrape.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("{}/metrics", admin_url(t)))
        .arg(token)
        .env("REQUESTS_CA_BUNDLE", &t.ca_file)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "scrape failed (pip install -r interop/requirements.txt): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["contentType"]
            .as_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{v}"
    );
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_owned(),
                s[1].clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`, 0 when absent.
fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_named_after_azure_are_scraped_by_prometheus_client() {
    const TOKEN: &str = "metrics-admin-token-0123";
    let t = with_admin_token(TOKEN).await;
    let (rule, key) = (t.gw.rule_name(), t.gw.rule_key());
    let listener = hyco_ws_listener(&t, "metered").await;
    let host = format!("localhost:{}", t.gw.tls_addr().unwrap().port());
    let (ok, out) = hyco_ws_sends(&t, &host, "metered", rule, key).await;
    assert!(ok, "{out}");
    let forged = ferry_gateway::config::random_key();
    let (ok, _) = hyco_ws_sends(&t, &host, "metered", rule, &forged).await;
    assert!(!ok, "a sender with a wrong key got through");
    let (status, _) = curl_at(
        &format!("https://{host}"),
        &t.ca_file,
        "GET",
        "/nobody-here",
        None,
        None,
    )
    .await;
    // Dynamic paths: without a token nobody learns whether the path exists.
    assert_eq!(status, 401);

    let samples = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let samples = scrape(&t, TOKEN).await;
            // The relay's end is counted once both sides have closed.
            if sample(
                &samples,
                "ferry_sender_disconnects_total",
                &[("entity", "metered")],
            ) >= 1.0
            {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the relay's end is counted");
    let m = |name: &str, labels: &[(&str, &str)]| sample(&samples, name, labels);
    let metered = ("entity", "metered");
    assert_eq!(
        m(
            "ferry_listener_connections_total",
            &[metered, ("result", "success")]
        ),
        1.0
    );
    assert_eq!(m("ferry_active_listeners", &[metered]), 1.0);
    assert_eq!(
        m(
            "ferry_sender_connections_total",
            &[metered, ("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "ferry_sender_connections_total",
            &[metered, ("result", "client_error")]
        ),
        1.0
    );
    assert_eq!(m("ferry_active_connections", &[metered]), 0.0);
    // hyco-ws's sender sent a text and 100,000 bytes; the listener a greeting and both back.
    let up = m(
        "ferry_bytes_transferred_total",
        &[metered, ("direction", "to_listener")],
    );
    let down = m(
        "ferry_bytes_transferred_total",
        &[metered, ("direction", "to_sender")],
    );
    assert!((100_000.0..120_000.0).contains(&up), "{up}");
    assert!((100_000.0..120_000.0).contains(&down), "{down}");
    assert_eq!(
        m("ferry_auth_failures_total", &[("reason", "bad_signature")]),
        1.0
    );
    assert_eq!(
        m(
            "ferry_http_requests_total",
            &[("entity", ""), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        m("ferry_auth_failures_total", &[("reason", "missing")]),
        1.0
    );
    assert_eq!(
        m(
            "ferry_http_request_duration_seconds_count",
            &[("entity", "")]
        ),
        1.0
    );

    // The listener's end is a listener disconnect.
    drop(listener);
    let left = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let samples = scrape(&t, TOKEN).await;
            if sample(&samples, "ferry_listener_disconnects_total", &[metered]) >= 1.0 {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the listener's departure is counted");
    assert_eq!(sample(&left, "ferry_active_listeners", &[metered]), 0.0);
    // Without the token there is nothing to see.
    let (status, _) = curl(&t, "GET", "/metrics", None, None).await;
    assert_eq!(status, 401);
    t.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_listener_come_and_go_in_headless_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: apt-get install chromium"
    );
    assert!(
        node_dir().join("node_modules/playwright-core").is_dir(),
        "npm playwright-core is missing: npm ci in interop/node"
    );
    const TOKEN: &str = "status-page-token-0123456";
    let t = with_admin_token(TOKEN).await;
    let listener = hyco_ws_listener(&t, "on-the-page").await;
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("{}/", admin_url(&t));
    let mut page = t.node(
        "status_page.js",
        &[&url, TOKEN, "on-the-page", shot.to_str().unwrap()],
    );
    let seen = wait_for_line(&mut page, "SEEN").await;
    assert_eq!(seen, "SEEN");
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("status page screenshot: {}", shot.display());
    // The listener leaves; the page shows it gone on its next poll.
    drop(listener);
    let left = wait_for_line(&mut page, "LEFT").await;
    assert_eq!(left, "LEFT");
    let (ok, out) = finish(page).await;
    assert!(ok, "{out}");
    t.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rules_set_through_azure_mgmt_relay_turn_addresses_away() {
    let data = tempfile::tempdir().unwrap();
    let t = TestGateway::start_with(|c| with_admin(c, data.path())).await;
    mgmt(&t, &["create", "guarded", "", "true"]).await;
    let listener = hyco_ws_listener(&t, "guarded").await;
    let host = format!("localhost:{}", t.gw.tls_addr().unwrap().port());
    let (rule, key) = (t.gw.rule_name(), t.gw.rule_key());
    let (ok, out) = hyco_ws_sends(&t, &host, "guarded", rule, key).await;
    assert!(ok, "before any rule: {out}");

    // Only 10.0.0.0/8 may connect: loopback is turned away at accept, before TLS.
    let set = mgmt(&t, &["network", "Deny", "10.0.0.0/8=Allow"]).await;
    assert_eq!(set["defaultAction"], "Deny", "{set}");
    assert_eq!(
        set["ipRules"],
        serde_json::json!([["10.0.0.0/8", "Allow"]]),
        "{set}"
    );
    let (ok, out) = hyco_ws_sends(&t, &host, "guarded", rule, key).await;
    assert!(!ok, "a denied address got through: {out}");
    // The admin port stays reachable, so the rules can be mended; first match wins.
    let set = mgmt(
        &t,
        &["network", "Deny", "127.0.0.2=Deny", "127.0.0.0/8=Allow"],
    )
    .await;
    assert_eq!(
        set["ipRules"][1],
        serde_json::json!(["127.0.0.0/8", "Allow"]),
        "{set}"
    );
    let (ok, out) = hyco_ws_sends(&t, &host, "guarded", rule, key).await;
    assert!(ok, "an allowed address was turned away: {out}");
    let bad = mgmt(&t, &["network", "Deny", "10.0.0.0/33=Allow"]).await;
    assert_eq!(bad["status"], 400, "{bad}");
    drop(listener);
    t.gw.shutdown().await;
}
