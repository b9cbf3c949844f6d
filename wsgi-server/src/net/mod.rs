//! The network edge below the connections: what arrives before a protocol's
//! first byte (the PROXY protocol). Listeners move here as the house grows.

pub mod proxy_protocol;
