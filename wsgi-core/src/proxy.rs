//! Which peers are trusted proxies, and what their headers say: address
//! lists with CIDR networks (`--forwarded-allow-ips 10.0.0.0/8,::1`, `*`),
//! RFC 7239 `Forwarded`, and `X-Forwarded-For` walked from the right.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// One allowed network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A list of trusted peers: addresses, CIDR networks, or `*` (everyone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    everyone: bool,
    networks: Vec<Network>,
}

impl AllowList {
    /// Parses a comma- or space-separated list: `127.0.0.1`, `::1`,
    /// `10.0.0.0/8`, `fd00::/8`, `*`.
    ///
    /// # Errors
    /// The first entry that is not an address, a network or `*`.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in text
            .split([',', ' ', '\t'])
            .filter(|entry| !entry.is_empty())
        {
            if entry == "*" {
                list.everyone = true;
                continue;
            }
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            let address: IpAddr = address
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{entry:?} is not an IP address or network"))?;
            let address = canonical(address);
            let width = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => width,
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= width)
                    .ok_or_else(|| format!("{entry:?}: the prefix length must be 0 to {width}"))?,
            };
            list.networks.push(Network { address, prefix });
        }
        Ok(list)
    }

    /// Everyone (`*`).
    pub fn everyone() -> AllowList {
        AllowList {
            everyone: true,
            networks: Vec::new(),
        }
    }

    /// Whether `ip` is in the list (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.everyone || self.networks.iter().any(|network| network.contains(ip))
    }

    /// Whether the list allows no one.
    pub fn is_empty(&self) -> bool {
        !self.everyone && self.networks.is_empty()
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut item = |formatter: &mut fmt::Formatter<'_>, text: &dyn fmt::Display| {
            let separator = if first { "" } else { "," };
            first = false;
            write!(formatter, "{separator}{text}")
        };
        if self.everyone {
            item(formatter, &"*")?;
        }
        for network in &self.networks {
            let full = if network.address.is_ipv4() { 32 } else { 128 };
            if network.prefix == full {
                item(formatter, &network.address)?;
            } else {
                item(
                    formatter,
                    &format_args!("{}/{}", network.address, network.prefix),
                )?;
            }
        }
        Ok(())
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A client address a proxy reported, with its port when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedFor {
    /// The address.
    pub ip: IpAddr,
    /// The port, if the proxy said.
    pub port: Option<u16>,
}

/// RFC 7239 §6 node: `192.0.2.43`, `"[2001:db8::1]:4711"`, `"192.0.2.43:47"`;
/// `unknown` and obfuscated (`_hidden`) nodes give `None`.
fn parse_node(node: &str) -> Option<ForwardedFor> {
    let node = node.trim();
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = address.parse().ok()?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some(ForwardedFor {
            ip: IpAddr::V6(ip),
            port,
        });
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ForwardedFor { ip, port: None });
    }
    let (address, port) = node.rsplit_once(':')?;
    Some(ForwardedFor {
        ip: IpAddr::V4(address.parse().ok()?),
        port: Some(port.parse().ok()?),
    })
}

/// One element of a `Forwarded` header: the parameters one proxy added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedElement {
    /// `for=`: the client as that proxy saw it (`None`: absent, `unknown`
    /// or obfuscated).
    pub for_node: Option<ForwardedFor>,
    /// Whether a `for=` parameter was present at all.
    pub has_for: bool,
    /// `proto=`, lower-cased.
    pub proto: Option<String>,
    /// `host=`.
    pub host: Option<String>,
}

/// Parses the `Forwarded` header (all its lines joined with `,`), RFC 7239
/// §4: elements separated by `,`, pairs by `;`, values tokens or quoted
/// strings. Malformed elements are skipped rather than trusted.
pub fn parse_forwarded(value: &str) -> Vec<ForwardedElement> {
    let mut elements = Vec::new();
    for element in split_unquoted(value, ',') {
        let mut parsed = ForwardedElement::default();
        let mut valid = true;
        for pair in split_unquoted(&element, ';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((name, raw)) = pair.split_once('=') else {
                valid = false;
                break;
            };
            let Some(value) = unquote(raw.trim()) else {
                valid = false;
                break;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "for" => {
                    parsed.has_for = true;
                    parsed.for_node = parse_node(&value);
                }
                "proto" => parsed.proto = Some(value.to_ascii_lowercase()),
                "host" => parsed.host = Some(value),
                _ => {}
            }
        }
        if valid {
            elements.push(parsed);
        }
    }
    elements
}

/// Splits on `separator` outside double quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == separator && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// A token as is, or a quoted string unescaped; `None` if malformed.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The client behind a chain of proxies: walking the reported addresses
/// from the right (the nearest proxy's report first), the first one that
/// is not itself a trusted proxy. If every hop is trusted, the leftmost.
/// `None` when the chain is empty or ends in a node we cannot read (an
/// `unknown` or obfuscated client: the peer stays the address).
pub fn client_from_chain(
    chain: &[Option<ForwardedFor>],
    trusted: &AllowList,
) -> Option<ForwardedFor> {
    for hop in chain.iter().rev() {
        let hop = (*hop)?;
        if !trusted.contains(hop.ip) {
            return Some(hop);
        }
    }
    chain.first().copied().flatten()
}

/// The nodes of an `X-Forwarded-For` value (`client, proxy1, proxy2`).
pub fn parse_x_forwarded_for(value: &str) -> Vec<Option<ForwardedFor>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(parse_node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allow_lists() {
        let list = AllowList::parse("127.0.0.1, 10.0.0.0/8 fd00::/8,::1").unwrap();
        assert!(list.contains(ip("127.0.0.1")));
        assert!(!list.contains(ip("127.0.0.2")));
        assert!(list.contains(ip("10.255.1.2")));
        assert!(!list.contains(ip("11.0.0.1")));
        assert!(list.contains(ip("fd12::1")));
        assert!(!list.contains(ip("fe80::1")));
        assert!(list.contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        assert!(list.contains(ip("::1")));
        assert_eq!(list.to_string(), "127.0.0.1,10.0.0.0/8,fd00::/8,::1");
        assert!(AllowList::parse("*").unwrap().contains(ip("8.8.8.8")));
        assert!(AllowList::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("8.8.8.8")));
        assert!(!AllowList::parse("0.0.0.0/0").unwrap().contains(ip("::2")));
        assert!(AllowList::parse("").unwrap().is_empty());
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("localhost").is_err());
    }

    #[test]
    fn forwarded_elements() {
        let elements = parse_forwarded(
            "for=192.0.2.60;proto=HTTPS;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\", for=unknown, for=_hidden;proto=http",
        );
        assert_eq!(elements.len(), 4);
        assert_eq!(
            elements[0].for_node,
            Some(ForwardedFor {
                ip: ip("192.0.2.60"),
                port: None
            })
        );
        assert_eq!(elements[0].proto.as_deref(), Some("https"));
        assert_eq!(
            elements[1].for_node,
            Some(ForwardedFor {
                ip: ip("2001:db8:cafe::17"),
                port: Some(4711)
            })
        );
        assert_eq!(elements[2].for_node, None);
        assert!(elements[2].has_for);
        assert_eq!(elements[3].proto.as_deref(), Some("http"));
        // A malformed element is dropped, not half-read.
        assert_eq!(parse_forwarded("for=\"1.2.3.4;proto=https").len(), 0);
        assert_eq!(parse_forwarded("garbage").len(), 0);
    }

    #[test]
    fn chains_walk_from_the_right() {
        let trusted = AllowList::parse("10.0.0.0/8").unwrap();
        let chain = parse_x_forwarded_for("203.0.113.7, 198.51.100.1, 10.0.0.2");
        assert_eq!(
            client_from_chain(&chain, &trusted).unwrap().ip,
            ip("198.51.100.1")
        );
        // A client's own spoofed X-Forwarded-For entry (leftmost) is passed over.
        let chain = parse_x_forwarded_for("1.1.1.1, 203.0.113.7");
        assert_eq!(
            client_from_chain(&chain, &trusted).unwrap().ip,
            ip("203.0.113.7")
        );
        let chain = parse_x_forwarded_for("10.0.0.9, 10.0.0.2");
        assert_eq!(
            client_from_chain(&chain, &trusted).unwrap().ip,
            ip("10.0.0.9")
        );
        let chain = parse_x_forwarded_for("garbage, 10.0.0.2");
        assert_eq!(client_from_chain(&chain, &trusted), None);
        assert_eq!(client_from_chain(&[], &trusted), None);
        assert_eq!(
            parse_x_forwarded_for("192.0.2.1:8080")[0].unwrap().port,
            Some(8080)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = parse_forwarded(&text);
            let _ = parse_x_forwarded_for(&text);
            let _ = AllowList::parse(&text);
        }
    }
}
