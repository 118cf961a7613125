//! Security building blocks of the HTTPS API: API keys, JWTs, TLS certificate, HTTP hardening.
pub mod keys;
pub mod security;
pub mod tls;
pub mod token;
