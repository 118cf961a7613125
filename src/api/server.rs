//! The HTTPS API: routes, authentication middleware and the server task.
//!
//! Every route except `GET /health` needs an API key (`x-api-key`) and a JWT issued for that
//! key (`Authorization: Bearer`); `POST /auth/token` exchanges a key for a JWT. Responses are
//! JSON, carry the security headers of [`super::security`], and never contain database error
//! text or row values, with one documented exception: `GET /sync/failed` returns the primary
//! keys of parked changes, which an operator needs to find them.
//!
//! The route table in [`routes`] is the single list of routes; a test checks it against the
//! OpenAPI document served at `/openapi.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument, info, warn};

use super::keys::KeyRing;
use super::security::{API_KEY_HEADER, ApiError, AuthFailureLimiter, security_headers};
use super::token::JwtKeys;
use crate::apply::{ApplyHandle, RunError};
use crate::config::{ApiConfig, ApiProtocol, Mode, Secret};
use crate::jobs::{JobError, Jobs, VerifyJobError};
use crate::status::Board;
use crate::verify::VerifyOptions;

/// The OpenAPI document of this API.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Time limit of ordinary requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of requests that apply changes, which can take long for a large backlog. The
/// run goes on to its end even when the client stops waiting.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Time limit of one database reachability check.
const REACHABILITY_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest id of a parked change that a request may name. Ids are journal sequence numbers,
/// which start at 1, and the OpenAPI document declares them as int64.
const MAX_CHANGE_ID: u64 = i64::MAX as u64;

/// State shared by the handlers.
pub struct ApiState {
    board: Arc<Board>,
    apply: ApplyHandle,
    keys: KeyRing,
    jwt: JwtKeys,
    jwt_ttl: Duration,
    limiter: AuthFailureLimiter,
    journal_dir: PathBuf,
    pg_url: Secret,
    mysql_url: Secret,
    version: &'static str,
    jobs: Arc<Jobs>,
    shutdown: CancellationToken,
}

impl ApiState {
    /// Creates the state; fails when no API key exists, because no client could then call
    /// the API.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &ApiConfig,
        board: Arc<Board>,
        apply: ApplyHandle,
        keys: KeyRing,
        journal_dir: PathBuf,
        pg_url: Secret,
        mysql_url: Secret,
        version: &'static str,
        jobs: Arc<Jobs>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        if keys.is_empty() {
            anyhow::bail!(
                "no API key exists, so no client could call the API; create one with \
                 `pg-to-mysql-sync keys create NAME`, set API_KEY, or set API=off"
            );
        }
        let secret = config
            .jwt_secret
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("JWT_SECRET is missing"))?;

        Ok(ApiState {
            board,
            apply,
            keys,
            jwt: JwtKeys::new(secret.expose())?.with_max_lifetime(config.jwt_ttl),
            jwt_ttl: config.jwt_ttl,
            limiter: AuthFailureLimiter::default(),
            journal_dir,
            pg_url,
            mysql_url,
            version,
            jobs,
            shutdown,
        })
    }
}

type Shared = Arc<ApiState>;

/// One route: method, path as the OpenAPI document writes it, and whether it applies
/// changes (and so gets the longer time limit).
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{name}` parameters.
    pub path: &'static str,
    sync: bool,
    public: bool,
    handler: MethodRouter<Shared>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<Shared>) -> Route {
    Route {
        method,
        path,
        sync: false,
        public: false,
        handler,
    }
}

/// Returns every route of the API.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            public: true,
            ..route(Method::GET, "/health", get(health))
        },
        Route {
            public: true,
            ..route(Method::POST, "/auth/token", post(issue_token))
        },
        route(Method::GET, "/ready", get(ready)),
        route(Method::GET, "/status", get(status)),
        route(Method::GET, "/metrics", get(metrics)),
        route(Method::GET, "/openapi.json", get(openapi)),
        route(Method::PUT, "/mode", axum::routing::put(set_mode)),
        Route {
            sync: true,
            ..route(Method::POST, "/sync", post(sync))
        },
        Route {
            sync: true,
            ..route(Method::POST, "/sync/trigger-synctomysql", post(sync))
        },
        Route {
            sync: true,
            ..route(
                Method::GET,
                "/sync/trigger-synctomysql",
                get(deprecated_sync),
            )
        },
        route(Method::GET, "/sync/failed", get(list_failed)),
        Route {
            sync: true,
            ..route(Method::POST, "/sync/failed/retry", post(retry_failed))
        },
        route(
            Method::DELETE,
            "/sync/failed/{id}",
            axum::routing::delete(delete_failed),
        ),
        route(Method::POST, "/snapshot", post(start_snapshot)),
        route(Method::GET, "/snapshot", get(snapshot_status)),
        Route {
            sync: true,
            ..route(Method::POST, "/verify", post(verify))
        },
    ]
}

/// Builds the router with its layers.
pub fn router(state: Shared) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    let mut protected_sync = Router::new();
    for Route {
        path,
        sync,
        public: is_public,
        handler,
        ..
    } in routes()
    {
        if is_public {
            public = public.route(path, handler);
        } else if sync {
            protected_sync = protected_sync.route(path, handler);
        } else {
            protected = protected.route(path, handler);
        }
    }
    let timeout = |limit| TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit);
    let protected = protected
        .layer(timeout(REQUEST_TIMEOUT))
        .merge(protected_sync.layer(timeout(SYNC_TIMEOUT)))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));

    public
        .layer(timeout(REQUEST_TIMEOUT))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(security_headers())
}

/// Binds the API's address and serves it until `shutdown`. Binding happens before this
/// returns, so a taken port fails the start.
pub async fn start(
    config: &ApiConfig,
    tls: Option<super::tls::ServerTls>,
    state: ApiState,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    let listener = std::net::TcpListener::bind(config.bind).map_err(|error| {
        anyhow::anyhow!(
            "cannot listen on {} for the API: {error}; choose another PORT or BIND_ADDRESS, \
             or stop the program that uses it",
            config.bind
        )
    })?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let bind = config.bind;
    let protocol = config.protocol;
    let task = match (protocol, tls) {
        (ApiProtocol::Https, Some(tls)) => {
            info!(
                address = %bind,
                certificate_sha256 = tls.fingerprint_sha256(),
                certificate = if tls.is_generated() {
                    "DATA_DIR/tls, signed by its own CA"
                } else {
                    "HTTPS_CERT_PATH"
                },
                "API listening on HTTPS"
            );
            let server =
                axum_server::from_tcp_rustls(listener, tls.rustls_config())?.handle(handle);
            tokio::spawn(async move {
                if let Err(error) = server.serve(app).await {
                    warn!(error = %error, "the API server stopped");
                }
            })
        }
        _ => {
            warn!(address = %bind, "API listening on plain HTTP (API=http); use it only behind a local TLS proxy");
            let server = axum_server::from_tcp(listener)?.handle(handle);
            tokio::spawn(async move {
                if let Err(error) = server.serve(app).await {
                    warn!(error = %error, "the API server stopped");
                }
            })
        }
    };

    Ok(task)
}

/// Logs each request with its id, method, path, status and duration, inside a span that
/// gives every log line of the request the same id. Health checks and metric scrapes are
/// logged at DEBUG, other requests at INFO. The query string is not logged.
async fn log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let method = request.method().clone();
    // A client chooses the path, so only its start is logged.
    let path: String = request.uri().path().chars().take(200).collect();
    let span = tracing::info_span!("request", request_id = %id);
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;

    let _entered = span.enter();
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if path == "/health" || path == "/metrics" {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else {
        info!(%method, %path, status, elapsed_ms, "request");
    }
    response
}

/// Rejects a request without a valid API key and JWT, and rate-limits repeated failures from
/// one client address.
async fn require_auth(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let now = std::time::Instant::now();
    if let Err(error) = state.limiter.check(client.ip(), now) {
        return error.into_response();
    }
    match super::security::authenticate(request.headers(), &state.keys, &state.jwt) {
        Ok(_) => next.run(request).await,
        Err(_) => {
            state.limiter.record_failure(client.ip(), now);
            ApiError::Unauthorized.into_response()
        }
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Exchanges an API key for a JWT issued for that key.
async fn issue_token(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = std::time::Instant::now();
    state.limiter.check(client.ip(), now)?;
    // Exactly one key, as the other routes require.
    let mut presented = headers.get_all(API_KEY_HEADER).iter();
    let key_id = match (presented.next(), presented.next()) {
        (Some(value), None) => value.to_str().ok().and_then(|key| state.keys.verify(key)),
        _ => None,
    };
    let Some(key_id) = key_id else {
        info!("token request with a missing or unknown API key");
        state.limiter.record_failure(client.ip(), now);
        return Err(ApiError::Unauthorized);
    };
    let (token, expires_at) = state.jwt.issue(&key_id, state.jwt_ttl).map_err(|error| {
        warn!(error = %error, "failed to issue a JWT");
        ApiError::Internal
    })?;

    Ok(Json(serde_json::json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "expires_in": state.jwt_ttl.as_secs(),
    })))
}

/// Reports whether each database accepts a connection.
async fn check_databases(state: &ApiState) -> (bool, bool) {
    let postgres = async {
        tokio::time::timeout(
            REACHABILITY_TIMEOUT,
            crate::capture::connect_pg(&state.pg_url),
        )
        .await
        .is_ok_and(|result| result.is_ok())
    };
    let mysql = async {
        match tokio::time::timeout(
            REACHABILITY_TIMEOUT,
            crate::apply::connect(&state.mysql_url),
        )
        .await
        {
            Ok(Ok(conn)) => {
                // Closing politely is best effort; the check already succeeded.
                let _ = conn.disconnect().await;
                true
            }
            _ => false,
        }
    };
    tokio::join!(postgres, mysql)
}

fn reachability(up: bool) -> &'static str {
    if up { "reachable" } else { "unreachable" }
}

async fn ready(State(state): State<Shared>) -> Response {
    let (postgres, mysql) = check_databases(&state).await;
    let body = Json(serde_json::json!({
        "postgres": reachability(postgres),
        "mysql": reachability(mysql),
    }));
    let status = if postgres && mysql {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

fn journal_bytes(state: &ApiState) -> u64 {
    crate::journal::segment_usage(&state.journal_dir)
        .map(|usage| usage.bytes)
        .unwrap_or(0)
}

async fn status(State(state): State<Shared>) -> Json<serde_json::Value> {
    let (postgres, mysql) = check_databases(&state).await;
    let snapshot = state.board.snapshot(journal_bytes(&state));
    let mut body = serde_json::to_value(snapshot).expect("the status always serializes");
    body["postgres"] = reachability(postgres).into();
    body["mysql"] = reachability(mysql).into();
    body["version"] = state.version.into();
    Json(body)
}

async fn metrics(State(state): State<Shared>) -> Response {
    let text = state.board.encode_metrics(journal_bytes(&state));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: String,
}

async fn set_mode(
    State(state): State<Shared>,
    body: Result<Json<ModeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(request) = body.map_err(bad_json)?;
    let mode: Mode = request.mode.parse().map_err(|_| ApiError::BadRequest {
        message: "mode must be automatic, auto-check or manual".into(),
    })?;
    let previous = state.board.set_mode(mode);
    info!(
        from = previous.name(),
        to = mode.name(),
        "mode changed through the API; MODE in the configuration applies again after a restart"
    );

    Ok(Json(serde_json::json!({
        "mode": mode.name(),
        "previous_mode": previous.name(),
        "persistent": false,
    })))
}

fn bad_json(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    ApiError::BadRequest {
        message: format!("invalid JSON body: {}", rejection.body_text()).into(),
    }
}

fn run_error(error: RunError) -> ApiError {
    match error {
        RunError::Unavailable(message) => ApiError::ServiceUnavailable {
            message: format!("{message}; the backlog is kept and applied later").into(),
        },
        RunError::Halted(message) => ApiError::Conflict {
            message: message.into(),
        },
        RunError::Stopping => ApiError::ServiceUnavailable {
            message: "the daemon is stopping".into(),
        },
    }
}

async fn sync(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let report = state.apply.sync().await.map_err(run_error)?;
    Ok(Json(serde_json::json!(report)))
}

/// Runs the manual sync for the original service's GET route, kept for its clients.
async fn deprecated_sync(State(state): State<Shared>) -> Response {
    let mut response = sync(State(state)).await.into_response();
    response
        .headers_mut()
        .insert("deprecation", HeaderValue::from_static("true"));
    response
}

async fn list_failed(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let changes = state.apply.list_failed().await.map_err(run_error)?;
    Ok(Json(serde_json::json!({ "failed": changes })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// Ids to retry; absent retries every parked change. `null` is rejected, because the
    /// document allows only an array and a client that sends null may not mean "all".
    #[serde(default, deserialize_with = "deserialize_ids")]
    ids: Option<Vec<u64>>,
}

fn deserialize_ids<'de, D>(deserializer: D) -> Result<Option<Vec<u64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Vec::<u64>::deserialize(deserializer).map(Some)
}

async fn retry_failed(
    State(state): State<Shared>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest {
                message: "the request body cannot be read".into(),
            }
        }
    })?;
    // An empty body retries everything.
    let request: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| ApiError::BadRequest {
            message: format!(
                "invalid JSON body: {error}; send {{\"ids\": [1, 2]}}, or no body for all"
            )
            .into(),
        })?
    };
    if let Some(ids) = &request.ids {
        for &id in ids {
            check_change_id(id)?;
        }
    }
    let report = state
        .apply
        .retry_failed(request.ids)
        .await
        .map_err(run_error)?;
    Ok(Json(serde_json::json!(report)))
}

async fn delete_failed(
    State(state): State<Shared>,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::BadRequest {
        message: "the id must be a whole number, the journal sequence number of the change".into(),
    })?;
    check_change_id(id)?;
    if state.apply.delete_failed(id).await.map_err(run_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            message: format!("no failed change has id {id}").into(),
        })
    }
}

/// Rejects an id outside 1 to [`MAX_CHANGE_ID`], the range the OpenAPI document declares.
fn check_change_id(id: u64) -> Result<(), ApiError> {
    if (1..=MAX_CHANGE_ID).contains(&id) {
        return Ok(());
    }
    Err(ApiError::BadRequest {
        message: format!(
            "id {id} is out of range; ids are journal sequence numbers from 1 to {MAX_CHANGE_ID}"
        )
        .into(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    /// Tables as `schema.table`; absent for every synced table. An empty list is rejected,
    /// because a snapshot empties its tables first and a client's list can end up empty by
    /// mistake.
    #[serde(default)]
    tables: Option<Vec<String>>,
}

/// Reads an optional JSON body; an empty body gives the default request.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest {
                message: "the request body cannot be read".into(),
            }
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|error| ApiError::BadRequest {
        message: format!("invalid JSON body: {error}; send {example}, or no body").into(),
    })
}

fn job_error(error: JobError) -> ApiError {
    match error {
        JobError::Starting => ApiError::ServiceUnavailable {
            message: error.to_string().into(),
        },
        JobError::Busy(_) => ApiError::Conflict {
            message: error.to_string().into(),
        },
        JobError::UnknownTable(_) => ApiError::BadRequest {
            message: error.to_string().into(),
        },
    }
}

async fn start_snapshot(
    State(state): State<Shared>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: SnapshotRequest = optional_body(body, r#"{"tables": ["public.orders"]}"#)?;
    if request.tables.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::BadRequest {
            message: "tables is an empty list; name tables as schema.table, or leave the field \
                      out to copy every synced table"
                .into(),
        });
    }
    let tables = state
        .jobs
        .start_snapshot(
            request.tables.as_deref().unwrap_or_default(),
            state.shutdown.clone(),
        )
        .map_err(job_error)?;
    info!(tables = tables.len(), "snapshot started through the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "tables": tables })),
    ))
}

async fn snapshot_status(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "running": state.jobs.snapshot_running(),
        "tables": state.board.snapshots(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    repair: bool,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

impl Default for VerifyRequest {
    fn default() -> Self {
        VerifyRequest {
            tables: Vec::new(),
            repair: false,
            max_keys: default_max_keys(),
        }
    }
}

fn default_max_keys() -> usize {
    100
}

async fn verify(
    State(state): State<Shared>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: VerifyRequest =
        optional_body(body, r#"{"tables": ["public.orders"], "repair": false}"#)?;
    if request.max_keys > 10_000 {
        return Err(ApiError::BadRequest {
            message: "max_keys must be at most 10000".into(),
        });
    }
    let options = VerifyOptions {
        repair: request.repair,
        max_keys: request.max_keys,
    };
    let report = state
        .jobs
        .verify(&request.tables, options, &state.shutdown)
        .await
        .map_err(|error| match error {
            VerifyJobError::Job(error) => job_error(error),
            VerifyJobError::Verify(error) => ApiError::ServiceUnavailable {
                message: error.to_string().into(),
            },
        })?;
    Ok(Json(serde_json::json!(report)))
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        message: "no such route; GET /openapi.json lists the routes".into(),
    }
}

async fn method_not_allowed() -> Response {
    let body = serde_json::json!({
        "error": "method_not_allowed",
        "message": "this route does not accept that method; GET /openapi.json lists the routes",
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented_operations() -> Vec<(String, String, serde_json::Value)> {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let mut operations = Vec::new();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                operations.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
        operations.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        operations
    }

    #[test]
    fn openapi_document_lists_every_route() {
        let documented: Vec<(String, String)> = documented_operations()
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let mut served: Vec<(String, String)> = routes()
            .iter()
            .map(|route| (route.method.to_string(), route.path.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn change_id_range_matches_document() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let schema = &document["paths"]["/sync/failed/{id}"]["delete"]["parameters"][0]["schema"];
        assert_eq!(schema["minimum"], 1);
        assert_eq!(schema["format"], "int64");

        for id in [1, 2, MAX_CHANGE_ID] {
            assert!(check_change_id(id).is_ok(), "{id} rejected");
        }
        for id in [0, MAX_CHANGE_ID + 1, u64::MAX] {
            let error = check_change_id(id).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{id}");
        }
    }

    #[test]
    fn retry_request_rejects_null_ids() {
        let all: RetryRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(all.ids, None);
        let some: RetryRequest = serde_json::from_str(r#"{"ids": [3, 4]}"#).unwrap();
        assert_eq!(some.ids, Some(vec![3, 4]));

        let null = serde_json::from_str::<RetryRequest>(r#"{"ids": null}"#);
        assert!(null.is_err(), "{null:?}");
    }

    #[test]
    fn openapi_document_marks_public_routes() {
        let public: Vec<(String, String)> = routes()
            .iter()
            .filter(|route| route.public)
            .map(|route| (route.method.to_string(), route.path.to_string()))
            .collect();
        for (method, path, operation) in documented_operations() {
            // A route without the global requirement of key and JWT overrides `security`.
            let overrides = operation.get("security").is_some();
            assert_eq!(
                overrides,
                public.contains(&(method.clone(), path.clone())),
                "{method} {path}"
            );
        }
    }
}
