//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2),
//! sans I/O: the header a load balancer puts before the client's bytes to
//! say who the client is. Read only from peers in `--proxy-allow-from`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which versions a listener accepts (gunicorn's `--proxy-protocol` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No PROXY header is read.
    Off,
    /// The text form only.
    V1,
    /// The binary form only.
    V2,
    /// Either, told apart by the first bytes.
    Auto,
}

impl Mode {
    /// Parses `off`, `v1`, `v2`, `auto` (and a bare switch's `true` = auto).
    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "0" | "" => Some(Mode::Off),
            "v1" => Some(Mode::V1),
            "v2" => Some(Mode::V2),
            "auto" | "true" | "yes" | "on" | "1" => Some(Mode::Auto),
            _ => None,
        }
    }
}

/// The v2 signature: a sequence no HTTP request starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, with its CRLF (`PROXY TCP6` with two full IPv6
/// addresses and ports).
const V1_MAX: usize = 107;
/// The v2 header before its addresses.
const V2_FIXED: usize = 16;

/// What a complete header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// How many bytes of the buffer it took.
    pub consumed: usize,
    /// The client's address and port; `None` for a health check (v2 LOCAL,
    /// v1 UNKNOWN) or a family without one (unix): the peer stays as is.
    pub source: Option<SocketAddr>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes are not a PROXY header of an accepted version.
    #[error("not a PROXY protocol header")]
    Missing,
    /// A v1 line that breaks the grammar.
    #[error("malformed PROXY v1 line: {0}")]
    V1(&'static str),
    /// A v2 header that breaks the format.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Reads a PROXY header at the start of `buffer`: `Ok(None)` means more
/// bytes are needed.
///
/// # Errors
/// [`ProxyError`]: the connection is to be closed.
pub fn parse(buffer: &[u8], mode: Mode) -> Result<Option<Header>, ProxyError> {
    let v1_possible = matches!(mode, Mode::V1 | Mode::Auto);
    let v2_possible = matches!(mode, Mode::V2 | Mode::Auto);
    let prefix = |signature: &[u8]| {
        let n = buffer.len().min(signature.len());
        buffer[..n] == signature[..n]
    };
    if v2_possible && prefix(V2_SIGNATURE) {
        return parse_v2(buffer);
    }
    if v1_possible && prefix(b"PROXY ") {
        return parse_v1(buffer);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buffer: &[u8]) -> Result<Option<Header>, ProxyError> {
    let Some(end) = buffer
        .windows(2)
        .take(V1_MAX - 1)
        .position(|pair| pair == b"\r\n")
    else {
        if buffer.len() >= V1_MAX {
            return Err(ProxyError::V1("no CRLF within 107 bytes"));
        }
        if buffer.contains(&b'\n') {
            return Err(ProxyError::V1("a bare LF"));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buffer[..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let consumed = end + 2;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let family = words.next().ok_or(ProxyError::V1("no protocol"))?;
    if family == "UNKNOWN" {
        // The sender could not tell (or a health check): the rest is ignored.
        return Ok(Some(Header {
            consumed,
            source: None,
        }));
    }
    let fields: Vec<&str> = words.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(ProxyError::V1("expected 4 fields after the protocol"));
    };
    let address = |text: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => text
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::V1("bad IPv4 address")),
            "TCP6" => text
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::V1("bad IPv6 address")),
            _ => Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
        }
    };
    let port = |text: &str| -> Result<u16, ProxyError> {
        // No sign, no leading zeros (the specification's grammar).
        if text.is_empty()
            || text.len() > 5
            || (text.len() > 1 && text.starts_with('0'))
            || !text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::V1("bad port"));
        }
        text.parse().map_err(|_| ProxyError::V1("bad port"))
    };
    let source = SocketAddr::new(address(source)?, port(source_port)?);
    address(destination)?;
    port(destination_port)?;
    Ok(Some(Header {
        consumed,
        source: Some(source),
    }))
}

fn parse_v2(buffer: &[u8]) -> Result<Option<Header>, ProxyError> {
    if buffer.len() < V2_FIXED {
        return Ok(None);
    }
    let version_command = buffer[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let command = version_command & 0x0f;
    let family = buffer[13];
    let length = usize::from(u16::from_be_bytes([buffer[14], buffer[15]]));
    let consumed = V2_FIXED + length;
    if buffer.len() < consumed {
        return Ok(None);
    }
    let body = &buffer[V2_FIXED..consumed];
    match command {
        // LOCAL: the balancer's own connection (health checks).
        0 => {
            return Ok(Some(Header {
                consumed,
                source: None,
            }))
        }
        1 => {}
        _ => return Err(ProxyError::V2("unknown command")),
    }
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyError::V2("IPv4 addresses cut short"));
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyError::V2("IPv6 addresses cut short"));
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // UNSPEC, or unix stream: no address to take.
        0x00 | 0x31 => None,
        // Datagrams (UDP, unix dgram) have no business before HTTP.
        0x12 | 0x22 | 0x32 => return Err(ProxyError::V2("a datagram family")),
        _ => return Err(ProxyError::V2("unknown address family")),
    };
    Ok(Some(Header { consumed, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let header = parse(line, Mode::Auto).unwrap().unwrap();
        assert_eq!(header.consumed, 45);
        assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 80\r\n";
        assert_eq!(
            parse(line, Mode::V1).unwrap().unwrap().source,
            Some("[2001:db8::1]:4711".parse().unwrap())
        );
        let unknown = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(parse(unknown, Mode::Auto).unwrap().unwrap().source, None);
        // Byte by byte: more needed until the CRLF.
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut], Mode::Auto), Ok(None), "{cut}");
        }
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        ] {
            assert!(
                parse(bad, Mode::Auto).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse(&[b'P'; 200], Mode::Auto).is_err());
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Mode::Auto),
            Err(ProxyError::Missing)
        );
        assert_eq!(parse(line, Mode::V2), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let mut wire = v2(1, 0x11, &body);
        let total = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let header = parse(&wire, Mode::V2).unwrap().unwrap();
        assert_eq!(
            (header.consumed, header.source),
            (total, Some("192.0.2.1:56324".parse().unwrap()))
        );
        for cut in 0..total {
            assert_eq!(parse(&wire[..cut], Mode::Auto), Ok(None), "{cut}");
        }
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &six), Mode::Auto)
                .unwrap()
                .unwrap()
                .source,
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            parse(&v2(0, 0x11, &body), Mode::Auto)
                .unwrap()
                .unwrap()
                .source,
            None
        );
        assert!(parse(&v2(1, 0x11, &body[..6]), Mode::Auto).is_err());
        assert!(parse(&v2(1, 0x12, &body), Mode::Auto).is_err());
        assert!(parse(&v2(3, 0x11, &body), Mode::Auto).is_err());
        let mut wrong_version = v2(1, 0x11, &body);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version, Mode::Auto).is_err());
        assert_eq!(
            parse(&v2(1, 0x11, &body), Mode::V1),
            Err(ProxyError::Missing)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for mode in [Mode::V1, Mode::V2, Mode::Auto] {
                if let Ok(Some(header)) = parse(&bytes, mode) {
                    proptest::prop_assert!(header.consumed <= bytes.len());
                }
            }
        }

        #[test]
        fn v1_round_trips(a in proptest::prelude::any::<[u8; 4]>(), port in 0u16.., dport in 0u16..) {
            let line = format!("PROXY TCP4 {} 10.0.0.1 {port} {dport}\r\n", Ipv4Addr::from(a));
            let header = parse(line.as_bytes(), Mode::Auto).unwrap().unwrap();
            proptest::prop_assert_eq!(header.consumed, line.len());
            proptest::prop_assert_eq!(header.source, Some(SocketAddr::from((a, port))));
        }
    }
}
