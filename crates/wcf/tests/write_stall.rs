//! A basicHttp client on `BasicHttp::serve_tcp` that asks for a large answer and never reads
//! it: the host closes the connection once writing makes no progress for the send timeout,
//! and serves the next client.

#![cfg(feature = "runtime")]

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_nbfx::{Element, Text, XmlString};
use ferry_wcf::{BasicHttp, Contract, DispatchError, HostConfig, Operation, Reply, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Longest any step may take when nothing is meant to stall.
const STEP: Duration = Duration::from_secs(10);
/// The send timeout under test: the stall limit on writes.
const LIMIT: Duration = Duration::from_secs(1);
/// The answer's size: far more than the socket buffers of both ends hold.
const BIG: usize = 32 << 20;

const NS: &str = "urn:ferry:test:stall";
const BIG_ACTION: &str = "urn:ferry:test:stall/IStall/Big";
const BIG_REPLY: &str = "urn:ferry:test:stall/IStall/BigResponse";

static CONTRACT: Contract = Contract {
    name: "IStall",
    namespace: NS,
    operations: &[Operation {
        name: "Big",
        action: BIG_ACTION,
        reply_action: Some(BIG_REPLY),
        faults: &[],
    }],
};

/// Answers `Big` with a 32 MiB text element.
struct Stall;

impl Service for Stall {
    fn contract(&self) -> &'static Contract {
        &CONTRACT
    }

    fn dispatch(
        &self,
        action: &str,
        _body: Option<&Element>,
    ) -> impl Future<Output = Result<Reply, DispatchError>> + Send {
        let action = action.to_owned();
        async move {
            if action != BIG_ACTION {
                return Err(DispatchError::UnknownAction(action));
            }
            let body = Element::new("", XmlString::inline("BigResponse"), NS)
                .with_xmlns("", XmlString::inline(NS))
                .with_text(Text::Chars(Cow::Owned("x".repeat(BIG))));
            Ok(Reply::Message {
                action: BIG_REPLY,
                body,
            })
        }
    }
}

async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut config = HostConfig::default();
    config.set_send_timeout(LIMIT);
    tokio::spawn(BasicHttp::with_config(Stall, config).serve_tcp(listener));
    addr
}

fn big_request() -> String {
    let envelope = format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <s:Body><Big xmlns=\"{NS}\"/></s:Body></s:Envelope>"
    );
    format!(
        "POST /stall HTTP/1.1\r\nHost: stall.example\r\nContent-Type: text/xml; charset=utf-8\r\n\
         SOAPAction: \"{BIG_ACTION}\"\r\nContent-Length: {}\r\n\r\n{envelope}",
        envelope.len()
    )
}

/// Reads until end of stream or a reset, within `limit`; the number of bytes read.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    let read = timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "connection still open after {limit:?}");
    total
}

#[tokio::test]
async fn a_client_that_never_reads_a_large_answer_is_disconnected() {
    let addr = serve().await;
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(big_request().as_bytes())
        .await
        .expect("request sent");
    // Give the host time to produce the answer and fill the socket buffers, then to notice
    // the stall: the answer takes a moment to build on a loaded machine.
    let since = Instant::now();
    tokio::time::sleep(LIMIT + STEP / 2).await;
    // Whatever the buffers held, then the end: never the whole answer.
    let read = read_until_closed(&mut stalled, STEP).await;
    assert!(read < BIG, "the answer was cut off ({read} bytes read)");
    assert!(since.elapsed() < LIMIT + 2 * STEP);

    // A client that reads gets the whole answer.
    let mut reader = TcpStream::connect(addr).await.expect("connect");
    reader
        .write_all(big_request().as_bytes())
        .await
        .expect("request sent");
    let mut head = [0u8; 12];
    timeout(STEP, reader.read_exact(&mut head))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut total = head.len();
    let mut buf = vec![0u8; 1 << 20];
    timeout(STEP * 3, async {
        while total < BIG {
            let n = reader.read(&mut buf).await.expect("read");
            assert_ne!(n, 0, "the answer ended early at {total} bytes");
            total += n;
        }
    })
    .await
    .expect("whole answer in time");
}
