//! Several executor threads share the interpreter: the GIL is released while
//! one waits, so another makes progress; `write()` works from a Python thread
//! the application starts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wsgi_core::{Application, Request};

#[test]
fn executor_threads_interleave_while_waiting() {
    let (app, log) = load(
        "th_interleave",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    return (str(i).encode() for i in range(5))
"#,
    );
    let app = Arc::new(app);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for name in ["a", "b"] {
        let (app, order) = (app.clone(), order.clone());
        handles.push(std::thread::spawn(move || {
            let sink = SlowSink {
                inner: TestSink::default(),
                delay: Duration::from_millis(20),
                log: order,
                name,
            };
            let record = sink.inner.record.clone();
            let mut source = TestSource::default();
            source.requests.push_back(Request {
                environ: Box::new(environ("GET", "/")),
                input: Box::new(TestReader::new([])),
                output: Box::new(sink),
            });
            app.serve_thread(&mut source);
            let record = record.lock().unwrap();
            assert!(record.finished);
            record.body_str()
        }));
    }
    for handle in handles {
        assert_eq!(handle.join().unwrap(), "01234");
    }
    let order = order.lock().unwrap().clone();
    // Had one thread kept the GIL while waiting, its five chunks would be
    // consecutive.
    let switches = order
        .windows(2)
        .filter(|pair| pair[0].as_bytes()[0] != pair[1].as_bytes()[0])
        .count();
    assert!(switches >= 2, "{order:?}");
    assert_eq!(log.text(), "");
}

#[test]
fn write_from_another_python_thread() {
    let (app, log) = load(
        "th_write",
        r#"
import threading
def app(environ, start_response):
    write = start_response("200 OK", [])
    threads = [threading.Thread(target=write, args=(f"{i};".encode(),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [b"end"]
"#,
    );
    let app = Arc::new(app);
    let order = Arc::new(Mutex::new(Vec::new()));
    let sink = SlowSink {
        inner: TestSink::default(),
        delay: Duration::from_millis(5),
        log: order,
        name: "x",
    };
    let record = sink.inner.record.clone();
    let mut source = TestSource::default();
    source.requests.push_back(Request {
        environ: Box::new(environ("GET", "/")),
        input: Box::new(TestReader::new([])),
        output: Box::new(sink),
    });
    std::thread::spawn(move || app.serve_thread(&mut source))
        .join()
        .unwrap();
    let record = record.lock().unwrap();
    let mut chunks: Vec<String> = record
        .chunks
        .iter()
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    assert_eq!(chunks.pop().as_deref(), Some("end"));
    chunks.sort();
    assert_eq!(chunks, ["0;", "1;", "2;", "3;"]);
    assert!(record.finished);
    assert_eq!(log.text(), "");
}
