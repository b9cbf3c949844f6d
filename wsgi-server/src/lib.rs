//! The WSGI application server: listeners, connections, timers, the
//! application thread pool, signals, configuration and logging. The only
//! crate of the workspace that does I/O; the reference binary is `main.rs`.
#![deny(missing_docs)]

pub mod buffering;
pub mod config;
pub mod connection;
pub mod date;
pub mod direct;
pub mod exchange;
pub mod listener;
pub mod log;
pub mod master;
pub mod net;
pub mod ops;
pub mod pool;
pub mod process;
#[cfg(feature = "python")]
pub mod python_runtime;
pub mod record;
pub mod runtime;
pub mod scoreboard;
pub mod server;
pub mod signals;
pub mod stop;
pub mod uwsgi;
pub mod worker;
