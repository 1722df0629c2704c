//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the header a load
//! balancer puts before a connection's first byte to name the client it stands for.
//!
//! ```text
//!  v1: "PROXY TCP4 203.0.113.9 192.0.2.1 51234 443\r\n"        (at most 107 bytes, text)
//!  v2: \r\n\r\n\0\r\nQUIT\n │ 0x21 │ 0x11 │ len (u16 BE) │ addresses │ TLVs   (binary)
//! ```
//!
//! Only connections from a trusted proxy are read this way (anyone could write the header
//! otherwise), each byte of it read exactly, so what follows (TLS, an HTTP head) is left in
//! the socket untouched. The header is bounded ([`MAX_V2_BODY`]) and read within the
//! handshake deadline; a `LOCAL` command (a health check) or an address family other than
//! TCP over IPv4 / IPv6 names no client: the connection is then the proxy's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The twelve bytes a v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header's longest form, CRLF included (the specification's own bound).
const V1_MAX: usize = 107;

/// The most address and TLV bytes a v2 header may carry here. The specification allows
/// 65,535; addresses take at most 216 (Unix sockets) and the TLVs load balancers add (ALPN,
/// authority, TLS details, cloud endpoint ids) a few hundred.
pub(crate) const MAX_V2_BODY: usize = 4096;

/// A header that is not there or not well formed: the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyHeaderError {
    /// The connection does not start with a PROXY header.
    #[error("the connection does not begin with a PROXY protocol header")]
    Missing,
    /// It starts like one but does not follow the specification.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// A v2 header longer than [`MAX_V2_BODY`].
    #[error("PROXY protocol v2 header of {0} bytes is longer than allowed")]
    TooLong(usize),
    /// The connection ended or failed inside the header.
    #[error("connection lost in the PROXY protocol header")]
    Io,
}

/// Reads one header from `r`, exactly: the client it names, or `None` when it names none
/// (`LOCAL`, `UNKNOWN`, or a family other than TCP).
///
/// # Errors
/// See [`ProxyHeaderError`].
///
/// # Cancel safety
/// Not cancel safe: bytes read are lost (the caller closes the connection on a timeout).
pub(crate) async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let io = |_| ProxyHeaderError::Io;
    let mut start = [0u8; 12];
    r.read_exact(&mut start).await.map_err(io)?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        r.read_exact(&mut fixed).await.map_err(io)?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > MAX_V2_BODY {
            return Err(ProxyHeaderError::TooLong(16 + len));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.map_err(io)?;
        return v2(fixed[0], fixed[1], &body);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    if start.contains(&b'\n') {
        // The shortest line, "PROXY UNKNOWN\r\n", is longer than this.
        return Err(ProxyHeaderError::Malformed("v1 line ends too soon"));
    }
    // A v1 line, read a byte at a time up to its CRLF so nothing after it is consumed.
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        line.push(r.read_u8().await.map_err(io)?);
        if line.ends_with(b"\n") && !line.ends_with(b"\r\n") {
            return Err(ProxyHeaderError::Malformed("v1 line ends in a bare LF"));
        }
    }
    v1(&line)
}

/// A v1 line, `PROXY ` to CRLF.
fn v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("v1 line is not text"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or_else(|| bad("v1 line does not end in CRLF"))?;
    let mut fields = text.split(' ');
    fields.next(); // "PROXY"
    let family = fields
        .next()
        .ok_or_else(|| bad("v1 line has no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line may be anything and is ignored.
        return Ok(None);
    }
    let [Some(src), Some(_dst), Some(sport), Some(_dport), None] = [
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ] else {
        return Err(bad("v1 line does not have four address fields"));
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| bad("v1 source is not IPv4"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| bad("v1 source is not IPv6"))?),
        _ => return Err(bad("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let port = port(sport).ok_or_else(|| bad("v1 source port is not 0-65535"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// A decimal port as v1 writes it: 1 to 5 digits, no sign, no leading zero.
fn port(s: &str) -> Option<u16> {
    let well_formed = (1..=5).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    well_formed.then(|| s.parse().ok()).flatten()
}

/// A v2 header after its signature: version and command, family and transport, and the
/// `body` its length covers.
fn v2(
    version_command: u8,
    family: u8,
    body: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    if version_command >> 4 != 2 {
        return Err(bad("v2 header with a version other than 2"));
    }
    match version_command & 0x0f {
        // LOCAL: the proxy's own connection (a health check); the addresses are ignored.
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad("v2 command is neither LOCAL nor PROXY")),
    }
    let needs = |n: usize| {
        if body.len() < n {
            Err(bad("v2 addresses shorter than their family needs"))
        } else {
            Ok(())
        }
    };
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            needs(12)?;
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6.
        0x21 => {
            needs(36)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // UNSPEC, UDP, Unix sockets: no client address this gateway can use.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Ok(None),
        _ => Err(bad("v2 address family or transport unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut input = bytes;
        let got = read(&mut input).await;
        (got, input.to_vec())
    }

    fn v2_header(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_what_follows() {
        let (got, rest) =
            parse(b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 443\r\nGET / HTTP/1.1").await;
        assert_eq!(got, Ok(Some("203.0.113.9:51234".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1");
        let (got, _) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n").await;
        assert_eq!(got, Ok(Some("[2001:db8::7]:65535".parse().unwrap())));
        let (got, rest) = parse(b"PROXY UNKNOWN ffff::1 x y z\r\n\x16\x03").await;
        assert_eq!(got, Ok(None));
        assert_eq!(rest, b"\x16\x03");
    }

    #[tokio::test]
    async fn v1_mistakes_are_refused() {
        for bad in [
            &b"PROXY TCP4 203.0.113.9 192.0.2.1 51234\r\n"[..],
            b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.9 192.0.2.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.9 192.0.2.1 0080 443\r\n",
            b"PROXY UDP4 203.0.113.9 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2 3\r\n",
            b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\n",
            b"PROXY X\r\nGET / HTTP/1.1\r\n",
        ] {
            assert!(
                matches!(parse(bad).await.0, Err(ProxyHeaderError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert!(matches!(
            parse(&long).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        );
        assert_eq!(parse(b"PROXY TCP4 1.2").await.0, Err(ProxyHeaderError::Io));
    }

    #[tokio::test]
    async fn v2_names_the_client_skips_tlvs_and_leaves_what_follows() {
        let mut body = vec![203, 0, 113, 9, 192, 0, 2, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // an ALPN TLV
        let mut bytes = v2_header(1, 0x11, &body);
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (got, rest) = parse(&bytes).await;
        assert_eq!(got, Ok(Some("203.0.113.9:51234".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");

        let mut body6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body6.extend_from_slice(&[0; 16]);
        body6.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        let (got, _) = parse(&v2_header(1, 0x21, &body6)).await;
        assert_eq!(got, Ok(Some("[2001:db8::7]:4660".parse().unwrap())));

        // LOCAL (a health check) and UNSPEC name nobody.
        assert_eq!(parse(&v2_header(0, 0x11, &body)).await.0, Ok(None));
        assert_eq!(parse(&v2_header(1, 0x00, &[])).await.0, Ok(None));
    }

    #[tokio::test]
    async fn v2_mistakes_are_refused() {
        let short = v2_header(1, 0x11, &[1, 2, 3]);
        assert!(matches!(
            parse(&short).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut v1_version = v2_header(1, 0x11, &[0; 12]);
        v1_version[12] = 0x11;
        assert!(matches!(
            parse(&v1_version).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2_header(7, 0x11, &[0; 12])).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2_header(1, 0x51, &[0; 12])).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        // A length past the bound is refused before anything is allocated for it.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(
            parse(&huge).await.0,
            Err(ProxyHeaderError::TooLong(16 + 65535))
        );
        // The length promises more than arrives.
        let mut cut = v2_header(1, 0x11, &[0; 12]);
        cut.truncate(20);
        assert_eq!(parse(&cut).await.0, Err(ProxyHeaderError::Io));
    }

    #[tokio::test]
    async fn mutated_headers_never_panic_and_never_read_past_the_bound() {
        use rand::{Rng as _, SeedableRng as _};
        let seeds: [&[u8]; 3] = [
            b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 443\r\n",
            b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n",
            &v2_header(1, 0x21, &[7; 36]),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = rng.random(),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, rng.random()),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            bytes.extend_from_slice(b"TAIL");
            let (got, rest) = parse(&bytes).await;
            let consumed = bytes.len() - rest.len();
            assert!(consumed <= 16 + MAX_V2_BODY, "{bytes:?}");
            // What was taken is exactly one header: a v1 line to its CRLF, or a v2 header
            // to the length it declares.
            if got.is_ok() {
                let taken = &bytes[..consumed];
                if taken.starts_with(&V2_SIGNATURE) {
                    let declared = usize::from(u16::from_be_bytes([taken[14], taken[15]]));
                    assert_eq!(consumed, 16 + declared, "{bytes:?}");
                } else {
                    assert!(taken.ends_with(b"\r\n") && consumed <= V1_MAX, "{bytes:?}");
                }
            }
        }
    }
}
