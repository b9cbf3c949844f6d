//! The decoded request head and the names of the vars nginx sends.

use crate::Vars;

/// Names of the vars nginx's stock `uwsgi_params` file sends, plus the
/// uWSGI-specific ones worth knowing about.
///
/// Client headers arrive as `HTTP_` + the upper-cased name with `-` turned
/// into `_` (nginx `ngx_http_uwsgi_create_request`).
pub mod names {
    /// `$query_string`: the part of the target after `?`, raw.
    pub const QUERY_STRING: &[u8] = b"QUERY_STRING";
    /// `$request_method`.
    pub const REQUEST_METHOD: &[u8] = b"REQUEST_METHOD";
    /// `$content_type`: the `Content-Type` header, without an `HTTP_` prefix.
    pub const CONTENT_TYPE: &[u8] = b"CONTENT_TYPE";
    /// `$content_length`: frames the body; empty when there is none.
    pub const CONTENT_LENGTH: &[u8] = b"CONTENT_LENGTH";
    /// `$request_uri`: the raw request target, query included.
    pub const REQUEST_URI: &[u8] = b"REQUEST_URI";
    /// `$document_uri`: the normalised, percent-decoded path.
    pub const PATH_INFO: &[u8] = b"PATH_INFO";
    /// `$document_root`.
    pub const DOCUMENT_ROOT: &[u8] = b"DOCUMENT_ROOT";
    /// `$server_protocol`, e.g. `HTTP/1.1`.
    pub const SERVER_PROTOCOL: &[u8] = b"SERVER_PROTOCOL";
    /// `$scheme`: `http` or `https`.
    pub const REQUEST_SCHEME: &[u8] = b"REQUEST_SCHEME";
    /// `$https`: `on` over TLS, empty otherwise.
    pub const HTTPS: &[u8] = b"HTTPS";
    /// `$remote_addr`: the client's address as nginx saw it.
    pub const REMOTE_ADDR: &[u8] = b"REMOTE_ADDR";
    /// `$remote_port`.
    pub const REMOTE_PORT: &[u8] = b"REMOTE_PORT";
    /// `$server_port`.
    pub const SERVER_PORT: &[u8] = b"SERVER_PORT";
    /// `$server_name`.
    pub const SERVER_NAME: &[u8] = b"SERVER_NAME";
    /// The client's `Host` header.
    pub const HTTP_HOST: &[u8] = b"HTTP_HOST";
    /// Set by `uwsgi_param UWSGI_SCHEME`; uWSGI prefers it to `HTTPS`.
    pub const UWSGI_SCHEME: &[u8] = b"UWSGI_SCHEME";
}

/// A request's packet header and vars, handed out by
/// [`Event::Head`](crate::Event::Head).
///
/// The vars are exactly what the peer sent; mapping them to a WSGI environ
/// (latin-1 strings, `wsgi.*` keys, dropping `UWSGI_*` magic vars) belongs to
/// the caller. This codec never acts on a var's content beyond
/// `CONTENT_LENGTH`: `UWSGI_SETENV`, `UWSGI_FILE` and the like, which make
/// uWSGI call `setenv()` or open files, mean nothing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Always 0 (WSGI): other values are refused.
    pub modifier1: u8,
    /// Passed through as sent. nginx sends 0 (`uwsgi_modifier2`); for
    /// modifier1 0 uWSGI ignores it, and so does this codec.
    pub modifier2: u8,
    /// The vars, in wire order.
    pub vars: Vars,
    /// The body's length, from `CONTENT_LENGTH` (0 when absent or empty).
    pub content_length: u64,
}

impl RequestHead {
    /// The value of var `name` (the last one, if repeated); see [`names`].
    pub fn var(&self, name: &[u8]) -> Option<&[u8]> {
        self.vars.get(name)
    }

    /// `REQUEST_METHOD`.
    pub fn method(&self) -> Option<&[u8]> {
        self.var(names::REQUEST_METHOD)
    }

    /// `REQUEST_URI`: the raw target, query included.
    pub fn request_uri(&self) -> Option<&[u8]> {
        self.var(names::REQUEST_URI)
    }

    /// `PATH_INFO`.
    pub fn path_info(&self) -> Option<&[u8]> {
        self.var(names::PATH_INFO)
    }

    /// `QUERY_STRING`.
    pub fn query_string(&self) -> Option<&[u8]> {
        self.var(names::QUERY_STRING)
    }

    /// `SERVER_PROTOCOL`; uWSGI answers with `HTTP/1.0` when it is absent.
    pub fn server_protocol(&self) -> Option<&[u8]> {
        self.var(names::SERVER_PROTOCOL)
    }

    /// `CONTENT_TYPE`.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.var(names::CONTENT_TYPE)
    }

    /// `HTTP_HOST`, the client's `Host` header.
    pub fn host(&self) -> Option<&[u8]> {
        self.var(names::HTTP_HOST)
    }

    /// `REMOTE_ADDR`.
    pub fn remote_addr(&self) -> Option<&[u8]> {
        self.var(names::REMOTE_ADDR)
    }

    /// `REMOTE_PORT`.
    pub fn remote_port(&self) -> Option<&[u8]> {
        self.var(names::REMOTE_PORT)
    }

    /// `SERVER_NAME`.
    pub fn server_name(&self) -> Option<&[u8]> {
        self.var(names::SERVER_NAME)
    }

    /// `SERVER_PORT`.
    pub fn server_port(&self) -> Option<&[u8]> {
        self.var(names::SERVER_PORT)
    }

    /// The scheme the client used, if the vars say.
    ///
    /// Order: `UWSGI_SCHEME` (uWSGI's override), then `REQUEST_SCHEME`
    /// (nginx's `$scheme`), then `HTTPS`: `on`, `1` or `yes` in any case
    /// mean `https`, anything else (including the empty value nginx sends
    /// over plain HTTP) means `http`. Empty scheme vars are skipped.
    pub fn scheme(&self) -> Option<&[u8]> {
        let explicit = [names::UWSGI_SCHEME, names::REQUEST_SCHEME]
            .into_iter()
            .filter_map(|n| self.var(n))
            .find(|v| !v.is_empty());
        if explicit.is_some() {
            return explicit;
        }
        let https = self.var(names::HTTPS)?;
        let on = [&b"on"[..], b"1", b"yes"]
            .iter()
            .any(|t| https.eq_ignore_ascii_case(t));
        Some(if on { b"https" } else { b"http" })
    }
}
