//! Which network addresses are off the public internet, and the allow-lists that open some of
//! them: the one address guard behind the worker's `http.fetch` and the server's webhooks. Pure
//! decisions; the callers enforce them where they connect.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// Whether a connection may go to `ip` on `port`: a public address always may, another only when
/// a rule of `allow` opens it. `port` is `None` where it is not known (a DNS resolver sees only
/// the host name), so there only rules without a port apply.
pub fn check(allow: &[AllowRule], ip: IpAddr, port: Option<u16>) -> Result<(), AddressClass> {
    // `::ffff:127.0.0.1` is 127.0.0.1 on the wire, and is allowed or refused like it.
    let ip = ip.to_canonical();
    match classify(ip) {
        None => Ok(()),
        Some(_) if allow.iter().any(|rule| rule.admits(ip, port)) => Ok(()),
        Some(class) => Err(class),
    }
}

/// One entry of an allow-list: an address (`127.0.0.1`), a CIDR block
/// (`10.0.0.0/8`, `fd00::/8`) or an address on one port (`127.0.0.1:8080`, `[::1]:8080`).
///
/// An entry with a port opens only URLs that name the address itself
/// (`http://127.0.0.1:8080/`): the DNS resolver that checks host names does not learn the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// The block's first address (host bits zero).
    net: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

impl AllowRule {
    /// Parses a comma-separated list (`10.0.0.0/8,127.0.0.1:8080`); blank entries are skipped.
    pub fn parse_list(list: &str) -> Result<Vec<AllowRule>, AllowRuleError> {
        list.split(',').filter(|e| !e.trim().is_empty()).map(str::parse).collect()
    }

    fn admits(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let in_block = match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                network(u32::from(ip).into(), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => network(u128::from(ip), self.prefix, 128) == u128::from(net),
            _ => false,
        };
        in_block && self.port.is_none_or(|p| port == Some(p))
    }

    fn width(ip: IpAddr) -> u8 {
        if ip.is_ipv4() { 32 } else { 128 }
    }
}

/// The first `prefix` of `width` bits of `bits`, the rest zeroed.
fn network(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    bits.checked_shr(host_bits).and_then(|b| b.checked_shl(host_bits)).unwrap_or(0)
}

fn block(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(network(u32::from(v4).into(), prefix, 32) as u32)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(network(u128::from(v6), prefix, 128))),
    }
}

impl From<IpAddr> for AllowRule {
    fn from(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        AllowRule { net: ip, prefix: AllowRule::width(ip), port: None }
    }
}

impl From<SocketAddr> for AllowRule {
    fn from(addr: SocketAddr) -> Self {
        AllowRule { port: Some(addr.port()), ..AllowRule::from(addr.ip()) }
    }
}

impl FromStr for AllowRule {
    type Err = AllowRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let bad = |why: &'static str| AllowRuleError { entry: entry.to_owned(), why };
        if entry.is_empty() {
            return Err(bad("the entry is empty"));
        }
        if let Some((ip, prefix)) = entry.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| bad("the block's address is not an IP address"))?;
            let prefix: u8 = prefix.parse().map_err(|_| bad("the prefix length is not a number"))?;
            if prefix > AllowRule::width(ip) {
                return Err(bad("the prefix length is longer than the address (32 bits for IPv4, 128 for IPv6)"));
            }
            return Ok(AllowRule { net: block(ip, prefix), prefix, port: None });
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(ip.into());
        }
        match entry.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => Err(bad("port 0 is not a port a server listens on")),
            Ok(addr) => Ok(addr.into()),
            Err(_) => {
                let names_an_address = entry
                    .rsplit_once(':')
                    .is_some_and(|(ip, _)| ip.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok());
                Err(bad(if names_an_address {
                    "the port is not a number from 1 to 65535"
                } else {
                    "host names are not accepted, only addresses"
                }))
            }
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net) {
            (Some(port), ip) => write!(f, "{}", SocketAddr::new(ip, port)),
            (None, ip) if self.prefix == AllowRule::width(ip) => write!(f, "{ip}"),
            (None, ip) => write!(f, "{ip}/{}", self.prefix),
        }
    }
}

/// An allow-list entry that does not parse; names the entry.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error(
    "invalid allow-list entry {entry:?}: {why}; expected an address (127.0.0.1), a CIDR block \
     (10.0.0.0/8) or an address and port (127.0.0.1:8080, [::1]:8080)"
)]
pub struct AllowRuleError {
    entry: String,
    why: &'static str,
}

impl AllowRuleError {
    /// The entry as given.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

/// Why an address is not reached by default: each of these leads to a service that only the
/// connecting host or its network can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Broadcast,
    Multicast,
    SharedNat,
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address (where cloud metadata services answer)",
            AddressClass::Unspecified => "an unspecified address (it reaches this host)",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::SharedNat => "a carrier-grade NAT address (100.64.0.0/10)",
            AddressClass::Reserved => "a reserved address",
        })
    }
}

/// `None` for a public address; otherwise why it is refused by default.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if ip.is_private() => AddressClass::Private,
        _ if ip.is_link_local() => AddressClass::LinkLocal,
        // All of 0.0.0.0/8, not just 0.0.0.0: Linux connects such addresses to this host.
        _ if a == 0 => AddressClass::Unspecified,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        _ if ip.is_multicast() => AddressClass::Multicast,
        _ if a == 100 && (b & 0xc0) == 64 => AddressClass::SharedNat,
        _ if a >= 240 => AddressClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let segments = ip.segments();
    Some(match () {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        // Forms that carry an IPv4 address, which is where the packets end up: mapped
        // (::ffff:a.b.c.d), the deprecated compatible form (::a.b.c.d) and NAT64 (64:ff9b::/96).
        _ if segments[..5] == [0; 5] && (segments[5] == 0 || segments[5] == 0xffff) => {
            return classify_v4(embedded_v4(ip));
        }
        _ if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => return classify_v4(embedded_v4(ip)),
        _ if ip.is_multicast() => AddressClass::Multicast,
        _ if ip.is_unique_local() => AddressClass::Private,
        _ if ip.is_unicast_link_local() => AddressClass::LinkLocal,
        // fec0::/10, the deprecated site-local block: still private where it is used.
        _ if segments[0] & 0xffc0 == 0xfec0 => AddressClass::Private,
        _ => return None,
    })
}

fn embedded_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let [.., a, b, c, d] = ip.octets();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<AddressClass> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn addresses_off_the_public_internet_are_classified_and_public_ones_are_not() {
        use AddressClass::*;
        let table = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("100.64.0.1", Some(SharedNat)),
            ("100.127.255.255", Some(SharedNat)),
            ("240.0.0.1", Some(Reserved)),
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.253.255.255", None),
            ("1.1.1.1", None),
            ("::ffff:8.8.8.8", None),
            ("2606:4700::1111", None),
        ];
        for (ip, want) in table {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn allow_list_entries_parse_into_addresses_blocks_and_ports() {
        let table = [
            ("127.0.0.1", "127.0.0.1"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7/32", "192.168.1.7"),
        ];
        for (entry, shown) in table {
            let rule: AllowRule = entry.parse().unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(rule.to_string(), shown, "{entry}");
        }
    }

    #[test]
    fn bad_allow_list_entries_are_refused_naming_the_entry() {
        let table = [
            ("", "empty"),
            ("10.0.0.0/33", "prefix length is longer"),
            ("10.0.0.0/x", "not a number"),
            ("10.0.0/8", "not an IP address"),
            ("localhost", "host names"),
            ("localhost:8080", "host names"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:99999", "port is not a number"),
            ("[::1]:http", "port is not a number"),
            ("1.2.3.4:80/8", "not an IP address"),
        ];
        for (entry, why) in table {
            let err = entry.parse::<AllowRule>().unwrap_err();
            assert_eq!(err.entry(), entry.trim());
            let message = err.to_string();
            assert!(message.contains(why) && message.contains(&format!("{entry:?}")), "{entry}: {message}");
        }
        assert_eq!(AllowRule::parse_list("10.0.0.0/8,,bad").unwrap_err().entry(), "bad");
        assert_eq!(AllowRule::parse_list(" ").unwrap(), vec![]);
    }

    #[test]
    fn internal_addresses_are_refused_and_rules_open_exactly_what_they_name() {
        let allow = AllowRule::parse_list("10.0.0.0/8,127.0.0.1:8080,fd00::/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let table = [
            ("8.8.8.8", Some(80), true),
            ("8.8.8.8", None, true),
            ("10.9.8.7", Some(22), true),
            ("10.9.8.7", None, true),
            ("11.0.0.1", Some(80), true),
            ("127.0.0.1", Some(8080), true),
            ("::ffff:127.0.0.1", Some(8080), true),
            ("127.0.0.1", Some(8081), false),
            ("127.0.0.1", None, false),
            ("127.0.0.2", Some(8080), false),
            ("fd00::5", Some(443), true),
            ("fc00::5", Some(443), false),
            ("192.168.0.1", Some(80), false),
            ("169.254.169.254", Some(80), false),
        ];
        for (addr, port, allowed) in table {
            assert_eq!(check(&allow, ip(addr), port).is_ok(), allowed, "{addr} port {port:?}");
        }
        assert_eq!(check(&[], ip("127.0.0.1"), Some(80)), Err(AddressClass::Loopback));
    }
}
