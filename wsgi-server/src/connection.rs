//! One HTTP/1.x client connection: read each request head with the codec
//! (after a PROXY header when configured), hand the request to the
//! protocol-neutral path (`crate::request`), and keep the connection alive
//! or close it.
//!
//! # Theory of operation (HTTP)
//! ```text
//!   Idle ──bytes──▶ Head ──head──▶ Serving ──finished──▶ Drain ──▶ Idle (keep-alive)
//!    │  keep-alive   │ header        │ select: output ⟷ body    │ unread body > limit
//!    ▼  timeout      ▼ timeout/400   ▼ write error               ▼
//!  close           close           close                       close
//! ```
//! Before the request is queued, its body is read whole (in memory or into
//! a file) unless it is too large or streaming was asked for
//! ([`crate::buffering`]). A graceful stop closes nothing here: a response
//! that starts after it says `Connection: close`, and an idle connection
//! waits for its next request or its keep-alive timeout as usual.
//!
//! While serving, the task waits on two things at once: output from the
//! application (head, chunks, end) and, while the application may still read
//! the body, more body bytes from the socket. The head and the first chunk
//! leave in one write; a response that finished before the connection saw it
//! gets a `Content-Length` even if the application gave none.
//!
//! When a request is the only one in the pool, its body is in hand and the
//! connection goes on after it, the task lends the application thread the
//! socket for a response complete in one piece ([`crate::direct`]) and
//! waits for its client rather than for the application: the next request
//! (or the client's close, the keep-alive timeout, a graceful stop) wakes it,
//! and it takes the written response from the exchange. At one connection
//! that is 2.0 context switches per request instead of 3.7.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures::future::Either;
use tokio::time::{timeout_at, Instant, Sleep};
use wsgi_core::{ConnInfo, Environ};

use wsgi_http::{EncodeError, Event, RequestHead, ResponseEncoder, ServerConn};

use crate::lend::{Back, Home, LentHttp, Returned};
use crate::request::{
    read_some, resume, serve_one, write_error, BodyDecoder, BodyEvent, BodyState, Conn, Framer,
    Outcome, Shared, Transport, BODY_READ_CHUNK, HEAD_READ_CHUNK, IDLE_READ_BUF,
};

/// Unread request-body bytes we discard to keep a connection alive; more
/// than this and the connection is closed instead.
const DRAIN_LIMIT: u64 = 1024 * 1024;

impl Framer for ServerConn {
    fn encode_head(
        &mut self,
        head: &wsgi_http::ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        ServerConn::encode_head(self, head, dst)
    }
    fn frame_data(&mut self, len: u64) -> Result<wsgi_http::Frame, EncodeError> {
        ServerConn::frame_data(self, len)
    }
    fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        ServerConn::encode_end(self, dst)
    }
    fn prepare_encoder(&self) -> Option<ResponseEncoder> {
        // Only for a connection that may go on (see `serve_request`).
        if !self.keep_alive() {
            return None;
        }
        ServerConn::prepare_encoder(self).ok()
    }
    fn adopt_encoder(&mut self, encoder: ResponseEncoder) {
        ServerConn::adopt_encoder(self, encoder);
    }
}

fn body_event(event: Option<Event>) -> Option<BodyEvent> {
    match event {
        Some(Event::Data(data)) => Some(BodyEvent::Data(data)),
        Some(Event::End) => Some(BodyEvent::End),
        Some(Event::Head(_)) | None => None,
    }
}

impl BodyDecoder for ServerConn {
    fn decode_body(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)> {
        self.decode(src)
            .map(body_event)
            .map_err(|error| (error.status().as_u16(), error.to_string()))
    }
    fn decode_body_eof(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)> {
        self.decode_eof(src)
            .map(body_event)
            .map_err(|error| (error.status().as_u16(), error.to_string()))
    }
    fn encode_continue(&mut self, dst: &mut BytesMut) {
        ServerConn::encode_continue(self, dst);
    }
    const SKIPS_BODY: bool = true;
    fn skip_body(&mut self, len: u64) -> bool {
        ServerConn::skip_body(self, len)
    }
}

/// Serves an HTTP/1.x connection until it closes.
/// (Not an `async fn`, for the reason `serve_from` gives.)
// An `async fn` would store its arguments twice (see `serve_from`).
#[allow(clippy::manual_async_fn)]
pub fn serve_http<S: Transport>(
    mut stream: S,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> {
    async move {
        let mut read_buf = BytesMut::with_capacity(IDLE_READ_BUF);
        let Some(conn) = proxy_header(&mut stream, &mut read_buf, conn, &shared).await else {
            return;
        };
        let conn = with_trust(conn, &shared);
        let codec = ServerConn::new(shared.limits.clone());
        serve_from(stream, conn, shared, codec, read_buf, None, None).await;
    }
}

/// `conn` with whether its peer is a trusted proxy (`--forwarded-allow-ips`).
pub fn with_trust(conn: ConnInfo, shared: &Shared) -> ConnInfo {
    let trusted = shared.is_trusted(&conn.peer);
    conn.with_trusted_proxy(trusted)
}

/// Serves a connection lent before it had a task
/// ([`crate::lend::serve_fresh`]) from where it stands; `conn` as
/// [`with_trust`] made it.
///
/// Not an `async fn`: one would keep its arguments in the task beside the
/// `serve_from` future they are moved into (the task was 5,016 bytes, now
/// only `serve_from`'s state), and an idle keep-alive connection holds its
/// task for as long as it stays open.
pub fn serve_adopted<S: Transport>(
    returned: Returned,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> {
    let stream = S::from_fd(returned.fd);
    match (stream, pending_of(returned.back)) {
        (Ok(stream), Ok(pending)) => Either::Left(serve_from(
            stream,
            conn,
            shared,
            returned.codec,
            returned.read_buf,
            Some(Instant::from_std(returned.idle_since)),
            pending,
        )),
        (stream, refused) => Either::Right(refuse(stream.ok(), refused.err().flatten())),
    }
}

/// Answers `status` (if any) on a returned connection that closes.
async fn refuse<S: Transport>(stream: Option<S>, status: Option<u16>) {
    if let (Some(mut stream), Some(status)) = (stream, status) {
        write_error(&mut stream, status, &mut BytesMut::new()).await;
    }
}

/// What a returned connection's task takes up (see [`Back`]): `Err` when
/// it closes, after answering the status if there is one.
fn pending_of(back: Back) -> Result<Option<Pending>, Option<u16>> {
    match back {
        Back::Idle => Ok(None),
        Back::Closed => Err(None),
        Back::Refused(status) => Err(Some(status)),
        Back::Head(head) => Ok(Some(Pending::Head(head))),
        Back::InFlight(exchange, start) => Ok(Some(Pending::InFlight(exchange, start))),
    }
}

/// The connection's loop, from a codec and buffer as they stand, perhaps
/// with a request to take up first.
#[allow(clippy::manual_async_fn)]
fn serve_from<S: Transport>(
    mut stream: S,
    conn: ConnInfo,
    shared: Arc<Shared>,
    mut codec: ServerConn,
    mut read_buf: BytesMut,
    mut idle_since: Option<Instant>,
    mut pending: Option<Pending>,
) -> impl Future<Output = ()> {
    // The arguments are captured by the block, not rebound: an `async fn`
    // keeps them twice in its state (3,624 -> ~3,100 bytes per connection).
    async move {
        // Grown on first use: a response the application thread writes itself
        // never needs it, and an idle connection should not hold a page for it.
        let mut write_buf = BytesMut::new();
        let _open = OpenConnection::count(&shared);
        // The connection's one timer (see `Conn::timer`); it is registered
        // only when first awaited.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(far_future()));
        // The last request's exchange, for the next to reuse.
        let mut last_exchange = None;
        // This connection as the request path borrows it, for one request.
        macro_rules! conn {
            () => {
                Conn {
                    stream: &mut stream,
                    protocol: &mut codec,
                    read_buf: &mut read_buf,
                    write_buf: &mut write_buf,
                    shared: &shared,
                    close: false,
                    timer: timer.as_mut(),
                    exchange: &mut last_exchange,
                }
            };
        }
        loop {
            let head = match pending.take() {
                Some(Pending::Head(head)) => head,
                Some(Pending::InFlight(exchange, start)) => {
                    let served = resume(conn!(), exchange).await;
                    shared.request_ended(start, &served, 0, None);
                    idle_since = served.idle_since;
                    if served.outcome == Outcome::Close
                        || !codec.keep_alive()
                        || codec.start_next_cycle().is_err()
                    {
                        return;
                    }
                    continue;
                }
                None => match read_head(
                    &mut stream,
                    &mut codec,
                    &mut read_buf,
                    &shared,
                    idle_since,
                    timer.as_mut(),
                )
                .await
                {
                    HeadRead::Head(head) => head,
                    HeadRead::Closed => return,
                    HeadRead::Refused(status) => {
                        write_error(&mut stream, status, &mut write_buf).await;
                        return;
                    }
                },
            };
            // Boxed at once: the request crosses to another thread, and a
            // moved box is a pointer, not ~600 bytes (callgrind: memcpy was 8 %
            // of the instructions per request).
            let environ = environ_of(&head, &conn, &shared);
            // Even an empty body ends with the codec's `End` event (the codec
            // pauses until it has been seen). Without a body it is taken
            // here, so the request's exchange starts complete: no lock taken
            // later to end its body. Unless `100 Continue` is awaited: that
            // stays the application's read's to trigger.
            let mut body = BodyState::new(false, head.expect_continue, head.body.known_length());
            if body.length == Some(0) && body.continue_sent {
                body.done = true;
                if !matches!(codec.decode_body(&mut read_buf), Ok(Some(BodyEvent::End))) {
                    // Not what a body of length 0 gives: close after this one.
                    body.failed = true;
                }
            }
            let protocol_name = version_name(head.version);
            drop(head);
            let served = serve_one(conn!(), environ, &mut body, protocol_name).await;
            idle_since = served.idle_since;
            if served.outcome == Outcome::Close || body.failed || !codec.keep_alive() {
                return;
            }
            if !body.done {
                // The application did not read its whole body. Without `100
                // Continue` the client may never send it: close. Otherwise read
                // and discard a bounded amount so the next request can be parsed.
                if !body.continue_sent
                    || !drain_body(&mut stream, &mut codec, &mut read_buf, &shared).await
                {
                    return;
                }
            }
            // A response that began before a graceful stop may have promised
            // keep-alive: the connection then stays until its next request
            // (answered with `Connection: close`) or its keep-alive timeout.
            if codec.start_next_cycle().is_err() {
                return;
            }
            // An idle keep-alive connection keeps small buffers, whatever its
            // last request needed.
            if write_buf.capacity() > BODY_READ_CHUNK {
                write_buf = BytesMut::new();
            }
            if read_buf.is_empty() && read_buf.capacity() > BODY_READ_CHUNK {
                read_buf = BytesMut::with_capacity(IDLE_READ_BUF);
            }
            // The application thread wrote that response itself, and this is
            // the worker's only connection: lend it to that thread for its
            // next requests (`crate::linger`), and wait until it comes back.
            // Not after a request with a body either: its client likely sends
            // another, which a lent thread would send home (at one
            // connection, 64 KiB uploads: 4.6 -> 2.9 context switches and
            // 14.4 -> 9.0 system calls per request without the lend and
            // return).
            if served.idle_since.is_none()
                || !read_buf.is_empty()
                || body.received > 0
                || !may_lend(&shared)
            {
                continue;
            }
            let Ok(fd) = stream.into_fd() else {
                return;
            };
            let home = Arc::new(Home::default());
            let lent = Box::new(LentHttp::new(
                fd,
                std::mem::replace(&mut codec, ServerConn::new(shared.limits.clone())),
                std::mem::take(&mut read_buf),
                conn.clone(),
                Arc::clone(&shared),
                Arc::clone(&home),
                idle_since.map_or_else(std::time::Instant::now, Instant::into_std),
            ));
            if let Err(lent) = shared.queue.lend(lent) {
                lent.go_home();
            }
            let returned = home.wait().await;
            stream = match S::from_fd(returned.fd) {
                Ok(stream) => stream,
                Err(_) => return,
            };
            codec = returned.codec;
            read_buf = returned.read_buf;
            idle_since = Some(Instant::from_std(returned.idle_since));
            pending = match pending_of(returned.back) {
                Ok(pending) => pending,
                Err(refused) => {
                    if let Some(status) = refused {
                        write_error(&mut stream, status, &mut write_buf).await;
                    }
                    return;
                }
            };
        }
    }
}

/// What a returned connection left for its task (see [`Back`]).
enum Pending {
    Head(Box<wsgi_http::RequestHead>),
    InFlight(Arc<crate::exchange::Exchange>, crate::request::RecordStart),
}

/// Whether to lend a connection now: it is the worker's only one, no stop
/// has begun, and every application thread is idle.
fn may_lend(shared: &Shared) -> bool {
    shared
        .open_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        == 1
        && !*shared.shutdown.borrow()
        && shared.queue.is_idle()
}

/// Counts an open HTTP connection in [`Shared::open_connections`] for its life.
struct OpenConnection<'a>(&'a Shared);

impl<'a> OpenConnection<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared
            .open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(shared)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The environ of a request head on this connection.
pub(crate) fn environ_of(head: &RequestHead, conn: &ConnInfo, shared: &Shared) -> Box<Environ> {
    Box::new(Environ::from_fields(
        &head.method,
        head.target.clone(),
        head.version,
        head.headers.iter(),
        head.headers.raw(),
        conn,
        &shared.environ,
    ))
}

/// A deadline no connection reaches (a year): the timer's start, never awaited as such.
pub(crate) fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600)
}

pub(crate) fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

enum HeadRead {
    Head(Box<wsgi_http::RequestHead>),
    Closed,
    Refused(u16),
}

/// Waits for the next request head: the keep-alive timeout while nothing
/// has arrived, the header timeout once the first byte has. A graceful stop
/// changes nothing here: an idle keep-alive connection is not closed under
/// its client (a proxy may be sending on it at that instant, and nginx does
/// not retry a POST that met a reset); its next request is answered with
/// `Connection: close`, or it closes when its keep-alive time runs out (the
/// proxy's shorter timeout closes it first) or the graceful timeout ends.
/// `idle_since`: when the last response went out, if that was before this
/// task noticed.
async fn read_head<S: Transport>(
    stream: &mut S,
    codec: &mut ServerConn,
    read_buf: &mut BytesMut,
    shared: &Shared,
    idle_since: Option<Instant>,
    mut timer: Pin<&mut Sleep>,
) -> HeadRead {
    let mut deadline: Option<Instant> = None;
    loop {
        match codec.decode(read_buf) {
            Ok(Some(Event::Head(head))) => return HeadRead::Head(Box::new(head)),
            Ok(Some(_)) => return HeadRead::Closed,
            Ok(None) => {}
            Err(error) => {
                crate::log!(Debug, "bad request: {error}");
                return HeadRead::Refused(error.status().as_u16());
            }
        }
        // Nothing yet: the keep-alive timeout (an idle connection may wait
        // that long). Part of a head: the header deadline, fixed at its first byte.
        let limit = if read_buf.is_empty() {
            idle_since.unwrap_or_else(Instant::now) + shared.timeouts.keep_alive
        } else {
            *deadline.get_or_insert_with(|| Instant::now() + shared.timeouts.header)
        };
        timer.as_mut().reset(limit);
        let read = tokio::select! {
            biased;
            read = read_some(stream, read_buf, IDLE_READ_BUF) => Ok(read),
            () = timer.as_mut() => Err(()),
        };
        match read {
            Ok(Ok(0)) => {
                return match codec.decode_eof(read_buf) {
                    Ok(Some(Event::Head(head))) => HeadRead::Head(Box::new(head)),
                    _ => HeadRead::Closed,
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return HeadRead::Closed,
            Err(_elapsed) if read_buf.is_empty() => return HeadRead::Closed,
            // A head that takes too long: 408 (RFC 9110 §15.5.9).
            Err(_elapsed) => return HeadRead::Refused(408),
        }
    }
}

/// `--proxy-protocol`: from an allowed load balancer, reads the PROXY
/// header before the first request and returns the connection as the
/// client it names (trust in forwarded headers is then judged on that
/// client, since a TCP balancer passes the client's bytes through). `None`:
/// the header was malformed, late or cut, and the connection is closed.
/// From any other peer nothing is read here, and a PROXY line is just a bad
/// request.
pub async fn proxy_header<S: Transport>(
    stream: &mut S,
    read_buf: &mut BytesMut,
    conn: ConnInfo,
    shared: &Shared,
) -> Option<ConnInfo> {
    use crate::net::proxy_protocol::{parse, Mode};
    let (mode, allowed) = &shared.proxy_protocol;
    let wsgi_core::PeerAddr::Tcp(peer) = conn.peer else {
        return Some(conn);
    };
    if *mode == Mode::Off || !allowed.contains(peer.ip()) {
        return Some(conn);
    }
    let deadline = Instant::now() + shared.timeouts.header;
    loop {
        match parse(read_buf, *mode) {
            Ok(Some(header)) => {
                let _ = read_buf.split_to(header.consumed);
                return Some(match header.source {
                    Some(source) => {
                        ConnInfo::new(wsgi_core::PeerAddr::Tcp(source), conn.local, conn.scheme)
                    }
                    None => conn,
                });
            }
            Ok(None) => {}
            Err(error) => {
                crate::log!(
                    Warning,
                    "PROXY protocol from {peer}: {error}; closing the connection"
                );
                return None;
            }
        }
        match timeout_at(deadline, read_some(stream, read_buf, HEAD_READ_CHUNK)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return None,
        }
    }
}

/// Reads and discards the rest of an unread body, up to [`DRAIN_LIMIT`].
/// Returns whether the connection can be reused.
async fn drain_body<S: Transport>(
    stream: &mut S,
    codec: &mut ServerConn,
    read_buf: &mut BytesMut,
    shared: &Shared,
) -> bool {
    let mut discarded = 0u64;
    let deadline = Instant::now() + shared.timeouts.header;
    loop {
        match codec.decode(read_buf) {
            Ok(Some(Event::Data(data))) => {
                discarded += data.len() as u64;
                if discarded > DRAIN_LIMIT {
                    return false;
                }
            }
            Ok(Some(Event::End)) => return true,
            Ok(Some(Event::Head(_))) | Err(_) => return false,
            Ok(None) => {
                match timeout_at(deadline, read_some(stream, read_buf, BODY_READ_CHUNK)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => return false,
                }
            }
        }
    }
}
