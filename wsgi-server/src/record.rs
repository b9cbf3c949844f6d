//! One record per request, filled by the connection on every path (a
//! response written by the I/O thread, by the application thread directly,
//! streamed, a file, an error, a client that left) and handed to the access
//! log and the counters without waiting on the application. The hot path
//! knows this record and nothing of log formats or metrics.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// What happened to one request.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// When its head had arrived.
    pub started: Option<SystemTime>,
    /// The method, as sent.
    pub method: Bytes,
    /// The request-target, as sent (path and query).
    pub target: Bytes,
    /// `HTTP/1.1`, `HTTP/1.0` (the uwsgi protocol: its `SERVER_PROTOCOL`).
    pub protocol: &'static str,
    /// The status sent (0 if none was: the client left first).
    pub status: u16,
    /// Request body bytes the server read.
    pub bytes_in: u64,
    /// Response body bytes sent (without the head).
    pub bytes_out: u64,
    /// From the head's arrival to the last byte written.
    pub total: Duration,
    /// `REMOTE_ADDR` as the application saw it (the client behind a
    /// trusted proxy when configured), and the socket's peer.
    pub remote_addr: Bytes,
    /// The socket's peer (`-` on a unix socket).
    pub peer_addr: Bytes,
    /// Request headers the access-log format asks for, by lower-case name
    /// (`Referer` and `User-Agent` for the combined format).
    pub request_headers: Vec<(Bytes, Bytes)>,
    /// Response headers the format asks for.
    pub response_headers: Vec<(Bytes, Bytes)>,
    /// The response was cut (an error after the head, or the client left).
    pub incomplete: bool,
    /// The application raised (the response is a 500, or cut).
    pub app_error: bool,
    /// Served by the server itself (health path, static file), not the app.
    pub served_by_server: bool,
}

impl RequestRecord {
    /// The named request header, if recorded.
    pub fn request_header(&self, name: &[u8]) -> Option<&Bytes> {
        find(&self.request_headers, name)
    }

    /// The named response header, if recorded.
    pub fn response_header(&self, name: &[u8]) -> Option<&Bytes> {
        find(&self.response_headers, name)
    }
}

fn find<'a>(headers: &'a [(Bytes, Bytes)], name: &[u8]) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}
