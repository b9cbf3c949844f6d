//! A uwsgi-protocol connection (nginx `uwsgi_pass`): one request per
//! connection, the response as plain HTTP/1.x, never chunked, then close.

use std::sync::Arc;

use bytes::BytesMut;
use wsgi_core::{ConnInfo, Environ};
use wsgi_http::ResponseEncoder;
use wsgi_uwsgi::{Decoder, Event};

use tokio::time::{timeout_at, Instant};

use crate::request::{
    read_some, serve_one, write_error, BodyDecoder, BodyEvent, BodyState, Conn, Framer, Shared,
    Transport,
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
pub async fn serve_uwsgi<S: Transport>(mut stream: S, conn: ConnInfo, shared: Arc<Shared>) {
    if !shared.uwsgi_allowed(&conn.peer) {
        crate::log!(
            Warning,
            "uwsgi: refusing {:?}: not in --uwsgi-allow-from",
            conn.peer
        );
        return;
    }
    let mut decoder = Decoder::new(shared.uwsgi_limits);
    let mut read_buf = BytesMut::with_capacity(8 * 1024);
    let mut write_buf = BytesMut::with_capacity(8 * 1024);
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
        match timeout_at(deadline, read_some(&mut stream, &mut read_buf, 8 * 1024)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return,
        }
    };
    // The uwsgi peer is the proxy itself: its variables are believed.
    let conn = conn.with_trusted_proxy(true);
    let environ = match Environ::from_cgi_vars(head.vars.iter_bytes(), &conn, &shared.environ) {
        Ok(environ) => Box::new(environ),
        Err(error) => {
            crate::log!(Warning, "uwsgi: unusable request: {error}");
            write_error(&mut stream, 400, &mut write_buf).await;
            return;
        }
    };
    let version = if &environ.server_protocol[..] == b"HTTP/1.0" {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    let is_head = &environ.request_method[..] == b"HEAD";
    let mut protocol = UwsgiProtocol {
        decoder,
        // nginx reads the body raw: never chunked; the connection closes
        // after the response.
        encoder: ResponseEncoder::new(version, is_head, false).with_keep_alive(false),
    };
    let mut body = BodyState::new(head.content_length == 0, false, Some(head.content_length));
    let protocol_name = if version == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    serve_one(
        Conn {
            stream: &mut stream,
            protocol: &mut protocol,
            read_buf: &mut read_buf,
            write_buf: &mut write_buf,
            shared: &shared,
            close: true,
            timer: std::pin::pin!(tokio::time::sleep_until(crate::connection::far_future())),
        },
        environ,
        &mut body,
        protocol_name,
    )
    .await;
}
