//! Security building blocks of the HTTPS API: API keys, JWTs, the server certificate and HTTP hardening.
pub mod keys;
pub mod security;
pub mod tls;
pub mod token;
