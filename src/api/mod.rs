//! The HTTPS API: the server and routes, and its security parts: API keys, JWTs, the TLS
//! certificate and HTTP hardening.
pub mod client;
pub mod keys;
pub mod security;
pub mod server;
pub mod tls;
pub mod token;
