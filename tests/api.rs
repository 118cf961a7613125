//! The HTTPS API of a running daemon: authentication, TLS, security headers, every route,
//! and the key and token commands.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pg_to_mysql_sync::api::security::SECURITY_HEADERS;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ApiAccess, Daemon, Databases, Pipeline, items_pipeline};

/// Starts a daemon in manual mode with the API on.
async fn api_daemon(databases: &Databases) -> (Pipeline, ApiAccess, Daemon) {
    let mut pipeline = items_pipeline(databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    (pipeline, api, daemon)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(algorithm: Algorithm, secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(exp: u64) -> serde_json::Value {
    json!({ "sub": "env", "iat": now() - 5, "exp": exp, "jti": "0123456789abcdef" })
}

/// Builds a token with a hand-written header over the given claims, with `signature`.
fn forged(header: serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn get_status(api: &ApiAccess, key: Option<&str>, token: Option<&str>) -> StatusCode {
    let mut request = api.client().get(api.url("/status"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn authentication_rejects_every_bad_credential() {
    let databases = Databases::create("auth").await;
    let (pipeline, api, daemon) = api_daemon(&databases).await;
    let key = api.api_key.as_str();
    let secret = api.jwt_secret.as_str();
    let valid = api.token().await;
    assert_eq!(get_status(&api, Some(key), Some(&valid)).await, 200);

    // A stored key, then revoked.
    let output = pipeline.run_cli(&["keys", "create", "monitoring"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored_key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let key_file = std::fs::read_to_string(api.data_dir.join("api-keys.json")).unwrap();
    assert!(
        !key_file.contains(&stored_key),
        "the key file holds the plaintext key"
    );
    assert!(!key_file.contains(&stored_key["p2ms_".len()..]));
    let stored_token = {
        let response = api
            .client()
            .post(api.url("/auth/token"))
            .header("x-api-key", &stored_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    };
    assert_eq!(
        get_status(&api, Some(&stored_key), Some(&stored_token)).await,
        200
    );
    // A JWT is bound to the key it was issued for.
    assert_eq!(get_status(&api, Some(key), Some(&stored_token)).await, 401);
    let listed = pipeline.run_cli(&["keys", "list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    let id = listed.split('\t').next().unwrap().to_string();
    assert!(listed.contains("monitoring"), "{listed}");
    let output = pipeline.run_cli(&["keys", "revoke", &id]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let expired = sign(Algorithm::HS256, secret, &claims(now() - 120));
    let hs512 = sign(Algorithm::HS512, secret, &claims(now() + 600));
    let wrong_secret = sign(
        Algorithm::HS256,
        "another-secret-another-secret-another-secret",
        &claims(now() + 600),
    );
    let alg_none = forged(
        json!({ "alg": "none", "typ": "JWT" }),
        &claims(now() + 600),
        "",
    );
    let valid_signature = valid.rsplit('.').next().unwrap();
    let rs256 = forged(
        json!({ "alg": "RS256", "typ": "JWT" }),
        &claims(now() + 600),
        valid_signature,
    );
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["exp"] = json!(now() + 86_400 * 365);
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        )
    };
    let cases: [(&str, Option<&str>, Option<&str>); 10] = [
        ("missing key", None, Some(&valid)),
        (
            "wrong key",
            Some("not-a-key-not-a-key-not-a-key-not-a-key"),
            Some(&valid),
        ),
        ("revoked key", Some(&stored_key), Some(&stored_token)),
        ("missing JWT", Some(key), None),
        ("expired JWT", Some(key), Some(&expired)),
        ("alg none", Some(key), Some(&alg_none)),
        ("HS512", Some(key), Some(&hs512)),
        ("RS256", Some(key), Some(&rs256)),
        ("wrong secret", Some(key), Some(&wrong_secret)),
        ("tampered payload", Some(key), Some(&tampered)),
    ];
    for (case, key, token) in cases {
        assert_eq!(get_status(&api, key, token).await, 401, "{case}");
    }

    // The body is the same for every cause.
    let response = api
        .client()
        .get(api.url("/status"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["message"], "missing or invalid credentials");

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn repeated_failures_are_rate_limited() {
    let databases = Databases::create("ratelimit").await;
    let (_pipeline, api, daemon) = api_daemon(&databases).await;
    let mut statuses = Vec::new();
    for _ in 0..22 {
        statuses.push(get_status(&api, Some("wrong-wrong-wrong-wrong-wrong-wrong"), None).await);
    }
    assert!(
        statuses[..20].iter().all(|status| *status == 401),
        "{statuses:?}"
    );
    assert_eq!(statuses[21], 429, "{statuses:?}");
    // Even valid credentials wait until the window ends.
    let token = {
        let response = api
            .client()
            .post(api.url("/auth/token"))
            .header("x-api-key", &api.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert!(response.headers().contains_key("retry-after"));
        response.status()
    };
    assert_eq!(token, 429);

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn every_route_answers_with_security_headers() {
    let databases = Databases::create("routes").await;
    let (_pipeline, api, daemon) = api_daemon(&databases).await;
    let token = api.token().await;
    let client = api.client();
    let cases: Vec<(Method, &str, Option<serde_json::Value>, u16)> = vec![
        (Method::GET, "/health", None, 200),
        (Method::GET, "/ready", None, 200),
        (Method::GET, "/status", None, 200),
        (Method::GET, "/metrics", None, 200),
        (Method::GET, "/openapi.json", None, 200),
        (Method::PUT, "/mode", Some(json!({ "mode": "manual" })), 200),
        (Method::PUT, "/mode", Some(json!({ "mode": 5 })), 400),
        (Method::POST, "/sync", None, 200),
        (Method::POST, "/sync/trigger-synctomysql", None, 200),
        (Method::GET, "/sync/trigger-synctomysql", None, 200),
        (Method::GET, "/sync/failed", None, 200),
        (Method::POST, "/sync/failed/retry", None, 200),
        (
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": [99] })),
            200,
        ),
        (
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": "all" })),
            400,
        ),
        (
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": null })),
            400,
        ),
        (
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": [0] })),
            400,
        ),
        (
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": [9_223_372_036_854_775_808_u64] })),
            400,
        ),
        (Method::DELETE, "/sync/failed/99", None, 404),
        (Method::DELETE, "/sync/failed/0", None, 400),
        (Method::GET, "/no/such/route", None, 404),
        (Method::DELETE, "/status", None, 405),
    ];
    for (method, path, body, expected) in cases {
        let mut request = client
            .request(method.clone(), api.url(path))
            .header("x-api-key", &api.api_key)
            .bearer_auth(&token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{method} {path}");
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                response.headers().get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name} on {method} {path}"
            );
        }
        assert!(
            response.headers().get("server").is_none(),
            "{method} {path}"
        );
        assert!(
            response.headers().get("x-powered-by").is_none(),
            "{method} {path}"
        );
        assert!(
            response.headers().get("x-request-id").is_some(),
            "{method} {path}"
        );
        if path == "/sync/trigger-synctomysql" && method == Method::GET {
            assert_eq!(response.headers().get("deprecation").unwrap(), "true");
        }
        if path == "/metrics" {
            let text = response.text().await.unwrap();
            assert!(text.contains("pg_to_mysql_sync_backlog_records"), "{text}");
            assert!(
                text.contains("pg_to_mysql_sync_apply_batch_duration_seconds"),
                "{text}"
            );
        } else if path == "/openapi.json" {
            let document: serde_json::Value = response.json().await.unwrap();
            assert_eq!(document["openapi"], "3.0.3");
        }
    }

    // Responses to unauthenticated requests carry the headers too.
    let response = client.get(api.url("/status")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            response.headers().get(name).unwrap(),
            value,
            "{name} on a 401"
        );
    }

    // A body over the limit is refused.
    let response = client
        .put(api.url("/mode"))
        .header("x-api-key", &api.api_key)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"mode\":\"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Requests are logged with their id, and never with credentials.
    let log = daemon.log();
    let status_line = log
        .lines()
        .find(|line| line.contains("path=/status") && line.contains("status=200"))
        .unwrap_or_else(|| panic!("no request line for /status: {log}"));
    assert!(status_line.contains("request_id="), "{status_line}");
    assert!(!log.contains(&api.api_key), "the log contains the API key");
    assert!(!log.contains(&token), "the log contains a JWT");

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn generated_certificate_is_trusted_only_through_its_ca() {
    let databases = Databases::create("tlsgen").await;
    let (pipeline, api, mut daemon) = api_daemon(&databases).await;
    crate::support::install_crypto_provider();
    assert!(
        daemon.log().contains("certificate_sha256"),
        "the fingerprint is logged: {}",
        daemon.log()
    );
    let response = api.client().get(api.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let untrusting = reqwest::Client::builder()
        .tls_certs_only(Vec::new())
        .build()
        .unwrap();
    assert!(untrusting.get(api.url("/health")).send().await.is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", api.port))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP is not served on the HTTPS port"
    );

    // The certificate is reused on the next start.
    let ca = std::fs::read(api.data_dir.join("tls/ca.pem")).unwrap();
    assert!(daemon.stop().success());
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    assert_eq!(std::fs::read(api.data_dir.join("tls/ca.pem")).unwrap(), ca);
    let key_mode = std::fs::metadata(api.data_dir.join("tls/server-key.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn provided_certificate_is_served() {
    let databases = Databases::create("tlsown").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let certificates = tempfile::tempdir().unwrap();
    crate::cli::make_certificates(certificates.path());
    // Operators usually configure the full chain: the server certificate, then its CA.
    let cert_path = certificates.path().join("fullchain.pem");
    let mut chain = std::fs::read(certificates.path().join("server.pem")).unwrap();
    chain.extend(std::fs::read(certificates.path().join("ca.pem")).unwrap());
    std::fs::write(&cert_path, chain).unwrap();
    let key_path = certificates.path().join("server.key");
    pipeline.set("HTTPS_CERT_PATH", cert_path.to_str().unwrap());
    pipeline.set("HTTPS_KEY_PATH", key_path.to_str().unwrap());
    let daemon = pipeline.start();
    crate::support::install_crypto_provider();

    let ca =
        pg_to_mysql_sync::api::tls::client_root_certificates(&certificates.path().join("ca.pem"))
            .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(ca)
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(api.url("/health")).send().await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                break;
            }
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "{error}: {}",
                daemon.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !api.data_dir.join("tls").exists(),
        "no certificate is generated"
    );

    // The command line trusts the provided chain.
    let output = pipeline.run_cli(&["status"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn token_command_prints_a_working_jwt() {
    let databases = Databases::create("tokencmd").await;
    let (pipeline, api, daemon) = api_daemon(&databases).await;
    let output = pipeline.run_cli(&["token"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(
        get_status(&api, Some(&api.api_key), Some(&token)).await,
        200
    );

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn api_start_errors_are_clear() {
    let databases = Databases::create("apierrors").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.enable_api();

    // No key at all: the API refuses to start.
    pipeline.set("API_KEY", "");
    let mut daemon = pipeline.start();
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        daemon.log().contains("no API key exists"),
        "{}",
        daemon.log()
    );

    // Plain HTTP on every interface is refused before anything starts.
    pipeline.set("API", "http");
    pipeline.set("BIND_ADDRESS", "0.0.0.0");
    let output = pipeline.run_cli(&["run"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Manual mode without the API could never apply.
    pipeline.set("API", "off");
    pipeline.set("MODE", "manual");
    let output = pipeline.run_cli(&["run"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("MODE=manual"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    databases.drop_all().await;
}
