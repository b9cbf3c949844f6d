//! Operations: what a server does beside running the application (static
//! files today; access log, stats and health later). The hot path calls into
//! this room through one function per concern and never the other way:
//! nothing here knows of connections, codecs or the application threads.

pub mod static_files;
