//! The HTTP server end to end, over 127.0.0.1 with the pure-Rust test
//! application: exact response bytes for keep-alive, pipelining, chunked
//! uploads, 100-continue, HEAD, refusals, application errors, timeouts and
//! graceful stops.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::{exchange, is_closed, read_response, read_to_close, wait_until, TestServer};
use wsgi_server::server::Stop;

fn hello_response(extra: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n{extra}\r\nHello, World!")
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start("hello", |_| {});
    let mut stream = server.connect();
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream), hello_response(""));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start("echo", |_| {});
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
              POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo\
              POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree",
        )
        .unwrap();
    let expect = |body: &str, extra: &str| {
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
    };
    assert_eq!(read_response(&mut stream), expect("one", ""));
    assert_eq!(read_response(&mut stream), expect("two", ""));
    assert_eq!(
        read_response(&mut stream),
        expect("three", "Connection: close\r\n")
    );
    assert!(is_closed(&mut stream));
}

#[test]
fn chunked_upload_is_dechunked() {
    let server = TestServer::start("echo", |_| {});
    let response = exchange(
        &server,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(
        response,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello, world"
    );
}

#[test]
fn large_upload_streams_through() {
    let server = TestServer::start("echo", |_| {});
    let body = vec![b'z'; 3 * 1024 * 1024 + 7];
    let mut stream = server.connect();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.ends_with(&format!("\r\n\r\n{}", body.len())),
        "{response}"
    );
}

#[test]
fn expect_100_continue_is_sent_when_the_app_reads_a_streamed_body() {
    let server = TestServer::start("echo", |config| config.body_buffering.stream = true);
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"data").unwrap();
    assert_eq!(
        read_response(&mut stream),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ndata"
    );
}

#[test]
fn no_100_continue_when_the_app_does_not_read_a_streamed_body() {
    let server = TestServer::start("hello", |config| config.body_buffering.stream = true);
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    // The final response comes without an interim one, and the connection
    // closes since the client may or may not send the body now.
    assert_eq!(
        read_response(&mut stream),
        hello_response("Connection: close\r\n")
    );
    assert!(is_closed(&mut stream));
}

#[test]
fn head_gets_headers_without_body() {
    let server = TestServer::start("hello", |_| {});
    let mut stream = server.connect();
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut expected_head = hello_response("");
    expected_head.truncate(expected_head.len() - 13);
    let mut head = vec![0u8; expected_head.len() + "Date: Sat, 21 Nov 2026 15:35:01 GMT\r\n".len()];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(
        support::strip_date(&String::from_utf8_lossy(&head)),
        expected_head
    );
    // The next response follows at once: no body bytes were sent for HEAD.
    assert_eq!(read_response(&mut stream), hello_response(""));
}

#[test]
fn streamed_response_without_length_is_chunked() {
    let server = TestServer::start("echo", |_| {});
    let response = exchange(&server, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    assert_eq!(
        response.len() - response.find("\r\n\r\n").unwrap() - 4,
        1024 * 1024
    );
}

#[test]
fn http_10_streamed_response_is_close_delimited() {
    let server = TestServer::start("echo", |_| {});
    let mut stream = server.connect();
    stream.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
    let all = read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &text[..100]);
    assert!(text.contains("Connection: close\r\n"));
    assert!(!text.contains("Transfer-Encoding"));
    assert_eq!(all.len() - text.find("\r\n\r\n").unwrap() - 4, 1024 * 1024);
}

#[test]
fn http_10_keep_alive_is_honoured() {
    let server = TestServer::start("hello", |_| {});
    let mut stream = server.connect();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut stream),
            hello_response("Connection: keep-alive\r\n")
        );
    }
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut stream),
        hello_response("Connection: close\r\n")
    );
    assert!(is_closed(&mut stream));
}

fn refusal(status: &str) -> String {
    let reason = status.split_once(' ').unwrap().1;
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    )
}

#[test]
fn malformed_requests_get_their_status_and_a_close() {
    let server = TestServer::start("echo", |config| {
        config.max_body_size = Some(100);
        config.http_limits.max_request_line = 200;
    });
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: 1\r\n".repeat(101)
    );
    let cases: &[(&[u8], &str)] = &[
        (b"GARBAGE\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400 Bad Request"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505 HTTP Version Not Supported"),
        (long_target.as_bytes(), "414 URI Too Long"),
        (long_header.as_bytes(), "431 Request Header Fields Too Large"),
        (many_headers.as_bytes(), "431 Request Header Fields Too Large"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", "413 Payload Too Large"),
    ];
    for (request, status) in cases {
        let mut stream = server.connect();
        stream.write_all(request).unwrap();
        assert_eq!(
            read_response(&mut stream),
            refusal(status),
            "{}",
            String::from_utf8_lossy(request)
        );
        assert!(is_closed(&mut stream));
    }
    // And the server serves on.
    assert!(exchange(&server, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn chunked_body_over_the_limit_fails_the_request() {
    let server = TestServer::start("echo", |config| config.max_body_size = Some(10));
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
        .unwrap();
    // The application's read fails because of the body: 413, and a close.
    let response = read_response(&mut stream);
    assert!(
        response.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{response}"
    );
    assert!(is_closed(&mut stream));
}

#[test]
fn application_error_gives_500_and_the_connection_serves_on() {
    let server = TestServer::start("echo", |_| {});
    let mut stream = server.connect();
    stream
        .write_all(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\nInternal Server Error"
    );
    stream
        .write_all(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    assert!(read_response(&mut stream).ends_with("\r\n\r\nok"));
}

#[test]
fn application_error_after_the_head_cuts_the_connection() {
    let server = TestServer::start("echo", |_| {});
    let mut stream = server.connect();
    stream
        .write_all(b"GET /fail-late HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let all = String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("Transfer-Encoding: chunked"));
    // The chunked body never gets its terminating zero chunk.
    assert!(all.ends_with("7\r\npartial\r\n"), "{all:?}");
}

#[test]
fn idle_keep_alive_connection_times_out() {
    let server = TestServer::start("hello", |config| {
        config.timeouts.keep_alive = Duration::from_millis(300)
    });
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut stream);
    assert!(is_closed(&mut stream));
}

#[test]
fn a_response_larger_than_the_socket_takes_at_once_arrives_whole() {
    // One piece, far more than the socket buffers hold: the application
    // thread's direct write is cut short and the I/O thread sends the rest;
    // the connection then serves on. The client's receive buffer is made
    // small and fixed (no autotuning), so one call can hand the kernel at
    // most the server's send buffer (4 MiB at most by default,
    // net.ipv4.tcp_wmem) and this window: far less than 16 MiB even while
    // the client reads, so no pause before reading is needed to make the
    // direct write come up short (strace: its sendmsg took 4,128,768 bytes).
    let server = TestServer::start("echo", |_| {});
    let mut stream = server.connect();
    set_receive_buffer(&stream, 32 * 1024);
    let size = 16 * 1024 * 1024;
    stream
        .write_all(format!("GET /blob?{size} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let response = read_response(&mut stream);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {size}")), "{head}");
    assert_eq!(body.len(), size);
    let expected = (0..size).map(|at| (b'a' + (at % 26) as u8) as char);
    assert!(
        body.chars().eq(expected),
        "the body is not the bytes sent, in order"
    );
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn expect_100_continue_is_sent_when_buffering_starts() {
    // A buffered body is read before the application is called: `100
    // Continue` goes out then, even for an application that never reads
    // it (nginx does the same); the body is consumed, so the connection
    // goes on. A server that waited for the application's first read would
    // answer at once with `Connection: close` instead.
    let server = TestServer::start("hello", |_| {});
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"data").unwrap();
    assert_eq!(read_response(&mut stream), hello_response(""));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream), hello_response(""));
}

#[test]
fn a_body_that_stalls_while_buffering_gets_408() {
    let server = TestServer::start("echo", |config| {
        config.timeouts.body = Duration::from_millis(300);
    });
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_response(&mut stream), refusal("408 Request Timeout"));
    assert!(is_closed(&mut stream));
}

#[test]
fn a_chunked_body_past_the_buffer_size_is_spooled() {
    // Held in memory up to the bound, then moved to a temporary file with
    // the rest: the application reads it all from there.
    let server = TestServer::start("echo", |config| config.body_buffering.max_size = 16);
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              14\r\n0123456789abcdefghij\r\n3\r\nxyz\r\n0\r\n\r\n",
        )
        .unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.ends_with("\r\n\r\n0123456789abcdefghijxyz"),
        "{response}"
    );
}

#[test]
fn a_body_past_the_buffer_size_is_spooled_whole_first() {
    // A stall while spooling is our 408: the application, not called yet,
    // cannot have failed on it (streamed, its read would time out: a 500).
    let server = TestServer::start("echo", |config| {
        config.body_buffering.max_size = 16;
        config.timeouts.body = Duration::from_millis(300);
    });
    let mut stream = server.connect();
    let body: String = (0..40).map(|at| (b'a' + at % 26) as char).collect();
    stream
        .write_all(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{body}")
                .as_bytes(),
        )
        .unwrap();
    let response = read_response(&mut stream);
    assert!(response.ends_with(&format!("\r\n\r\n{body}")), "{response}");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_response(&mut stream), refusal("408 Request Timeout"));
}

#[test]
fn a_chunked_body_past_the_buffer_size_streams_on_without_spooling() {
    // Buffered up to the bound, then the application is called and reads
    // the rest as it comes.
    let server = TestServer::start("echo", |config| {
        config.body_buffering.max_size = 16;
        config.body_buffering.spool_max = 0;
    });
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              14\r\n0123456789abcdefghij\r\n",
        )
        .unwrap();
    stream.write_all(b"3\r\nxyz\r\n0\r\n\r\n").unwrap();
    let response = read_response(&mut stream);
    assert!(
        response.ends_with("\r\n\r\n0123456789abcdefghijxyz"),
        "{response}"
    );
}

#[test]
fn a_request_waits_outside_the_application_while_the_body_budget_is_spent() {
    // A 30,000-byte budget: the first request's 20,000-byte body (more
    // than comes with the head, so it is buffered and reserved) holds
    // 20,000 of it while the request is held inside the application (the
    // gate), so the second request's body waits, unread and outside the
    // application: a third request, sent after the server has the second's
    // head (its counters) and its whole body (in the socket), is answered by
    // the other application thread while the second is not. A server without
    // the budget would have handed the second request to that thread first
    // and answered it. Two threads: the held one and one more.
    let (server, gate) = TestServer::start_gated(|config| {
        config.body_buffering.memory = 30_000;
        config.body_buffering.spool_max = 0;
        config.threads = 2;
    });
    let body = vec![b'x'; 20_000];
    let post = |target: &str| {
        let mut bytes = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    };
    let mut first = server.connect();
    first.write_all(&post("/gate")).unwrap();
    // Inside the application: its body was read whole, its budget taken.
    gate.wait_entered(1);
    let mut second = server.connect();
    second.write_all(&post("/upload")).unwrap();
    wait_until("the second request's head read", || {
        server.heads_read() == 2
    });
    // The third request is answered (`/calls`: the application's calls
    // before it, `/gate` aside): the second never reached the application,
    // and has no answer at all.
    assert_eq!(
        exchange(&server, b"GET /calls HTTP/1.1\r\nHost: x\r\n\r\n")
            .split("\r\n\r\n")
            .nth(1),
        Some("0"),
        "the second request reached the application while the budget was spent"
    );
    second.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let unanswered = matches!(
        second.peek(&mut byte),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
    );
    second.set_nonblocking(false).unwrap();
    assert!(
        unanswered,
        "the second request was answered while the budget was spent"
    );
    gate.open();
    let first_response = read_response(&mut first);
    assert!(first_response.ends_with("\r\n\r\ngate"), "{first_response}");
    let second_response = read_response(&mut second);
    assert!(
        second_response.ends_with("\r\n\r\n20000"),
        "{second_response}"
    );
    // The budget came back with the first response, not at the client's
    // next move: another request is served while both stay connected.
    let mut third = server.connect();
    third.write_all(&post("/upload")).unwrap();
    assert!(read_response(&mut third).ends_with("\r\n\r\n20000"));
}

#[test]
fn slow_head_gets_408() {
    let server = TestServer::start("hello", |config| {
        config.timeouts.header = Duration::from_millis(300)
    });
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert_eq!(read_response(&mut stream), refusal("408 Request Timeout"));
}

#[test]
fn graceful_stop_finishes_in_flight_and_answers_idle_connections_with_close() {
    // A graceful timeout no test outlives: the stop must end because the
    // work is done, not because the timeout ran out.
    let (mut server, gate) = TestServer::start_gated(|config| {
        config.timeouts.graceful = Duration::from_secs(3600);
    });
    let mut idle = server.connect();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut idle);
    let mut busy = server.connect();
    busy.write_all(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // In flight: inside the application, held there until the stop is in
    // effect (the listener closed).
    gate.wait_entered(1);
    server.begin_stop(Stop::Graceful);
    server.wait_until_refused();
    let stopper = std::thread::spawn(move || server.stop(Stop::Graceful));
    gate.open();
    // `Connection: close` on the in-flight response: the stop is in effect.
    assert_eq!(
        read_response(&mut busy),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngate"
    );
    // The idle keep-alive connection was not closed under its client (a
    // proxy may be reusing it right now): its next request is answered,
    // with `Connection: close`, and then it closes.
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut idle),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert!(is_closed(&mut idle));
    // 30 s is a failure bound, not a measurement.
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(stopper.join().is_ok()));
    assert_eq!(
        stopped.recv_timeout(Duration::from_secs(30)),
        Ok(true),
        "the graceful stop did not end once its connections were done"
    );
}

#[test]
fn graceful_stop_closes_an_idle_connection_when_its_keep_alive_time_runs_out() {
    let mut server = TestServer::start("echo", |config| {
        config.timeouts.keep_alive = Duration::from_millis(500);
    });
    let mut idle = server.connect();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut idle);
    let stopper = std::thread::spawn(move || server.stop(Stop::Graceful));
    assert!(is_closed(&mut idle));
    stopper.join().unwrap();
}

#[test]
fn serves_on_a_unix_socket() {
    use wsgi_server::listener::{BindAddr, BindSpec, Protocol};
    let path = std::env::temp_dir().join(format!("wsgi-http-test-{}.sock", std::process::id()));
    let server = TestServer::start_on(
        "hello",
        vec![BindSpec {
            addr: BindAddr::Unix(path.clone()),
            protocol: Protocol::Http,
        }],
        |_| {},
    );
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert_eq!(
        support::strip_date(&all),
        hello_response("Connection: close\r\n")
    );
    drop(server);
    let _ = std::fs::remove_file(path);
}

#[test]
fn environ_reflects_the_request() {
    let server = TestServer::start("echo", |_| {});
    let response = exchange(
        &server,
        b"GET /environ?a=1 HTTP/1.1\r\nHost: example.com:81\r\nCookie: a=1\r\nCookie: b=2\r\nX_Under: no\r\n\r\n",
    );
    for line in [
        "REQUEST_METHOD=GET",
        "PATH_INFO=/environ",
        "QUERY_STRING=a=1",
        "SERVER_NAME=example.com",
        "SERVER_PORT=81",
        "REMOTE_ADDR=127.0.0.1",
        "HTTP_COOKIE=a=1; b=2",
        "SERVER_PROTOCOL=HTTP/1.1",
    ] {
        assert!(
            response.contains(&format!("\n{line}\n"))
                || response.contains(&format!("\r\n\r\n{line}\n")),
            "{line} in {response}"
        );
    }
    assert!(!response.contains("HTTP_X_UNDER"));
}

#[test]
fn a_fresh_connection_is_served_during_a_graceful_stop() {
    let (mut server, gate) = TestServer::start_gated(|_| {});
    // Accepted before the stop, its request sent after it: it was accepted
    // to be served, so it is (only idle keep-alive connections are closed).
    // The held request keeps the stop from ending meanwhile.
    let mut fresh = server.connect();
    let mut busy = server.connect();
    busy.write_all(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    gate.wait_entered(1);
    server.begin_stop(Stop::Graceful);
    server.wait_until_refused();
    let stopper = std::thread::spawn(move || server.stop(Stop::Graceful));
    fresh
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut fresh).starts_with("HTTP/1.1 200 OK\r\n"));
    gate.open();
    assert!(read_response(&mut busy).ends_with("gate"));
    stopper.join().unwrap();
}

#[test]
fn slow_requests_run_in_parallel_on_the_thread_pool() {
    // One thread takes a request at once; the others are woken only when a
    // queued request has waited (the starvation watchdog), so four requests
    // that block on four threads still overlap: each waits inside the
    // application until all four are in it at once, which only four
    // threads running together can achieve (`alone` after 10 s otherwise).
    let server = TestServer::start("echo", |config| config.threads = 4);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = server.connect();
            std::thread::spawn(move || {
                stream
                    .write_all(b"GET /rendezvous?4 HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                read_response(&mut stream)
            })
        })
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert!(
            response.ends_with("\r\n\r\nmet"),
            "not parallel: {response}"
        );
    }
}

/// The application's call count, asked on a new connection (`/calls`
/// counts the requests before itself).
fn app_calls(server: &TestServer) -> String {
    let response = exchange(server, b"GET /calls HTTP/1.1\r\nHost: x\r\n\r\n");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn requests_the_rfcs_refuse_never_reach_the_application() {
    let server = TestServer::start("echo", |_| {});
    let line = |method: &str, target: &[u8]| {
        [
            method.as_bytes(),
            b" ",
            target,
            b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        .concat()
    };
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        // RFC 9112 §3.2: each target form with its method only.
        (line("GET", b"a/b"), "400 Bad Request"),
        (line("GET", b"*"), "400 Bad Request"),
        (line("POST", b"*"), "400 Bad Request"),
        (line("OPTIONS", b"*x"), "400 Bad Request"),
        (line("GET", b"example.com:80"), "400 Bad Request"),
        (line("GET", b"ftp://x/"), "400 Bad Request"),
        (line("GET", b"http:///p"), "400 Bad Request"),
        (line("GET", b"http://user@x/"), "400 Bad Request"),
        // CONNECT: an origin server does not tunnel (RFC 9110 §9.1).
        (line("CONNECT", b"x:443"), "501 Not Implemented"),
        (line("CONNECT", b"[::1]:443"), "501 Not Implemented"),
        (line("CONNECT", b"x"), "400 Bad Request"),
        (line("CONNECT", b"/"), "400 Bad Request"),
        // Bytes outside visible ASCII in the target.
        (line("GET", b"/caf\xc3\xa9"), "400 Bad Request"),
        (line("GET", b"/?q=\x80"), "400 Bad Request"),
        (line("GET", b"/a\x01b"), "400 Bad Request"),
        (line("GET", b"/a\x7fb"), "400 Bad Request"),
        (line("GET", b"/a\tb"), "400 Bad Request"),
        (line("GET", b"/a b"), "400 Bad Request"),
    ];
    let fields: &[(&[u8], &str)] = &[
        // RFC 9110 §8.6: different Content-Length values, as a list or lines.
        (b"Content-Length: 5, 6\r\n", "400 Bad Request"),
        (
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
            "400 Bad Request",
        ),
        // A second Content-Type, even the same one (RFC 9110 §5.3).
        (
            b"Content-Type: text/plain\r\nContent-Type: text/plain\r\n",
            "400 Bad Request",
        ),
        (
            b"Content-Type: text/plain\r\ncontent-type: application/json\r\n",
            "400 Bad Request",
        ),
        // A second Host (RFC 9112 §3.2).
        (b"Host: x\r\n", "400 Bad Request"),
        (b"HOST: y\r\n", "400 Bad Request"),
    ];
    for (field, status) in fields {
        let request = [
            &b"POST /echo HTTP/1.1\r\nHost: x\r\n"[..],
            field,
            b"\r\nhello",
        ]
        .concat();
        cases.push((request, status));
    }
    for (request, status) in &cases {
        let mut stream = server.connect();
        stream.write_all(request).unwrap();
        let name = String::from_utf8_lossy(request);
        assert_eq!(read_response(&mut stream), refusal(status), "{name}");
        assert!(is_closed(&mut stream), "{name}");
    }
    assert_eq!(app_calls(&server), "0", "a refused request reached the app");
}

/// The environ listing of `/environ` as lines.
fn environ_of(server: &TestServer, request: &[u8]) -> Vec<String> {
    let response = exchange(server, request);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    body.lines().map(str::to_owned).collect()
}

#[test]
fn allowed_target_forms_and_content_length_lists_reach_the_application() {
    let server = TestServer::start("echo", |_| {});
    let has = |lines: &[String], line: &str| lines.iter().any(|got| got == line);
    // absolute-form (RFC 9112 §3.2.2): its authority replaces Host.
    let lines = environ_of(
        &server,
        b"GET http://other.example:81/environ?a=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
    );
    for line in [
        "HTTP_HOST=other.example:81",
        "SERVER_NAME=other.example",
        "SERVER_PORT=81",
        "PATH_INFO=/environ",
        "QUERY_STRING=a=1",
        "REQUEST_URI=http://other.example:81/environ?a=1",
    ] {
        assert!(has(&lines, line), "{line} in {lines:?}");
    }
    assert!(
        !lines.iter().any(|line| line.contains("ignored")),
        "{lines:?}"
    );
    let lines = environ_of(
        &server,
        b"GET HTTPS://h/environ HTTP/1.1\r\nHost: x:9\r\n\r\n",
    );
    for line in [
        "HTTP_HOST=h",
        "SERVER_NAME=h",
        "SERVER_PORT=443",
        "QUERY_STRING=",
    ] {
        assert!(has(&lines, line), "{line} in {lines:?}");
    }
    // origin-form with visible characters outside the URI grammar.
    let lines = environ_of(&server, b"GET /environ?a|b{c} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(has(&lines, "QUERY_STRING=a|b{c}"), "{lines:?}");
    // asterisk-form with OPTIONS: the app is called with PATH_INFO `*`.
    assert_eq!(
        exchange(&server, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
    );
    // RFC 9110 §8.6: one value repeated is that value, framing and environ.
    for fields in [
        &b"Content-Length: 5, 5\r\n"[..],
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let request = |path: &[u8]| {
            [
                b"POST ",
                path,
                b" HTTP/1.1\r\nHost: x\r\n",
                fields,
                b"\r\nhello",
            ]
            .concat()
        };
        let lines = environ_of(&server, &request(b"/environ"));
        assert!(has(&lines, "CONTENT_LENGTH=5"), "{lines:?}");
        assert_eq!(
            exchange(&server, &request(b"/echo")),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        );
    }
    assert_eq!(app_calls(&server), "8");
}

#[test]
fn two_different_response_content_lengths_get_a_500() {
    let server = TestServer::start("echo", |_| {});
    let internal_error = |extra: &str| {
        format!("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n{extra}\r\nInternal Server Error")
    };
    // Through ResponseHead::new (as start_response): the app fails, 500,
    // and the connection serves on.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /content-length?5,6 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream), internal_error(""));
    stream
        .write_all(b"GET /content-length?5,5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nxxxxx"
    );
    // A head that skipped the check reaches the encoder, which refuses it
    // before a byte is sent (the direct write falls back to the I/O
    // thread): a 500 still, then a close.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /raw-head?5,6 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        internal_error("Connection: close\r\n")
    );
    assert!(is_closed(&mut stream));
    // Identical values: one Content-Length on the wire.
    assert_eq!(
        exchange(&server, b"GET /raw-head?5,5 HTTP/1.1\r\nHost: x\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nxxxxx"
    );
    assert_eq!(
        exchange(
            &server,
            b"GET /raw-head?5,5,5 HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n"
        ),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nxxxxx"
    );
}

/// Sets SO_RCVBUF on a connected socket (the kernel doubles it, and stops
/// tuning it).
fn set_receive_buffer(stream: &std::net::TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt: {}", std::io::Error::last_os_error());
}
