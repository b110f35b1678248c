//! Who a client is on the network: blocks of addresses, and the client's
//! address behind the proxies a deployment trusts. Pure functions of what
//! the connection and its headers say, shared by every driving adapter
//! that counts or throttles per client (the API's rate limits, the ops
//! console's sign-in throttle).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A block of addresses, `10.0.0.0/8` or `fd00::/8` (a bare address is a
/// block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix` or a bare address. Host bits must be zero, so
    /// a typo such as `10.0.0.1/8` is caught rather than silently widened.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        let cidr = Self { network, prefix };
        if cidr.masked(network) != network {
            return Err(format!(
                "{text:?} has host bits set (did you mean {}/{prefix}?)",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(bits & mask))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4 client seen through an IPv6 socket is still an IPv4 client.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is one of `trusted`
/// (an ingress, a load balancer), the last `X-Forwarded-For` entry that is
/// not one. `forwarded_for` holds the header's values in order; entries
/// before the client's are the client's own claims and are never used.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        // An address, not whatever text a misconfigured proxy passed on:
        // stop at the nearest hop we can name.
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The bucket a client's requests count in: its IPv4 address, or the /64
/// of its IPv6 address (one subscriber's whole allocation: a client can use
/// every address in it); `unknown` without an address.
pub fn client_bucket(ip: Option<IpAddr>) -> String {
    match ip.map(canonical) {
        None => "unknown".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let net = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("{net}/64")
        }
    }
}

fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_read_only_from_listed_proxies() {
        let fwd = ["1.2.3.4, 203.0.113.9"];
        let peer = ip("10.0.0.7");
        assert_eq!(
            client_ip(peer, fwd, &cidrs(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(peer, fwd, &[]), peer);
        assert_eq!(client_ip(peer, fwd, &cidrs(&["192.168.0.0/16"])), peer);
    }

    #[test]
    fn chained_proxies_are_skipped_and_the_clients_own_claims_never_used() {
        let trusted = cidrs(&["10.0.0.0/8", "198.51.100.0/24"]);
        let peer = ip("10.0.0.7");
        assert_eq!(
            client_ip(peer, ["6.6.6.6, 203.0.113.9, 198.51.100.5"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(peer, ["not-an-ip"], &trusted), peer);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        let a = client_bucket(Some(ip("2001:db8:1:2:aaaa::1")));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            a,
            client_bucket(Some(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")))
        );
        assert_ne!(a, client_bucket(Some(ip("2001:db8:1:3::1"))));
        assert_eq!(client_bucket(Some(ip("::ffff:192.0.2.1"))), "192.0.2.1");
        assert_eq!(client_bucket(None), "unknown");
    }

    #[test]
    fn cidrs_parse_strictly() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("192.0.2.1").unwrap().contains(ip("192.0.2.1")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "true", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
