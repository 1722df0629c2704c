//! IP rules: which client addresses may reach the namespace, or one path, as Azure Relay's
//! network rule sets say it: rules checked in order, the first whose range holds the address
//! decides, and an address no rule holds gets the default action.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Most rules in one set (Azure allows 128 IP rules per namespace).
pub const MAX_IP_RULES: usize = 128;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpAction {
    /// Let the address in.
    Allow,
    /// Turn it away.
    Deny,
}

impl IpAction {
    /// Parses `Allow` / `Deny`, ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("allow") {
            Some(Self::Allow)
        } else if s.eq_ignore_ascii_case("deny") {
            Some(Self::Deny)
        } else {
            None
        }
    }

    /// Azure's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
        }
    }
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A range that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not an IP address or range (a.b.c.d, a.b.c.d/n, or IPv6 with /n)")]
pub struct BadRange(pub String);

impl IpNet {
    /// Parses `addr` or `addr/prefix`; bits below the prefix are ignored.
    ///
    /// # Errors
    /// Not an address, or a prefix longer than the address.
    pub fn parse(s: &str) -> Result<Self, BadRange> {
        let bad = || BadRange(s.chars().take(64).collect());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range. An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`)
    /// counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// One rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRule {
    /// The range.
    pub net: IpNet,
    /// What it does to addresses in it.
    pub action: IpAction,
}

/// A rule set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    /// Checked in order; the first whose range holds the address decides.
    pub rules: Vec<IpRule>,
    /// For an address no rule holds.
    pub default_action: IpAction,
}

impl Default for NetworkRules {
    /// Everyone in.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default_action: IpAction::Allow,
        }
    }
}

impl NetworkRules {
    /// Whether `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.rules
            .iter()
            .find(|r| r.net.contains(ip))
            .map_or(self.default_action, |r| r.action)
            == IpAction::Allow
    }
}

/// The load balancers in front of the gateway whose word on the client's address is taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Their addresses. A connection from anywhere else is its own client.
    pub nets: Vec<IpNet>,
    /// Connections from them begin with a PROXY protocol header (v1 or v2) naming the
    /// client; without it they are closed. Otherwise HTTP requests from them name the client
    /// in `X-Forwarded-For`.
    pub proxy_protocol: bool,
}

impl TrustedProxies {
    /// Whether `ip` is one of them.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client behind an HTTP request that came from `peer`: when `peer` is trusted (and
    /// does not speak the PROXY protocol), the nearest address in `X-Forwarded-For` (its
    /// values in order, as repeated headers arrive) that is not itself a trusted proxy;
    /// otherwise `peer`. Entries a proxy added before a trusted one are the client's own
    /// word, so they are read from the right and only past trusted hops.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        if self.proxy_protocol || !self.trusts(peer) {
            return peer;
        }
        // The nearest hops are the rightmost: all are read (the request head's size bounds
        // them), the walk looks at 64 at most.
        let hops: Vec<&str> = forwarded_for
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev().take(64) {
            let Some(ip) = parse_hop(hop) else {
                // Garbage where an address should be: trust nothing further left.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, IPv4 with a port, or `[IPv6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_as_azure_writes_them() {
        let net = IpNet::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(IpNet::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
        assert!(
            IpNet::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        assert!(
            IpNet::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("::ffff:10.0.0.1"))
        );
        assert!(
            !IpNet::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("2001:db8::1"))
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "host",
            "::/129",
            "1.2.3.4/08x",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_the_default_decides_the_rest() {
        let rules = NetworkRules {
            rules: vec![
                IpRule {
                    net: IpNet::parse("10.0.0.5").unwrap(),
                    action: IpAction::Deny,
                },
                IpRule {
                    net: IpNet::parse("10.0.0.0/8").unwrap(),
                    action: IpAction::Allow,
                },
            ],
            default_action: IpAction::Deny,
        };
        assert!(!rules.allows(ip("10.0.0.5")));
        assert!(rules.allows(ip("10.0.0.6")));
        assert!(!rules.allows(ip("192.0.2.1")));
        assert!(NetworkRules::default().allows(ip("192.0.2.1")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_read_from_the_right() {
        let proxies = TrustedProxies {
            nets: vec![IpNet::parse("10.0.0.0/8").unwrap()],
            proxy_protocol: false,
        };
        let xff = |v: &'static [&'static str]| v.iter().copied();
        // Not from a trusted proxy: the header is the client's own word.
        assert_eq!(
            proxies.client(ip("192.0.2.1"), xff(&["203.0.113.9"])),
            ip("192.0.2.1")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.1"), xff(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // The client wrote the leftmost entry itself; the nearest untrusted hop counts.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), xff(&["1.1.1.1, 198.51.100.7", "10.0.0.2"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client(
                ip("10.0.0.1"),
                xff(&["[2001:db8::1]:443", "192.0.2.8:5000"])
            ),
            ip("192.0.2.8")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.1"), xff(&["1.1.1.1, junk"])),
            ip("10.0.0.1")
        );
        assert_eq!(proxies.client(ip("10.0.0.1"), xff(&[])), ip("10.0.0.1"));
        // A client cannot push the proxy's own entry out of reach with a long header.
        let long: Vec<String> = (0..100).map(|_| "192.0.2.200".to_owned()).collect();
        let values = [long.join(", "), "198.51.100.9".to_owned()];
        assert_eq!(
            proxies.client(ip("10.0.0.1"), values.iter().map(String::as_str)),
            ip("198.51.100.9")
        );
        let pp = TrustedProxies {
            proxy_protocol: true,
            ..proxies
        };
        assert_eq!(
            pp.client(ip("10.0.0.1"), xff(&["203.0.113.9"])),
            ip("10.0.0.1"),
            "behind the PROXY protocol the header names nobody"
        );
    }
}
