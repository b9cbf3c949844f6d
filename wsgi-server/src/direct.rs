//! Small complete responses written by the application thread itself, so
//! the I/O thread is not woken to write them.
//!
//! # Theory of operation
//! When a request is alone in the pool, its body is in hand and its
//! connection goes on after it (`connection::serve_request` says why only
//! then), the connection lends the application thread what it needs to
//! answer alone: the socket's
//! descriptor and a copy of the response encoder ([`DirectWrite`]). If the
//! application's response turns out to be complete in one piece (a body
//! that fills its `Content-Length`, or an empty one), the application
//! thread encodes head and body and writes them with one non-blocking
//! `sendmsg`, as bjoern or a gunicorn sync worker would, and hands the
//! encoder back ([`Written`]). Anything else (a streamed body, a file, an
//! error before the body) goes the usual way through the I/O thread.
//!
//! The write never blocks: what the socket buffer does not take is handed to
//! the I/O thread. The [`Exchange`](crate::exchange::Exchange) lock is held
//! during the write, and the connection takes that lock before it lets the
//! socket go, so the descriptor cannot be closed (and reused) under the
//! writer.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use wsgi_core::ResponseHead;
use wsgi_http::{EncodeError, ResponseEncoder};

use crate::date::with_http_date;
use crate::request::Framer;

/// Bodies at least this large are not copied into the write buffer but
/// written from their own memory (`sendmsg` with two parts).
const COPY_LIMIT: usize = 16 * 1024;
/// A write buffer that grew past this is not kept for the next response.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// The application thread's write buffer, reused across responses.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// What an application thread needs to write a response itself.
#[derive(Debug)]
pub struct DirectWrite {
    fd: RawFd,
    encoder: ResponseEncoder,
    /// Becomes `true` on a graceful stop: the response then says
    /// `Connection: close`, as the I/O thread's would.
    stopping: watch::Receiver<bool>,
    /// The access log reads response headers: keep a copy of them.
    keep_headers: bool,
    /// The writing thread closes the socket itself as soon as the request
    /// ends (a connection lent with its first request).
    closed_by_writer: bool,
}

/// A response the application thread wrote.
#[derive(Debug)]
pub struct Written {
    /// The encoder after the response: the connection goes on from it.
    pub encoder: ResponseEncoder,
    /// Bytes the socket did not take without blocking, in order.
    pub unwritten: Vec<Bytes>,
    /// The write failed (the client went away): close the connection.
    pub error: Option<io::Error>,
    /// When the response was written: the keep-alive timeout counts from here.
    pub at: std::time::Instant,
    /// The status sent, and the body's length (for the request record).
    pub status: u16,
    /// Body bytes of the response.
    pub body_len: u64,
    /// The response's headers, when asked for (`keep_headers`).
    pub headers: Option<Vec<(Bytes, Bytes)>>,
}

impl DirectWrite {
    /// Lends `fd` and a prepared encoder (see
    /// [`ServerConn::prepare_encoder`](wsgi_http::ServerConn::prepare_encoder)).
    pub fn new(fd: RawFd, encoder: ResponseEncoder, stopping: watch::Receiver<bool>) -> Self {
        DirectWrite {
            fd,
            encoder,
            stopping,
            keep_headers: false,
            closed_by_writer: false,
        }
    }

    /// Says that the writing thread closes the socket as soon as the
    /// request ends (see [`write`](Self::write)'s `returning`).
    pub fn closed_by_writer(mut self, closed: bool) -> Self {
        self.closed_by_writer = closed;
        self
    }

    /// Keeps a copy of the response's headers in [`Written`] (for an
    /// access log that reads them).
    pub fn keeping_headers(mut self, keep: bool) -> Self {
        self.keep_headers = keep;
        self
    }

    /// Encodes `head` and `body` (the whole response) and writes them.
    /// `known_length` frames a head without `Content-Length`. `None` when
    /// the encoder refuses the response: the caller leaves it to the I/O
    /// thread, which reports the error the usual way. `returning`: the
    /// application has nothing left to run for the request
    /// ([`ResponseSink::send_last_and_return`](wsgi_core::ResponseSink::send_last_and_return)).
    ///
    /// The caller holds the exchange lock (see the module docs).
    pub fn write(
        self,
        head: &ResponseHead,
        body: Option<&Bytes>,
        known_length: Option<u64>,
        returning: bool,
    ) -> Option<Written> {
        SCRATCH.with(move |scratch| {
            let mut buffer = scratch.borrow_mut();
            buffer.clear();
            let written = self.encode_and_send(head, body, known_length, returning, &mut buffer);
            if buffer.capacity() > SCRATCH_KEEP {
                *buffer = BytesMut::new();
            }
            written
        })
    }

    fn encode_and_send(
        mut self,
        head: &ResponseHead,
        body: Option<&Bytes>,
        known_length: Option<u64>,
        returning: bool,
        buffer: &mut BytesMut,
    ) -> Option<Written> {
        // A stop only turns a keep-alive response into a closing one: a
        // request that closes anyway (a fresh lent one) does not take the
        // watch's lock to ask.
        let close = self.encoder.request_keep_alive() && *self.stopping.borrow();
        encode_head(&mut self.encoder, head, known_length, close, buffer).ok()?;
        let mut large: &[u8] = &[];
        let mut tail = BytesMut::new();
        if let Some(body) = body {
            let frame = self.encoder.frame_data(body.len() as u64).ok()?;
            let data = &body[..frame.len as usize];
            buffer.extend_from_slice(frame.prefix.as_ref());
            if data.len() < COPY_LIMIT {
                buffer.extend_from_slice(data);
                buffer.extend_from_slice(frame.suffix);
            } else {
                large = data;
                tail.extend_from_slice(frame.suffix);
            }
        }
        if large.is_empty() {
            self.encoder.encode_end(buffer).ok()?;
        } else {
            self.encoder.encode_end(&mut tail).ok()?;
        }
        let parts: [&[u8]; 3] = [&buffer[..], large, &tail[..]];
        // A response that ends the connection: its data waits in the
        // kernel (`MSG_MORE`) for the shutdown right below, whose FIN then
        // leaves in the same segment, so the peer gets one packet, not two.
        // The FIN is not left to the socket's close when that comes after
        // the application's `close()` or a hook: work done there "after the
        // response" must not hold the response back. When nothing follows
        // and this thread closes the socket, its close(2) right after
        // sends the data with the FIN, and the shutdown is spared. Data the
        // socket did not take is written by the I/O thread without the
        // flag, which sends it all.
        let closing = !self.encoder.keep_alive();
        let (unwritten, error) = match send_now(self.fd, &parts, closing) {
            Ok(sent) => (unsent_parts(&parts, sent, body), None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let closed_at_once = returning && self.closed_by_writer;
        if closing && !closed_at_once && error.is_none() && unwritten.is_empty() {
            // The connection ends with this response: tell the client now.
            // Its owner closes the socket when it next looks.
            // SAFETY: the descriptor is open (see the module docs).
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
        Some(Written {
            encoder: self.encoder,
            unwritten,
            error,
            at: std::time::Instant::now(),
            status: head.status,
            body_len: body.map_or(0, |body| body.len() as u64),
            headers: self.keep_headers.then(|| head.headers.clone()),
        })
    }
}

/// The parts (or their ends) past the first `sent` bytes, as owned bytes;
/// the body's part is a slice of `body`, not a copy.
fn unsent_parts(parts: &[&[u8]; 3], mut sent: usize, body: Option<&Bytes>) -> Vec<Bytes> {
    let mut rest = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let skip = sent.min(part.len());
        sent -= skip;
        if skip == part.len() {
            continue;
        }
        match (index, body) {
            // `parts[1]` is a prefix of `body` (its framed length).
            (1, Some(body)) => rest.push(body.slice(skip..part.len())),
            _ => rest.push(Bytes::copy_from_slice(&part[skip..])),
        }
    }
    rest
}

/// Writes `parts` without blocking; returns how many bytes the socket took
/// (fewer than all when its buffer is full). `more`: the caller shuts the
/// socket down next (see `encode_and_send`).
fn send_now(fd: RawFd, parts: &[&[u8]], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut sent = 0;
    while sent < total {
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 3];
        let mut count = 0;
        let mut skip = sent;
        for part in parts.iter().take(iovecs.len()) {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            iovecs[count] = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            count += 1;
        }
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = iovecs.as_mut_ptr();
        message.msg_iovlen = count as _;
        // SAFETY: the iovecs point into `parts`, alive for the call; the
        // descriptor is open (see the module docs). MSG_NOSIGNAL: a gone
        // client is an error, not a SIGPIPE.
        let result = unsafe { libc::sendmsg(fd, &message, flags) };
        if result < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => return Err(error),
            }
        }
        if result == 0 {
            break;
        }
        sent += result as usize;
    }
    Ok(sent)
}

/// Encodes a response head with the `Date` header, the framing the
/// connection knows (`known_length` for a head without `Content-Length`)
/// and `Connection: close` when asked. Shared by the I/O thread and the
/// application thread's direct writes.
///
/// # Errors
/// What the encoder refuses.
pub fn encode_head<F: Framer>(
    framer: &mut F,
    head: &ResponseHead,
    known_length: Option<u64>,
    close: bool,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    // Borrowed views of the headers; on the stack for a usual head.
    let mut stack: [(&[u8], &[u8]); 16] = [(&[], &[]); 16];
    let heap: Vec<(&[u8], &[u8])>;
    let headers: &[(&[u8], &[u8])] = if head.headers.len() <= stack.len() {
        for (slot, (name, value)) in stack.iter_mut().zip(&head.headers) {
            *slot = (name, value);
        }
        &stack[..head.headers.len()]
    } else {
        heap = head
            .headers
            .iter()
            .map(|(name, value)| (&name[..], &value[..]))
            .collect();
        &heap
    };
    with_http_date(|date| {
        framer.encode_head(
            &wsgi_http::ResponseHead {
                status: head.status,
                reason: &head.reason,
                headers,
                date: Some(date),
                content_length: known_length,
                close,
            },
            dst,
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use bytes::Bytes;
    use tokio::sync::watch;
    use wsgi_core::ResponseHead;
    use wsgi_http::ResponseEncoder;

    use super::DirectWrite;

    /// A connected pair on loopback: (the server's end, the client's).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    /// `TCP_ESTABLISHED` of the kernel's TCP states (`tcpi_state`).
    const TCP_ESTABLISHED: u8 = 1;

    /// The kernel's TCP state of a socket.
    fn tcp_state(socket: &TcpStream) -> u8 {
        // SAFETY: an all-zero `tcp_info` is valid; the kernel fills at most
        // `length` bytes of it.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` has room for `length` bytes; the socket is open.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut length,
            )
        };
        assert_eq!(result, 0);
        info.tcpi_state
    }

    /// Writes a whole response that closes its connection (the request
    /// asked to close) on `server`.
    fn write_closing(server: &TcpStream, closed_by_writer: bool, returning: bool) {
        let (_stop, stopping) = watch::channel(false);
        let encoder = ResponseEncoder::new(http::Version::HTTP_11, false, true);
        let head = ResponseHead::new(
            b"200 OK",
            vec![(
                Bytes::from_static(b"Content-Length"),
                Bytes::from_static(b"5"),
            )],
        )
        .unwrap();
        let written = DirectWrite::new(server.as_raw_fd(), encoder, stopping)
            .closed_by_writer(closed_by_writer)
            .write(&head, Some(&Bytes::from_static(b"hello")), None, returning)
            .unwrap();
        assert!(written.error.is_none() && written.unwritten.is_empty());
        assert!(!written.encoder.keep_alive());
    }

    fn read_to_end(mut client: TcpStream) -> Vec<u8> {
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        answer
    }

    /// The FIN goes with the response at once (`shutdown`), unless the
    /// writing thread closes the socket right after and nothing runs
    /// before (then the close sends data and FIN, one system call less).
    #[test]
    fn a_closing_response_is_shut_down_unless_its_close_follows() {
        for (closed_by_writer, returning) in [(false, false), (false, true), (true, false)] {
            let (server, client) = pair();
            write_closing(&server, closed_by_writer, returning);
            // Shut down: FIN_WAIT1 or FIN_WAIT2, whole at the client while
            // the server's socket is still open.
            assert_ne!(tcp_state(&server), TCP_ESTABLISHED);
            let answer = read_to_end(client);
            assert!(
                answer.starts_with(b"HTTP/1.1 200 OK\r\n") && answer.ends_with(b"\r\n\r\nhello")
            );
            drop(server);
        }
        let (server, client) = pair();
        write_closing(&server, true, true);
        assert_eq!(tcp_state(&server), TCP_ESTABLISHED);
        // The close sends it all, with the FIN.
        drop(server);
        let answer = read_to_end(client);
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n") && answer.ends_with(b"\r\n\r\nhello"));
    }
}
