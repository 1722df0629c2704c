//! `BasicHttpChannel` over HTTPS: the generated calculator client calls the Rust calculator
//! (`ferry_wcf::calc::Calc` behind an SDK listener, answered by `ferry_wcf::BasicHttp`)
//! through the gateway's TLS port, trusting the gateway's development CA; and the same URL
//! with trust roots that do not include that CA fails the handshake with a TLS error.

use std::sync::Arc;
use std::time::Duration;

use ferry_interop::{PEER_TIMEOUT, TestGateway, now};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_wcf::basic_http::BasicHttpError;
use ferry_wcf::calc::{Calc, DIVIDE_BY_ZERO_CODE, DIVIDE_BY_ZERO_REASON};
use ferry_wcf::generated::calculator::{
    Add, CalculatorClient, CalculatorServer, SafeDivide, SafeDivideFault,
};
use ferry_wcf::{BasicHttp, BasicHttpChannel, CallError};
use tokio_rustls::rustls::{CertificateError, Error};

/// A gateway and the calculator answering basicHttp behind an SDK listener on `path`.
async fn relayed_calculator(path: &str) -> TestGateway {
    let gw = TestGateway::start().await;
    let listener = HttpListener::open(gw.endpoint(path), HttpConfig::default())
        .await
        .expect("listener online");
    let service = Arc::new(CalculatorServer(Calc::new()));
    tokio::spawn(BasicHttp::new(service).serve_listener(listener));
    gw
}

/// `https://localhost:PORT/path` on the gateway's TLS port.
fn https_url(gw: &TestGateway, path: &str) -> String {
    let port = gw.gw.tls_addr().expect("tls port").port();
    format!("https://localhost:{port}/{path}")
}

/// A SAS token for `path` on the test gateway.
fn token(gw: &TestGateway, path: &str) -> String {
    ferry_hc::SasToken::create(
        &format!("http://localhost/{path}"),
        gw.gw.rule_name(),
        gw.gw.rule_key(),
        now() + 3600,
    )
}

/// A client configuration trusting only the gateway's development CA. Its ALPN (h2 here) is
/// replaced by the channel's http/1.1.
fn dev_ca_config(gw: &TestGateway) -> Arc<tokio_rustls::rustls::ClientConfig> {
    let pem = gw.gw.dev_ca_pem().expect("dev CA");
    let roots = ferry_net::tls::roots_from_pem(pem.as_bytes()).expect("CA parses");
    ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_H2]).expect("client config")
}

#[tokio::test]
async fn calculator_over_https_with_the_dev_ca() {
    let gw = relayed_calculator("calc").await;
    let mut channel =
        BasicHttpChannel::with_tls(&https_url(&gw, "calc"), dev_ca_config(&gw)).expect("url");
    channel
        .set_timeout(PEER_TIMEOUT)
        .set_header("ServiceBusAuthorization", &token(&gw, "calc"))
        .expect("header");
    let client = CalculatorClient::new(channel);

    // Several calls: the first connects, the others reuse the kept-alive connection.
    for a in [2, 40, -7] {
        let sum = client.add(Add { a, b: 3 }).await.expect("add over https");
        assert_eq!(sum.add_result, a + 3);
    }

    match client.safe_divide(SafeDivide { a: 1, b: 0 }).await {
        Err(CallError::Fault(f)) => {
            assert_eq!(f.reason, DIVIDE_BY_ZERO_REASON);
            let Some(SafeDivideFault::CalcFault(detail)) = f.detail else {
                panic!("typed CalcFault detail expected: {f:?}");
            };
            assert_eq!(detail.code, DIVIDE_BY_ZERO_CODE);
            assert_eq!(detail.operation.as_deref(), Some("SafeDivide"));
        }
        other => panic!("typed fault expected: {other:?}"),
    }
    let ok = client
        .safe_divide(SafeDivide { a: 9, b: 3 })
        .await
        .expect("divide after a fault");
    assert_eq!(ok.safe_divide_result, 3);
    gw.gw.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let gw = relayed_calculator("calc").await;
    // Another development CA: valid, but not the one that signed the gateway's certificate.
    let other = ferry_net::tls::DevPki::generate(&[]).expect("other CA");
    let roots = ferry_net::tls::roots_from_pem(other.ca_pem.as_bytes()).expect("CA parses");
    let config = ferry_net::tls::client_config(roots, &[]).expect("client config");
    let mut channel = BasicHttpChannel::with_tls(&https_url(&gw, "calc"), config).expect("url");
    // Far longer than a refused handshake takes: a hang shows as a Timeout error.
    channel.set_timeout(Duration::from_secs(20));
    let client = CalculatorClient::new(channel);

    let err = match client.add(Add { a: 1, b: 2 }).await {
        Err(CallError::Transport(e)) => e,
        other => panic!("a transport error expected: {other:?}"),
    };
    let BasicHttpError::Tls(ref cause) = err else {
        panic!("a TLS error expected: {err:?}");
    };
    // The other CA has the same name as the gateway's, so the chain is found and its
    // signature fails; an unrelated CA would give UnknownIssuer.
    assert!(
        matches!(
            cause,
            Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            )
        ),
        "the certificate refused expected: {cause:?}"
    );
    // The message says what went wrong, down the source chain.
    let text = format!("{err}: {cause}");
    assert!(
        text.contains("tls handshake failed") && text.contains("certificate"),
        "{text}"
    );
    gw.gw.shutdown().await;
}

#[tokio::test]
async fn tls_urls_are_checked() {
    let gw = relayed_calculator("calc").await;
    let config = dev_ca_config(&gw);
    // A TLS configuration is for https only.
    let plain = format!(
        "http://localhost:{}/calc",
        gw.gw.plain_addr().expect("plain port").port()
    );
    assert!(matches!(
        BasicHttpChannel::with_tls(&plain, config.clone()),
        Err(BasicHttpError::Url(_))
    ));
    assert!(matches!(
        BasicHttpChannel::new("ftp://localhost/calc"),
        Err(BasicHttpError::Url(_))
    ));
    // The certificate names localhost and 127.0.0.1; SNI and the check use the URL's host.
    let port = gw.gw.tls_addr().expect("tls port").port();
    let mut channel =
        BasicHttpChannel::with_tls(&format!("https://127.0.0.1:{port}/calc"), config).expect("url");
    channel
        .set_timeout(PEER_TIMEOUT)
        .set_header("ServiceBusAuthorization", &token(&gw, "calc"))
        .expect("header");
    let sum = CalculatorClient::new(channel)
        .add(Add { a: 20, b: 22 })
        .await
        .expect("add over https to an IP address");
    assert_eq!(sum.add_result, 42);
    gw.gw.shutdown().await;
}
