//! The server library with a Rust application instead of Python: the
//! runtime is whatever implements `wsgi_core::Application`. This one
//! answers with the request's method and path.
//!
//! `cargo run -p examples --example rust_app -- 127.0.0.1:8081`

use std::sync::Arc;

use bytes::Bytes;
use wsgi_core::{AppError, Handler, HandlerApp, Request, ResponseHead};
use wsgi_server::config::{AppSource, ServerConfig};
use wsgi_server::listener::{bind, BindOptions, BindSpec, Protocol};
use wsgi_server::scoreboard::WorkerSlot;
use wsgi_server::server::run;
use wsgi_server::worker::{wait_for_stop, Recycle};

struct Greeter;

impl Handler for Greeter {
    fn call(&self, request: &mut Request) -> Result<(), AppError> {
        let body = format!(
            "{} {}\n",
            String::from_utf8_lossy(&request.environ.request_method),
            String::from_utf8_lossy(&request.environ.path_info)
        );
        let head = ResponseHead::new(
            b"200 OK",
            vec![(
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"text/plain"),
            )],
        )
        .map_err(|error| AppError::new(error.to_string()))?;
        request.output.start(head)?;
        request.output.send(Bytes::from(body))?;
        request.output.finish()?;
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let spec = BindSpec::parse(&address, Protocol::Http).map_err(std::io::Error::other)?;
    let config = ServerConfig::new(AppSource::Rust("greeter".into()), vec![spec.clone()]);
    let options = BindOptions {
        backlog: 1024,
        unix_mode: None,
        reuse_port: false,
        defer_accept: None,
    };
    let listeners = vec![bind(&spec, options)?];
    println!("listening on http://{address} (TERM or Ctrl-C to stop)");
    let slot: &'static WorkerSlot = Box::leak(Box::new(WorkerSlot::new()));
    run(
        listeners,
        Arc::new(HandlerApp(Greeter)),
        &config,
        slot,
        wait_for_stop(slot, Recycle::default(), Default::default()),
    )
}
