//! Test support: a server with a pure-Rust application on 127.0.0.1:0, run
//! in a thread, and a raw-bytes client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use wsgi_server::config::{AppSource, ServerConfig};
use wsgi_server::listener::{bind, BindAddr, BindOptions, BindSpec, BoundListener, Protocol};
use wsgi_server::scoreboard::WorkerSlot;
use wsgi_server::server::{run, Stop};

/// A running server.
pub struct TestServer {
    pub addr: Option<SocketAddr>,
    pub specs: Vec<BindSpec>,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves the built-in `app` on 127.0.0.1:0 with `configure` applied.
    pub fn start(app: &str, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let spec = BindSpec::parse("127.0.0.1:0", Protocol::Http).unwrap();
        Self::start_on(app, vec![spec], configure)
    }

    pub fn start_on(
        app: &str,
        specs: Vec<BindSpec>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let mut config = ServerConfig::new(AppSource::Rust(app.into()), specs.clone());
        config.timeouts.graceful = Duration::from_secs(5);
        configure(&mut config);
        let options = BindOptions {
            backlog: 128,
            unix_mode: None,
            reuse_port: false,
        };
        let listeners: Vec<BoundListener> = config
            .binds
            .iter()
            .map(|spec| bind(spec, options).unwrap())
            .collect();
        let specs: Vec<BindSpec> = listeners
            .iter()
            .map(|listener| listener.spec.clone())
            .collect();
        let addr = specs.iter().find_map(|spec| match spec.addr {
            BindAddr::Tcp(address) => Some(address),
            _ => None,
        });
        let app = wsgi_core::testing::app_by_name(app).unwrap();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
            run(listeners, Arc::clone(&app), &config, slot, async move {
                stopped.await.unwrap_or(Stop::Immediate)
            })
            .unwrap();
        });
        TestServer {
            addr,
            specs,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr.unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Asks for a stop and returns how long the server took to exit.
    pub fn stop(&mut self, how: Stop) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(Stop::Immediate);
    }
}

/// Reads until the peer closes (or the read timeout).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return all,
            Ok(read) => all.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(error) => panic!("read failed after {} bytes: {error}", all.len()),
        }
    }
}

/// Reads exactly one HTTP response (Content-Length or chunked framed, or
/// to close) and returns it with the Date header removed.
pub fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => data.push(byte[0]),
            Err(error) => panic!(
                "reading head: {error}; got {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let lower = head.to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    if status == 100 || status == 204 || status == 304 || lower.contains("x-test-head: 1") {
    } else if let Some(position) = lower.find("content-length: ") {
        let length: usize = lower[position + 16..]
            .split("\r\n")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        body.resize(length, 0);
        stream.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).unwrap();
                line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    } else {
        body = read_to_close(stream);
    }
    strip_date(&head) + &String::from_utf8_lossy(&body)
}

pub fn strip_date(head: &str) -> String {
    head.split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Sends `request` on a new connection and reads one response.
pub fn exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = server.connect();
    stream.write_all(request).unwrap();
    read_response(&mut stream)
}

/// Whether the server closed the connection within 3 s: EOF, or a reset
/// (a close with unread bytes). Bytes, or nothing before the timeout, mean
/// the connection is still open: false, so an assertion on it can fail.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buffer = [0u8; 1];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => match error.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => true,
            // The read timeout (EAGAIN on Linux, TimedOut elsewhere).
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => false,
            _ => panic!("reading to see whether the server closed: {error}"),
        },
    }
}
