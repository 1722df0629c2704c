//! Chaos soak: many checksummed transfers at once, over WebSocket, HTTP and net.tcp, while
//! the listeners (`ferry` processes) are killed with SIGKILL and restarted at random. Every
//! transfer either arrives byte-exact or its sender sees an error: never a truncated or
//! altered transfer that looks complete.
//!
//! ```text
//!  SDK senders ──WS──►                 ┌─► ferry bridge remote ──TCP──► echo server
//!  HTTP clients ─POST─► gateway (here) ─┼─► ferry listen --http-to ──► HTTP echo origin
//!  net.tcp client ────►                └─► ferry listen --wcf-to ──► Mono calculator service
//!                       (kill -9 and restart any listener, at random)
//! ```
//!
//! `FERRY_CHAOS_SECS` sets how long it runs (20 s by default; `scripts/chaos.sh` runs ten
//! minutes).

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Calc, ferry, ferry_env, token};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_wcf::generated::calculator::{Add, CalculatorClient};
use ferry_wcf::net_tcp::{ChannelConfig, NetTcpChannel};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Child;
use tokio::time::Instant;

/// How a transfer ended.
#[derive(Default)]
struct Tally {
    exact: AtomicUsize,
    /// The sender was told: a refused connection, an error status, a reset, a fault.
    failed_loudly: AtomicUsize,
    /// Ended as if complete, but short or different: the one outcome that must never happen.
    corrupt: AtomicUsize,
}

impl Tally {
    fn count(&self, outcome: Result<bool, String>, what: &str) {
        match outcome {
            Ok(true) => self.exact.fetch_add(1, Ordering::Relaxed),
            Ok(false) => {
                eprintln!("{what}: a transfer ended as if complete but differs");
                self.corrupt.fetch_add(1, Ordering::Relaxed)
            }
            Err(why) => {
                // The first few, so a run shows what the senders were told.
                if self.failed_loudly.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("{what}: failed loudly: {why}");
                }
                0
            }
        };
    }

    fn summary(&self) -> (usize, usize, usize) {
        (
            self.exact.load(Ordering::Relaxed),
            self.failed_loudly.load(Ordering::Relaxed),
            self.corrupt.load(Ordering::Relaxed),
        )
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for every transfer.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A TCP server that echoes every connection until it half-closes.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// An HTTP origin that answers every request with its body.
async fn echo_origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let body: hyper::body::Incoming = req.into_body();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(http::Response::new(Full::new(bytes)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    port
}

/// One kind of listener process, restartable.
struct Victim {
    args: Vec<String>,
    ready: &'static str,
    child: Option<Child>,
}

impl Victim {
    async fn start(&mut self, gw: &RunningGateway) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = Some(ferry(&args, &ferry_env(gw), self.ready).await);
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: no close frames, no End records, sockets reset by the kernel.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// WebSocket: write a payload, half-close, read the echo to its end.
async fn ws_transfer(gw: &RunningGateway, seed: u64) -> Result<bool, String> {
    let len = 16 * 1024 + (seed as usize * 7919) % (240 * 1024);
    let sent = payload(seed, len);
    let endpoint = {
        let plain = gw.plain_addr().expect("plain");
        let mut e =
            ferry_sdk::Endpoint::new(&format!("ws://{plain}"), "chaos-ws").expect("endpoint");
        e.set_token_provider(ferry_sdk::SasKeyProvider::new(
            gw.rule_name(),
            gw.rule_key(),
            Duration::from_secs(3600),
        ));
        e
    };
    let stream = ferry_sdk::connect(&endpoint, &[])
        .await
        .map_err(|e| e.to_string())?;
    let (mut r, mut w) = tokio::io::split(stream);
    let writing = async {
        w.write_all(&sent).await?;
        w.shutdown().await
    };
    let mut got = Vec::with_capacity(len);
    let reading = r.read_to_end(&mut got);
    let (wrote, read) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writing, reading)
    })
    .await
    .map_err(|_| "stalled".to_owned())?;
    wrote.map_err(|e| e.to_string())?;
    read.map_err(|e| e.to_string())?;
    Ok(got == sent)
}

/// HTTP: POST a payload, read the response body to its end.
async fn http_transfer(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    gw: &RunningGateway,
    seed: u64,
) -> Result<bool, String> {
    let len = 1024 + (seed as usize * 104_729) % (512 * 1024);
    let sent = payload(seed, len);
    let plain = gw.plain_addr().expect("plain");
    let request = http::Request::post(format!("http://{plain}/chaos-http/echo"))
        .header("ServiceBusAuthorization", token(gw, "chaos-http"))
        .body(Full::new(Bytes::from(sent.clone())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "stalled".to_owned())??;
    Ok(response.as_ref() == sent.as_slice())
}

/// net.tcp: one session of ten `Add` calls, each answer checked.
async fn nettcp_session(gw: &RunningGateway, seed: u64) -> Result<bool, String> {
    let addr = gw.nettcp_addr().expect("net.tcp port");
    let via = format!("net.tcp://127.0.0.1:{}/chaos-tcp", addr.port());
    let mut config = ChannelConfig::default();
    config
        .set_relay_token(token(gw, "chaos-tcp"))
        .set_timeout(Duration::from_secs(30));
    let channel = NetTcpChannel::connect(addr, via, config)
        .await
        .map_err(|e| e.to_string())?;
    let client = CalculatorClient::new(channel);
    let mut all_right = true;
    for i in 0..10 {
        let a = (seed as i32).wrapping_mul(31).wrapping_add(i) % 100_000;
        let b = i * 1000 + 7;
        let answer = client.add(Add { a, b }).await.map_err(|e| e.to_string())?;
        all_right &= answer.add_result == a + b;
    }
    let _ = client.transport().close().await;
    Ok(all_right)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listeners_never_truncate_or_corrupt_a_transfer() {
    let secs: u64 = std::env::var("FERRY_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut calc = Calc::start().await;
    let gw = Arc::new(Gateway::start(Config::dev()).await.expect("gateway starts"));
    let echo = echo_server().await;
    let origin = echo_origin().await;
    let mut victims = vec![
        Victim {
            args: ["bridge", "remote", "chaos-ws", &format!("127.0.0.1:{echo}")]
                .map(str::to_owned)
                .to_vec(),
            ready: "bridge remote side running",
            child: None,
        },
        Victim {
            args: [
                "listen",
                "chaos-http",
                "--http-to",
                &format!("http://127.0.0.1:{origin}"),
            ]
            .map(str::to_owned)
            .to_vec(),
            ready: "forwarding http requests",
            child: None,
        },
        Victim {
            args: ["listen", "chaos-tcp", "--wcf-to", &calc.tcp]
                .map(str::to_owned)
                .to_vec(),
            ready: "forwarding net.tcp sessions",
            child: None,
        },
    ];
    for v in &mut victims {
        v.start(&gw).await;
    }
    for path in ["chaos-ws", "chaos-http", "chaos-tcp"] {
        while gw.listener_count(path) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let deadline = Instant::now() + Duration::from_secs(secs);
    let seeds = Arc::new(AtomicU64::new(1));
    let (ws, web, tcp) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (gw, seeds, tally) = (gw.clone(), seeds.clone(), ws.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let seed = seeds.fetch_add(1, Ordering::Relaxed);
                tally.count(ws_transfer(&gw, seed).await, "websocket");
            }
        });
    }
    for _ in 0..2 {
        let (gw, seeds, tally) = (gw.clone(), seeds.clone(), web.clone());
        workers.spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            while Instant::now() < deadline {
                let seed = seeds.fetch_add(1, Ordering::Relaxed);
                tally.count(http_transfer(&client, &gw, seed).await, "http");
            }
        });
    }
    for _ in 0..2 {
        let (gw, seeds, tally) = (gw.clone(), seeds.clone(), tcp.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let seed = seeds.fetch_add(1, Ordering::Relaxed);
                tally.count(nettcp_session(&gw, seed).await, "net.tcp");
            }
        });
    }

    // The chaos: every 0.3–1.2 s one listener, chosen at random, is killed; it comes back
    // 0.1–0.5 s later.
    let mut kills = 0;
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut revived = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300 + next() % 900)).await;
        let victim = &mut victims[(next() % 3) as usize];
        victim.kill().await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(100 + next() % 400)).await;
        victim.start(&gw).await;
        // The origin is not under test: when Mono's runtime dies, it comes back, so the
        // net.tcp sessions keep reaching something for the whole run.
        if calc.revive().await {
            revived += 1;
        }
    }
    eprintln!("the Mono origin was started again {revived} times");
    while workers.join_next().await.is_some() {}

    for (what, tally) in [("websocket", &ws), ("http", &web), ("net.tcp", &tcp)] {
        let (exact, loud, corrupt) = tally.summary();
        eprintln!("{what}: {exact} exact, {loud} failed loudly, {corrupt} corrupt ({kills} kills)");
        assert_eq!(
            corrupt, 0,
            "{what}: transfers that ended as if complete but were not"
        );
        assert!(exact > 0, "{what}: no transfer got through at all");
    }
    assert!(kills >= secs / 2, "the chaos ran ({kills} kills)");
}
