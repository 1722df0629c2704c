//! Helpers for tests against real foreign peers. Each peer must be installed by the test
//! command (`scripts/test.sh`): a missing peer fails the test with a message saying so, it is
//! never skipped.

pub mod cluster;
pub mod mono;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_sdk::{Endpoint, SasKeyProvider};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Longest any foreign client process may run.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// `interop/node`, where `npm ci` installed hyco-ws and hyco-https.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Fails the test unless `node` and the npm packages are installed.
pub fn require_node() {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "node is not installed: run the test command from README.md (scripts/test.sh), which installs it"
    );
    assert!(
        node_dir().join("node_modules/hyco-ws").is_dir(),
        "hyco-ws is not installed: run `npm ci` in interop/node (scripts/test.sh does)"
    );
}

/// Fails the test unless the named executable is on PATH.
pub fn require_tool(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(
        found,
        "{name} is not installed: run scripts/test.sh, which installs the {package} package"
    );
}

/// A development gateway with its CA written to a file that Node processes can trust.
pub struct TestGateway {
    /// The running gateway.
    pub gw: RunningGateway,
    /// Holds the CA file.
    _dir: tempfile::TempDir,
    /// The CA certificate file (PEM), for `NODE_EXTRA_CA_CERTS`.
    pub ca_file: PathBuf,
}

impl TestGateway {
    /// Starts a dev gateway (TLS with a generated CA, dynamic paths, one Manage rule).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a dev gateway with `tweak` applied to its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        let mut config = Config::dev();
        config.timeouts.close = Duration::from_millis(500);
        config.tls = ferry_gateway::TlsSetup::Dev {
            ca_out: Some(ca_file.clone()),
        };
        tweak(&mut config);
        let gw = Gateway::start(config).await.expect("gateway starts");
        Self {
            gw,
            _dir: dir,
            ca_file,
        }
    }

    /// `wss://localhost:PORT`.
    pub fn wss_base(&self) -> String {
        format!(
            "wss://localhost:{}",
            self.gw.tls_addr().expect("tls port").port()
        )
    }

    /// An SDK endpoint for `path` over TLS, trusting the dev CA, signing with the dev rule.
    pub fn endpoint(&self, path: &str) -> Endpoint {
        let mut endpoint = Endpoint::new(&self.wss_base(), path).expect("valid endpoint");
        endpoint.set_token_provider(SasKeyProvider::new(
            self.gw.rule_name(),
            self.gw.rule_key(),
            Duration::from_secs(3600),
        ));
        let pem = self.gw.dev_ca_pem().expect("dev CA");
        let roots = ferry_net::tls::roots_from_pem(pem.as_bytes()).expect("CA parses");
        endpoint.set_tls_config(
            ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11])
                .expect("client config"),
        );
        endpoint
    }

    /// Serves the SDK echo listener on `path` until the test ends: every message back as it
    /// came, text as text, binary as binary.
    pub async fn echo_listener(&self, path: &str) {
        let listener = ferry_sdk::Listener::open(self.endpoint(path))
            .await
            .expect("echo listener opens");
        serve_echo(listener);
    }

    /// Starts `node SCRIPT args...` in `interop/node`, trusting the dev CA, killed on drop.
    pub fn node(&self, script: &str, args: &[&str]) -> Child {
        require_node();
        Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(node_dir())
            .env("NODE_EXTRA_CA_CERTS", &self.ca_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts")
    }
}

/// Answers every connection `listener` takes with its own messages, as they came, until the
/// test ends.
pub fn serve_echo(mut listener: ferry_sdk::Listener) {
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut stream) = incoming.accept().await else {
                    return;
                };
                while let Ok(Some(message)) = stream.recv().await {
                    if stream.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Reads a child's stdout until a line equal to `wanted` (or, with `prefix`, starting with
/// it) appears; returns that line. Fails the test after [`PEER_TIMEOUT`].
pub async fn wait_for_line(child: &mut Child, wanted: &str) -> String {
    let stdout = child.stdout.as_mut().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(PEER_TIMEOUT, async {
        loop {
            match lines.next_line().await.expect("read child output") {
                Some(line) if line.starts_with(wanted) => return line,
                Some(_) => continue,
                None => panic!("peer exited before printing {wanted:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("peer did not print {wanted:?} within {PEER_TIMEOUT:?}"))
}

/// Waits for a child to exit, returning its whole stdout and whether it succeeded. Fails the
/// test (and kills the child) after [`PEER_TIMEOUT`].
pub async fn finish(child: Child) -> (bool, String) {
    let out = tokio::time::timeout(PEER_TIMEOUT, child.wait_with_output())
        .await
        .expect("peer finished in time")
        .expect("peer output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Unix seconds now, for token expiry.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
