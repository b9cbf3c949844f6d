//! The WSGI application server: listeners, connections, timers, the
//! application thread pool, signals, configuration and logging. The only
//! crate of the workspace that does I/O.
//!
//! The entry is [`main_with`] (a command line, an environment and a
//! [`runtime::Runtime`]: parse, resolve, serve) or [`run`] (an already
//! resolved [`config::ServerConfig`]). The reference binary (`main.rs`) and
//! the Python package's extension module (`wsgi-pyext`) are both thin
//! callers of it.
#![deny(missing_docs)]

pub mod buffering;
pub mod config;
pub mod connection;
pub mod date;
pub mod direct;
pub mod exchange;
pub mod lend;
pub mod linger;
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
pub mod request;
pub mod runner;
pub mod runtime;
pub mod scoreboard;
pub mod server;
pub mod signals;
pub mod stop;
pub mod uwsgi;
pub mod worker;

pub use runner::{main_with, run};
