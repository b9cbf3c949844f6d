//! `wsgi-http` on its own: a blocking, one-connection-at-a-time HTTP/1.1
//! server on `std::net`, with keep-alive and request bodies, in ~60 lines.
//! The codec does the protocol; this loop only moves bytes.
//!
//! `cargo run -p examples --example blocking_http -- 127.0.0.1:8080`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use bytes::BytesMut;
use wsgi_http::{Config, Event, ResponseHead, ServerConn};

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&address)?;
    println!("listening on http://{address}");
    for stream in listener.incoming() {
        if let Err(error) = serve(stream?) {
            eprintln!("connection error: {error}");
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut conn = ServerConn::new(Config::default());
    let mut input = BytesMut::with_capacity(8192);
    let mut body_length = 0usize;
    let mut path = Vec::new();
    loop {
        match conn.decode(&mut input) {
            Ok(Some(Event::Head(head))) => {
                path = head.path().to_vec();
                body_length = 0;
            }
            Ok(Some(Event::Data(data))) => body_length += data.len(),
            Ok(Some(Event::End)) => {
                let body = format!(
                    "path {} with a {body_length}-byte body\n",
                    String::from_utf8_lossy(&path)
                );
                let mut output = BytesMut::new();
                let head = ResponseHead {
                    status: 200,
                    reason: b"OK",
                    headers: &[(b"Content-Type", b"text/plain")],
                    date: None,
                    content_length: Some(body.len() as u64),
                    close: false,
                };
                conn.encode_head(&head, &mut output)
                    .map_err(std::io::Error::other)?;
                conn.encode_data(body.as_bytes(), &mut output)
                    .map_err(std::io::Error::other)?;
                conn.encode_end(&mut output)
                    .map_err(std::io::Error::other)?;
                stream.write_all(&output)?;
                if !conn.keep_alive() || conn.start_next_cycle().is_err() {
                    return Ok(());
                }
            }
            Ok(None) => {
                let mut buffer = [0u8; 8192];
                let read = stream.read(&mut buffer)?;
                if read == 0 {
                    return Ok(());
                }
                input.extend_from_slice(&buffer[..read]);
            }
            Err(error) => {
                let status = error.status();
                let reply = format!(
                    "HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
                return stream.write_all(reply.as_bytes());
            }
        }
    }
}
