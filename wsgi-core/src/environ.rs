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
#[derive(Debug, Clone)]
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
    /// than for every request on it, and only when a request wants them (a
    /// uwsgi request brings its own: two allocations saved per connection).
    remote: std::sync::OnceLock<(Bytes, Bytes)>,
}

/// `remote` is derived from `peer`: whether it was rendered yet is no
/// difference.
impl PartialEq for ConnInfo {
    fn eq(&self, other: &Self) -> bool {
        self.peer == other.peer
            && self.local == other.local
            && self.scheme == other.scheme
            && self.trusted_proxy == other.trusted_proxy
    }
}

impl Eq for ConnInfo {}

impl ConnInfo {
    /// A connection from `peer` (to `local`, for TCP), not trusted as a proxy.
    pub fn new(peer: PeerAddr, local: Option<SocketAddr>, scheme: UrlScheme) -> Self {
        ConnInfo {
            peer,
            local,
            scheme,
            trusted_proxy: false,
            remote: std::sync::OnceLock::new(),
        }
    }

    /// `REMOTE_ADDR` and `REMOTE_PORT` of the peer.
    fn remote(&self) -> &(Bytes, Bytes) {
        self.remote.get_or_init(|| peer_strings(self.peer))
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
    /// Builds the environ of an HTTP/1.x request from an `http::HeaderMap`
    /// (see [`from_fields`](Self::from_fields), which this calls).
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
        let fields: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
            .collect();
        Environ::from_fields(
            method,
            target,
            version,
            fields.iter().copied(),
            &Bytes::new(),
            conn,
            options,
        )
    }

    /// Builds the environ of an HTTP/1.x request from its header fields as
    /// (name, value) byte pairs in arrival order, names in any case (what a
    /// codec's parser gives, with no `http::HeaderMap` in between).
    ///
    /// `target` is the request-target exactly as sent. Values that lie
    /// within `source` (e.g. the request head's buffer) are shared with it
    /// rather than copied; others are copied.
    ///
    /// PEP 3333 / RFC 3875 §4.1.18: each name becomes `HTTP_` + the name
    /// upper-cased with `-` as `_`; the lines of a repeated name are joined
    /// with `, ` (`; ` for `Cookie`) at the name's first position;
    /// `Content-Type` and `Content-Length` become `CONTENT_TYPE` and
    /// `CONTENT_LENGTH`; names with `_` are dropped unless
    /// [`EnvironOptions::allow_underscore_headers`].
    pub fn from_fields<'a, I>(
        method: &Method,
        target: Bytes,
        version: Version,
        fields: I,
        source: &Bytes,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Environ
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let (path, query, authority) = split_target(&target);
        let mut environ = Environ {
            request_method: method_bytes(method),
            query_string: target.slice_ref(query),
            server_protocol: Bytes::from_static(version_str(version).as_bytes()),
            url_scheme: conn.scheme,
            ..Environ::default()
        };
        (environ.remote_addr, environ.remote_port) = conn.remote().clone();

        // First pass: how many fields, room for the keys of unknown names,
        // and which names may repeat (a name whose hash bit was seen twice),
        // so that a head without repeats needs no name comparisons.
        let (mut count, mut key_room) = (0usize, 0usize);
        let (mut once, mut twice) = (0u64, 0u64);
        for (name, _) in fields.clone() {
            count += 1;
            key_room += 5 + name.len();
            let bit = name_bit(name);
            twice |= once & bit;
            once |= bit;
        }
        environ.headers = Vec::with_capacity(count + usize::from(!authority.is_empty()));
        // Keys of names outside the table share one buffer, allocated only
        // when such a name comes.
        let mut keys = BytesMut::new();

        let mut script_name = options.script_name.clone();
        // From a trusted proxy: `Forwarded` and `X-Forwarded-For`, read
        // once the loop has seen every line.
        let mut forwarded: Option<String> = None;
        let mut x_forwarded_for: Option<String> = None;
        let mut host: Option<Bytes> = None;
        let mut has_host = false;
        let mut rest = fields.clone();
        let mut index = 0usize;
        while let Some((name, first)) = rest.next() {
            index += 1;
            // Most heads have no two names sharing a bit: nothing to hash.
            let may_repeat = twice != 0 && twice & name_bit(name) != 0;
            // A repeated name was handled, all its lines, where it came first.
            if may_repeat
                && fields
                    .clone()
                    .take(index - 1)
                    .any(|(earlier, _)| earlier.eq_ignore_ascii_case(name))
            {
                continue;
            }
            // The later lines of this name (none without a look when the
            // name cannot repeat).
            let later = rest
                .clone()
                .take(if may_repeat { usize::MAX } else { 0 })
                .filter(move |(other, _)| other.eq_ignore_ascii_case(name))
                .map(|(_, value)| value);
            let known = classify(name);
            let kind = known.map_or(NameKind::Other, |(kind, _)| kind);
            match kind {
                NameKind::ContentType => {
                    environ.content_type = Some(share(source, first));
                    continue;
                }
                NameKind::ContentLength => {
                    environ.content_length = Some(content_length_value(source, first, later));
                    continue;
                }
                // RFC 9112 §3.2.2: with an absolute-form target the origin
                // server "MUST ignore the received Host header field (if
                // any) and instead use the host information of the
                // request-target"; the application sees that as `HTTP_HOST`.
                NameKind::Host if !authority.is_empty() => {
                    has_host = true;
                    environ
                        .headers
                        .push((Bytes::from_static(b"HTTP_HOST"), share(&target, authority)));
                    continue;
                }
                NameKind::Host => {
                    has_host = true;
                    host = Some(share(source, first));
                }
                _ => {}
            }
            if conn.trusted_proxy {
                // A proxy mounts the app under a prefix with
                // `proxy_set_header SCRIPT_NAME /prefix;` (gunicorn's contract).
                if kind == NameKind::ScriptName {
                    script_name = share(source, first);
                    continue;
                }
                if options.secure_scheme_headers.iter().any(|(header, value)| {
                    is_lower_case_of(header.as_bytes(), name)
                        && first.eq_ignore_ascii_case(value.as_bytes())
                }) {
                    environ.url_scheme = UrlScheme::Https;
                }
                let joined = || {
                    std::iter::once(first)
                        .chain(later.clone())
                        .map(|value| String::from_utf8_lossy(value).into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                match kind {
                    NameKind::Forwarded => forwarded = Some(joined()),
                    NameKind::XForwardedFor => x_forwarded_for = Some(joined()),
                    _ => {}
                }
            }
            // Of the known names only `SCRIPT_NAME` has an underscore.
            let underscore = match known {
                Some((kind, _)) => kind == NameKind::ScriptName,
                None => name.contains(&b'_'),
            };
            if !options.allow_underscore_headers && underscore {
                continue;
            }
            let separator: &[u8] = if kind == NameKind::Cookie {
                b"; "
            } else {
                b", "
            };
            let mut later = later.peekable();
            let value = if later.peek().is_none() {
                match &host {
                    // Shared once for `HTTP_HOST` and `SERVER_NAME`.
                    Some(host) if kind == NameKind::Host => host.clone(),
                    _ => share(source, first),
                }
            } else {
                let mut joined = BytesMut::from(first);
                for more in later {
                    joined.put_slice(separator);
                    joined.put_slice(more);
                }
                joined.freeze()
            };
            let key = match known {
                Some((_, key)) => Bytes::from_static(key),
                None => cgi_header_key(name, &mut keys, key_room),
            };
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

        if !authority.is_empty() {
            let authority = share(&target, authority);
            if !has_host {
                // HTTP/1.0 may omit Host; the target still names the host.
                environ
                    .headers
                    .push((Bytes::from_static(b"HTTP_HOST"), authority.clone()));
            }
            host = Some(authority);
        }
        if conn.trusted_proxy {
            // Before the server port is chosen: `proto=https` changes it.
            environ.apply_forwarded(forwarded.as_deref(), x_forwarded_for.as_deref(), options);
        }
        environ.set_server_shared(host, conn);
        if !authority.is_empty() && split_host_port(authority).1.is_none() {
            // The URI's own scheme gives the default port (`https://h/` is
            // port 443 whatever the listener speaks).
            if let Some(port) = absolute_form_default_port(&target) {
                environ.server_port = Bytes::from_static(port);
            }
        }
        let path = if path.contains(&b'%') {
            percent_decode(path)
        } else {
            share(&target, path)
        };
        environ.mount(script_name, path);
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
        Environ::cgi(vars, conn, options)
    }

    /// [`from_cgi_vars`](Self::from_cgi_vars) for variables that are slices
    /// of one buffer (a uwsgi packet's vars block): the values and keys the
    /// environ keeps share `source` (a part outside it is copied), and the
    /// variables it only reads cost no reference count.
    ///
    /// # Errors
    /// [`EnvironError::Missing`] without `REQUEST_METHOD`.
    pub fn from_cgi_block<'a>(
        source: &'a Bytes,
        vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Result<Environ, EnvironError> {
        Environ::cgi(
            vars.into_iter()
                .map(|(key, value)| (Within(source, key), Within(source, value))),
            conn,
            options,
        )
    }

    fn cgi<P: CgiPart>(
        vars: impl IntoIterator<Item = (P, P)>,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Result<Environ, EnvironError> {
        let mut environ = Environ {
            url_scheme: conn.scheme,
            ..Environ::default()
        };
        let mut path_info = None;
        let mut script_name = options.script_name.clone();
        let (mut remote_addr, mut remote_port) = (None, None);
        let mut has_server_port = false;
        let mut host: Option<Bytes> = None;
        for (key, value) in vars {
            match key.as_slice() {
                b"REQUEST_METHOD" => environ.request_method = value.into_bytes(),
                b"PATH_INFO" => path_info = Some(value.into_bytes()),
                b"SCRIPT_NAME" => script_name = value.into_bytes(),
                b"QUERY_STRING" => environ.query_string = value.into_bytes(),
                b"REQUEST_URI" => environ.request_uri = value.into_bytes(),
                b"SERVER_PROTOCOL" => environ.server_protocol = value.into_bytes(),
                b"SERVER_NAME" => environ.server_name = value.into_bytes(),
                b"SERVER_PORT" => {
                    has_server_port = true;
                    environ.server_port = value.into_bytes();
                }
                b"REMOTE_ADDR" => remote_addr = Some(value.into_bytes()),
                b"REMOTE_PORT" => remote_port = Some(value.into_bytes()),
                b"CONTENT_TYPE" if !value.as_slice().is_empty() => {
                    environ.content_type = Some(value.into_bytes());
                }
                b"CONTENT_LENGTH" if !value.as_slice().is_empty() => {
                    environ.content_length = Some(value.into_bytes());
                }
                b"CONTENT_TYPE" | b"CONTENT_LENGTH" => {}
                b"UWSGI_SCHEME" => {
                    if value.as_slice().eq_ignore_ascii_case(b"https") {
                        environ.url_scheme = UrlScheme::Https;
                    }
                }
                b"REQUEST_SCHEME" => {
                    if value.as_slice().eq_ignore_ascii_case(b"https") {
                        environ.url_scheme = UrlScheme::Https;
                    }
                    environ
                        .extra
                        .push((Bytes::from_static(b"REQUEST_SCHEME"), value.into_bytes()));
                }
                b"HTTPS" => {
                    let on = value.as_slice();
                    if on.eq_ignore_ascii_case(b"on") || on == b"1" {
                        environ.url_scheme = UrlScheme::Https;
                    }
                    environ
                        .extra
                        .push((Bytes::from_static(b"HTTPS"), value.into_bytes()));
                }
                b"DOCUMENT_ROOT" => environ
                    .extra
                    .push((Bytes::from_static(b"DOCUMENT_ROOT"), value.into_bytes())),
                b"HTTP_HOST" => {
                    let value = value.into_bytes();
                    // The first one names the server, as before.
                    if host.is_none() {
                        host = Some(value.clone());
                    }
                    environ
                        .headers
                        .push((Bytes::from_static(b"HTTP_HOST"), value));
                }
                // uWSGI's magic variables load code or change the process
                // (UWSGI_FILE, UWSGI_SETENV, UWSGI_APPID, ...): never honoured.
                name if name.starts_with(b"UWSGI_") => {}
                // nginx already mapped header names (and by default dropped
                // names with `_`: `underscores_in_headers off`).
                name if name.starts_with(b"HTTP_") => {
                    environ.headers.push((key.into_bytes(), value.into_bytes()))
                }
                _ => environ.extra.push((key.into_bytes(), value.into_bytes())),
            }
        }
        if environ.request_method.is_empty() {
            return Err(EnvironError::Missing("REQUEST_METHOD"));
        }
        // The connection's own address only where the variables have none.
        environ.remote_addr = remote_addr.unwrap_or_else(|| conn.remote().0.clone());
        environ.remote_port = remote_port.unwrap_or_else(|| conn.remote().1.clone());
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
            let name = std::mem::take(&mut environ.server_name);
            let port = std::mem::take(&mut environ.server_port);
            // Slices of the host value, not copies.
            environ.set_server_shared(host, conn);
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

    /// [`set_server`](Self::set_server) for a host value that is already
    /// `Bytes`: the name and port are slices of it, not copies.
    fn set_server_shared(&mut self, host: Option<Bytes>, conn: &ConnInfo) {
        match host {
            Some(host) if !host.is_empty() => {
                // The name is a prefix of the host: the whole of it when
                // there is no port, which is then not sliced at all.
                let (name, port) = split_host_port(&host);
                let name_len = name.len();
                self.server_port = match port {
                    Some(port) => host.slice_ref(port),
                    None => Bytes::from_static(self.url_scheme.default_port()),
                };
                self.server_name = if name_len == host.len() {
                    host
                } else {
                    host.slice(..name_len)
                };
            }
            _ => self.set_server(None, conn),
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
    source: &Bytes,
    first: &'a [u8],
    mut rest: impl Iterator<Item = &'a [u8]>,
) -> Bytes {
    let second = rest.next();
    if second.is_none() && !first.contains(&b',') {
        return share(source, first);
    }
    let values: Vec<&[u8]> = std::iter::once(first).chain(second).chain(rest).collect();
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

/// `part` as `Bytes`: a slice of `source` when it lies within it (a
/// reference count, no copy), else a copy.
fn share(source: &Bytes, part: &[u8]) -> Bytes {
    let start = source.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= start + source.len() && !part.is_empty() {
        source.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A CGI variable's key or value as [`Environ::from_cgi_vars`] and
/// [`Environ::from_cgi_block`] get it: read as a slice, made `Bytes` only
/// when the environ keeps it.
trait CgiPart {
    fn as_slice(&self) -> &[u8];
    fn into_bytes(self) -> Bytes;
}

impl CgiPart for Bytes {
    fn as_slice(&self) -> &[u8] {
        self
    }

    fn into_bytes(self) -> Bytes {
        self
    }
}

/// A part of a buffer's bytes (shared when kept, see [`share`]).
struct Within<'a>(&'a Bytes, &'a [u8]);

impl CgiPart for Within<'_> {
    fn as_slice(&self) -> &[u8] {
        self.1
    }

    fn into_bytes(self) -> Bytes {
        let Within(source, part) = self;
        // Where `part` starts in `source` (wrapped when before it, then
        // out of range): a slice of it without `slice_ref`'s second check.
        let at = (part.as_ptr() as usize).wrapping_sub(source.as_ptr() as usize);
        if part.is_empty() {
            Bytes::new()
        } else if at <= source.len() && part.len() <= source.len() - at {
            source.slice(at..at + part.len())
        } else {
            Bytes::copy_from_slice(part)
        }
    }
}

/// The names the environ treats apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    ContentType,
    ContentLength,
    Host,
    ScriptName,
    Forwarded,
    XForwardedFor,
    Cookie,
    Other,
}

/// One bit of 64 for a name, the same for any case of it: two names with
/// different bits are different names.
fn name_bit(name: &[u8]) -> u64 {
    let last = name.last().map_or(0, |&b| b | 0x20);
    1 << ((name.len() as u64 * 5 + u64::from(last)) % 64)
}

/// Whether `name` lower-cased is `lower` (a configured lower-case name, which
/// an `http::HeaderName` used to be compared with as it is).
fn is_lower_case_of(lower: &[u8], name: &[u8]) -> bool {
    lower.len() == name.len()
        && lower
            .iter()
            .zip(name)
            .all(|(&l, &n)| l == n.to_ascii_lowercase())
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

/// `REMOTE_ADDR` and `REMOTE_PORT` of a peer, rendered once per
/// connection into one buffer (an IPv4 address and the port by hand:
/// `core::fmt` and two allocations were ~1,500 instructions, paid per
/// request by `Connection: close` clients).
fn peer_strings(peer: PeerAddr) -> (Bytes, Bytes) {
    match peer {
        PeerAddr::Tcp(address) => {
            let mut text = Vec::with_capacity(22);
            match address.ip() {
                std::net::IpAddr::V4(ip) => {
                    for (index, octet) in ip.octets().into_iter().enumerate() {
                        if index > 0 {
                            text.push(b'.');
                        }
                        push_decimal(&mut text, u32::from(octet));
                    }
                }
                std::net::IpAddr::V6(ip) => text.extend_from_slice(ip.to_string().as_bytes()),
            }
            let split = text.len();
            push_decimal(&mut text, u32::from(address.port()));
            let text = Bytes::from(text);
            (text.slice(..split), text.slice(split..))
        }
        PeerAddr::Unix => (Bytes::new(), Bytes::new()),
    }
}

/// Appends `value` in decimal.
fn push_decimal(text: &mut Vec<u8>, value: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend_from_slice(&digits[at..]);
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

/// What the environ knows of a field name (any case): its kind and, for the
/// common names, its `HTTP_*` key, so most requests build no key. The length
/// and the first letter pick the name (rarely two to four) to compare.
fn classify(name: &[u8]) -> Option<(NameKind, &'static [u8])> {
    use NameKind::*;
    type Entry = (&'static [u8], NameKind, &'static [u8]);
    let first = name.first().map_or(0, u8::to_ascii_lowercase);
    let candidates: &[Entry] = match (name.len(), first) {
        (2, b't') => &[(b"te", Other, b"HTTP_TE")],
        (3, b'd') => &[(b"dnt", Other, b"HTTP_DNT")],
        (4, b'h') => &[(b"host", Host, b"HTTP_HOST")],
        (5, b'r') => &[(b"range", Other, b"HTTP_RANGE")],
        (6, b'a') => &[(b"accept", Other, b"HTTP_ACCEPT")],
        (6, b'c') => &[(b"cookie", Cookie, b"HTTP_COOKIE")],
        (6, b'e') => &[(b"expect", Other, b"HTTP_EXPECT")],
        (6, b'o') => &[(b"origin", Other, b"HTTP_ORIGIN")],
        (6, b'p') => &[(b"pragma", Other, b"HTTP_PRAGMA")],
        (7, b'r') => &[(b"referer", Other, b"HTTP_REFERER")],
        (8, b'i') => &[
            (b"if-match", Other, b"HTTP_IF_MATCH"),
            (b"if-range", Other, b"HTTP_IF_RANGE"),
        ],
        (9, b'f') => &[(b"forwarded", Forwarded, b"HTTP_FORWARDED")],
        (9, b'x') => &[(b"x-real-ip", Other, b"HTTP_X_REAL_IP")],
        (10, b'c') => &[(b"connection", Other, b"HTTP_CONNECTION")],
        (10, b'u') => &[(b"user-agent", Other, b"HTTP_USER_AGENT")],
        (11, b's') => &[(b"script_name", ScriptName, b"HTTP_SCRIPT_NAME")],
        (12, b'c') => &[(b"content-type", ContentType, b"HTTP_CONTENT_TYPE")],
        (13, b'a') => &[(b"authorization", Other, b"HTTP_AUTHORIZATION")],
        (13, b'c') => &[(b"cache-control", Other, b"HTTP_CACHE_CONTROL")],
        (13, b'i') => &[(b"if-none-match", Other, b"HTTP_IF_NONE_MATCH")],
        (14, b'a') => &[(b"accept-charset", Other, b"HTTP_ACCEPT_CHARSET")],
        (14, b'c') => &[(b"content-length", ContentLength, b"HTTP_CONTENT_LENGTH")],
        (14, b's') => &[
            (b"sec-fetch-dest", Other, b"HTTP_SEC_FETCH_DEST"),
            (b"sec-fetch-mode", Other, b"HTTP_SEC_FETCH_MODE"),
            (b"sec-fetch-site", Other, b"HTTP_SEC_FETCH_SITE"),
            (b"sec-fetch-user", Other, b"HTTP_SEC_FETCH_USER"),
        ],
        (15, b'a') => &[
            (b"accept-encoding", Other, b"HTTP_ACCEPT_ENCODING"),
            (b"accept-language", Other, b"HTTP_ACCEPT_LANGUAGE"),
        ],
        (15, b'x') => &[(b"x-forwarded-for", XForwardedFor, b"HTTP_X_FORWARDED_FOR")],
        (16, b'x') => &[
            (b"x-forwarded-host", Other, b"HTTP_X_FORWARDED_HOST"),
            (b"x-requested-with", Other, b"HTTP_X_REQUESTED_WITH"),
        ],
        (17, b'i') => &[(b"if-modified-since", Other, b"HTTP_IF_MODIFIED_SINCE")],
        (17, b't') => &[(b"transfer-encoding", Other, b"HTTP_TRANSFER_ENCODING")],
        (17, b'x') => &[(b"x-forwarded-proto", Other, b"HTTP_X_FORWARDED_PROTO")],
        (25, b'u') => &[(
            b"upgrade-insecure-requests",
            Other,
            b"HTTP_UPGRADE_INSECURE_REQUESTS",
        )],
        _ => return None,
    };
    candidates
        .iter()
        .find(|(known, _, _)| eq_lower(name, known))
        .map(|&(_, kind, key)| (kind, key))
}

/// Whether `name` is `lower` (all lower case) ignoring ASCII case, eight
/// bytes at a time: the same answer as `eq_ignore_ascii_case`, in a few
/// instructions per word instead of several per byte.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 8 {
        return lower_word(short_word(name)) == short_word(lower);
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at + 8 < len {
        if lower_word(word(name, at)) != word(lower, at) {
            return false;
        }
        at += 8;
    }
    lower_word(word(name, len - 8)) == word(lower, len - 8)
}

/// The eight bytes at `at` as a word (zero past the end, which callers avoid).
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|eight| <[u8; 8]>::try_from(eight).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Up to seven bytes as a zero-padded word: from 4 bytes on, two
/// overlapping 4-byte loads (the shared bytes are equal, so OR keeps them).
fn short_word(bytes: &[u8]) -> u64 {
    let four = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|four| <[u8; 4]>::try_from(four).ok())
            .map_or(0, |four| u64::from(u32::from_le_bytes(four)))
    };
    let len = bytes.len();
    if len >= 4 {
        return four(0) | (four(len - 4) << (8 * (len - 4)));
    }
    let mut word = 0;
    for (index, &b) in bytes.iter().enumerate() {
        word |= u64::from(b) << (8 * index);
    }
    word
}

/// ASCII-lower-cases the letters among eight bytes (SWAR): a byte gets its
/// 0x20 bit when it is in `A..=Z`; others, non-ASCII included, stay.
fn lower_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let heptets = word & (0x7f * ONES);
    // Per byte, no carry out (0x7f + 0x3f < 0x100): the high bit says
    // ">= 'A'" and "> 'Z'".
    let at_least_a = heptets + (0x80 - u64::from(b'A')) * ONES;
    let above_z = heptets + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = at_least_a & !above_z & !word & (0x80 * ONES);
    word | (upper >> 2)
}

/// `HTTP_` + the name upper-cased with `-` as `_` (RFC 3875 §4.1.18), for a
/// name [`classify`] does not know: written into `keys`, one buffer for all of
/// a request's keys (`room` bytes, reserved when the first one comes).
fn cgi_header_key(name: &[u8], keys: &mut BytesMut, room: usize) -> Bytes {
    if keys.capacity() < 5 + name.len() {
        keys.reserve(room.max(5 + name.len()));
    }
    keys.put_slice(b"HTTP_");
    keys.extend(name.iter().map(|&byte| match byte {
        b'-' => b'_',
        other => other.to_ascii_uppercase(),
    }));
    keys.split().freeze()
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
