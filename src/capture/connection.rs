//! PostgreSQL connections, with TLS when the URL requests it.
//!
//! `sslmode=require` in `PG_DATABASE_URL` makes the connection use TLS with full verification
//! of the server certificate (chain and host name) against the system's trusted roots, plus the
//! PEM file named by `PG_SSL_ROOT_CERT` if set. That is stricter than libpq's `require`, which
//! skips verification. Any other `sslmode`, or none, connects without TLS, because a server with
//! a self-signed certificate would otherwise fail the default `prefer`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Secret;

/// Environment variable naming an extra PEM file of trusted certificate authorities.
pub const PG_SSL_ROOT_CERT_ENV: &str = "PG_SSL_ROOT_CERT";

/// Failure to connect to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused or could not be reached.
    #[error("failed to connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    /// The TLS setup failed before connecting.
    #[error("failed to set up TLS for PostgreSQL: {0}")]
    Tls(String),
}

/// An open connection: the client, a signal fired on every notification, and a token
/// cancelled when the connection closes.
pub struct PgConnection {
    /// The client for queries.
    pub client: Client,
    /// Notified on each `NOTIFY` received.
    pub notifications: Arc<Notify>,
    /// Cancelled when the connection ends.
    pub closed: CancellationToken,
}

/// Connects, using TLS when the URL sets `sslmode=require`, and drives the connection in a
/// background task.
pub async fn connect_pg(url: &Secret) -> Result<PgConnection, ConnectError> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(ConnectError::Connect)?;
    // Keepalive probes detect a server that vanished without closing the connection (after a
    // failover, say) within about a minute and a half, instead of the system's two hours.
    config
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(6);
    if config.get_ssl_mode() == SslMode::Require {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
        let (client, connection) = config.connect(tls).await.map_err(ConnectError::Connect)?;
        Ok(drive(client, connection))
    } else {
        let (client, connection) = config.connect(NoTls).await.map_err(ConnectError::Connect)?;
        Ok(drive(client, connection))
    }
}

fn tls_config() -> Result<rustls::ClientConfig, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        debug!(error = %error, "skipped a system certificate");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = std::env::var_os(PG_SSL_ROOT_CERT_ENV) {
        let certificates = CertificateDer::pem_file_iter(&path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|error| {
                ConnectError::Tls(format!(
                    "{PG_SSL_ROOT_CERT_ENV}={} is not a readable PEM file: {error}",
                    std::path::Path::new(&path).display()
                ))
            })?;
        for certificate in certificates {
            roots.add(certificate).map_err(|error| {
                ConnectError::Tls(format!(
                    "{PG_SSL_ROOT_CERT_ENV} contains an invalid certificate: {error}"
                ))
            })?;
        }
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(format!(
            "no trusted certificate authorities found; install ca-certificates or set \
             {PG_SSL_ROOT_CERT_ENV} to the server's CA file"
        )));
    }

    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn drive<S, T>(client: Client, mut connection: Connection<S, T>) -> PgConnection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let notifications = Arc::new(Notify::new());
    let closed = CancellationToken::new();
    let (task_notifications, task_closed) = (notifications.clone(), closed.clone());
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => task_notifications.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    debug!(error = %error, "PostgreSQL connection ended");
                    break;
                }
            }
        }
        task_closed.cancel();
    });

    PgConnection {
        client,
        notifications,
        closed,
    }
}
