//! The command line's client of the daemon's API, for `status`, `sync`, `failed` and `mode`.
//!
//! It reads the address and the credentials from the same configuration as the daemon: the
//! API key from `API_KEY`, exchanged for a JWT at `POST /auth/token`. It trusts only the
//! generated CA in `DATA_DIR/tls`, or the operator's certificate chain from
//! `HTTPS_CERT_PATH`.

use std::path::Path;

use anyhow::Context;
use reqwest::{Method, StatusCode};

use super::security::API_KEY_HEADER;
use super::tls;
use crate::config::{ApiConfig, ApiProtocol, Secret};

/// A client of one daemon's API.
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
}

impl ApiClient {
    /// Creates a client for the API that `config` describes. `url` overrides the address,
    /// e.g. when the certificate names a host rather than the loopback address.
    pub fn new(config: &ApiConfig, data_dir: &Path, url: Option<&str>) -> anyhow::Result<Self> {
        if config.protocol == ApiProtocol::Off {
            anyhow::bail!(
                "the API is off (API=off), so there is no daemon to ask; set API=https, or use \
                 `sync --offline` while the daemon is stopped"
            );
        }
        let api_key = config.api_key.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "API_KEY is missing: this command calls the daemon's API and needs a key; \
                 create one with `pg-to-mysql-sync keys create cli` and put it in .env as \
                 API_KEY, or set API_KEY to the daemon's own API_KEY"
            )
        })?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(20 * 60))
            .connect_timeout(std::time::Duration::from_secs(10));
        if config.protocol == ApiProtocol::Https {
            builder = builder.tls_certs_only(trusted_roots(config, data_dir)?);
        }
        let http = builder.build().context("create the HTTP client")?;

        Ok(ApiClient {
            http,
            base_url: url
                .map(|url| url.trim_end_matches('/').to_string())
                .unwrap_or_else(|| config.local_url()),
            api_key,
        })
    }

    /// Sends a request with fresh credentials and returns the status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let token = self.token().await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(API_KEY_HEADER, self.api_key.expose())
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let status = response.status();
        let text = response.text().await.context("read the API response")?;
        let value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };

        Ok((status, value))
    }

    async fn token(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/auth/token", self.base_url))
            .header(API_KEY_HEADER, self.api_key.expose())
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            anyhow::bail!(
                "the daemon at {} does not accept API_KEY; check that it is the daemon's \
                 API_KEY or a key from `keys list` that is not revoked",
                self.base_url
            );
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.context("read the token response")?;
        match body.get("token").and_then(|token| token.as_str()) {
            Some(token) if status.is_success() => Ok(token.to_string()),
            _ => anyhow::bail!("the daemon did not issue a token: HTTP {status}: {body}"),
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        let cause = crate::telemetry::ErrorChain(&error).to_string();
        anyhow::anyhow!(
            "cannot reach the daemon's API at {}: {cause}. Is the daemon running with this \
             configuration? (`sync --offline` applies changes without a daemon)",
            self.base_url
        )
    }
}

/// Returns the certificates the client trusts: the generated CA alone, or, for the operator's
/// own certificate, the system's CAs plus every certificate in its chain file, so that a
/// chain ending in a private CA works too.
fn trusted_roots(config: &ApiConfig, data_dir: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(chain_path) = &config.cert_path else {
        let ca_path = data_dir.join(tls::TLS_DIR_NAME).join(tls::CA_FILE_NAME);
        return tls::client_root_certificates(&ca_path).with_context(|| {
            format!(
                "read the CA certificate to trust from {}; start the daemon once so that it \
                 generates it",
                ca_path.display()
            )
        });
    };
    let mut roots = tls::client_root_certificates(chain_path)
        .with_context(|| format!("read HTTPS_CERT_PATH {}", chain_path.display()))?;
    // Unreadable system certificates are skipped; the chain file may be enough.
    for der in rustls_native_certs::load_native_certs().certs {
        if let Ok(certificate) = reqwest::Certificate::from_der(&der) {
            roots.push(certificate);
        }
    }

    Ok(roots)
}
