//! A uwsgi-protocol connection (nginx `uwsgi_pass`): one request per
//! connection, the response as plain HTTP/1.x, never chunked, then close.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::BytesMut;
use wsgi_core::{ConnInfo, EmptyBody, Environ, Request};
use wsgi_http::ResponseEncoder;
use wsgi_uwsgi::{Decoder, Event};

use tokio::time::{timeout_at, Instant};

use crate::direct::DirectWrite;
use crate::exchange::{AppOutput, Exchange};
use crate::lend::Adoption;
use crate::linger::{LentSlot, Linger, Next};
use crate::request::{
    health_reply, read_some, resume, serve_one, static_reply, write_error, BodyDecoder, BodyEvent,
    BodyState, Conn, Framer, Outcome, RecordStart, Served, Shared, Transport,
};

/// The uwsgi request decoder and an HTTP response encoder, as one protocol.
#[derive(Debug)]
struct UwsgiProtocol {
    decoder: Decoder,
    encoder: ResponseEncoder,
}

/// The body part of a decoder result.
fn body_event(
    decoded: Result<Option<Event>, wsgi_uwsgi::ParseError>,
) -> Result<Option<BodyEvent>, (u16, String)> {
    match decoded {
        Ok(Some(Event::Data(data))) => Ok(Some(BodyEvent::Data(data))),
        Ok(Some(Event::End)) => Ok(Some(BodyEvent::End)),
        Ok(Some(Event::Head(_))) | Ok(None) => Ok(None),
        Err(error) => Err((error.status_hint(), error.to_string())),
    }
}

impl BodyDecoder for UwsgiProtocol {
    fn decode_body(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)> {
        body_event(self.decoder.decode(src))
    }
    fn decode_body_eof(&mut self, src: &mut BytesMut) -> Result<Option<BodyEvent>, (u16, String)> {
        body_event(self.decoder.decode_eof(src))
    }
}

impl Framer for UwsgiProtocol {
    fn encode_head(
        &mut self,
        head: &wsgi_http::ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), wsgi_http::EncodeError> {
        self.encoder.encode_head(head, dst)
    }
    fn frame_data(&mut self, len: u64) -> Result<wsgi_http::Frame, wsgi_http::EncodeError> {
        self.encoder.frame_data(len)
    }
    fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), wsgi_http::EncodeError> {
        self.encoder.encode_end(dst)
    }
}

/// Serves one uwsgi request on `stream`, then closes it. A malformed packet
/// closes the connection without an answer and never reaches the
/// application: the peer is a proxy, not a person.
pub async fn serve_uwsgi<S: Transport>(stream: S, conn: ConnInfo, shared: Arc<Shared>) {
    if !allowed(&conn, &shared) {
        return;
    }
    let decoder = Decoder::new(shared.uwsgi_limits);
    serve_from(
        stream,
        conn,
        shared,
        decoder,
        BytesMut::with_capacity(READ_CHUNK),
    )
    .await;
}

const READ_CHUNK: usize = 8 * 1024;

fn allowed(conn: &ConnInfo, shared: &Shared) -> bool {
    let allowed = shared.uwsgi_allowed(&conn.peer);
    if !allowed {
        crate::log!(
            Warning,
            "uwsgi: refusing {:?}: not in --uwsgi-allow-from",
            conn.peer
        );
    }
    allowed
}

/// Reads the packet's head, from a decoder and buffer as they stand.
async fn serve_from<S: Transport>(
    mut stream: S,
    conn: ConnInfo,
    shared: Arc<Shared>,
    mut decoder: Decoder,
    mut read_buf: BytesMut,
) {
    let deadline = Instant::now() + shared.timeouts.header;
    let head = loop {
        match decoder.decode(&mut read_buf) {
            Ok(Some(Event::Head(head))) => break head,
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(error) => {
                crate::log!(Warning, "uwsgi: malformed packet, closing: {error}");
                return;
            }
        }
        match timeout_at(deadline, read_some(&mut stream, &mut read_buf, READ_CHUNK)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return,
        }
    };
    serve_head(stream, conn, shared, decoder, read_buf, head).await;
}

/// The response's framing for a request: plain HTTP/1.x, never chunked,
/// and the connection closes after it.
fn encoder_for(environ: &Environ) -> (ResponseEncoder, &'static str) {
    let http_10 = &environ.server_protocol[..] == b"HTTP/1.0";
    let version = if http_10 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    let is_head = &environ.request_method[..] == b"HEAD";
    (
        ResponseEncoder::new(version, is_head, false).with_keep_alive(false),
        if http_10 { "HTTP/1.0" } else { "HTTP/1.1" },
    )
}

/// Serves the request whose head was read.
async fn serve_head<S: Transport>(
    mut stream: S,
    conn: ConnInfo,
    shared: Arc<Shared>,
    decoder: Decoder,
    mut read_buf: BytesMut,
    head: wsgi_uwsgi::RequestHead,
) {
    let mut write_buf = BytesMut::new();
    // The uwsgi peer is the proxy itself: its variables are believed.
    let conn = conn.with_trusted_proxy(true);
    let environ = match Environ::from_cgi_block(
        head.vars.as_bytes(),
        head.vars.iter(),
        &conn,
        &shared.environ,
    ) {
        Ok(environ) => Box::new(environ),
        Err(error) => {
            crate::log!(Warning, "uwsgi: unusable request: {error}");
            write_error(&mut stream, 400, &mut write_buf).await;
            return;
        }
    };
    let (encoder, protocol_name) = encoder_for(&environ);
    let mut protocol = UwsgiProtocol { decoder, encoder };
    let mut body = BodyState::new(head.content_length == 0, false, Some(head.content_length));
    serve_one(
        Conn {
            stream: &mut stream,
            protocol: &mut protocol,
            read_buf: &mut read_buf,
            write_buf: &mut write_buf,
            shared: &shared,
            close: true,
            timer: std::pin::pin!(tokio::time::sleep_until(crate::connection::far_future())),
            // One request per connection: nothing to reuse.
            exchange: &mut None,
        },
        environ,
        &mut body,
        protocol_name,
    )
    .await;
}

/// A uwsgi connection that had no task, going to get one.
#[derive(Debug)]
pub struct UwsgiAdoptee {
    fd: OwnedFd,
    decoder: Decoder,
    encoder: Option<ResponseEncoder>,
    read_buf: BytesMut,
    back: UwsgiBack,
    conn: ConnInfo,
    /// See [`crate::lend::Adoptee::alive`].
    pub alive: tokio::sync::mpsc::Sender<()>,
}

/// Where a uwsgi connection with no task stands.
#[derive(Debug)]
enum UwsgiBack {
    /// The head is not (all) read.
    Start,
    /// The head, not answered here.
    Head(Box<wsgi_uwsgi::RequestHead>),
    /// A request an application thread runs, whose response the I/O
    /// thread must write.
    InFlight(Arc<Exchange>, RecordStart),
    /// Nothing to do: dropping it closes it.
    Closed,
}

impl UwsgiAdoptee {
    /// Serves the connection from where it stands, on a task.
    pub async fn serve<S: Transport>(self, shared: Arc<Shared>) {
        let UwsgiAdoptee {
            fd,
            decoder,
            encoder,
            mut read_buf,
            back,
            conn,
            alive,
        } = self;
        let Ok(mut stream) = S::from_fd(fd) else {
            return;
        };
        match back {
            UwsgiBack::Closed => {}
            UwsgiBack::Start => serve_from(stream, conn, shared, decoder, read_buf).await,
            UwsgiBack::Head(head) => {
                serve_head(stream, conn, shared, decoder, read_buf, *head).await;
            }
            UwsgiBack::InFlight(exchange, start) => {
                let Some(encoder) = encoder else {
                    return;
                };
                let mut protocol = UwsgiProtocol { decoder, encoder };
                let served = resume(
                    Conn {
                        stream: &mut stream,
                        protocol: &mut protocol,
                        read_buf: &mut read_buf,
                        write_buf: &mut BytesMut::new(),
                        shared: &shared,
                        close: true,
                        timer: std::pin::pin!(tokio::time::sleep_until(
                            crate::connection::far_future()
                        )),
                        exchange: &mut None,
                    },
                    exchange,
                )
                .await;
                shared.request_ended(start, &served, 0, None);
            }
        }
        drop(alive);
    }

    /// Its socket.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether there is nothing to serve.
    pub fn is_closed(&self) -> bool {
        matches!(self.back, UwsgiBack::Closed)
    }
}

/// A uwsgi connection lent to an application thread at its request (as
/// `crate::lend::serve_fresh` does for HTTP): the thread writes the
/// response and closes the socket.
#[derive(Debug)]
struct LentUwsgi {
    fd: OwnedFd,
    protocol: UwsgiProtocol,
    read_buf: BytesMut,
    conn: ConnInfo,
    shared: Arc<Shared>,
    adoption: Adoption<UwsgiAdoptee>,
    in_flight: Option<(Arc<Exchange>, RecordStart)>,
}

/// A uwsgi connection just accepted (`fd`, non-blocking, out of any
/// poller): when its whole request (without a body) is already here, it is
/// queued with the connection lent along, and an application thread
/// answers it and closes the socket. Otherwise what its task starts from.
/// Runs on the I/O thread.
///
/// # Errors
/// The connection needs a task.
pub fn serve_fresh_uwsgi(
    fd: OwnedFd,
    conn: ConnInfo,
    shared: &Arc<Shared>,
    adoption: Adoption<UwsgiAdoptee>,
) -> Result<(), Box<UwsgiAdoptee>> {
    // Boxed only when it goes to a task.
    let mut adoptee = UwsgiAdoptee {
        fd,
        decoder: Decoder::new(shared.uwsgi_limits),
        encoder: None,
        read_buf: BytesMut::new(),
        back: UwsgiBack::Start,
        // The uwsgi peer is the proxy itself: its variables are believed.
        conn: conn.with_trusted_proxy(true),
        alive: adoption.alive,
    };
    if !allowed(&adoptee.conn, shared) {
        adoptee.back = UwsgiBack::Closed;
        return Err(Box::new(adoptee));
    }
    let Some(reserved) = shared.queue.try_reserve() else {
        return Err(Box::new(adoptee));
    };
    match crate::lend::recv_now(
        adoptee.fd.as_raw_fd(),
        &mut adoptee.read_buf,
        READ_CHUNK / 2,
    ) {
        Ok(true) => {}
        Ok(false) => return Err(Box::new(adoptee)),
        Err(()) => {
            adoptee.back = UwsgiBack::Closed;
            return Err(Box::new(adoptee));
        }
    }
    let head = match adoptee.decoder.decode(&mut adoptee.read_buf) {
        Ok(Some(Event::Head(head))) => head,
        Ok(None) => return Err(Box::new(adoptee)),
        Ok(Some(_)) | Err(_) => {
            // The task reports the error (the decoder returns it again).
            return Err(Box::new(adoptee));
        }
    };
    let environ = match (
        head.content_length,
        Environ::from_cgi_block(
            head.vars.as_bytes(),
            head.vars.iter(),
            &adoptee.conn,
            &shared.environ,
        ),
    ) {
        (0, Ok(environ)) => Box::new(environ),
        _ => {
            adoptee.back = UwsgiBack::Head(Box::new(head));
            return Err(Box::new(adoptee));
        }
    };
    if health_reply(shared, &environ).is_some()
        || static_reply(shared, &environ).is_some()
        || *shared.shutdown.borrow()
    {
        adoptee.back = UwsgiBack::Head(Box::new(head));
        return Err(Box::new(adoptee));
    }
    drop(head);
    // No body: `End` comes at once.
    if !matches!(
        adoptee.decoder.decode(&mut adoptee.read_buf),
        Ok(Some(Event::End))
    ) {
        adoptee.back = UwsgiBack::Closed;
        return Err(Box::new(adoptee));
    }
    let (encoder, protocol_name) = encoder_for(&environ);
    let start = shared.request_began(&environ, protocol_name);
    let exchange = Exchange::new(true, shared.timeouts.body);
    let direct = DirectWrite::new(
        adoptee.fd.as_raw_fd(),
        encoder.clone(),
        shared.shutdown.clone(),
    )
    .keeping_headers(shared.wants_response_headers())
    .closed_by_writer(true);
    exchange.lend_direct(direct, false);
    let request = Request {
        environ,
        // No body: a reader without state or allocation.
        input: Box::new(EmptyBody),
        output: Box::new(AppOutput::new(Arc::clone(&exchange))),
    };
    let UwsgiAdoptee {
        fd,
        decoder,
        read_buf,
        conn,
        alive,
        ..
    } = adoptee;
    let lent = Box::new(LentUwsgi {
        fd,
        protocol: UwsgiProtocol { decoder, encoder },
        read_buf,
        conn,
        shared: Arc::clone(shared),
        adoption: Adoption {
            adopter: adoption.adopter,
            alive,
        },
        in_flight: Some((exchange, start)),
    });
    match reserved.submit(request, lent) {
        Ok(()) => Ok(()),
        Err((request, mut lent)) => {
            // A stop closed the queue meanwhile: the connection closes.
            drop(request);
            if let Some((exchange, start)) = lent.in_flight.take() {
                exchange.disconnect();
                lent.shared
                    .request_ended(start, &Served::refused(503), 0, None);
            }
            Err(Box::new(lent.into_adoptee(UwsgiBack::Closed)))
        }
    }
}

impl LentUwsgi {
    fn into_adoptee(self: Box<Self>, back: UwsgiBack) -> UwsgiAdoptee {
        let LentUwsgi {
            fd,
            protocol,
            read_buf,
            conn,
            adoption,
            ..
        } = *self;
        UwsgiAdoptee {
            fd,
            decoder: protocol.decoder,
            encoder: Some(protocol.encoder),
            read_buf,
            back,
            conn,
            alive: adoption.alive,
        }
    }

    /// To the listener's adopter, for a task; closed if it is gone.
    fn send_home(self: Box<Self>, back: UwsgiBack) {
        let adopter = self.adoption.adopter.clone();
        let _ = adopter.send(self.into_adoptee(back));
    }
}

impl Linger for LentUwsgi {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn deadline(&self) -> std::time::Instant {
        // Never waits for a next request: one request per connection.
        std::time::Instant::now()
    }

    fn next(self: Box<Self>, _slot: &LentSlot) -> Next {
        self.go_home();
        Next::Home
    }

    fn after_request(mut self: Box<Self>) -> Option<Box<dyn Linger>> {
        let (exchange, start) = self.in_flight.take()?;
        exchange.clear_lent_inline();
        let written = exchange
            .take_written()
            .filter(|written| written.unwritten.is_empty() && written.error.is_none());
        let Some(mut written) = written else {
            // Not written here after all: a task finishes it.
            self.send_home(UwsgiBack::InFlight(exchange, start));
            return None;
        };
        let served = Served::written(&mut written, Outcome::Close);
        self.shared.request_ended(start, &served, 0, None);
        exchange.disconnect();
        // Dropped: the socket closes.
        None
    }

    fn go_home(mut self: Box<Self>) {
        match self.in_flight.take() {
            Some((exchange, start)) => {
                exchange.clear_lent_inline();
                self.send_home(UwsgiBack::InFlight(exchange, start));
            }
            None => drop(self),
        }
    }

    fn taken_by(&self, slot: &LentSlot) {
        if let Some((exchange, _)) = &self.in_flight {
            exchange.mark_lent_inline(slot.clone());
        }
    }
}
