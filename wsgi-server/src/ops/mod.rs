//! What operators look at, fed by the per-request record and the counters
//! the hot path fills: the access log, Prometheus metrics and uWSGI's stats
//! (rendered from a snapshot the master takes). Nothing here is called
//! back by a connection except through the record.

pub mod access_log;
pub mod metrics;
pub mod snapshot;
pub mod stats;
