//! The WSGI model shared by every part of the server: the environ as a Rust
//! value, PEP 3333 response-head validation, and the contract a runtime
//! (CPython, or a pure-Rust application) implements to serve requests.
//!
//! This crate knows nothing of Python, sockets or async runtimes. A server
//! builds an [`Environ`] from a parsed request (from our codecs, or from
//! `http::request::Parts` in a hyper-based server), hands it to an
//! [`Application`] together with a [`BodyReader`] and a [`ResponseSink`], and
//! the application answers through the sink.
//!
//! # The threading contract
//! WSGI is blocking. The server owns a pool of executor threads and gives each
//! one to [`Application::serve_thread`] for its whole life, so a runtime can
//! keep per-thread state (a CPython thread state, `threading.local`) across
//! requests. Every method of [`BodyReader`] and [`ResponseSink`] returns at
//! once except the ones named `wait`: a runtime with a global lock (the GIL)
//! releases it only around `wait`, that is, only when it must.
#![deny(missing_docs)]

mod app;
mod environ;
mod error;
pub mod proxy;
mod response;
#[cfg(feature = "testing")]
pub mod testing;

pub use app::{
    Application, BodyReader, EmptyBody, ErrorLog, FileRegion, Handler, HandlerApp, Request,
    RequestSource, ResponseSink, StderrLog,
};
pub use environ::{
    percent_decode, ConnInfo, Environ, EnvironOptions, PeerAddr, UrlScheme, SERVER_SOFTWARE,
};
pub use error::{AppError, EnvironError, HeadError, SinkError};
pub use response::{is_hop_by_hop, parse_status, validate_header, ResponseHead};
