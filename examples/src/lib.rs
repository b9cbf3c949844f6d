//! Runnable examples of the workspace's crates used on their own; see the
//! `examples/` directory (`cargo run -p examples --example NAME`):
//!
//! - `blocking_http`: `wsgi-http` alone, driven by a blocking `std::net`
//!   loop: the sans-I/O codec needs no async runtime and no Python.
//! - `rust_app`: the `wsgi-server` library serving a Rust
//!   [`wsgi_core::Handler`] without Python.
//! - `hyper_flask`: a WSGI server on hyper ([`hyper_wsgi`]) serving a Flask
//!   app through `wsgi-core` + `wsgi-python` alone, no `wsgi-server` code.
//!
//! The WSGI applications and deployment files the tests use live beside:
//! `apps/` (Flask, Django, PEP 3333 apps), `nginx/`, `supervisor/`, `systemd/`.

pub mod hyper_wsgi;
