//! What operators look at, fed by the per-request record and the counters
//! the hot path fills: the access log. Nothing here is called back by a
//! connection except through the record.

pub mod access_log;
