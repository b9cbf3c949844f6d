//! The environ as a Rust value (PEP 3333 §"environ Variables", CGI/1.1 RFC 3875 §4.1),
//! built from an HTTP request head or from CGI-style variables (the uwsgi protocol).
//!
//! Values are kept as raw bytes; a runtime exposes them as latin-1 strings
//! ("bytes-as-unicode", PEP 3333 §"Unicode Issues"), so no byte is ever lost or
//! replaced.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Version};

use crate::error::EnvironError;

/// The value of `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("wsgi-server/", env!("CARGO_PKG_VERSION"));

/// `wsgi.url_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlScheme {
    /// `http`
    #[default]
    Http,
    /// `https`
    Https,
}

impl UrlScheme {
    /// The scheme's name as PEP 3333 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }

    fn default_port(self) -> &'static [u8] {
        match self {
            UrlScheme::Http => b"80",
            UrlScheme::Https => b"443",
        }
    }
}

/// The peer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A unix-socket peer (no address; `REMOTE_ADDR` is empty).
    Unix,
}

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client (or the proxy in front of us).
    pub peer: PeerAddr,
    /// Our side of a TCP connection, used for `SERVER_NAME`/`SERVER_PORT`
    /// when the request carries no `Host`.
    pub local: Option<SocketAddr>,
    /// The scheme the listener speaks.
    pub scheme: UrlScheme,
    /// Whether the peer is a trusted proxy (`--forwarded-allow-ips`), whose
    /// `SCRIPT_NAME` and `X-Forwarded-Proto` style headers are believed.
    pub trusted_proxy: bool,
    /// `REMOTE_ADDR` and `REMOTE_PORT`, formatted once per connection rather
    /// than for every request on it.
    remote: (Bytes, Bytes),
}

impl ConnInfo {
    /// A connection from `peer` (to `local`, for TCP), not trusted as a proxy.
    pub fn new(peer: PeerAddr, local: Option<SocketAddr>, scheme: UrlScheme) -> Self {
        ConnInfo {
            peer,
            local,
            scheme,
            trusted_proxy: false,
            remote: peer_strings(peer),
        }
    }

    /// A plain-HTTP TCP connection from an untrusted peer.
    pub fn tcp(peer: SocketAddr, local: SocketAddr) -> Self {
        ConnInfo::new(PeerAddr::Tcp(peer), Some(local), UrlScheme::Http)
    }

    /// A plain-HTTP unix-socket connection.
    pub fn unix() -> Self {
        ConnInfo::new(PeerAddr::Unix, None, UrlScheme::Http)
    }

    /// The same connection, trusted as a proxy or not.
    pub fn with_trusted_proxy(self, trusted_proxy: bool) -> Self {
        ConnInfo {
            trusted_proxy,
            ..self
        }
    }
}

/// Listener-wide settings that shape the environ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironOptions {
    /// A fixed mount point (gunicorn reads it from the `SCRIPT_NAME` environment
    /// variable); removed from the front of `PATH_INFO` when it matches.
    pub script_name: Bytes,
    /// Keep request headers whose names contain `_` (dropped by default, as
    /// nginx, bjoern and gunicorn ≥ 22 do: `X_Auth` and `X-Auth` would both
    /// become `HTTP_X_AUTH`, letting a client spoof a proxy-set header).
    pub allow_underscore_headers: bool,
    /// Headers that, from a trusted proxy, mean the request came over HTTPS
    /// (gunicorn's `secure_scheme_headers`): (header name in lower case, value).
    /// RFC 7239 `Forwarded: proto=https` counts too.
    pub secure_scheme_headers: Vec<(String, String)>,
    /// The trusted proxies (`--forwarded-allow-ips`): walking an
    /// `X-Forwarded-For` chain, these hops are passed over.
    pub trusted_proxies: crate::proxy::AllowList,
    /// From a trusted proxy, take `REMOTE_ADDR` (and `REMOTE_PORT` when
    /// given) from `Forwarded: for=` or `X-Forwarded-For`: the rightmost
    /// address that is not a trusted proxy. The socket's peer is then
    /// `PEER_ADDR` / `PEER_PORT`.
    pub forwarded_remote_addr: bool,
}

impl Default for EnvironOptions {
    fn default() -> Self {
        EnvironOptions {
            script_name: Bytes::new(),
            allow_underscore_headers: false,
            secure_scheme_headers: vec![
                ("x-forwarded-protocol".into(), "ssl".into()),
                ("x-forwarded-proto".into(), "https".into()),
                ("x-forwarded-ssl".into(), "on".into()),
            ],
            trusted_proxies: crate::proxy::AllowList::default(),
            forwarded_remote_addr: false,
        }
    }
}

/// The CGI part of a WSGI environ. The runtime adds the `wsgi.*` keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environ {
    /// `REQUEST_METHOD`
    pub request_method: Bytes,
    /// `SCRIPT_NAME`: where the application is mounted (no trailing `/`).
    pub script_name: Bytes,
    /// `PATH_INFO`: the percent-decoded path below `SCRIPT_NAME`.
    pub path_info: Bytes,
    /// `QUERY_STRING`, raw (not decoded).
    pub query_string: Bytes,
    /// `REQUEST_URI` and `RAW_URI`: the request target as sent.
    pub request_uri: Bytes,
    /// `SERVER_PROTOCOL`, e.g. `HTTP/1.1`.
    pub server_protocol: Bytes,
    /// `SERVER_NAME`
    pub server_name: Bytes,
    /// `SERVER_PORT`
    pub server_port: Bytes,
    /// `REMOTE_ADDR` (empty on unix sockets).
    pub remote_addr: Bytes,
    /// `REMOTE_PORT` (empty on unix sockets).
    pub remote_port: Bytes,
    /// `wsgi.url_scheme`
    pub url_scheme: UrlScheme,
    /// `CONTENT_TYPE`, only if the request had one.
    pub content_type: Option<Bytes>,
    /// `CONTENT_LENGTH`, only if the request had one.
    pub content_length: Option<Bytes>,
    /// `HTTP_*` variables: (key, value), repeated headers already joined.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Other CGI variables (from the uwsgi protocol: `DOCUMENT_ROOT`, `HTTPS`, ...).
    pub extra: Vec<(Bytes, Bytes)>,
}

impl Environ {
    /// Builds the environ of an HTTP/1.x request.
    ///
    /// `target` is the request-target exactly as sent; `headers` are the
    /// request's headers in arrival order.
    pub fn from_http(
        method: &Method,
        target: Bytes,
        version: Version,
        headers: &HeaderMap,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Environ {
        let (path, query, authority) = split_target(&target);
        let mut environ = Environ {
            request_method: method_bytes(method),
            query_string: target.slice_ref(query),
            server_protocol: Bytes::from_static(version_str(version).as_bytes()),
            url_scheme: conn.scheme,
            ..Environ::default()
        };
        (environ.remote_addr, environ.remote_port) = conn.remote.clone();

        let mut script_name = options.script_name.clone();
        // From a trusted proxy: `Forwarded` and `X-Forwarded-For`, read
        // once the loop has seen every line.
        let mut forwarded: Option<String> = None;
        let mut x_forwarded_for: Option<String> = None;
        for name in headers.keys() {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let name_str = name.as_str();
            match name_str {
                "content-type" => {
                    environ.content_type = Some(Bytes::copy_from_slice(first.as_bytes()));
                    continue;
                }
                "content-length" => {
                    environ.content_length = Some(content_length_value(first, values));
                    continue;
                }
                // RFC 9112 §3.2.2: with an absolute-form target the origin
                // server "MUST ignore the received Host header field (if
                // any) and instead use the host information of the
                // request-target"; the application sees that as `HTTP_HOST`.
                "host" if !authority.is_empty() => {
                    environ.headers.push((
                        Bytes::from_static(b"HTTP_HOST"),
                        Bytes::copy_from_slice(authority),
                    ));
                    continue;
                }
                _ => {}
            }
            if conn.trusted_proxy {
                // A proxy mounts the app under a prefix with
                // `proxy_set_header SCRIPT_NAME /prefix;` (gunicorn's contract).
                if name_str == "script_name" {
                    script_name = Bytes::copy_from_slice(first.as_bytes());
                    continue;
                }
                if options.secure_scheme_headers.iter().any(|(header, value)| {
                    header == name_str && first.as_bytes().eq_ignore_ascii_case(value.as_bytes())
                }) {
                    environ.url_scheme = UrlScheme::Https;
                }
                let joined = || {
                    headers
                        .get_all(name)
                        .iter()
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                match name_str {
                    "forwarded" => forwarded = Some(joined()),
                    "x-forwarded-for" => x_forwarded_for = Some(joined()),
                    _ => {}
                }
            }
            if !options.allow_underscore_headers && name_str.contains('_') {
                continue;
            }
            let separator: &[u8] = if name_str == "cookie" { b"; " } else { b", " };
            let value = match values.next() {
                None => Bytes::copy_from_slice(first.as_bytes()),
                Some(second) => {
                    let mut joined = BytesMut::from(first.as_bytes());
                    for more in std::iter::once(second).chain(values) {
                        joined.put_slice(separator);
                        joined.put_slice(more.as_bytes());
                    }
                    joined.freeze()
                }
            };
            let key = cgi_header_key(name_str);
            // With underscores allowed, `X_A` and `X-A` share one key: join them
            // rather than let the later hide the earlier.
            if options.allow_underscore_headers {
                if let Some((_, existing)) = environ.headers.iter_mut().find(|(k, _)| *k == key) {
                    let mut joined = BytesMut::from(&existing[..]);
                    joined.put_slice(separator);
                    joined.put_slice(&value);
                    *existing = joined.freeze();
                    continue;
                }
            }
            environ.headers.push((key, value));
        }

        let host = if authority.is_empty() {
            headers
                .get(http::header::HOST)
                .map(|value| value.as_bytes())
        } else {
            if !headers.contains_key(http::header::HOST) {
                // HTTP/1.0 may omit Host; the target still names the host.
                environ.headers.push((
                    Bytes::from_static(b"HTTP_HOST"),
                    Bytes::copy_from_slice(authority),
                ));
            }
            Some(authority)
        };
        if conn.trusted_proxy {
            // Before the server port is chosen: `proto=https` changes it.
            environ.apply_forwarded(forwarded.as_deref(), x_forwarded_for.as_deref(), options);
        }
        environ.set_server(host, conn);
        if !authority.is_empty() && split_host_port(authority).1.is_none() {
            // The URI's own scheme gives the default port (`https://h/` is
            // port 443 whatever the listener speaks).
            if let Some(port) = absolute_form_default_port(&target) {
                environ.server_port = Bytes::from_static(port);
            }
        }
        environ.mount(script_name, percent_decode(path));
        environ.request_uri = target;
        environ
    }

    /// Builds the environ from `http::request::Parts` (for servers built on
    /// hyper or another stack that parses requests itself).
    pub fn from_parts(
        parts: &http::request::Parts,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Environ {
        let target = match parts.uri.path_and_query() {
            Some(path_and_query) if parts.uri.scheme().is_none() => {
                Bytes::copy_from_slice(path_and_query.as_str().as_bytes())
            }
            _ => Bytes::from(parts.uri.to_string()),
        };
        Environ::from_http(
            &parts.method,
            target,
            parts.version,
            &parts.headers,
            conn,
            options,
        )
    }

    /// Builds the environ from CGI variables, as the uwsgi protocol carries
    /// them (nginx's `uwsgi_params`). Unknown variables are kept in `extra`;
    /// `UWSGI_*` variables that would make uWSGI load code are dropped.
    ///
    /// # Errors
    /// [`EnvironError::Missing`] without `REQUEST_METHOD`.
    pub fn from_cgi_vars(
        vars: impl IntoIterator<Item = (Bytes, Bytes)>,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Result<Environ, EnvironError> {
        let mut environ = Environ {
            url_scheme: conn.scheme,
            ..Environ::default()
        };
        (environ.remote_addr, environ.remote_port) = conn.remote.clone();
        let mut path_info = None;
        let mut script_name = options.script_name.clone();
        let mut has_server_port = false;
        for (key, value) in vars {
            match &key[..] {
                b"REQUEST_METHOD" => environ.request_method = value,
                b"PATH_INFO" => path_info = Some(value),
                b"SCRIPT_NAME" => script_name = value,
                b"QUERY_STRING" => environ.query_string = value,
                b"REQUEST_URI" => environ.request_uri = value,
                b"SERVER_PROTOCOL" => environ.server_protocol = value,
                b"SERVER_NAME" => environ.server_name = value,
                b"SERVER_PORT" => {
                    has_server_port = true;
                    environ.server_port = value;
                }
                b"REMOTE_ADDR" => environ.remote_addr = value,
                b"REMOTE_PORT" => environ.remote_port = value,
                b"CONTENT_TYPE" if !value.is_empty() => environ.content_type = Some(value),
                b"CONTENT_LENGTH" if !value.is_empty() => environ.content_length = Some(value),
                b"CONTENT_TYPE" | b"CONTENT_LENGTH" => {}
                b"UWSGI_SCHEME" | b"REQUEST_SCHEME" => {
                    if value.eq_ignore_ascii_case(b"https") {
                        environ.url_scheme = UrlScheme::Https;
                    }
                    if &key[..] == b"REQUEST_SCHEME" {
                        environ.extra.push((key, value));
                    }
                }
                b"HTTPS" => {
                    if value.eq_ignore_ascii_case(b"on") || &value[..] == b"1" {
                        environ.url_scheme = UrlScheme::Https;
                    }
                    environ.extra.push((key, value));
                }
                // uWSGI's magic variables load code or change the process
                // (UWSGI_FILE, UWSGI_SETENV, UWSGI_APPID, ...): never honoured.
                _ if key.starts_with(b"UWSGI_") => {}
                // nginx already mapped header names (and by default dropped
                // names with `_`: `underscores_in_headers off`).
                _ if key.starts_with(b"HTTP_") => environ.headers.push((key, value)),
                _ => environ.extra.push((key, value)),
            }
        }
        if environ.request_method.is_empty() {
            return Err(EnvironError::Missing("REQUEST_METHOD"));
        }
        if environ.server_protocol.is_empty() {
            environ.server_protocol = Bytes::from_static(b"HTTP/1.0");
        }
        let path = match path_info {
            Some(path) => path,
            None => {
                // No PATH_INFO: derive it from REQUEST_URI, decoded.
                let (path, _, _) = split_target(&environ.request_uri);
                percent_decode(path)
            }
        };
        if environ.request_uri.is_empty() {
            let mut uri = BytesMut::from(&path[..]);
            if !environ.query_string.is_empty() {
                uri.put_u8(b'?');
                uri.put_slice(&environ.query_string);
            }
            environ.request_uri = uri.freeze();
        }
        if environ.server_name.is_empty() || !has_server_port {
            let host = environ
                .headers
                .iter()
                .find(|(key, _)| &key[..] == b"HTTP_HOST")
                .map(|(_, value)| value.clone());
            let (name, port) = (environ.server_name.clone(), environ.server_port.clone());
            environ.set_server(host.as_deref(), conn);
            if !name.is_empty() {
                environ.server_name = name;
            }
            if has_server_port {
                environ.server_port = port;
            }
        }
        environ.mount(script_name, path);
        Ok(environ)
    }

    /// The CGI variables as (key, value) pairs, `HTTP_*` and extra ones
    /// included; `wsgi.*` keys are the runtime's business.
    pub fn cgi_vars(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let fixed: [(&[u8], &[u8]); 11] = [
            (b"REQUEST_METHOD", &self.request_method),
            (b"SCRIPT_NAME", &self.script_name),
            (b"PATH_INFO", &self.path_info),
            (b"QUERY_STRING", &self.query_string),
            (b"REQUEST_URI", &self.request_uri),
            (b"RAW_URI", &self.request_uri),
            (b"SERVER_PROTOCOL", &self.server_protocol),
            (b"SERVER_NAME", &self.server_name),
            (b"SERVER_PORT", &self.server_port),
            (b"REMOTE_ADDR", &self.remote_addr),
            (b"REMOTE_PORT", &self.remote_port),
        ];
        let optional = [
            (&b"CONTENT_TYPE"[..], self.content_type.as_deref()),
            (&b"CONTENT_LENGTH"[..], self.content_length.as_deref()),
        ];
        fixed
            .into_iter()
            .chain(
                optional
                    .into_iter()
                    .filter_map(|(key, value)| value.map(|value| (key, value))),
            )
            .chain(
                self.headers
                    .iter()
                    .chain(self.extra.iter())
                    .map(|(key, value)| (&key[..], &value[..])),
            )
    }

    /// Looks a CGI variable up by key (for tests and logging; linear).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.cgi_vars()
            .find(|(candidate, _)| *candidate == key.as_bytes())
            .map(|(_, value)| value)
    }

    fn set_server(&mut self, host: Option<&[u8]>, conn: &ConnInfo) {
        if let Some(host) = host.filter(|host| !host.is_empty()) {
            let (name, port) = split_host_port(host);
            self.server_name = Bytes::copy_from_slice(name);
            self.server_port = match port {
                Some(port) => Bytes::copy_from_slice(port),
                None => Bytes::from_static(self.url_scheme.default_port()),
            };
            return;
        }
        match conn.local {
            Some(local) => {
                self.server_name = Bytes::from(local.ip().to_string());
                self.server_port = Bytes::from(local.port().to_string());
            }
            None => {
                self.server_name = Bytes::from_static(b"localhost");
                self.server_port = Bytes::from_static(self.url_scheme.default_port());
            }
        }
    }

    /// What a trusted proxy said of the scheme and the client (RFC 7239
    /// `Forwarded`, else `X-Forwarded-For`).
    fn apply_forwarded(
        &mut self,
        forwarded: Option<&str>,
        x_forwarded_for: Option<&str>,
        options: &EnvironOptions,
    ) {
        let elements = forwarded.map(crate::proxy::parse_forwarded);
        // The nearest proxy's element is the last one; its `proto` is the
        // scheme it received the request over.
        if let Some(proto) = elements
            .as_ref()
            .and_then(|elements| elements.last())
            .and_then(|element| element.proto.as_deref())
        {
            if proto == "https" {
                self.url_scheme = UrlScheme::Https;
            }
        }
        if !options.forwarded_remote_addr {
            return;
        }
        let chain: Vec<Option<crate::proxy::ForwardedFor>> = match &elements {
            Some(elements) if elements.iter().any(|element| element.has_for) => elements
                .iter()
                .filter(|element| element.has_for)
                .map(|element| element.for_node)
                .collect(),
            _ => x_forwarded_for
                .map(crate::proxy::parse_x_forwarded_for)
                .unwrap_or_default(),
        };
        let Some(client) = crate::proxy::client_from_chain(&chain, &options.trusted_proxies) else {
            return;
        };
        let peer_addr =
            std::mem::replace(&mut self.remote_addr, Bytes::from(client.ip.to_string()));
        let peer_port = std::mem::replace(
            &mut self.remote_port,
            client
                .port
                .map_or_else(Bytes::new, |port| Bytes::from(port.to_string())),
        );
        self.extra
            .push((Bytes::from_static(b"PEER_ADDR"), peer_addr));
        self.extra
            .push((Bytes::from_static(b"PEER_PORT"), peer_port));
    }

    /// Splits the decoded path into `SCRIPT_NAME` and `PATH_INFO`: the mount
    /// point is removed only where it matches whole path segments, so
    /// `/app` mounts `/app` and `/app/x` but not `/application`.
    fn mount(&mut self, script_name: Bytes, path: Bytes) {
        let script_name = trim_trailing_slashes(script_name);
        if !script_name.is_empty()
            && path.starts_with(&script_name)
            && matches!(path.get(script_name.len()), None | Some(b'/'))
        {
            self.path_info = path.slice(script_name.len()..);
        } else {
            self.path_info = path;
        }
        self.script_name = script_name;
    }
}

fn trim_trailing_slashes(mut script_name: Bytes) -> Bytes {
    while script_name.last() == Some(&b'/') {
        script_name.truncate(script_name.len() - 1);
    }
    script_name
}

/// Splits a request-target into (path, query, authority) per RFC 9112 §3.2:
/// origin-form `/p?q`, absolute-form `http://host/p?q` (the authority wins
/// over `Host`, §3.2.2), asterisk-form `*`, authority-form `host:port`.
/// A `#fragment` is never part of a request but is cut defensively.
fn split_target(target: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let target = match target.iter().position(|&byte| byte == b'#') {
        Some(hash) => &target[..hash],
        None => target,
    };
    let (before_query, query) = match target.iter().position(|&byte| byte == b'?') {
        Some(mark) => (&target[..mark], &target[mark + 1..]),
        None => (target, &target[target.len()..]),
    };
    if before_query.starts_with(b"/") || before_query == b"*" {
        return (before_query, query, &target[..0]);
    }
    if let Some(scheme_end) = find(before_query, b"://") {
        let rest = &before_query[scheme_end + 3..];
        let (authority, path) = match rest.iter().position(|&byte| byte == b'/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, &b"/"[..]),
        };
        return (path, query, authority);
    }
    // authority-form (CONNECT) or garbage: no path.
    (&before_query[..0], query, before_query)
}

/// The default port of an absolute-form target's scheme (RFC 9110 §4.2.1,
/// §4.2.2), if it is `http` or `https`.
fn absolute_form_default_port(target: &[u8]) -> Option<&'static [u8]> {
    let scheme = &target[..find(target, b"://")?];
    if scheme.eq_ignore_ascii_case(b"https") {
        Some(b"443")
    } else if scheme.eq_ignore_ascii_case(b"http") {
        Some(b"80")
    } else {
        None
    }
}

/// `CONTENT_LENGTH` from the request's `Content-Length` lines. RFC 9110
/// §8.6: a list of one decimal value repeated (`5, 5`, or two lines of `5`)
/// is that value, so the application sees `5`, not `5, 5` (which it would
/// fail to parse and read as an empty body). A single value is kept as sent;
/// differing values never get here (the codec refuses them with 400) but
/// are kept joined rather than guessed at.
fn content_length_value<'a>(
    first: &'a http::HeaderValue,
    mut rest: impl Iterator<Item = &'a http::HeaderValue>,
) -> Bytes {
    let second = rest.next();
    if second.is_none() && !first.as_bytes().contains(&b',') {
        return Bytes::copy_from_slice(first.as_bytes());
    }
    let values: Vec<&[u8]> = std::iter::once(first)
        .chain(second)
        .chain(rest)
        .map(http::HeaderValue::as_bytes)
        .collect();
    let mut length: Option<u64> = None;
    let mut same = true;
    for item in values.iter().flat_map(|value| value.split(|&b| b == b',')) {
        let item = item.trim_ascii();
        let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
            .flatten();
        match (parsed, length) {
            (None, _) => same = false,
            (Some(value), Some(previous)) if value != previous => same = false,
            (Some(value), _) => length = Some(value),
        }
    }
    match (same, length) {
        (true, Some(length)) => Bytes::from(length.to_string()),
        _ => Bytes::from(values.join(&b", "[..])),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `host[:port]` or `[v6]:port` into its parts.
fn split_host_port(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    if host.first() == Some(&b'[') {
        if let Some(close) = host.iter().position(|&byte| byte == b']') {
            let port = host[close + 1..].strip_prefix(b":");
            return (&host[..=close], port.filter(|port| !port.is_empty()));
        }
        return (host, None);
    }
    match host.iter().rposition(|&byte| byte == b':') {
        Some(colon) if colon + 1 < host.len() => (&host[..colon], Some(&host[colon + 1..])),
        Some(colon) => (&host[..colon], None),
        None => (host, None),
    }
}

fn peer_strings(peer: PeerAddr) -> (Bytes, Bytes) {
    match peer {
        PeerAddr::Tcp(address) => (
            Bytes::from(address.ip().to_string()),
            Bytes::from(address.port().to_string()),
        ),
        PeerAddr::Unix => (Bytes::new(), Bytes::new()),
    }
}

fn method_bytes(method: &Method) -> Bytes {
    match *method {
        Method::GET => Bytes::from_static(b"GET"),
        Method::POST => Bytes::from_static(b"POST"),
        Method::HEAD => Bytes::from_static(b"HEAD"),
        Method::PUT => Bytes::from_static(b"PUT"),
        Method::DELETE => Bytes::from_static(b"DELETE"),
        Method::OPTIONS => Bytes::from_static(b"OPTIONS"),
        Method::PATCH => Bytes::from_static(b"PATCH"),
        _ => Bytes::copy_from_slice(method.as_str().as_bytes()),
    }
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `HTTP_` + the name upper-cased with `-` as `_` (RFC 3875 §4.1.18).
/// The common names come from a table so most requests allocate no keys.
fn cgi_header_key(name: &str) -> Bytes {
    let known: Option<&'static str> = match name {
        "host" => Some("HTTP_HOST"),
        "user-agent" => Some("HTTP_USER_AGENT"),
        "accept" => Some("HTTP_ACCEPT"),
        "accept-encoding" => Some("HTTP_ACCEPT_ENCODING"),
        "accept-language" => Some("HTTP_ACCEPT_LANGUAGE"),
        "accept-charset" => Some("HTTP_ACCEPT_CHARSET"),
        "cookie" => Some("HTTP_COOKIE"),
        "connection" => Some("HTTP_CONNECTION"),
        "cache-control" => Some("HTTP_CACHE_CONTROL"),
        "pragma" => Some("HTTP_PRAGMA"),
        "referer" => Some("HTTP_REFERER"),
        "origin" => Some("HTTP_ORIGIN"),
        "authorization" => Some("HTTP_AUTHORIZATION"),
        "if-modified-since" => Some("HTTP_IF_MODIFIED_SINCE"),
        "if-none-match" => Some("HTTP_IF_NONE_MATCH"),
        "if-match" => Some("HTTP_IF_MATCH"),
        "if-range" => Some("HTTP_IF_RANGE"),
        "range" => Some("HTTP_RANGE"),
        "upgrade-insecure-requests" => Some("HTTP_UPGRADE_INSECURE_REQUESTS"),
        "x-forwarded-for" => Some("HTTP_X_FORWARDED_FOR"),
        "x-forwarded-proto" => Some("HTTP_X_FORWARDED_PROTO"),
        "x-forwarded-host" => Some("HTTP_X_FORWARDED_HOST"),
        "x-real-ip" => Some("HTTP_X_REAL_IP"),
        "x-requested-with" => Some("HTTP_X_REQUESTED_WITH"),
        "expect" => Some("HTTP_EXPECT"),
        "transfer-encoding" => Some("HTTP_TRANSFER_ENCODING"),
        "te" => Some("HTTP_TE"),
        "dnt" => Some("HTTP_DNT"),
        "sec-fetch-site" => Some("HTTP_SEC_FETCH_SITE"),
        "sec-fetch-mode" => Some("HTTP_SEC_FETCH_MODE"),
        "sec-fetch-dest" => Some("HTTP_SEC_FETCH_DEST"),
        "sec-fetch-user" => Some("HTTP_SEC_FETCH_USER"),
        _ => None,
    };
    if let Some(key) = known {
        return Bytes::from_static(key.as_bytes());
    }
    let mut key = BytesMut::with_capacity(5 + name.len());
    key.put_slice(b"HTTP_");
    key.extend(name.bytes().map(|byte| match byte {
        b'-' => b'_',
        other => other.to_ascii_uppercase(),
    }));
    key.freeze()
}

/// Decodes `%XX` escapes into octets (RFC 3986 §2.1); a `%` not followed by
/// two hex digits is kept as it is, as gunicorn and uWSGI do. `+` is not a
/// space in a path.
pub fn percent_decode(input: &[u8]) -> Bytes {
    if !input.contains(&b'%') {
        return Bytes::copy_from_slice(input);
    }
    let mut decoded = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b'%' && index + 2 < input.len() {
            if let (Some(high), Some(low)) = (hex(input[index + 1]), hex(input[index + 2])) {
                decoded.push(high << 4 | low);
                index += 3;
                continue;
            }
        }
        decoded.push(byte);
        index += 1;
    }
    Bytes::from(decoded)
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
