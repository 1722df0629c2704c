//! A gateway's configuration file changed while it serves: SIGHUP, or the file changing,
//! puts its rules, paths and certificate in force without dropping a connection, and an
//! invalid file changes nothing.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{FERRY, Proc, free_port, within};
use ferry_interop::serve_echo;
use ferry_net::tls::DevPki;
use ferry_sdk::{Endpoint, Listener, Message, SasKeyProvider};

/// Writes a certificate and key for `localhost` to `dir/{name}-*.pem`; the CA's PEM.
fn pki(dir: &Path, name: &str) -> String {
    let pki = DevPki::generate(&[]).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), &pki.leaf_pem).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &pki.key_pem).unwrap();
    pki.ca_pem
}

fn config(
    dir: &Path,
    plain: u16,
    tls: u16,
    cert: &str,
    rules: &[(&str, &str)],
    paths: &[&str],
) -> String {
    let mut text = format!(
        "namespace = \"localhost\"\naliases = [\"127.0.0.1\"]\n[listen]\nplain = \"127.0.0.1:{plain}\"\ntls = \"127.0.0.1:{tls}\"\n\
         [tls]\ncert = \"{c}\"\nkey = \"{k}\"\n",
        c = dir.join(format!("{cert}-cert.pem")).display(),
        k = dir.join(format!("{cert}-key.pem")).display(),
    );
    for (name, key) in rules {
        text.push_str(&format!(
            "[[rules]]\nname = \"{name}\"\nkey = \"{key}\"\nrights = [\"Manage\"]\n"
        ));
    }
    for path in paths {
        text.push_str(&format!("[[paths]]\nname = \"{path}\"\n"));
    }
    text
}

fn endpoint(base: &str, path: &str, rule: &str, key: &str, ca: Option<&str>) -> Endpoint {
    let mut e = Endpoint::new(base, path).unwrap();
    e.set_token_provider(SasKeyProvider::new(rule, key, Duration::from_secs(3600)));
    if let Some(ca) = ca {
        let roots = ferry_net::tls::roots_from_pem(ca.as_bytes()).unwrap();
        e.set_tls_config(
            ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11]).unwrap(),
        );
    }
    e
}

/// Waits for a log line containing `needle`.
fn wait_log(log: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match log.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line containing {needle:?}: {e}"),
        }
    }
}

/// Connects a sender and has `message` echoed by whoever listens.
async fn echoed(endpoint: &Endpoint, message: &str) -> bool {
    let Ok(mut stream) = ferry_sdk::connect(endpoint, &[]).await else {
        return false;
    };
    if stream.send(Message::Text(message.into())).await.is_err() {
        return false;
    }
    matches!(stream.recv().await, Ok(Some(Message::Text(t))) if t == message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_rules_paths_and_certificate_and_keeps_connections() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (plain, tls) = (free_port(), free_port());
        let (ca_a, ca_b) = (pki(dir.path(), "a"), pki(dir.path(), "b"));
        let file = dir.path().join("ferry.toml");
        // Written whole and renamed into place, as an editor or a deployment tool does.
        let write = |text: String| {
            let next = dir.path().join("ferry.toml.next");
            std::fs::write(&next, text).unwrap();
            std::fs::rename(&next, &file).unwrap();
        };
        write(config(
            dir.path(),
            plain,
            tls,
            "a",
            &[("root", "k1")],
            &["keep", "alpha"],
        ));

        let mut child = Command::new(FERRY)
            .args(["gateway", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let gateway = Proc(child);
        let (tx, log) = mpsc::sync_channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.try_send(line);
            }
        });
        wait_log(&log, "listening (tls)");
        let ws = format!("ws://127.0.0.1:{plain}");
        let wss = format!("wss://localhost:{tls}");

        // A listener over TLS (certificate A) on a path that stays, one on a path that goes.
        serve_echo(
            Listener::open(endpoint(&wss, "keep", "root", "k1", Some(&ca_a)))
                .await
                .unwrap(),
        );
        let alpha = Listener::open(endpoint(&ws, "alpha", "root", "k1", None))
            .await
            .unwrap();
        let mut alpha_status = alpha.status();
        serve_echo(alpha);
        assert!(echoed(&endpoint(&ws, "keep", "root", "k1", None), "before").await);

        // SIGHUP with new paths, a second rule and certificate B.
        write(config(
            dir.path(),
            plain,
            tls,
            "b",
            &[("root", "k1"), ("ops", "k2")],
            &["keep", "beta"],
        ));
        let hup = Command::new("kill")
            .args(["-HUP", &gateway.0.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        // The file's change may be noticed before the signal; the signal's reload is the one
        // waited for.
        let line = loop {
            let line = wait_log(&log, "configuration reloaded");
            if line.contains("SIGHUP") {
                break line;
            }
        };
        assert!(line.contains("certificate=true"), "{line}");

        // The listener of the path that went is let go; senders there get nothing.
        tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(*alpha_status.borrow_and_update(), ferry_sdk::Status::Online) {
                alpha_status.changed().await.unwrap();
            }
        })
        .await
        .expect("the removed path's listener is closed");
        assert!(!echoed(&endpoint(&ws, "alpha", "root", "k1", None), "gone").await);
        // The TLS connection made under certificate A still serves.
        assert!(echoed(&endpoint(&ws, "keep", "root", "k1", None), "after").await);
        // New handshakes get certificate B; the new path and rule are there.
        serve_echo(
            Listener::open(endpoint(&wss, "beta", "ops", "k2", Some(&ca_b)))
                .await
                .expect("beta over certificate B"),
        );
        assert!(
            Listener::open(endpoint(&wss, "beta", "ops", "k2", Some(&ca_a)))
                .await
                .is_err(),
            "certificate A still served"
        );
        assert!(echoed(&endpoint(&ws, "beta", "ops", "k2", None), "new").await);

        // An invalid file changes nothing.
        write("this is [[[ not toml".into());
        let line = wait_log(&log, "configuration not reloaded");
        assert!(line.contains("file changed"), "{line}");
        assert!(echoed(&endpoint(&ws, "beta", "root", "k1", None), "still").await);

        // A rule taken out of the file stops working when the file changes, no signal needed.
        write(config(
            dir.path(),
            plain,
            tls,
            "b",
            &[("ops", "k2")],
            &["keep", "beta"],
        ));
        wait_log(&log, "configuration reloaded");
        assert!(!echoed(&endpoint(&ws, "beta", "root", "k1", None), "refused").await);
        assert!(echoed(&endpoint(&ws, "beta", "ops", "k2", None), "allowed").await);

        // Limits change live too: a request head that fit is now too large (431), and the
        // reload asks for no restart for it.
        let big_head = || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("X-Padding: {}", "p".repeat(4000)))
                .arg(format!("http://127.0.0.1:{plain}/beta/x"))
                .output()
                .expect("curl runs (apt-get install curl)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(big_head(), "401", "a 4 KB head under the default limit");
        let mut limited = config(
            dir.path(),
            plain,
            tls,
            "b",
            &[("ops", "k2")],
            &["keep", "beta"],
        );
        limited.push_str("[limits]\nmax_header_bytes = 2048\n[timeouts]\nhandshake = 5\n");
        write(limited);
        let line = wait_log(&log, "configuration reloaded");
        assert!(line.contains("needs_restart=[]"), "{line}");
        assert_eq!(big_head(), "431", "the reloaded limit");
        assert!(echoed(&endpoint(&ws, "beta", "ops", "k2", None), "limited").await);
        drop(gateway);
    })
    .await;
}
