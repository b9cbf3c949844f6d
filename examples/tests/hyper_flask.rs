//! The hyper example end to end: `examples::hyper_wsgi` serving the Flask
//! app of `examples/apps/flask_app.py` on a real socket on 127.0.0.1, with
//! CPython started by `wsgi-python` in this test process (in the test venv,
//! `TEST_VENV`, which `cargo xtask ci` sets and which has Flask). No code
//! from `wsgi-server` runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wsgi_python::{AppOptions, PyApplication, PythonConfig};

/// Starts the server once; `None` (the test skips) when Flask is missing
/// outside CI.
fn server() -> Option<SocketAddr> {
    let apps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apps");
    let config = PythonConfig {
        pythonpath: vec![apps],
        virtualenv: std::env::var_os("TEST_VENV")
            .filter(|venv| !venv.is_empty())
            .map(PathBuf::from),
        ..PythonConfig::default()
    };
    wsgi_python::initialize(&config).expect("the interpreter starts");
    let options = AppOptions::new(true, false, Arc::new(wsgi_core::StderrLog));
    let app = match PyApplication::load("flask_app:app", options) {
        Ok(app) => app,
        Err(error) if error.to_string().contains("No module named 'flask'") => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "Flask is missing from the test venv: {error}"
            );
            eprintln!("skipped: Flask is not installed (run under cargo xtask ci): {error}");
            return None;
        }
        Err(error) => panic!("flask_app:app does not load: {error}"),
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || examples::hyper_wsgi::serve(listener, Arc::new(app), 2));
    Some(address)
}

/// Sends `request` on `stream` and reads one response (its head and a
/// `Content-Length` or chunked body); returns (status line, head, body).
fn exchange(stream: &mut TcpStream, request: &str) -> (String, String, Vec<u8>) {
    stream.write_all(request.as_bytes()).expect("send");
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = loop {
        if let Some(at) = data.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut buffer).expect("read the head");
        assert!(read > 0, "closed before the head: {data:?}");
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or_default().to_owned();
    let mut body = data[end..].to_vec();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map(|value| value.trim().parse::<usize>().expect("a length"));
    let complete = |body: &[u8]| match length {
        Some(length) => body.len() >= length,
        None => body.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&body) {
        let read = stream.read(&mut buffer).expect("read the body");
        assert!(read > 0, "closed inside the body: {body:?}");
        body.extend_from_slice(&buffer[..read]);
    }
    (status, head, body)
}

#[test]
fn flask_answers_through_hyper_without_wsgi_server() {
    let Some(address) = server() else {
        return;
    };
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");

    // Several requests on one keep-alive connection.
    let (status, head, body) =
        exchange(&mut stream, "GET /api/items HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "http/1.1 200 ok", "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        r#"{"items":[{"id":1,"name":"first"}]}"#
    );

    let json = r#"{"name":"hyper"}"#;
    let (status, head, body) = exchange(
        &mut stream,
        &format!(
            "POST /api/items HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    );
    assert_eq!(status, "http/1.1 201 created", "{head}");
    assert!(head.contains("location: /api/items"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        r#"{"id":2,"name":"hyper"}"#
    );

    // A streamed response (a generator): chunked, every chunk there.
    let (status, head, body) = exchange(&mut stream, "GET /stream HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "http/1.1 200 ok", "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("chunk 0") && text.contains("chunk 4"),
        "{text}"
    );

    // The application's exception is a 500, and the connection goes on.
    let (status, head, _) = exchange(&mut stream, "GET /error HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(status.starts_with("http/1.1 500"), "{head}");
    let (status, _, _) = exchange(&mut stream, "GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "http/1.1 404 not found");
}
