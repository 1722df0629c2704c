//! The Hybrid Connections WebSocket flow through the gateway, end to end on loopback, with
//! hand-driven clients so every status, header and close code is checked as sent.

use std::time::Duration;

use ferry_gateway::PathConfig;
use ferry_hc::{Command, Right, Rights, Rule, SasToken};
use ferry_tests::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A sender connects, the listener accepts over the rendezvous, and messages flow both ways.
async fn relayed_pair(gw: &ferry_gateway::RunningGateway, path: &str) -> (Ws, Ws, Ws) {
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(gw, path).await;
    let tok = token(gw, path);
    let target = format!("/$hc/{path}/sub/path?app=1&sb-hc-action=connect&sb-hc-id=sender-1");
    let sender = tokio::spawn(async move {
        ws(
            addr,
            &target,
            &[
                ("ServiceBusAuthorization", &tok),
                ("Sec-WebSocket-Protocol", "chat, superchat"),
                ("X-App", "a"),
            ],
        )
        .await
    });
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!("expected accept")
    };
    assert_eq!(accept.id, "sender-1");
    assert!(
        accept.connect_headers.contains_key("Sec-WebSocket-Key"),
        "{:?}",
        accept.connect_headers
    );
    let app = accept
        .connect_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-App"))
        .map(|(_, v)| v.as_str());
    assert_eq!(app, Some("a"));
    assert!(
        !accept
            .connect_headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("ServiceBusAuthorization")),
        "token must not reach the listener"
    );
    let expected = format!("/$hc/{path}/sub/path?app=1&sb-hc-action=accept&sb-hc-id=sender-1");
    assert!(accept.address.contains(&expected), "{}", accept.address);
    let rendezvous = ws(
        addr,
        &target_of(&accept.address),
        &[("Sec-WebSocket-Protocol", "chat")],
    )
    .await
    .expect("rendezvous accepted");
    let sender = sender.await.unwrap().expect("sender accepted");
    (control, sender, rendezvous)
}

#[tokio::test]
async fn messages_flow_both_ways_with_boundaries_and_close_codes() {
    let gw = gateway(|_| {}).await;
    let (_control, mut sender, mut listener_side) = relayed_pair(&gw, "echo").await;
    sender.send(Message::text("héllo")).await.unwrap();
    assert_eq!(next(&mut listener_side).await, Message::text("héllo"));
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + 7) as u8).collect();
    listener_side
        .send(Message::binary(blob.clone()))
        .await
        .unwrap();
    assert_eq!(next(&mut sender).await, Message::binary(blob));
    sender.send(Message::binary(Vec::new())).await.unwrap();
    assert_eq!(next(&mut listener_side).await, Message::binary(Vec::new()));

    // Half-close from the sender: the listener can still send before it closes too.
    sender
        .close(Some(CloseFrame {
            code: CloseCode::Library(4000),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let Message::Close(Some(frame)) = next(&mut listener_side).await else {
        panic!("close expected")
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "bye")
    );
    drop(listener_side.flush().await);
    assert_eq!(close_code(&mut sender).await, 4000);
    gw.shutdown().await;
}

#[tokio::test]
async fn subprotocol_chosen_by_listener_is_echoed_to_both() {
    let gw = gateway(|_| {}).await;
    let (_control, sender, rendezvous) = relayed_pair(&gw, "echo").await;
    // tungstenite verifies the echoed protocol on each handshake; check the values too.
    drop((sender, rendezvous));
    let addr = gw.plain_addr().unwrap();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut control = listener(&gw, "proto").await;
    let tok = token(&gw, "proto");
    let req = format!(
        "GET /$hc/proto?sb-hc-action=connect HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\n\
         ServiceBusAuthorization: {tok}\r\n\r\n"
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!()
    };
    let _rv = ws(
        addr,
        &target_of(&accept.address),
        &[("Sec-WebSocket-Protocol", "b")],
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(STEP, raw.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: b\r\n"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "extensions are declined"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn listener_reject_gives_410_to_it_and_the_status_to_the_sender() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "rej").await;
    let tok = token(&gw, "rej");
    let sender =
        tokio::spawn(
            async move { ws(addr, "/$hc/rej", &[("ServiceBusAuthorization", &tok)]).await },
        );
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!()
    };
    let reject = format!(
        "{}&sb-hc-statusCode=401&sb-hc-statusDescription=Not%20you",
        target_of(&accept.address)
    );
    assert_eq!(refused(addr, &reject, &[]).await, 410);
    let err = sender.await.unwrap().map(|_| ()).unwrap_err();
    assert_eq!(err.0, 401);
    // The same address cannot be used again.
    assert_eq!(refused(addr, &target_of(&accept.address), &[]).await, 403);
    gw.shutdown().await;
}

#[tokio::test]
async fn token_failures_map_to_401_and_403() {
    let gw = gateway(|c| {
        c.rules.push(Rule::new("listen-only", "lk", Rights::LISTEN));
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let _l = listener(&gw, "auth").await;
    let key = gw.rule_key().to_owned();
    let name = gw.rule_name().to_owned();
    let cases: Vec<(&str, String, u16)> = vec![
        ("missing", String::new(), 401),
        ("malformed", "SharedAccessSignature nonsense".into(), 401),
        ("not sas", "Bearer abc".into(), 401),
        (
            "expired",
            SasToken::create("http://localhost/auth", &name, &key, now() - 3600),
            401,
        ),
        (
            "wrong key",
            SasToken::create("http://localhost/auth", &name, "wrong", now() + 60),
            401,
        ),
        (
            "unknown rule",
            SasToken::create("http://localhost/auth", "ghost", &key, now() + 60),
            401,
        ),
        (
            "listen claim used to send",
            SasToken::create("http://localhost/auth", "listen-only", "lk", now() + 60),
            403,
        ),
        (
            "other path",
            SasToken::create("http://localhost/other", &name, &key, now() + 60),
            403,
        ),
        (
            "other host",
            SasToken::create("http://elsewhere/auth", &name, &key, now() + 60),
            403,
        ),
    ];
    for (what, tok, status) in cases {
        let headers: Vec<(&str, &str)> = if tok.is_empty() {
            vec![]
        } else {
            vec![("ServiceBusAuthorization", tok.as_str())]
        };
        let got = ws(addr, "/$hc/auth?sb-hc-action=connect", &headers)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(got.0, status, "{what}: {got:?}");
    }
    // The Host header is the client's to choose: naming the token's host there too changes
    // nothing, for senders and listeners alike.
    let elsewhere = SasToken::create("http://elsewhere/auth", &name, &key, now() + 60);
    for action in ["connect", "listen"] {
        let target = format!("/$hc/auth?sb-hc-action={action}");
        let headers = [
            ("Host", "elsewhere"),
            ("ServiceBusAuthorization", &elsewhere),
        ];
        assert_eq!(refused(addr, &target, &headers).await, 403, "{action}");
    }
    // A token in the query works as well as the header, and a missing action means connect.
    let tok = token(&gw, "auth");
    let q = format!(
        "/$hc/auth?sb-hc-token={}",
        ferry_hc::address::encode_query_value(&tok)
    );
    let pending = tokio::spawn(async move { ws(addr, &q, &[]).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pending.is_finished(),
        "an authorised sender waits for its listener"
    );
    pending.abort();
    // Listeners need Listen: a Send-only rule is refused.
    let send_only = SasToken::create("http://localhost/auth", "listen-only", "wrong", now() + 60);
    assert_eq!(
        refused(
            addr,
            "/$hc/auth?sb-hc-action=listen",
            &[("ServiceBusAuthorization", &send_only)]
        )
        .await,
        401
    );
    let _ = Right::Send;
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_missing_listeners_are_404() {
    let gw = gateway(|c| {
        c.dynamic_paths = false;
        c.paths = vec![PathConfig::new("known")];
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let tok = token(&gw, "unknown");
    assert_eq!(
        refused(
            addr,
            "/$hc/unknown?sb-hc-action=listen",
            &[("ServiceBusAuthorization", &tok)]
        )
        .await,
        404
    );
    assert_eq!(
        refused(
            addr,
            "/$hc/unknown?sb-hc-action=connect",
            &[("ServiceBusAuthorization", &tok)]
        )
        .await,
        404
    );
    let tok = token(&gw, "known");
    assert_eq!(
        refused(addr, "/$hc/known", &[("ServiceBusAuthorization", &tok)]).await,
        404,
        "no listener"
    );
    // Allowed/Disallowed listener headers that match nobody.
    let _l = listener(&gw, "known").await;
    let got = ws(
        addr,
        "/$hc/known",
        &[
            ("ServiceBusAuthorization", &tok),
            ("Microsoft-Relay-AllowedListeners", "nobody"),
        ],
    )
    .await;
    assert_eq!(got.map(|_| ()).unwrap_err().0, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn anonymous_senders_where_the_path_allows() {
    let gw = gateway(|c| {
        c.dynamic_paths = false;
        let mut open = PathConfig::new("open");
        open.anonymous_senders = true;
        c.paths = vec![open, PathConfig::new("closed")];
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "open").await;
    let sender = tokio::spawn(async move { ws(addr, "/$hc/open", &[]).await });
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!()
    };
    let _rv = ws(addr, &target_of(&accept.address), &[]).await.unwrap();
    assert!(sender.await.unwrap().is_ok());
    let _c = listener(&gw, "closed").await;
    assert_eq!(refused(addr, "/$hc/closed", &[]).await, 401);
    gw.shutdown().await;
}

#[tokio::test]
async fn expired_rendezvous_is_403_and_the_sender_gets_504() {
    let gw = gateway(|c| c.timeouts.rendezvous = Duration::from_millis(300)).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "slow").await;
    let tok = token(&gw, "slow");
    let sender = tokio::spawn(async move {
        ws(addr, "/$hc/slow", &[("ServiceBusAuthorization", &tok)])
            .await
            .map(|_| ())
    });
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!()
    };
    assert_eq!(sender.await.unwrap().unwrap_err().0, 504);
    assert_eq!(refused(addr, &target_of(&accept.address), &[]).await, 403);
    // Forged or missing rendezvous keys.
    assert_eq!(
        refused(
            addr,
            "/$hc/slow?sb-hc-action=accept&sb-hc-id=x&sb-hc-rendezvous=00",
            &[]
        )
        .await,
        403
    );
    assert_eq!(
        refused(addr, "/$hc/slow?sb-hc-action=accept&sb-hc-id=x", &[]).await,
        403
    );
    assert_eq!(gw.pending_rendezvous(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn at_most_25_listeners_per_path() {
    let gw = gateway(|_| {}).await;
    let mut held = Vec::new();
    for _ in 0..25 {
        held.push(listener(&gw, "many").await);
    }
    assert_eq!(gw.listener_count("many"), 25);
    let addr = gw.plain_addr().unwrap();
    let tok = token(&gw, "many");
    let got = ws(
        addr,
        "/$hc/many?sb-hc-action=listen",
        &[("ServiceBusAuthorization", &tok)],
    )
    .await;
    assert_eq!(got.map(|_| ()).unwrap_err().0, 403);
    // Every listener gets a share of the senders (random balancing).
    drop(held.drain(20..));
    gw.shutdown().await;
}

/// Sends raw bytes and returns the status line of the answer (or "" if the connection was
/// closed without one), measuring how long it took.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("gateway closes in bounded time");
    let text = String::from_utf8_lossy(&out);
    (
        text.lines().next().unwrap_or_default().to_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn garbage_oversized_and_slow_handshakes_get_clean_answers() {
    let gw = gateway(|c| c.timeouts.handshake = Duration::from_millis(500)).await;
    let addr = gw.plain_addr().unwrap();
    let baseline = gw.active_tasks();
    let mut control = listener(&gw, "steady").await;

    let (line, _) = raw_exchange(addr, b"\x16\x03\x01\x02\x00\x01\r\n\r\n").await;
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    let big = format!(
        "GET /$hc/x HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let (line, _) = raw_exchange(addr, big.as_bytes()).await;
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    let (line, took) = raw_exchange(addr, b"GET /$hc/x HTTP/1.1\r\nHost: slow").await;
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
    assert!(
        took < Duration::from_secs(3),
        "slow handshake cut after the handshake timeout: {took:?}"
    );
    let (line, _) = raw_exchange(
        addr,
        b"GET /$hc/x?sb-hc-action=connect HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "not an upgrade: {line}");
    let (line, _) = raw_exchange(
        addr,
        b"GET /$hc/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 426"), "{line}");
    let (line, _) = raw_exchange(
        addr,
        b"GET /$hc/x?sb-hc-action=fly HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");

    // The listener that was there all along is undisturbed.
    control.send(Message::Ping(vec![1].into())).await.unwrap();
    assert!(matches!(next(&mut control).await, Message::Pong(_)));
    drop(control);
    // And nothing leaked: only the accept loops remain.
    let deadline = tokio::time::Instant::now() + STEP;
    while gw.active_tasks() > baseline && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.active_tasks(), baseline);
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_frames_after_the_upgrade_close_with_1002_and_spare_others() {
    let gw = gateway(|_| {}).await;
    let (_control, mut sender, mut rendezvous) = relayed_pair(&gw, "echo").await;
    let (_control2, mut sender2, mut rendezvous2) = relayed_pair(&gw, "echo2").await;
    // An unmasked frame from a client is a protocol violation (RFC 6455 §5.1).
    sender
        .get_mut()
        .write_all(&[0x82, 0x01, 0xFF])
        .await
        .unwrap();
    assert_eq!(close_code(&mut rendezvous).await, 1002);
    let got = tokio::time::timeout(STEP, sender.next()).await.unwrap();
    assert!(
        matches!(got, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1002)
            || got.is_none()
            || matches!(got, Some(Err(_))),
        "{got:?}"
    );
    // The other relay carries on.
    sender2.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut rendezvous2).await, Message::text("still here"));
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let gw = gateway(|c| c.limits.max_message = 64 * 1024).await;
    let (_control, mut sender, mut rendezvous) = relayed_pair(&gw, "echo").await;
    sender
        .send(Message::binary(vec![7u8; 64 * 1024 + 1]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut rendezvous).await, 1009);
    gw.shutdown().await;
}

#[tokio::test]
async fn expired_listener_token_closes_the_control_channel_with_1008_unless_renewed() {
    let gw = gateway(|c| c.timeouts.token_grace = Duration::ZERO).await;
    let addr = gw.plain_addr().unwrap();
    let short = |secs| {
        SasToken::create(
            "http://localhost/exp",
            gw.rule_name(),
            gw.rule_key(),
            now() + secs,
        )
    };
    let mut renewed = ws(
        addr,
        "/$hc/exp?sb-hc-action=listen",
        &[("ServiceBusAuthorization", &short(2))],
    )
    .await
    .unwrap();
    let mut lapsed = ws(
        addr,
        "/$hc/exp?sb-hc-action=listen",
        &[("ServiceBusAuthorization", &short(2))],
    )
    .await
    .unwrap();
    let renew = Command::RenewToken(ferry_hc::command::RenewToken { token: short(3600) }).encode();
    renewed.send(Message::text(renew)).await.unwrap();
    assert_eq!(close_code(&mut lapsed).await, 1008);
    // The renewed one stays: it still answers pings after the first token's expiry.
    renewed.send(Message::Ping(vec![].into())).await.unwrap();
    assert!(matches!(next(&mut renewed).await, Message::Pong(_)));
    assert_eq!(gw.listener_count("exp"), 1);
    // A bad renewal closes with 1008 at once.
    renewed
        .send(Message::text(
            Command::RenewToken(ferry_hc::command::RenewToken {
                token: "junk".into(),
            })
            .encode(),
        ))
        .await
        .unwrap();
    assert_eq!(close_code(&mut renewed).await, 1008);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_listener_token_that_never_expires_keeps_its_control_channel() {
    // The largest expiry a token can name: the control channel's expiry deadline overflowed
    // the clock (a panic in its task) before it was capped.
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let forever = SasToken::create(
        "http://localhost/far",
        gw.rule_name(),
        gw.rule_key(),
        u64::MAX,
    );
    let mut control = ws(
        addr,
        "/$hc/far?sb-hc-action=listen",
        &[("ServiceBusAuthorization", &forever)],
    )
    .await
    .expect("listener accepted");
    let renew = Command::RenewToken(ferry_hc::command::RenewToken { token: forever }).encode();
    control.send(Message::text(renew)).await.unwrap();
    control.send(Message::Ping(vec![].into())).await.unwrap();
    assert!(matches!(next(&mut control).await, Message::Pong(_)));
    assert_eq!(gw.listener_count("far"), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn behind_a_tls_terminating_proxy_rendezvous_addresses_are_wss() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    for (header, value, scheme) in [
        ("X-Forwarded-Proto", "https", "wss://"),
        (
            "Forwarded",
            "for=192.0.2.1;proto=https;host=relay",
            "wss://",
        ),
        ("X-Forwarded-Proto", "http", "ws://"),
    ] {
        let tok = token(&gw, "proxied");
        let mut control = ws(
            addr,
            "/$hc/proxied?sb-hc-action=listen",
            &[("ServiceBusAuthorization", &tok), (header, value)],
        )
        .await
        .expect("listener accepted");
        let sender = tokio::spawn(async move {
            ws(
                addr,
                "/$hc/proxied?sb-hc-action=connect",
                &[("ServiceBusAuthorization", &tok)],
            )
            .await
            .map(|_| ())
        });
        let Command::Accept(accept) = next_command(&mut control).await else {
            panic!("expected accept")
        };
        assert!(
            accept.address.starts_with(scheme),
            "{header}: {value} gives {}",
            accept.address
        );
        sender.abort();
        drop(control);
        while gw.listener_count("proxied") > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn dead_listeners_are_dropped_by_keepalive() {
    let gw = gateway(|c| c.timeouts.keepalive = Duration::from_millis(200)).await;
    let addr = gw.plain_addr().unwrap();
    // Completes the upgrade, then never reads or answers a ping.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /$hc/dead?sb-hc-action=listen HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nServiceBusAuthorization: {}\r\n\r\n",
        token(&gw, "dead")
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 256];
    let _ = raw.read(&mut head).await.unwrap();
    assert_eq!(gw.listener_count("dead"), 1);
    let deadline = tokio::time::Instant::now() + STEP;
    while gw.listener_count("dead") > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.listener_count("dead"), 0, "silent listener removed");
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_listeners_and_relays_with_1001() {
    let gw = gateway(|_| {}).await;
    let (mut control, mut sender, mut rendezvous) = relayed_pair(&gw, "echo").await;
    let stop = tokio::spawn(gw.shutdown());
    for ws in [&mut control, &mut sender, &mut rendezvous] {
        let code = loop {
            match next(ws).await {
                Message::Close(Some(f)) => break u16::from(f.code),
                Message::Close(None) => break 0,
                _ => continue,
            }
        };
        assert_eq!(code, 1001);
    }
    tokio::time::timeout(STEP, stop).await.unwrap().unwrap();
}

#[tokio::test]
async fn path_existence_is_not_revealed_before_authentication() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let bad = SasToken::create(
        "http://localhost/ghost",
        gw.rule_name(),
        "wrong key",
        now() + 60,
    );
    let got = ws(addr, "/$hc/ghost", &[("ServiceBusAuthorization", &bad)])
        .await
        .map(|_| ());
    assert_eq!(got.unwrap_err().0, 401, "bad token on an unlistened path");
    assert_eq!(refused(addr, "/$hc/ghost", &[]).await, 401, "no token");
    let good = token(&gw, "ghost");
    let got = ws(addr, "/$hc/ghost", &[("ServiceBusAuthorization", &good)])
        .await
        .map(|_| ());
    assert_eq!(
        got.unwrap_err().0,
        404,
        "authenticated sender learns there is no listener"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_listener_that_does_not_read_stalls_its_sender() {
    let gw = gateway(|_| {}).await;
    let (_control, mut sender, mut listener_side) = relayed_pair(&gw, "slowpoke").await;
    // The listener reads nothing; the relay awaits every write, so the sender must block
    // once the kernel buffers on both hops are full, long before it has sent 256 MiB.
    let chunk = vec![0x5Au8; 1 << 20];
    let mut sent = 0usize;
    while sent < 256 << 20 {
        let send = sender.send(Message::binary(chunk.clone()));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(r) => {
                r.unwrap();
                sent += chunk.len();
            }
            Err(_) => break,
        }
    }
    eprintln!("sender stalled after {} MiB", sent >> 20);
    assert!(
        sent < 64 << 20,
        "sender pushed {} MiB into a relay whose listener reads nothing",
        sent >> 20
    );
    // Once the listener reads, everything that was accepted arrives, in order and whole.
    let mut received = 0usize;
    let drained = async {
        loop {
            match next(&mut listener_side).await {
                Message::Binary(b) => {
                    assert!(b.iter().all(|&x| x == 0x5A) && b.len() == chunk.len());
                    received += b.len();
                }
                other => panic!("unexpected {other:?}"),
            }
            // The send that timed out may have been partly written; it completes later.
            if received >= sent {
                break;
            }
        }
    };
    tokio::time::timeout(STEP, drained)
        .await
        .expect("buffered data drains");
    assert!(received >= sent);
    gw.shutdown().await;
}

#[tokio::test]
async fn plain_port_is_loopback_only_unless_allowed() {
    let mut config = ferry_gateway::Config::dev();
    config.plain_addr = Some("0.0.0.0:0".parse().unwrap());
    config.tls_addr = None;
    let err = ferry_gateway::Gateway::start(config.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ferry_gateway::StartError::PlainNotLoopback(_)),
        "{err}"
    );
    config.plain_public = true;
    ferry_gateway::Gateway::start(config)
        .await
        .expect("allowed explicitly")
        .shutdown()
        .await;
}
