//! The uwsgi protocol end to end over 127.0.0.1, as nginx's `uwsgi_pass`
//! speaks it: packets built with `wsgi_uwsgi::encode_packet`, responses as
//! plain HTTP/1.x (never chunked) and a close after each; malformed packets
//! are closed without an answer and the server serves on.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use support::{read_to_close, strip_date, TestServer};
use wsgi_server::listener::{BindSpec, Protocol};

fn uwsgi_server(configure: impl FnOnce(&mut wsgi_server::config::ServerConfig)) -> TestServer {
    let spec = BindSpec::parse("127.0.0.1:0", Protocol::Uwsgi).unwrap();
    TestServer::start_on("echo", vec![spec], configure)
}

fn packet(vars: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    wsgi_uwsgi::encode_packet(
        0,
        0,
        vars.iter()
            .map(|(key, value)| (key.as_bytes(), value.as_bytes())),
        &mut buffer,
    )
    .unwrap();
    buffer.extend_from_slice(body);
    buffer.to_vec()
}

fn nginx_vars<'a>(method: &'a str, uri: &'a str, length: &'a str) -> Vec<(&'a str, &'a str)> {
    let path = uri.split('?').next().unwrap();
    let query = uri.split_once('?').map(|(_, query)| query).unwrap_or("");
    vec![
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", length),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "192.0.2.10"),
        ("REMOTE_PORT", "50123"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "example.org"),
        ("HTTP_HOST", "example.org"),
    ]
}

fn send(server: &TestServer, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

#[test]
fn get_is_answered_as_plain_http_then_closed() {
    let server = uwsgi_server(|_| {});
    let response = send(&server, &packet(&nginx_vars("GET", "/x", ""), b""));
    assert_eq!(
        strip_date(&response),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn body_is_framed_by_content_length() {
    let server = uwsgi_server(|_| {});
    let body = vec![b'q'; 100_000];
    let response = send(
        &server,
        &packet(&nginx_vars("POST", "/upload", "100000"), &body),
    );
    assert!(response.ends_with("\r\n\r\n100000"), "{response}");
}

#[test]
fn environ_comes_from_the_vars() {
    let server = uwsgi_server(|_| {});
    let mut vars = nginx_vars("GET", "/app/environ?a=1", "");
    vars.retain(|(key, _)| *key != "PATH_INFO");
    vars.push(("PATH_INFO", "/app/environ"));
    vars.push(("SCRIPT_NAME", "/app"));
    vars.push(("UWSGI_FILE", "/tmp/evil.py"));
    let response = send(&server, &packet(&vars, b""));
    for line in [
        "SCRIPT_NAME=/app",
        "PATH_INFO=/environ",
        "QUERY_STRING=a=1",
        "REMOTE_ADDR=192.0.2.10",
        "SERVER_NAME=example.org",
        "DOCUMENT_ROOT=/usr/share/nginx/html",
    ] {
        assert!(
            response.contains(&format!("{line}\n")),
            "{line} in {response}"
        );
    }
    assert!(!response.contains("UWSGI_FILE"));
}

#[test]
fn streamed_response_is_never_chunked() {
    let server = uwsgi_server(|_| {});
    let response = send(&server, &packet(&nginx_vars("GET", "/big", ""), b""));
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    assert!(head.contains("Connection: close"));
    assert_eq!(body.len(), 1024 * 1024);
}

#[test]
fn malformed_packets_are_closed_unanswered_and_the_server_serves_on() {
    let server = uwsgi_server(|config| config.timeouts.header = Duration::from_secs(2));
    let good = packet(&nginx_vars("GET", "/", ""), b"");
    let mut overrun = good.clone();
    overrun[4] = 0xff; // first key length runs past the block
    let mut zero_key = good.clone();
    zero_key[4] = 0;
    zero_key[5] = 0;
    let mut wrong_modifier = good.clone();
    wrong_modifier[0] = 5;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short header", vec![0, 4]),
        ("truncated vars", good[..good.len() - 3].to_vec()),
        ("overrun lengths", overrun),
        ("zero-length key", zero_key),
        ("wrong modifier", wrong_modifier),
        ("no REQUEST_METHOD", packet(&[("PATH_INFO", "/")], b"")),
    ];
    for (name, bytes) in cases {
        let mut stream = TcpStream::connect(server.addr.unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&bytes).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let answer = String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned();
        if name == "no REQUEST_METHOD" {
            // Well-formed packet, unusable request: a 400, still no app call.
            assert!(
                answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{name}: {answer}"
            );
        } else {
            assert_eq!(answer, "", "{name}");
        }
    }
    let response = send(&server, &good);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
}

#[test]
fn peers_outside_uwsgi_allow_from_are_refused() {
    let server = uwsgi_server(|config| {
        config.uwsgi_allow_from = wsgi_core::proxy::AllowList::parse("192.0.2.1").unwrap()
    });
    let response = send(&server, &packet(&nginx_vars("GET", "/", ""), b""));
    assert_eq!(response, "");
}

#[test]
fn a_uwsgi_body_that_stalls_while_buffering_gets_408() {
    // The uwsgi path shares the buffering: the body is read before the
    // application is called, and a stall is the server's 408, where a
    // streamed body would have failed the application's read (a 500).
    let server = uwsgi_server(|config| config.timeouts.body = Duration::from_millis(300));
    let mut bytes = packet(&nginx_vars("POST", "/echo", "10"), b"");
    bytes.extend_from_slice(b"abc");
    let response = strip_date(&send(&server, &bytes));
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{response}"
    );
}
