//! Bounded memory for HTTP relaying: 1 GiB uploaded and 1 GiB downloaded through a `ferry
//! gateway` process and a `ferry listen --http-to` process (the SDK's HTTP listener), by curl,
//! to a streaming origin, must not grow the peak RSS of either process by more than a few MB.

// The readiness poll runs on a blocking thread, where a thread sleep is what it needs.
#![allow(clippy::disallowed_methods)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{Proc, free_port, gateway_command, peak_rss};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const GIB: u64 = 1 << 30;
/// How much either process's peak RSS may grow while 2 GiB pass through it: a few MB of
/// allocator slack, far below any buffer that grows with the body.
const MAX_GROWTH: u64 = 8 << 20;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An origin that counts uploaded bytes without keeping them, and serves `?n=N` bytes on GET.
async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                        if req.method() == hyper::Method::GET {
                            let n: u64 = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("n="))
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            let chunk = Bytes::from(vec![0x5Au8; 64 * 1024]);
                            let chunks = futures_util::stream::unfold(n, move |left| {
                                let chunk = chunk.clone();
                                async move {
                                    (left > 0).then(|| {
                                        let take = left.min(chunk.len() as u64) as usize;
                                        (
                                            Ok::<_, Infallible>(Frame::data(chunk.slice(..take))),
                                            left - take as u64,
                                        )
                                    })
                                }
                            });
                            let mut response =
                                hyper::Response::new(BodyExt::boxed(StreamBody::new(chunks)));
                            response
                                .headers_mut()
                                .insert(hyper::header::CONTENT_LENGTH, n.into());
                            return Ok::<_, Infallible>(response);
                        }
                        let mut body = req.into_body();
                        let mut count = 0u64;
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                count += data.len() as u64;
                            }
                        }
                        let body: Body = Full::new(Bytes::from(count.to_string())).boxed();
                        Ok(hyper::Response::new(body))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "110"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gib_each_way_leaves_gateway_and_listener_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let plain = free_port();
    let mut gw = Proc(
        gateway_command(plain, free_port(), 0)
            .arg("--dev-ca-out")
            .arg(dir.path().join("ca.pem"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let key = {
        use std::io::BufRead;
        let stdout = gw.0.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok);
        let line = lines
            .find(|l| l.starts_with("  key "))
            .expect("dev key printed");
        // Keep reading, so the gateway's stdout stays open for as long as it runs.
        std::thread::spawn(move || lines.for_each(drop));
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    let origin = origin().await;
    let listen = Proc(
        Command::new(FERRY)
            .args([
                "listen",
                "web",
                "--http-to",
                &format!("http://{origin}"),
                "--gateway",
                &format!("ws://127.0.0.1:{plain}"),
            ])
            .env("FERRY_KEY_NAME", "RootManageSharedAccessKey")
            .env("FERRY_KEY", &key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = ferry_hc::SasToken::create(
        "http://localhost/web",
        "RootManageSharedAccessKey",
        &key,
        expiry,
    );
    let auth = format!("ServiceBusAuthorization: {token}");
    let base = format!("http://127.0.0.1:{plain}/web");

    let ready = tokio::task::spawn_blocking({
        let (auth, base) = (auth.clone(), base.clone());
        move || {
            for _ in 0..100 {
                let out = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-H",
                        &auth,
                        &format!("{base}/ping?n=1"),
                    ])
                    .output();
                if out.is_ok_and(|o| o.stdout == b"200") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        }
    });
    assert!(ready.await.unwrap(), "the relay path never answered");
    // Baselines after one relayed request, so both processes have set up their buffers.
    let (gw_pid, listen_pid) = (gw.0.id(), listen.0.id());
    let (gw_before, listen_before) = (peak_rss(gw_pid), peak_rss(listen_pid));

    let file = dir.path().join("gib.bin");
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(GIB).unwrap(); // sparse: no disk space used
    let (auth2, base2, file2) = (auth.clone(), base.clone(), file.clone());
    let (up, down) = tokio::task::spawn_blocking(move || {
        let up = curl(&[
            "-T",
            file2.to_str().unwrap(),
            "-H",
            &auth2,
            &format!("{base2}/up"),
        ]);
        eprintln!("upload answered: {up}");
        let down = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            &auth2,
            &format!("{base2}/down?n={GIB}"),
        ]);
        (up, down)
    })
    .await
    .unwrap();
    assert_eq!(
        up.trim(),
        GIB.to_string(),
        "the origin received every uploaded byte"
    );
    assert_eq!(
        down.trim(),
        GIB.to_string(),
        "curl received every downloaded byte"
    );
    let figures = [
        ("gateway", gw_before, peak_rss(gw_pid)),
        ("ferry listen", listen_before, peak_rss(listen_pid)),
    ];
    // Both figures are printed before either is checked.
    for (name, before, after) in figures {
        eprintln!(
            "{name} peak RSS {} KiB before, {} KiB after 1 GiB up + 1 GiB down (+{} KiB)",
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / 1024
        );
    }
    for (name, before, after) in figures {
        let growth = after.saturating_sub(before);
        assert!(
            growth < MAX_GROWTH,
            "{name} peak RSS grew by {} KiB",
            growth / 1024
        );
    }
}
