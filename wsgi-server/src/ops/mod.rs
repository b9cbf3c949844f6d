//! Operations: what a server does beside running the application, fed by
//! the per-request record and the counters the hot path fills: the access
//! log, Prometheus metrics and uWSGI's stats (rendered from a snapshot the
//! master takes), static files. The hot path calls into this room through
//! one function per concern and never the other way: nothing here knows of
//! connections, codecs or the application threads.

pub mod access_log;
pub mod endpoint;
pub mod metrics;
pub mod snapshot;
pub mod static_files;
pub mod stats;
