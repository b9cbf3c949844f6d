//! The protocol-neutral path of one request on a connection, shared by
//! HTTP (`connection.rs`) and the uwsgi protocol (`uwsgi.rs`): the
//! [`Conn`] a protocol lends it (stream, codec, buffers, shared state), the
//! body's progress ([`BodyState`]), handing the request to the application
//! threads through an [`Exchange`] ([`serve_request`]), the answers the
//! server gives itself (health, static files), and writing the response
//! (head and first chunk in one write, large chunks gathered into one
//! `writev`, files with `sendfile`). What is HTTP's alone (reading heads,
//! keep-alive, the PROXY header, draining an unread body) stays in
//! `connection.rs`.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use wsgi_core::{BodyReader, EmptyBody, Environ, EnvironOptions, Request};

use crate::record::RequestRecord;
use wsgi_http::{EncodeError, ResponseEncoder};

use crate::buffering::{buffer_body, BodyBudget, Buffered, Reservation};
use crate::date::with_http_date;
use crate::direct::{encode_head, DirectWrite, Written};
use crate::exchange::{AppBody, AppOutput, DisconnectOnDrop, Exchange, IoBatch, OutItem, OutItems};
use crate::pool::JobQueue;

/// Chunks at least this large are written with `writev` instead of being
/// copied into the write buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// What every connection of a process shares.
#[derive(Debug)]
pub struct Shared {
    /// HTTP codec limits.
    pub limits: wsgi_http::Config,
    /// uwsgi codec limits.
    pub uwsgi_limits: wsgi_uwsgi::Config,
    /// Timeouts.
    pub timeouts: crate::config::Timeouts,
    /// Environ shaping.
    pub environ: EnvironOptions,
    /// Trusted proxies.
    pub forwarded_allow_ips: wsgi_core::proxy::AllowList,
    /// Peers allowed on uwsgi listeners.
    pub uwsgi_allow_from: wsgi_core::proxy::AllowList,
    /// The application threads' queue.
    pub queue: Arc<JobQueue>,
    /// Which request bodies are read whole before the application is called.
    pub body_buffering: crate::config::BodyBuffering,
    /// The worker's memory for such bodies.
    pub body_budget: BodyBudget,
    /// Becomes `true` when the server stops gracefully.
    pub shutdown: watch::Receiver<bool>,
    /// `--static-map`: paths answered without the application.
    pub static_files: Option<crate::ops::static_files::StaticFiles>,
    /// What this worker counts (the scoreboard slot's counters).
    pub counters: &'static crate::scoreboard::RequestCounters,
    /// `--access-logfile`, and uWSGI's `--log-x-forwarded-for`.
    pub access_log: Option<(crate::ops::access_log::AccessLog, bool)>,
    /// `--health-path`, and whether its requests are access-logged.
    pub health: Option<(String, bool)>,
    /// A graceful stop has begun (the health path answers 503), before
    /// `shutdown` (which stops accepting) when `--drain-delay` is set.
    pub draining: std::sync::atomic::AtomicBool,
    /// Open HTTP connections of this worker (one alone may be lent to an
    /// application thread: `crate::linger`).
    pub open_connections: std::sync::atomic::AtomicUsize,
    /// `--proxy-protocol` and the peers allowed to send its header.
    pub proxy_protocol: (
        crate::net::proxy_protocol::Mode,
        wsgi_core::proxy::AllowList,
    ),
}

impl Shared {
    pub(crate) fn is_trusted(&self, peer: &wsgi_core::PeerAddr) -> bool {
        crate::config::peer_in_list(peer, &self.forwarded_allow_ips)
    }

    /// Whether `peer` may speak the uwsgi protocol to us.
    pub fn uwsgi_allowed(&self, peer: &wsgi_core::PeerAddr) -> bool {
        crate::config::peer_in_list(peer, &self.uwsgi_allow_from)
    }

    /// Whether the access log reads response headers.
    pub fn wants_response_headers(&self) -> bool {
        self.access_log
            .as_ref()
            .is_some_and(|(log, _)| !log.response_headers().is_empty())
    }

    /// A request's head has arrived: what its record needs from the head
    /// and environ (the headers the access log asks for only when there is
    /// one).
    pub fn request_began(&self, environ: &Environ, protocol: &'static str) -> RecordStart {
        self.counters
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut start = RecordStart {
            began: crate::date::monotonic_nanos(),
            record: None,
        };
        if let Some((log, x_forwarded_for)) = &self.access_log {
            let wanted = log.request_headers();
            let mut record = RequestRecord {
                started: Some(std::time::SystemTime::now()),
                method: environ.request_method.clone(),
                target: environ.request_uri.clone(),
                protocol,
                remote_addr: environ.remote_addr.clone(),
                peer_addr: environ
                    .get("PEER_ADDR")
                    .map_or_else(|| environ.remote_addr.clone(), Bytes::copy_from_slice),
                ..RequestRecord::default()
            };
            for (name, key) in wanted {
                if let Some(value) = environ.get(key) {
                    record
                        .request_headers
                        .push((Bytes::from(name.clone()), Bytes::copy_from_slice(value)));
                }
            }
            if *x_forwarded_for {
                // uWSGI: the first address of X-Forwarded-For, when sent.
                if let Some(first) = environ
                    .get("HTTP_X_FORWARDED_FOR")
                    .and_then(|value| value.split(|&byte| byte == b',').next())
                {
                    record.remote_addr = Bytes::copy_from_slice(first.trim_ascii());
                }
            }
            start.record = Some(Box::new(record));
        }
        start
    }

    /// A request is over: its counters, and its access-log line.
    pub fn request_ended(
        &self,
        start: RecordStart,
        served: &Served,
        bytes_in: u64,
        by_server: Option<bool>,
    ) {
        self.counters
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let tally = served.tally;
        let total = std::time::Duration::from_nanos(
            crate::date::monotonic_nanos().saturating_sub(start.began),
        );
        self.counters.count(
            tally.status,
            bytes_in,
            tally.bytes_out,
            total,
            tally.app_error,
        );
        // Without an access log there is no record to fill; health checks
        // are logged only when asked (`--health-log`).
        let (Some(mut record), Some((log, _))) = (start.record, &self.access_log) else {
            return;
        };
        if by_server == Some(false) {
            return;
        }
        record.status = tally.status;
        record.bytes_out = tally.bytes_out;
        record.bytes_in = bytes_in;
        record.incomplete = tally.incomplete;
        record.app_error = tally.app_error;
        record.total = total;
        record.served_by_server = by_server.is_some();
        if let Some(headers) = &served.response_headers {
            for name in log.response_headers() {
                if let Some((_, value)) = headers
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
                {
                    record
                        .response_headers
                        .push((Bytes::from(name.clone()), value.clone()));
                }
            }
        }
        log.log(record);
    }
}

/// What a request's record knows when its head arrives.
#[derive(Debug)]
pub struct RecordStart {
    /// `date::monotonic_nanos` when the head was read.
    began: u64,
    /// Filled only when an access log wants it.
    record: Option<Box<RequestRecord>>,
}

/// What the connection saw of a response, for the request record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// The status sent (0: none, the client left first).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The response was cut.
    pub incomplete: bool,
    /// The application raised.
    pub app_error: bool,
}

/// A stream we can serve on: tokio's TCP and unix streams.
pub trait Transport: AsyncRead + AsyncWrite + AsRawFd + Unpin {
    /// Waits until the socket is readable (or closed by the peer).
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>>;
    /// Waits until the socket is writable.
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>>;
    /// Runs a non-blocking write syscall, clearing readiness on `WouldBlock`.
    fn try_write_io<R>(&self, call: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// Forgets that the socket was readable: the caller knows that all it
    /// holds is someone else's (a body left for the application thread), so
    /// the next read waits for new bytes instead of asking the socket first.
    /// Only on the I/O thread, between polls of its driver: an arrival after
    /// the caller looked is a new event the driver has not delivered yet.
    fn forget_readable(&self);
    /// The socket, out of the I/O thread's poller (still non-blocking), to
    /// lend to an application thread (`crate::lend`).
    fn into_fd(self) -> io::Result<std::os::fd::OwnedFd>
    where
        Self: Sized;
    /// A socket [`Transport::into_fd`] gave, back in the poller.
    fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Self>
    where
        Self: Sized;
}

/// The two streams' `Transport`: the same calls on each type.
macro_rules! transport {
    ($tokio:ty, $std:ty) => {
        impl Transport for $tokio {
            async fn readable(&self) -> io::Result<()> {
                <$tokio>::readable(self).await
            }
            async fn writable(&self) -> io::Result<()> {
                <$tokio>::writable(self).await
            }
            fn try_write_io<R>(&self, call: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
                self.try_io(Interest::WRITABLE, call)
            }
            fn forget_readable(&self) {
                let _ = self.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
                Ok(self.into_std()?.into())
            }
            fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Self> {
                <$tokio>::from_std(<$std>::from(fd))
            }
        }
    };
}

transport!(tokio::net::TcpStream, std::net::TcpStream);
transport!(tokio::net::UnixStream, std::os::unix::net::UnixStream);

/// The response framing both protocols share ([`ServerConn`](wsgi_http::ServerConn) for HTTP,
/// a bare [`ResponseEncoder`] for uwsgi).
pub trait Framer {
    /// Encodes the head.
    fn encode_head(
        &mut self,
        head: &wsgi_http::ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError>;
    /// Frames `len` body bytes.
    fn frame_data(&mut self, len: u64) -> Result<wsgi_http::Frame, EncodeError>;
    /// Ends the body.
    fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), EncodeError>;
    /// A copy of the encoder for the current response, for a writer on
    /// another thread (`crate::direct`); `None` (the default) when the
    /// protocol never lends its socket or the head is out.
    fn prepare_encoder(&self) -> Option<ResponseEncoder> {
        None
    }
    /// Goes on from the encoder another writer used for the whole response;
    /// called only with an encoder from `prepare_encoder`.
    fn adopt_encoder(&mut self, _encoder: ResponseEncoder) {}
}

impl Framer for ResponseEncoder {
    fn encode_head(
        &mut self,
        head: &wsgi_http::ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        ResponseEncoder::encode_head(self, head, dst)
    }
    fn frame_data(&mut self, len: u64) -> Result<wsgi_http::Frame, EncodeError> {
        ResponseEncoder::frame_data(self, len)
    }
    fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        ResponseEncoder::encode_end(self, dst)
    }
}

/// Request-body decoding both protocols share.
pub trait BodyDecoder {
    /// Next body event from buffered bytes; `Ok(None)` needs more bytes.
    ///
    /// # Errors
    /// A malformed body: the status it deserves and a description.
    fn decode_body(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)>;
    /// The peer closed: whatever the buffered bytes still give.
    ///
    /// # Errors
    /// The body was cut short.
    fn decode_body_eof(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)>;
    /// Writes `100 Continue` (HTTP only).
    fn encode_continue(&mut self, _dst: &mut BytesMut) {}
    /// Whether [`BodyDecoder::skip_body`] can ever succeed (HTTP's can), so
    /// the socket is asked what it holds only then.
    const SKIPS_BODY: bool = false;
    /// Counts the next `len` body bytes as taken from the socket by someone
    /// else (the application thread, `crate::buffering`); `false`, changing
    /// nothing, when the protocol cannot (HTTP with a `Content-Length` can).
    fn skip_body(&mut self, _len: u64) -> bool {
        false
    }
}

/// A piece of request body.
#[derive(Debug)]
pub enum BodyEvent {
    /// Bytes.
    Data(Bytes),
    /// The end of the body.
    End,
}

/// How a response ended, for the connection's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Complete; the connection may be reused if the framing allows.
    Complete,
    /// The connection must be closed (cut response, short body, write error).
    Close,
}

/// The request body's progress on the connection side.
#[derive(Debug)]
pub struct BodyState {
    /// The decoder returned `End` (or failed).
    pub done: bool,
    /// The body was malformed or cut: the connection cannot be reused.
    pub failed: bool,
    /// The status a malformed body deserves (400, 413), for the answer if
    /// the application fails because of it.
    pub error_status: Option<u16>,
    /// `100 Continue` was sent, or not needed.
    pub continue_sent: bool,
    /// The body's length, when the request gives it.
    pub length: Option<u64>,
    /// Body bytes decoded so far.
    pub received: u64,
    /// The body's end was left in the socket for the application thread
    /// to receive (`crate::buffering`): the socket must be taken back, and
    /// what it did not read discarded, before the connection goes on.
    pub in_socket: bool,
}

impl BodyState {
    /// A body of the given kind; `length` when the request gives it.
    pub fn new(empty: bool, expect_continue: bool, length: Option<u64>) -> Self {
        BodyState {
            done: empty,
            failed: false,
            error_status: None,
            continue_sent: !expect_continue,
            length,
            received: 0,
            in_socket: false,
        }
    }

    /// A decoded piece of body: counted, and handed to the application.
    fn deliver(&mut self, event: BodyEvent, exchange: &Exchange) {
        match event {
            BodyEvent::Data(data) => {
                self.received += data.len() as u64;
                exchange.push_body(data);
            }
            BodyEvent::End => {
                self.done = true;
                exchange.end_body(None);
            }
        }
    }

    /// Decodes whatever body bytes are buffered into the exchange.
    pub fn feed(
        &mut self,
        decoder: &mut impl BodyDecoder,
        src: &mut BytesMut,
        exchange: &Exchange,
    ) {
        while !self.done {
            match decoder.decode_body(src) {
                Ok(Some(event)) => self.deliver(event, exchange),
                Ok(None) => return,
                Err((status, message)) => {
                    self.error_status = Some(status);
                    self.fail(exchange, io::ErrorKind::InvalidData, message);
                }
            }
        }
    }

    /// Decodes the buffered rest of the body after the peer closed.
    pub fn feed_eof(
        &mut self,
        decoder: &mut impl BodyDecoder,
        src: &mut BytesMut,
        exchange: &Exchange,
    ) {
        while !self.done {
            match decoder.decode_body_eof(src) {
                Ok(Some(event)) => self.deliver(event, exchange),
                Ok(None) => self.fail(
                    exchange,
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection before the end of the body".into(),
                ),
                Err((_, message)) => self.fail(exchange, io::ErrorKind::UnexpectedEof, message),
            }
        }
    }

    /// Ends the body as failed (or cut short).
    pub fn fail(&mut self, exchange: &Exchange, kind: io::ErrorKind, message: String) {
        self.done = true;
        self.failed = true;
        exchange.end_body(Some((kind, message)));
    }
}

/// What a protocol lends the request path for one request: its socket, its
/// codec (framing and body decoding), its buffers, the process's shared
/// state, and whether the connection closes after the response (uwsgi).
#[derive(Debug)]
pub struct Conn<'a, S, P> {
    /// The client's socket.
    pub stream: &'a mut S,
    /// The protocol's codec.
    pub protocol: &'a mut P,
    /// Bytes read and not yet decoded.
    pub read_buf: &'a mut BytesMut,
    /// Bytes encoded and not yet written.
    pub write_buf: &'a mut BytesMut,
    /// What every connection of the process shares.
    pub shared: &'a Shared,
    /// The connection closes after this response.
    pub close: bool,
    /// The connection's one timer, moved on rather than made anew for each
    /// wait: a later deadline only updates it (no timer-wheel insertion and
    /// removal per request, as a fresh `sleep_until` costs).
    pub timer: Pin<&'a mut Sleep>,
    /// The exchange of the connection's last request, for the next one to
    /// reuse ([`Exchange::renew`]).
    pub exchange: &'a mut Option<Arc<Exchange>>,
}

/// How a request ended on its connection.
#[derive(Debug, Clone)]
pub struct Served {
    /// Whether the connection may go on.
    pub outcome: Outcome,
    /// When the application thread wrote the response itself: the
    /// keep-alive timeout counts from then, not from when the task noticed.
    pub idle_since: Option<Instant>,
    /// What was sent.
    pub tally: Tally,
    /// The response's headers, kept only for an access log that reads them.
    pub response_headers: Option<Vec<(Bytes, Bytes)>>,
}

impl Served {
    /// Answered with `status` by the server (0: not at all), and closed.
    pub fn refused(status: u16) -> Self {
        Served {
            outcome: Outcome::Close,
            idle_since: None,
            tally: Tally {
                status,
                ..Tally::default()
            },
            response_headers: None,
        }
    }

    /// A response the application thread wrote whole (`crate::direct`).
    pub fn written(written: &mut crate::direct::Written, outcome: Outcome) -> Self {
        Served {
            outcome,
            idle_since: Some(Instant::from_std(written.at)),
            tally: Tally {
                status: written.status,
                bytes_out: written.body_len,
                ..Tally::default()
            },
            response_headers: written.headers.take(),
        }
    }
}

/// One request, whoever answers it: the health path, a static file, or
/// the application. Counted, and access-logged, whichever it was.
pub async fn serve_one<S: Transport, P: Framer + BodyDecoder>(
    conn: Conn<'_, S, P>,
    environ: Box<Environ>,
    body: &mut BodyState,
    protocol_name: &'static str,
) -> Served {
    let shared = conn.shared;
    let start = shared.request_began(&environ, protocol_name);
    let mut by_server = None;
    let reply = match health_reply(shared, &environ) {
        Some((reply, logged)) => {
            by_server = Some(logged);
            Some(reply)
        }
        None => static_reply(shared, &environ).inspect(|_| by_server = Some(true)),
    };
    let served = match reply {
        Some(reply) => answer_static(conn, reply, body).await,
        None => serve_request(conn, environ, body).await,
    };
    shared.request_ended(start, &served, body.received, by_server);
    served
}

/// Hands one request to the application and writes its response. Shared by
/// both protocols.
pub async fn serve_request<S: Transport, P: Framer + BodyDecoder>(
    conn: Conn<'_, S, P>,
    environ: Box<Environ>,
    body: &mut BodyState,
) -> Served {
    let Conn {
        stream,
        protocol,
        read_buf,
        write_buf,
        shared,
        close,
        timer,
        exchange: cached,
    } = conn;
    let exchange = Exchange::renew(cached, body.done, shared.timeouts.body);
    // Declared before anything that borrows the socket, so it runs while
    // the socket is still open, whatever ends this function.
    let _disconnect = DisconnectOnDrop(Arc::clone(&exchange));
    if !body.done && body.continue_sent {
        // Body bytes that came with the head go over before the application
        // starts, so small bodies never make it wait.
        body.feed(protocol, read_buf, &exchange);
    }
    // Held until the request is over: the application may keep the bytes.
    let mut reservation = Reservation::new(&shared.body_budget);
    let mut spool = None;
    if crate::buffering::wanted(shared, body, &environ.path_info) {
        let buffered = buffer_body(
            stream,
            protocol,
            read_buf,
            write_buf,
            body,
            &exchange,
            shared,
            &mut reservation,
        )
        .await;
        let refused = match buffered {
            Buffered::Ready => None,
            Buffered::Spooled(file) => {
                spool = Some(file);
                None
            }
            Buffered::Refused(status) => Some(status),
            Buffered::Closed => Some(0),
        };
        if let Some(status) = refused {
            if status != 0 {
                crate::log!(Debug, "request body refused while buffering: {status}");
                write_error(stream, status, write_buf).await;
            }
            body.failed = true;
            return Served::refused(status);
        }
    }
    // The body's buffer goes back to the allocator from this thread, which
    // allocated it (`Exchange::body_buffer`); taken before the application
    // can start reading.
    let body_buffer = if body.received > 0 {
        exchange.body_buffer()
    } else {
        None
    };
    let input: Box<dyn BodyReader> = match spool {
        None if body.in_socket => Box::new(AppBody::in_socket(
            Arc::clone(&exchange),
            body.length,
            stream.as_raw_fd(),
        )),
        // Nothing to read, now or later: a reader without state, which
        // boxes without an allocation.
        None if body.done && body.received == 0 && !body.failed => Box::new(EmptyBody),
        None => Box::new(AppBody::new(Arc::clone(&exchange), body.length)),
        Some(file) => Box::new(AppBody::spooled(Arc::clone(&exchange), body.length, file)),
    };
    let request = Request {
        environ,
        input,
        output: Box::new(AppOutput::new(Arc::clone(&exchange))),
    };
    let alone = match shared.queue.submit(request).await {
        Ok(alone) => alone,
        Err(_) => {
            write_error(stream, 503, write_buf).await;
            return Served::refused(503);
        }
    };
    // The only request in the pool, with its whole body in hand, on a
    // connection that goes on: this task has nothing to write before the
    // response, so the application thread may write it (it starts after
    // this I/O tick). Measured (docs/performance.md), direct writes pay
    // only then: under load the application thread's writes cost more than
    // the wake-ups they save, and a connection that closes after the
    // response needs the I/O thread for the close anyway.
    let mut watch_client = false;
    if alone && body.done && !close {
        if let Some(encoder) = protocol.prepare_encoder() {
            // Pipelined bytes are waiting, or the request holds body
            // budget (given back when this function returns, so at once,
            // not at the client's next move): the task must hear of the
            // response.
            watch_client = read_buf.is_empty() && !reservation.holds_any();
            let direct = DirectWrite::new(stream.as_raw_fd(), encoder, shared.shutdown.clone())
                .keeping_headers(shared.wants_response_headers());
            exchange.lend_direct(direct, !watch_client);
        }
    }
    let mut served = respond(
        Conn {
            stream,
            protocol,
            read_buf,
            write_buf,
            shared,
            close,
            timer,
            exchange: cached,
        },
        &exchange,
        body,
        watch_client,
    )
    .await;
    drop(body_buffer);
    if body.in_socket {
        // The codec counted those bytes as read: discard what the
        // application left of them before the next head is read (they are
        // in the socket already, so this does not wait for the client).
        let left = exchange.reclaim_socket();
        if left > 0 && !discard(stream.as_raw_fd(), left) {
            served.outcome = Outcome::Close;
        }
    }
    served
}

/// Reads and drops `len` bytes that are in the socket's receive queue
/// already (so no wait: the socket's readiness may have been forgotten,
/// `Transport::forget_readable`); whether all came.
fn discard(fd: RawFd, mut len: u64) -> bool {
    let mut scratch = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(64 * 1024)];
    while len > 0 {
        let want = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(scratch.len());
        // SAFETY: `scratch` has room for `want` bytes.
        let read = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        match usize::try_from(read) {
            Ok(0) => return false,
            Ok(read) => len -= read as u64,
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes the response of a request in `exchange`: what the application
/// produces, body bytes still to read, and (`watch_client`, when the
/// application thread may write the response itself) the client's next
/// move meanwhile.
async fn respond<S: Transport, P: Framer + BodyDecoder>(
    conn: Conn<'_, S, P>,
    exchange: &Arc<Exchange>,
    body: &mut BodyState,
    watch_client: bool,
) -> Served {
    let Conn {
        stream,
        protocol,
        read_buf,
        write_buf,
        shared,
        close,
        mut timer,
        exchange: _,
    } = conn;
    let mut writer = ResponseWriter {
        head_written: false,
        close,
        shutdown: shared.shutdown.clone(),
        tally: Tally::default(),
        keep_headers: shared.wants_response_headers(),
        response_headers: None,
    };
    let mut client_wait = watch_client.then(|| {
        timer
            .as_mut()
            .reset(Instant::now() + shared.timeouts.keep_alive);
        ClientWait {
            stopping: shared.shutdown.clone(),
        }
    });
    let mut idle_since = None;
    let mut batch = IoBatch::default();
    let outcome = loop {
        let wait = if !body.done && body.continue_sent && exchange.wants_more_body() {
            SocketWait::Body
        } else if let Some(client_wait) = &mut client_wait {
            SocketWait::Client(client_wait)
        } else {
            SocketWait::Nothing
        };
        tokio::select! {
            () = poll_fn(|context| exchange.poll_batch(context, &mut batch)) => {
                client_wait = None;
                if let Some(mut written) = batch.written.take() {
                    idle_since = Some(Instant::from_std(written.at));
                    writer.tally.status = written.status;
                    writer.tally.bytes_out = written.body_len;
                    writer.response_headers = written.headers.take();
                    let outcome = finish_written(stream, protocol, written).await;
                    writer.tally.incomplete = outcome == Outcome::Close;
                    break outcome;
                }
                match writer.write_batch(stream, protocol, write_buf, &mut batch, body).await {
                    Ok(None) => {}
                    Ok(Some(outcome)) => break outcome,
                    Err(_) => {
                        writer.tally.incomplete = true;
                        break Outcome::Close;
                    }
                }
            }
            event = socket_event(stream, read_buf, wait, timer.as_mut()) => match event {
                SocketEvent::Read(Ok(0)) => body.feed_eof(protocol, read_buf, exchange),
                SocketEvent::Read(Ok(_)) => body.feed(protocol, read_buf, exchange),
                SocketEvent::Read(Err(error)) => {
                    body.fail(exchange, error.kind(), error.to_string())
                }
                SocketEvent::Client => {
                    // The client is back (or the keep-alive time is up, or
                    // the server stops): from now on, be woken by the
                    // application thread when it is done.
                    client_wait = None;
                    exchange.want_written_wake();
                }
            },
        }
    };
    Served {
        outcome,
        idle_since,
        tally: writer.tally,
        response_headers: writer.response_headers,
    }
}

/// Finishes a request an application thread read on a lent connection
/// (`crate::lend`) whose response needs the I/O thread after all.
pub async fn resume<S: Transport, P: Framer + BodyDecoder>(
    conn: Conn<'_, S, P>,
    exchange: Arc<Exchange>,
) -> Served {
    let _disconnect = DisconnectOnDrop(Arc::clone(&exchange));
    let mut body = BodyState::new(true, false, Some(0));
    respond(conn, &exchange, &mut body, false).await
}

/// `--health-path`: answered here, without the application: 200 while
/// the worker serves, 503 from the moment it drains (a graceful stop), so
/// a load balancer stops sending before the listener closes. The flag says
/// whether the request is access-logged.
pub fn health_reply(
    shared: &Shared,
    environ: &Environ,
) -> Option<(crate::ops::static_files::Reply, bool)> {
    let (path, logged) = shared.health.as_ref()?;
    if environ.path_info.as_ref() != path.as_bytes() || !environ.script_name.is_empty() {
        return None;
    }
    use crate::ops::static_files::{field, text_reply};
    let method = environ.request_method.as_ref();
    let status = if method != b"GET" && method != b"HEAD" {
        405
    } else if shared.draining.load(std::sync::atomic::Ordering::Relaxed)
        || *shared.shutdown.borrow()
    {
        503
    } else {
        200
    };
    let mut headers = vec![field("Cache-Control", "no-store")];
    if status == 405 {
        headers.push(field("Allow", "GET, HEAD"));
    }
    Some((text_reply(status, headers), *logged))
}

/// The hook of `--static-map` (`crate::ops::static_files`): the answer if
/// this request is for a static file, `None` to hand it to the application.
pub fn static_reply(shared: &Shared, environ: &Environ) -> Option<crate::ops::static_files::Reply> {
    shared.static_files.as_ref()?.reply(environ)
}

/// Sends a static file's answer through the usual response path (the
/// encoder's framing, `sendfile` for the file) and goes on with the
/// connection; the application never sees the request. A request body is
/// not read: the connection closes after the answer then.
pub async fn answer_static<S: Transport, P: Framer + BodyDecoder>(
    conn: Conn<'_, S, P>,
    reply: crate::ops::static_files::Reply,
    body: &mut BodyState,
) -> Served {
    let Conn {
        stream,
        protocol,
        read_buf,
        write_buf,
        shared,
        mut close,
        timer: _,
        exchange: _,
    } = conn;
    if !body.done {
        // An empty body still ends with the codec's `End` event.
        match protocol.decode_body(read_buf) {
            Ok(Some(BodyEvent::End)) => body.done = true,
            _ => close = true,
        }
    }
    let items = match reply.body {
        crate::ops::static_files::ReplyBody::Empty => OutItems::default(),
        crate::ops::static_files::ReplyBody::Text(text) => OutItems::one(OutItem::Data(text)),
        crate::ops::static_files::ReplyBody::File(region) => OutItems::one(OutItem::File(region)),
    };
    let mut batch = IoBatch {
        head: Some(reply.head),
        items,
        finished: true,
        ..IoBatch::default()
    };
    let mut writer = ResponseWriter {
        head_written: false,
        close,
        shutdown: shared.shutdown.clone(),
        tally: Tally::default(),
        keep_headers: shared.wants_response_headers(),
        response_headers: None,
    };
    let written = writer
        .write_batch(stream, protocol, write_buf, &mut batch, body)
        .await;
    let outcome = match written {
        Ok(Some(Outcome::Complete)) if !close => Outcome::Complete,
        _ => Outcome::Close,
    };
    Served {
        outcome,
        idle_since: None,
        tally: writer.tally,
        response_headers: writer.response_headers,
    }
}

/// While the application thread may write the response itself, the task
/// waits for its client instead, until the connection's timer (the
/// keep-alive timeout) or a graceful stop.
#[derive(Debug)]
struct ClientWait {
    stopping: watch::Receiver<bool>,
}

/// What the task waits for on the socket while a request is served.
enum SocketWait<'a> {
    /// More request body.
    Body,
    /// The client's next move (see [`ClientWait`]).
    Client(&'a mut ClientWait),
    /// Nothing: only the application's output.
    Nothing,
}

enum SocketEvent {
    Read(io::Result<usize>),
    Client,
}

async fn socket_event<S: Transport>(
    stream: &mut S,
    read_buf: &mut BytesMut,
    wait: SocketWait<'_>,
    timer: Pin<&mut Sleep>,
) -> SocketEvent {
    match wait {
        SocketWait::Body => SocketEvent::Read(read_some(stream, read_buf, BODY_READ_CHUNK).await),
        SocketWait::Client(client_wait) => {
            tokio::select! {
                _ = stream.readable() => {}
                _ = timer => {}
                _ = client_wait.stopping.changed() => {}
            }
            SocketEvent::Client
        }
        SocketWait::Nothing => std::future::pending().await,
    }
}

/// Takes over after the application thread wrote the response: what the
/// socket did not take, and the encoder's state.
async fn finish_written<S: Transport, P: Framer>(
    stream: &mut S,
    protocol: &mut P,
    written: Written,
) -> Outcome {
    if let Some(error) = written.error {
        crate::log!(
            Debug,
            "writing the response: {error}; closing the connection"
        );
        return Outcome::Close;
    }
    for part in &written.unwritten {
        if stream.write_all(part).await.is_err() {
            return Outcome::Close;
        }
    }
    protocol.adopt_encoder(written.encoder);
    Outcome::Complete
}

/// Room made in the read buffer for a request head: most heads are a few
/// hundred bytes, and an idle keep-alive connection should cost little.
pub(crate) const HEAD_READ_CHUNK: usize = 8 * 1024;
/// A keep-alive connection's read buffer between requests, and what a
/// read for a head asks room for: a usual head fits, and 128 idle
/// connections hold 256 KiB for it, not 1-2 MiB (a larger head grows it:
/// worker RSS at 128 connections 14.0 -> 12.6 MiB). Not 1 KiB: a browser's
/// head with its cookies often passes that, and would then take a read
/// more (and miss the one read a fresh connection's request gets, see
/// `crate::lend::serve_fresh`) to save ~0.3 MiB at 128 connections.
pub(crate) const IDLE_READ_BUF: usize = 2 * 1024;
/// Room made for request-body reads: fewer system calls per upload.
pub(crate) const BODY_READ_CHUNK: usize = 64 * 1024;

/// Reads more bytes, making `chunk` bytes of room when the buffer is nearly
/// full (a `BytesMut` whose split-off parts are gone reuses its allocation).
pub async fn read_some<S: Transport>(
    stream: &mut S,
    read_buf: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    if read_buf.capacity() - read_buf.len() < chunk / 4 {
        read_buf.reserve(chunk);
    }
    stream.read_buf(read_buf).await
}

/// Writes what the application produced.
#[derive(Debug)]
struct ResponseWriter {
    head_written: bool,
    /// The protocol closes after every response (uwsgi).
    close: bool,
    /// A graceful stop adds `Connection: close` to responses that start after it.
    shutdown: watch::Receiver<bool>,
    /// What was sent, for the request record.
    tally: Tally,
    /// Keep the response's headers (an access log reads them).
    keep_headers: bool,
    /// The response's headers, when kept.
    response_headers: Option<Vec<(Bytes, Bytes)>>,
}

impl ResponseWriter {
    /// Returns `Some(outcome)` when the response is over.
    async fn write_batch<S: Transport, P: Framer + BodyDecoder>(
        &mut self,
        stream: &mut S,
        protocol: &mut P,
        write_buf: &mut BytesMut,
        // By reference: an async fn keeps a by-value argument twice in its
        // state (as given and as moved into its body), and this one is
        // 256 bytes, in every connection task's state.
        batch: &mut IoBatch,
        body: &mut BodyState,
    ) -> io::Result<Option<Outcome>> {
        if batch.body_wanted && !body.continue_sent && !self.head_written {
            // RFC 9110 §10.1.1: `100 Continue` once the application reads.
            protocol.encode_continue(write_buf);
            body.continue_sent = true;
        }
        let close = self.close || *self.shutdown.borrow();
        if let Some(head) = &batch.head {
            let known_length =
                if head.content_length.is_none() && batch.finished && batch.aborted.is_none() {
                    batch.items.iter().try_fold(0u64, |total, item| match item {
                        OutItem::Data(data) => Some(total + data.len() as u64),
                        OutItem::File(_) => None,
                    })
                } else {
                    None
                };
            let encoded = encode_head(protocol, head, known_length, close, write_buf);
            if let Err(error) = encoded {
                // The encoder wrote nothing: no byte of this response is out,
                // so the client gets a 500 rather than a silent close. The
                // connection closes after it, as the application may still
                // be producing the response it meant.
                crate::log!(
                    Error,
                    "the application's response head cannot be sent ({error}); answering 500"
                );
                let mut gathered = Vec::new();
                let ended = encode_status_response(protocol, write_buf, &mut gathered, 500, true)
                    .and_then(|()| {
                        protocol
                            .encode_end(write_buf)
                            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))
                    });
                self.tally.app_error = true;
                if ended.is_ok() {
                    self.head_written = true;
                    self.tally.status = 500;
                    flush_gathered(stream, write_buf, &mut gathered).await?;
                }
                return Ok(Some(Outcome::Close));
            }
            self.head_written = true;
            self.tally.status = head.status;
            if self.keep_headers {
                self.response_headers = Some(head.headers.clone());
            }
        }
        // Large chunks are not copied: they wait in `gathered`, in order
        // with what `write_buf` held before them, and the whole batch
        // leaves in one writev (a 1 MiB stream in 64 KiB chunks: a few
        // system calls instead of one per chunk).
        let mut gathered = Vec::new();
        for item in batch.items.drain() {
            match item {
                OutItem::Data(data) => {
                    self.tally.bytes_out += data.len() as u64;
                    gather_data(protocol, write_buf, &mut gathered, data)?
                }
                OutItem::File(region) => {
                    flush_gathered(stream, write_buf, &mut gathered).await?;
                    self.write_file(stream, protocol, write_buf, region).await?
                }
            }
            if gathered.len() >= GATHER_LIMIT {
                flush_gathered(stream, write_buf, &mut gathered).await?;
            }
        }
        if let Some(message) = batch.aborted.take() {
            self.tally.app_error = body.error_status.is_none();
            if self.head_written {
                self.tally.incomplete = true;
                // PEP 3333: an error after the head was sent can only cut the
                // connection, so the client sees an incomplete response.
                flush_gathered(stream, write_buf, &mut gathered).await?;
                crate::log!(Debug, "response cut after an application error: {message}");
                return Ok(Some(Outcome::Close));
            }
            write_buf.clear();
            // A malformed or oversized body made the application fail: the
            // client gets the codec's status (400, 413), not a 500.
            let status = body.error_status.unwrap_or(500);
            if encode_status_response(protocol, write_buf, &mut gathered, status, close).is_err() {
                return Ok(Some(Outcome::Close));
            }
            self.head_written = true;
            self.tally.status = status;
        }
        if batch.finished {
            let ended = protocol.encode_end(write_buf);
            flush_gathered(stream, write_buf, &mut gathered).await?;
            if let Err(error) = ended {
                crate::log!(Warning, "{error}; closing the connection");
                return Ok(Some(Outcome::Close));
            }
            return Ok(Some(Outcome::Complete));
        }
        flush_gathered(stream, write_buf, &mut gathered).await?;
        Ok(None)
    }

    async fn write_file<S: Transport, P: Framer>(
        &mut self,
        stream: &mut S,
        protocol: &mut P,
        write_buf: &mut BytesMut,
        region: wsgi_core::FileRegion,
    ) -> io::Result<()> {
        let file_len = region.file.metadata()?.len();
        let available = file_len.saturating_sub(region.offset);
        let wanted = region.len.map_or(available, |len| len.min(available));
        let frame = frame(protocol, wanted)?;
        if frame.len == 0 {
            return Ok(());
        }
        self.tally.bytes_out += frame.len;
        write_buf.extend_from_slice(frame.prefix.as_ref());
        flush(stream, write_buf).await?;
        send_file(stream, region.file.as_raw_fd(), region.offset, frame.len).await?;
        write_buf.extend_from_slice(frame.suffix);
        Ok(())
    }
}

/// Encodes a whole `text/plain` response whose body is the status's reason
/// phrase (the end is left to the caller).
fn encode_status_response<P: Framer>(
    protocol: &mut P,
    write_buf: &mut BytesMut,
    gathered: &mut Vec<Bytes>,
    status: u16,
    close: bool,
) -> io::Result<()> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Internal Server Error");
    let body_text: &'static [u8] = reason.as_bytes();
    with_http_date(|date| {
        protocol.encode_head(
            &wsgi_http::ResponseHead {
                status,
                reason: body_text,
                headers: &[(b"Content-Type", b"text/plain")],
                date: Some(date),
                content_length: Some(body_text.len() as u64),
                close,
            },
            write_buf,
        )
    })
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    gather_data(protocol, write_buf, gathered, Bytes::from_static(body_text))
}

fn frame<P: Framer>(protocol: &mut P, len: u64) -> io::Result<wsgi_http::Frame> {
    protocol
        .frame_data(len)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))
}

/// Writes `write_buf` whole.
pub async fn flush<S: Transport>(stream: &mut S, write_buf: &mut BytesMut) -> io::Result<()> {
    if !write_buf.is_empty() {
        stream.write_all(write_buf).await?;
        write_buf.clear();
    }
    Ok(())
}

/// Large chunks gathered for one writev, at most (`IOV_MAX` is 1024).
const GATHER_LIMIT: usize = 64;

/// Frames `data` into `write_buf`, or, when it is large, moves what
/// `write_buf` holds and the chunk itself to `gathered` (no copy).
fn gather_data<P: Framer>(
    protocol: &mut P,
    write_buf: &mut BytesMut,
    gathered: &mut Vec<Bytes>,
    mut data: Bytes,
) -> io::Result<()> {
    let frame = frame(protocol, data.len() as u64)?;
    if frame.len == 0 {
        return Ok(());
    }
    // Not `slice`: that clones, and a clone of bytes copied from Python
    // (a plain vector) allocates their shared header.
    data.truncate(frame.len as usize);
    write_buf.extend_from_slice(frame.prefix.as_ref());
    if data.len() < COPY_LIMIT {
        write_buf.extend_from_slice(&data);
    } else {
        if !write_buf.is_empty() {
            gathered.push(write_buf.split().freeze());
        }
        gathered.push(data);
    }
    write_buf.extend_from_slice(frame.suffix);
    Ok(())
}

/// Writes the gathered chunks and then `write_buf`, in one writev.
async fn flush_gathered<S: Transport>(
    stream: &mut S,
    write_buf: &mut BytesMut,
    gathered: &mut Vec<Bytes>,
) -> io::Result<()> {
    if gathered.is_empty() {
        return flush(stream, write_buf).await;
    }
    let mut parts: Vec<&[u8]> = gathered.iter().map(|part| &part[..]).collect();
    parts.push(write_buf);
    write_all_vectored(stream, &mut parts).await?;
    gathered.clear();
    write_buf.clear();
    Ok(())
}

async fn write_all_vectored<S: Transport>(stream: &mut S, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        if parts[first].is_empty() {
            first += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = parts[first..]
            .iter()
            .map(|part| IoSlice::new(part))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && first < parts.len() {
            let take = written.min(parts[first].len());
            parts[first] = &parts[first][take..];
            written -= take;
            if parts[first].is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

/// `sendfile(2)` of `len` bytes from `offset`, on a non-blocking socket.
async fn send_file<S: Transport>(stream: &S, file: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let socket = stream.as_raw_fd();
    let mut offset = offset as libc::off_t;
    let mut remaining = len;
    while remaining > 0 {
        stream.writable().await?;
        let step = remaining.min(1 << 30) as usize;
        let result = stream.try_write_io(|| {
            // SAFETY: both descriptors are open for the duration of the call
            // and `offset` is a valid pointer to a local.
            let sent = unsafe { libc::sendfile(socket, file, &mut offset, step) };
            if sent < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(sent as u64)
            }
        });
        match result {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its announced length",
                ))
            }
            Ok(sent) => remaining -= sent,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Answers a request we refuse (400, 408, 413, 414, 431, 503...) and lets
/// the caller close the connection.
pub async fn write_error<S: Transport>(stream: &mut S, status: u16, write_buf: &mut BytesMut) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Error");
    let mut encoder = ResponseEncoder::new(http::Version::HTTP_11, false, false);
    write_buf.clear();
    let encoded = with_http_date(|date| {
        encoder.encode_head(
            &wsgi_http::ResponseHead {
                status,
                reason: reason.as_bytes(),
                headers: &[(b"Content-Type", b"text/plain")],
                date: Some(date),
                content_length: Some(reason.len() as u64),
                close: true,
            },
            write_buf,
        )
    });
    if encoded.is_ok() {
        write_buf.extend_from_slice(reason.as_bytes());
        let _ = stream.write_all(write_buf).await;
        let _ = stream.shutdown().await;
    }
    write_buf.clear();
}
