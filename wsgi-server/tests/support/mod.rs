//! Test support: a server with a pure-Rust application on 127.0.0.1:0, run
//! in a thread, a raw-bytes client, and events to wait on: a gate that holds
//! requests inside the application until the test opens it, the server's
//! own counters, a listener that refuses.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use wsgi_core::testing::Echo;
use wsgi_core::{AppError, Application, Handler, HandlerApp, Request, ResponseHead};
use wsgi_server::config::{AppSource, ServerConfig};
use wsgi_server::listener::{bind, BindAddr, BindOptions, BindSpec, BoundListener, Protocol};
use wsgi_server::scoreboard::WorkerSlot;
use wsgi_server::server::{run, Stop};

/// A running server.
pub struct TestServer {
    pub addr: Option<SocketAddr>,
    pub specs: Vec<BindSpec>,
    /// The worker's scoreboard slot: the server's own counters.
    pub slot: &'static WorkerSlot,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves the built-in `app` on 127.0.0.1:0 with `configure` applied.
    pub fn start(app: &str, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let spec = BindSpec::parse("127.0.0.1:0", Protocol::Http).unwrap();
        Self::start_on(app, vec![spec], configure)
    }

    /// Serves `echo` with `/gate` added (see [`Gate`]); the gate opens when
    /// the returned guard is dropped, if the test has not opened it.
    pub fn start_gated(configure: impl FnOnce(&mut ServerConfig)) -> (TestServer, OpenOnDrop) {
        let gate = Arc::new(Gate::default());
        let app = Arc::new(HandlerApp(GatedEcho {
            gate: Arc::clone(&gate),
            echo: Echo::default(),
        }));
        let spec = BindSpec::parse("127.0.0.1:0", Protocol::Http).unwrap();
        let server = Self::start_with("echo", app, vec![spec], configure);
        (server, OpenOnDrop(gate))
    }

    pub fn start_on(
        app: &str,
        specs: Vec<BindSpec>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let application = wsgi_core::testing::app_by_name(app).unwrap();
        Self::start_with(app, application, specs, configure)
    }

    fn start_with(
        app: &str,
        application: Arc<dyn Application>,
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
            defer_accept: None,
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
        let (stop, stopped) = oneshot::channel();
        let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
        let thread = std::thread::spawn(move || {
            run(listeners, application, &config, slot, async move {
                stopped.await.unwrap_or(Stop::Immediate)
            })
            .unwrap();
        });
        TestServer {
            addr,
            specs,
            slot,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Requests whose head the server has read: those between their head
    /// and their end, and those ended, by the server's counters (a request
    /// moving from one to the other may be missed by one look, not by the
    /// next).
    pub fn heads_read(&self) -> u64 {
        let counters = &self.slot.counters;
        counters
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            + counters.requests()
    }

    /// Waits until the listener refuses connections: a stop has closed it
    /// (a connection accepted meanwhile is closed at once).
    pub fn wait_until_refused(&self) {
        let addr = self.addr.unwrap();
        wait_until("the listener closed", || match TcpStream::connect(addr) {
            Ok(_probe) => false,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionRefused,
        });
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr.unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Asks for a stop, without waiting for it.
    pub fn begin_stop(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
    }

    /// Asks for a stop (unless asked already) and returns how long the
    /// server took to exit.
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

/// Polls `check` until it holds; panics after 10 s (a failure bound,
/// nothing is measured).
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Holds `/gate` requests inside the application until the test opens it:
/// a request is in the application, and stays there, for as long as the
/// test needs, whatever the timing.
#[derive(Debug, Default)]
pub struct Gate {
    /// Requests that entered, and whether the gate is open.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Waits until `count` requests have entered the gate (10 s bound).
    pub fn wait_entered(&self, count: usize) {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(10), |state| state.0 < count)
            .unwrap();
        assert!(
            state.0 >= count,
            "{} of {count} requests entered the gate within 10 s",
            state.0
        );
    }

    /// Lets every held request go on, and later ones through.
    pub fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// A request enters; returns when the gate is open (or after 30 s, a
    /// bound for a test that failed before opening it).
    fn pass(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(30), |state| !state.1)
            .unwrap();
        state.1
    }
}

/// The gate, opened when the test lets go of it (also when it panics, so
/// no application thread stays held).
pub struct OpenOnDrop(pub Arc<Gate>);

impl std::ops::Deref for OpenOnDrop {
    type Target = Gate;
    fn deref(&self) -> &Gate {
        &self.0
    }
}

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// `echo`, with `/gate`: waits at the gate, then answers `gate`.
struct GatedEcho {
    gate: Arc<Gate>,
    echo: Echo,
}

impl Handler for GatedEcho {
    fn call(&self, request: &mut Request) -> Result<(), AppError> {
        if &request.environ.path_info[..] != b"/gate" {
            return self.echo.call(request);
        }
        if !self.gate.pass() {
            return Err(AppError::new("the gate was never opened"));
        }
        let head = ResponseHead::new(
            b"200 OK",
            vec![
                (
                    Bytes::from_static(b"Content-Type"),
                    Bytes::from_static(b"text/plain"),
                ),
                (
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from_static(b"4"),
                ),
            ],
        )
        .map_err(|error| AppError::new(error.to_string()))?;
        request.output.start(head)?;
        request.output.send(Bytes::from_static(b"gate"))?;
        Ok(())
    }
}
