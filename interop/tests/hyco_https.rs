//! HTTP request relaying to the npm `hyco-https` listener (an independent implementation),
//! over TLS with the development CA, with two senders: `curl`, and a Rust client (hyper on
//! rustls) speaking HTTP/1.1 and HTTP/2.

use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use ferry_hc::SasToken;
use ferry_interop::{TestGateway, require_tool, wait_for_line};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One curl exchange: status, response headers (lowercased names) and body.
struct Reply {
    status: u16,
    /// The HTTP version curl used: "1.1" or "2".
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn curl(t: &TestGateway, args: &[&str], url: &str) -> Reply {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "--write-out",
            "%{stderr}%{http_version}\n",
            "--cacert",
        ])
        .arg(&t.ca_file)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let head = std::fs::read_to_string(&head).unwrap();
    // Interim responses (100 Continue for large uploads) come first; the final one is last.
    let last = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or_default();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        version,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.expect("sha256sum runs").stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyco_https_listener_answers_curl_through_the_gateway() {
    let t = TestGateway::start().await;
    let listen_uri = format!("{}/$hc/web?sb-hc-action=listen", t.wss_base());
    let mut listener = t.node(
        "https_listener.js",
        &[&listen_uri, t.gw.rule_name(), t.gw.rule_key()],
    );
    wait_for_line(&mut listener, "LISTENING").await;
    let base = format!("https://localhost:{}/web", t.gw.tls_addr().unwrap().port());
    let token = SasToken::create(
        "http://localhost/web",
        t.gw.rule_name(),
        t.gw.rule_key(),
        ferry_interop::now() + 600,
    );
    let auth = format!("ServiceBusAuthorization: {token}");
    let t = Arc::new(t);

    let (t2, auth2, base2) = (t.clone(), auth.clone(), base.clone());
    tokio::task::spawn_blocking(move || {
        let (t, auth, base) = (t2, auth2, base2);
        // GET with an app query, repeated headers, and a token that must not reach the listener.
        let r = curl(
            &t,
            &["-H", &auth, "-H", "X-Multi: a", "-H", "X-Multi: b"],
            &format!("{base}/some/thing?x=1&sb-hc-id=abc"),
        );
        assert_eq!(
            (r.status, r.version.as_str()),
            (200, "2"),
            "curl and the gateway agree on h2 over TLS"
        );
        let j = r.json();
        assert_eq!(j["method"], "GET");
        assert_eq!(
            j["url"], "/web/some/thing?x=1",
            "sb-hc-* parameters stripped, path kept"
        );
        assert_eq!(j["headers"]["x-multi"], "a, b");
        assert!(
            j["headers"].get("servicebusauthorization").is_none(),
            "token stripped: {j}"
        );
        assert!(
            j["headers"]["via"]
                .as_str()
                .unwrap_or_default()
                .contains("localhost"),
            "{j}"
        );
        assert_eq!(r.header("x-listener"), ["hyco-https"]);
        assert!(
            r.header("via").iter().any(|v| v.contains("localhost")),
            "listener responses carry Via"
        );

        // POST bodies: inline (10 B), rendezvous-only (70 KiB, several MB).
        for len in [10usize, 70 * 1024, 3 * 1024 * 1024 + 17] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("body");
            let data = pattern(len);
            std::fs::write(&file, &data).unwrap();
            let at = format!("@{}", file.display());
            let r = curl(
                &t,
                &[
                    "-H",
                    &auth,
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                    &at,
                ],
                &format!("{base}/upload?status=201"),
            );
            assert_eq!(r.status, 201, "POST {len} bytes");
            let j = r.json();
            assert_eq!(j["method"], "POST");
            assert_eq!(j["length"], len);
            assert_eq!(
                j["sha256"],
                sha256_hex(&data),
                "POST {len} bytes arrived intact"
            );
        }

        // A response over 64 KiB: hyco-https answers over a rendezvous it opens itself.
        let r = curl(&t, &["-H", &auth], &format!("{base}/big?n=100000"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, pattern(100_000));
        assert_eq!(r.header("x-pattern"), ["i*31+7"]);
        // HTTP/1.0 senders (ApacheBench and other old tools) are relayed too: inline and over
        // the rendezvous, the body delimited by the connection's end.
        let r = curl(
            &t,
            &["--http1.0", "-H", &auth],
            &format!("{base}/big?n=100000"),
        );
        assert_eq!(r.status, 200);
        // curl writes HTTP/1.0 as "1" (and 1.1 as "1.1").
        assert!(matches!(r.version.as_str(), "1" | "1.0"), "{}", r.version);
        assert_eq!(r.body, pattern(100_000));
        let r = curl(&t, &["--http1.0", "-H", &auth], &format!("{base}/old"));
        assert_eq!(r.status, 200);
        // curl writes HTTP/1.0 as "1" (and 1.1 as "1.1").
        assert!(matches!(r.version.as_str(), "1" | "1.0"), "{}", r.version);
        assert_eq!(r.json()["method"], "GET");

        // The token may also come as sb-hc-token in the query, or as Authorization.
        let q = ferry_hc::address::encode_query_value(&token);
        assert_eq!(
            curl(&t, &[], &format!("{base}/q?sb-hc-token={q}")).status,
            200
        );
        assert_eq!(
            curl(
                &t,
                &["-H", &format!("Authorization: {token}")],
                &format!("{base}/a")
            )
            .status,
            200
        );
        // Refusals come from the gateway itself, without Via.
        let r = curl(&t, &[], &format!("{base}/nothing"));
        assert_eq!(r.status, 401);
        assert!(r.header("via").is_empty());
        assert_eq!(
            curl(&t, &["-X", "DELETE", "-H", &auth], &format!("{base}/x")).json()["method"],
            "DELETE"
        );
    })
    .await
    .unwrap();
    assert_eq!(t.gw.pending_http_requests(), 0);
}

/// A hyco-https listener on `web` behind a fresh gateway, and a token for senders.
async fn hyco_https_listener() -> (Arc<TestGateway>, tokio::process::Child, String) {
    let t = TestGateway::start().await;
    let listen_uri = format!("{}/$hc/web?sb-hc-action=listen", t.wss_base());
    let mut listener = t.node(
        "https_listener.js",
        &[&listen_uri, t.gw.rule_name(), t.gw.rule_key()],
    );
    wait_for_line(&mut listener, "LISTENING").await;
    let token = SasToken::create(
        "http://localhost/web",
        t.gw.rule_name(),
        t.gw.rule_key(),
        ferry_interop::now() + 600,
    );
    (Arc::new(t), listener, token)
}

/// One TLS connection to the gateway's HTTPS port, trusting the dev CA, speaking the
/// HTTP version its ALPN settles on.
#[derive(Clone)]
enum Client {
    Http1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// A response as the Rust client got it.
struct RustReply {
    status: u16,
    version: http::Version,
    headers: http::HeaderMap,
    body: Bytes,
}

impl RustReply {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Client {
    async fn connect(t: &TestGateway, alpn: &'static [u8]) -> Self {
        let pem = t.gw.dev_ca_pem().expect("dev CA");
        let roots = ferry_net::tls::roots_from_pem(pem.as_bytes()).expect("CA parses");
        let config = ferry_net::tls::client_config(roots, &[alpn]).expect("client config");
        let tcp = TcpStream::connect(t.gw.tls_addr().expect("tls port"))
            .await
            .expect("gateway reachable");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("tls handshake with the dev CA");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(alpn),
            "the gateway agreed on the offered protocol"
        );
        let io = TokioIo::new(tls);
        if alpn == ferry_net::tls::ALPN_H2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Self::Http2(send)
        } else {
            let (send, conn) = http1::handshake(io).await.expect("http/1.1 handshake");
            tokio::spawn(conn);
            Self::Http1(Arc::new(tokio::sync::Mutex::new(send)))
        }
    }

    /// Sends `method target` (origin-form, from `/web`) with `headers` and `body`, and reads
    /// the whole response.
    async fn send(
        &self,
        t: &TestGateway,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> RustReply {
        let authority = format!("localhost:{}", t.gw.tls_addr().expect("tls port").port());
        // HTTP/1.1 names the host in `Host`; HTTP/2 in `:authority`, from an absolute URI.
        let mut builder = match self {
            Self::Http1(_) => http::Request::builder()
                .uri(target)
                .header(http::header::HOST, &authority),
            Self::Http2(_) => http::Request::builder().uri(format!("https://{authority}{target}")),
        }
        .method(method);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from(body))).expect("request");
        let response = match self {
            Self::Http1(send) => {
                // One request at a time on an HTTP/1.1 connection, reused (keep-alive).
                let mut send = send.lock().await;
                send.ready().await.expect("connection ready");
                send.send_request(request).await
            }
            Self::Http2(send) => send.clone().send_request(request).await,
        }
        .unwrap_or_else(|e| panic!("{method} {target} failed: {e}"));
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(ferry_interop::PEER_TIMEOUT, body.collect())
            .await
            .expect("body in time")
            .expect("body read")
            .to_bytes();
        RustReply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }
}

/// What hyco-https reports about a POST of `len` bytes sent by `client`.
async fn post(t: &TestGateway, client: &Client, auth: &str, len: usize) {
    let data = pattern(len);
    let r = client
        .send(
            t,
            "POST",
            "/web/upload?status=201",
            &[
                ("ServiceBusAuthorization", auth),
                ("Content-Type", "application/octet-stream"),
            ],
            data.clone(),
        )
        .await;
    assert_eq!(
        r.status,
        201,
        "POST {len} bytes: {}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["length"], len);
    assert_eq!(
        j["sha256"],
        sha256_hex(&data),
        "POST {len} bytes arrived intact"
    );
}

/// The exchanges every Rust client makes with the hyco-https listener.
async fn rust_client_exchanges(alpn: &'static [u8], version: http::Version) {
    let (t, _listener, token) = hyco_https_listener().await;
    let client = Client::connect(&t, alpn).await;

    // GET with an app query, a repeated header, and a token that must not reach the listener.
    let r = client
        .send(
            &t,
            "GET",
            "/web/some/thing?x=1&sb-hc-id=abc",
            &[
                ("ServiceBusAuthorization", &token),
                ("X-Multi", "a"),
                ("X-Multi", "b"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!((r.status, r.version), (200, version));
    let j = r.json();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["url"], "/web/some/thing?x=1");
    assert_eq!(
        j["headers"]["x-multi"], "a, b",
        "repeated headers joined: {j}"
    );
    assert!(j["headers"].get("servicebusauthorization").is_none(), "{j}");
    assert_eq!(r.header("x-listener"), ["hyco-https"]);
    assert!(
        r.header("via").iter().any(|v| v.contains("localhost")),
        "listener responses carry Via"
    );

    // POST bodies: inline (10 B), rendezvous-only (70 KiB, several MB). Over HTTP/2 they
    // share the connection at once; over HTTP/1.1 they take turns on it.
    let lens = [10usize, 70 * 1024, 5 * 1024 * 1024 + 3];
    let mut posts = tokio::task::JoinSet::new();
    for len in lens {
        let (t, client, token) = (t.clone(), client.clone(), token.clone());
        posts.spawn(async move { post(&t, &client, &token, len).await });
    }
    while let Some(done) = posts.join_next().await {
        done.expect("POST exchange");
    }

    // Responses over 64 KiB: hyco-https sends them over a rendezvous it opens itself.
    for n in [100_000usize, 3 << 20] {
        let r = client
            .send(
                &t,
                "GET",
                &format!("/web/big?n={n}"),
                &[("ServiceBusAuthorization", &token)],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n);
        assert!(r.body == pattern(n), "{n} byte response intact");
        assert_eq!(r.header("x-pattern"), ["i*31+7"]);
    }

    // The gateway's own refusal: no Via.
    let r = client
        .send(&t, "GET", "/web/nothing", &[], Vec::new())
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("via").is_empty());
    assert_eq!(t.gw.pending_http_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyco_https_listener_answers_a_rust_http11_client() {
    rust_client_exchanges(ferry_net::tls::ALPN_HTTP11, http::Version::HTTP_11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyco_https_listener_answers_a_rust_http2_client() {
    rust_client_exchanges(ferry_net::tls::ALPN_H2, http::Version::HTTP_2).await;
}
