//! HTTP request relaying to the npm `hyco-https` listener (an independent implementation),
//! with `curl` as the sender, over TLS with the development CA.

use std::process::Command;

use ferry_hc::SasToken;
use ferry_interop::{TestGateway, require_tool, wait_for_line};

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
    let t = std::sync::Arc::new(t);

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
