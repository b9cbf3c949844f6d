//! Why and when a serving process stops: how a stop was asked for, and the
//! notifications the application threads (max-requests, a stuck request)
//! and the reload watcher send the stop loop. Below the pool, the worker and
//! the server, so none of them needs another to ask for a stop.

use tokio::sync::Notify;

/// How a stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, close idle connections, let in-flight requests finish
    /// up to the graceful timeout (TERM, INT).
    Graceful,
    /// Close everything now (QUIT).
    Immediate,
}

/// Notified by the application threads when `--max-requests` is reached.
pub static RETIRE_NOW: Notify = Notify::const_new();

/// Notified by the `--timeout` watchdog when a request did not return
/// after its grace: the worker stops accepting and is replaced.
pub static STUCK_REQUEST: Notify = Notify::const_new();

/// Notified by the `--reload` watcher when a source file changed.
pub static SOURCE_CHANGED: Notify = Notify::const_new();
