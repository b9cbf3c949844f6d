//! The master's own small servers: `--metrics-bind` (Prometheus over HTTP)
//! and `--stats` (uWSGI's JSON, raw or with `--stats-http`). The master has
//! no threads and no async runtime, so each connection is answered at once
//! with short socket timeouts: a scrape never waits for an application, and
//! a silent client costs the master at most `IO_TIMEOUT`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::listener::BoundListener;

/// The longest a scrape may keep the master from its loop.
const IO_TIMEOUT: Duration = Duration::from_millis(200);
/// The largest request head read.
const MAX_HEAD: usize = 8192;

/// What an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Prometheus text at `/metrics` (and `/`).
    Metrics,
    /// uWSGI's stats JSON as soon as a client connects.
    Stats,
    /// uWSGI's stats JSON as an HTTP response (`--stats-http`).
    StatsHttp,
}

/// A listening endpoint of the master.
#[derive(Debug)]
pub struct Endpoint {
    /// What it serves.
    pub kind: Kind,
    /// The socket.
    pub listener: BoundListener,
}

/// Accepts every waiting connection on `endpoint` and answers each with
/// `render` (called once per connection).
pub fn serve(endpoint: &Endpoint, render: &mut dyn FnMut(Kind) -> String) {
    loop {
        // SAFETY: accept4 on our non-blocking listening socket.
        let fd = unsafe {
            libc::accept4(
                endpoint.listener.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        // SAFETY: a fresh descriptor from accept4, owned from here.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        answer(socket, endpoint.kind, render);
    }
}

fn answer(socket: OwnedFd, kind: Kind, render: &mut dyn FnMut(Kind) -> String) {
    let mut stream = std::os::unix::net::UnixStream::from(socket);
    // A TCP socket works through the same calls; only the timeouts matter.
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    if kind == Kind::Stats {
        let _ = stream.write_all(render(kind).as_bytes());
        return;
    }
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            // A signal (a worker's SIGCHLD) interrupts a read that has a
            // timeout even under SA_RESTART (signal(7)).
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > MAX_HEAD {
            let _ = stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    }
    let line = head.split(|&byte| byte == b'\r').next().unwrap_or(b"");
    let mut words = line.split(|&byte| byte == b' ');
    let method = words.next().unwrap_or(b"");
    let target = words.next().unwrap_or(b"");
    let path = target.split(|&byte| byte == b'?').next().unwrap_or(b"");
    let (status, content_type, body) = match (method, kind, path) {
        (b"GET" | b"HEAD", Kind::Metrics, b"/metrics" | b"/") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(kind),
        ),
        (b"GET" | b"HEAD", Kind::StatsHttp, _) => ("200 OK", "application/json", render(kind)),
        (b"GET" | b"HEAD", _, _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes());
}

/// Binds `--metrics-bind` and `--stats` (before privileges are dropped,
/// like every listener).
///
/// # Errors
/// One line naming the endpoint that cannot listen.
pub fn bind_endpoints(config: &crate::config::ServerConfig) -> Result<Vec<Endpoint>, String> {
    let options = crate::listener::BindOptions {
        backlog: 64,
        unix_mode: config.unix_socket_mode,
        reuse_port: false,
        defer_accept: None,
    };
    let mut endpoints = Vec::new();
    let wanted = config
        .metrics_bind
        .iter()
        .map(|spec| (spec, Kind::Metrics))
        .chain(
            config
                .stats
                .iter()
                .map(|(spec, http)| (spec, if *http { Kind::StatsHttp } else { Kind::Stats })),
        );
    for (spec, kind) in wanted {
        let flag = if kind == Kind::Metrics {
            "--metrics-bind"
        } else {
            "--stats"
        };
        let listener = crate::listener::bind(spec, options)
            .map_err(|error| format!("{flag}: cannot listen: {error}"))?;
        endpoints.push(Endpoint { kind, listener });
    }
    Ok(endpoints)
}
