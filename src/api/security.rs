//! HTTP hardening for the API: security headers, the shared error response, authentication of
//! a request and a limiter for failed authentications.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::{Ready, ready};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{MapResponseLayer, map_response};
use axum::response::{IntoResponse, Response};

use super::keys::KeyRing;
use super::token::{JwtKeys, TokenError};

/// Headers set on every response, as (lowercase name, value). They follow the defaults of the
/// Express middleware helmet, with a stricter `Content-Security-Policy` because the API serves
/// no HTML, plus `Cache-Control: no-store` because responses carry operational state that
/// proxies and browsers should not keep.
pub const SECURITY_HEADERS: [(&str, &str); 13] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-permitted-cross-domain-policies", "none"),
    ("origin-agent-cluster", "?1"),
    ("x-xss-protection", "0"),
    ("cache-control", "no-store"),
];

/// Headers removed from every response because they reveal the server software.
pub const REMOVED_HEADERS: [&str; 2] = ["server", "x-powered-by"];

/// Layer type returned by [`security_headers`].
pub type SecurityHeadersLayer = MapResponseLayer<fn(Response) -> Ready<Response>, (), ()>;

/// Returns a layer that sets [`SECURITY_HEADERS`] on every response, replacing values a
/// handler set, and removes [`REMOVED_HEADERS`].
///
/// Add it with `Router::layer` (not `route_layer`) and after the other layers, so it also
/// covers the fallback 404 and the responses of timeout and body-limit layers.
pub fn security_headers() -> SecurityHeadersLayer {
    map_response(apply_security_headers as fn(Response) -> Ready<Response>)
}

/// Sets [`SECURITY_HEADERS`] on `response` and removes [`REMOVED_HEADERS`].
pub fn apply_security_headers(mut response: Response) -> Ready<Response> {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    for name in REMOVED_HEADERS {
        headers.remove(name);
    }

    ready(response)
}

/// Error response shared by all handlers: a status code and the JSON body
/// `{"error": "<code>", "message": "<text>"}`.
///
/// Contract: a message is written for the API client and must never contain database error
/// text, row values, file contents or secrets. Handlers log such detail themselves and return
/// a short, fixed description here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401. Missing or invalid credentials. The body is the same for every cause.
    Unauthorized,
    /// 429. Too many failed authentications from this client; `Retry-After` is set.
    TooManyRequests {
        /// Seconds until the client may try again.
        retry_after_seconds: u64,
    },
    /// 400. The request is malformed.
    BadRequest {
        /// Description of the problem for the client.
        message: Cow<'static, str>,
    },
    /// 413. The request body is larger than the API accepts.
    PayloadTooLarge,
    /// 404. The requested object does not exist.
    NotFound {
        /// Description of the missing object for the client.
        message: Cow<'static, str>,
    },
    /// 409. The request conflicts with the current state, for example a sync already running.
    Conflict {
        /// Description of the conflict for the client.
        message: Cow<'static, str>,
    },
    /// 503. A dependency such as MySQL is unavailable; the client may retry later.
    ServiceUnavailable {
        /// Description of the unavailable part for the client.
        message: Cow<'static, str>,
    },
    /// 500. An unexpected failure, logged by the handler. The client gets a fixed message.
    Internal,
}

/// Message of every 401 response. It does not say which credential was wrong.
pub const UNAUTHORIZED_MESSAGE: &str = "missing or invalid credentials";

impl ApiError {
    /// Returns the HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the machine-readable code of the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::ServiceUnavailable { .. } => "service_unavailable",
            ApiError::Internal => "internal",
        }
    }

    /// Returns the text of the `message` field.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Unauthorized => UNAUTHORIZED_MESSAGE,
            ApiError::TooManyRequests { .. } => "too many failed authentications; retry later",
            ApiError::BadRequest { message }
            | ApiError::NotFound { message }
            | ApiError::Conflict { message }
            | ApiError::ServiceUnavailable { message } => message,
            ApiError::PayloadTooLarge => "the request body is too large",
            ApiError::Internal => "internal error; the daemon log has the details",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.message(),
        });
        let mut response = (self.status(), Json(body)).into_response();

        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests {
                retry_after_seconds,
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }

        response
    }
}

/// Header that carries the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Cause of a failed authentication, for the log. The client always gets
/// [`ApiError::Unauthorized`].
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// No `x-api-key` header, or more than one.
    #[error("missing or repeated x-api-key header")]
    MissingApiKey,
    /// The `x-api-key` value matches no accepted key.
    #[error("unknown API key")]
    UnknownApiKey,
    /// No `Authorization` header, or one that is not `Bearer <token>`.
    #[error("missing or malformed Authorization bearer header")]
    MissingBearer,
    /// The JWT failed verification.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Both credentials are valid but the JWT was issued for another key.
    #[error("JWT subject does not match the API key")]
    SubjectMismatch,
}

impl From<AuthFailure> for ApiError {
    fn from(_: AuthFailure) -> ApiError {
        ApiError::Unauthorized
    }
}

/// Authenticates a request from its headers and returns the id of the API key.
///
/// The request needs both an `x-api-key` header with an accepted key and an
/// `Authorization: Bearer <jwt>` header with a valid token whose `sub` is that key's id. Both
/// checks always run, so a quick response does not reveal that the key alone was wrong.
///
/// A failure is logged once here at INFO with its cause and, when known, the key id (never a
/// key or a token). The caller only counts it and responds with [`ApiError::Unauthorized`].
pub fn authenticate(
    headers: &HeaderMap,
    keys: &KeyRing,
    jwt: &JwtKeys,
) -> Result<String, AuthFailure> {
    let key_id = single_header(headers, API_KEY_HEADER)
        .ok_or(AuthFailure::MissingApiKey)
        .and_then(|key| keys.verify(key).ok_or(AuthFailure::UnknownApiKey));
    let claims = bearer_token(headers)
        .ok_or(AuthFailure::MissingBearer)
        .and_then(|token| jwt.verify(token).map_err(AuthFailure::Token));

    let result = match (key_id, claims) {
        (Ok(key_id), Ok(claims)) if claims.sub == key_id => Ok(key_id),
        (Ok(key_id), Ok(_)) => Err((AuthFailure::SubjectMismatch, Some(key_id))),
        (Err(failure), _) => Err((failure, None)),
        (Ok(key_id), Err(failure)) => Err((failure, Some(key_id))),
    };

    result.map_err(|(failure, key_id)| {
        tracing::info!(
            cause = %failure,
            key_id = key_id.as_deref().unwrap_or("-"),
            "authentication failed"
        );
        failure
    })
}

/// Returns the value of header `name` if it occurs exactly once, is not empty and passes
/// `HeaderValue::to_str` (visible ASCII and tabs).
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }

    value.to_str().ok().filter(|text| !text.is_empty())
}

/// Returns the token of an `Authorization: Bearer <token>` header. The scheme name is compared
/// without regard to ASCII case.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = single_header(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();

    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Default number of failed authentications per client within [`DEFAULT_FAILURE_WINDOW`].
pub const DEFAULT_MAX_FAILURES: u32 = 20;
/// Default length of the failure window.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Default number of clients tracked at once. At this size the map uses about 0.8 MB
/// (estimate: 16,384 hash buckets of 49 bytes each on x86-64).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Counts failed authentications per client address in a fixed window and reports when the
/// router must respond with 429 instead of checking credentials.
///
/// IPv6 clients are counted per /64 network, because one host usually controls a whole /64.
/// IPv4-mapped IPv6 addresses count as their IPv4 address. A successful authentication does
/// not clear the count, so a client that shares an address with an attacker (behind NAT)
/// cannot reset the attacker's budget. Memory is bounded: when the map is full, expired
/// windows are dropped first and then the oldest window.
///
/// Methods take `now` so tests can move the clock; callers pass `Instant::now()`.
#[derive(Debug)]
pub struct AuthFailureLimiter {
    max_failures: u32,
    window: Duration,
    max_clients: usize,
    clients: Mutex<HashMap<IpAddr, FailureWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Instant,
    failures: u32,
}

impl AuthFailureLimiter {
    /// Creates a limiter that blocks a client after `max_failures` failures within `window`,
    /// tracking at most `max_clients` clients. Zero values are raised to one.
    pub fn new(max_failures: u32, window: Duration, max_clients: usize) -> AuthFailureLimiter {
        AuthFailureLimiter {
            max_failures: max_failures.max(1),
            window: window.max(Duration::from_secs(1)),
            max_clients: max_clients.max(1),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Returns `Err(ApiError::TooManyRequests)` with the seconds until the window ends if
    /// `client` has used up its failures, and `Ok(())` otherwise.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), ApiError> {
        let clients = self.lock();
        let Some(window) = clients.get(&client_key(client)) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(window.started);

        if elapsed >= self.window || window.failures < self.max_failures {
            return Ok(());
        }

        let remaining = self.window - elapsed;
        let retry_after_seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        Err(ApiError::TooManyRequests {
            retry_after_seconds: retry_after_seconds.max(1),
        })
    }

    /// Counts one failed authentication of `client`.
    pub fn record_failure(&self, client: IpAddr, now: Instant) {
        let key = client_key(client);
        let mut clients = self.lock();

        if let Some(window) = clients.get_mut(&key) {
            if now.saturating_duration_since(window.started) >= self.window {
                *window = FailureWindow {
                    started: now,
                    failures: 1,
                };
            } else {
                window.failures = window.failures.saturating_add(1);
            }
            return;
        }

        if clients.len() >= self.max_clients {
            self.evict(&mut clients, now);
        }
        clients.insert(
            key,
            FailureWindow {
                started: now,
                failures: 1,
            },
        );
    }

    /// Returns the number of clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        self.lock().len()
    }

    /// Drops expired windows, and the oldest window if none expired.
    fn evict(&self, clients: &mut HashMap<IpAddr, FailureWindow>, now: Instant) {
        clients.retain(|_, window| now.saturating_duration_since(window.started) < self.window);
        if clients.len() < self.max_clients {
            return;
        }

        let oldest = clients
            .iter()
            .min_by_key(|(_, window)| window.started)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            clients.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, FailureWindow>> {
        // Every update leaves the map consistent, so a poisoned lock is safe to reuse.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for AuthFailureLimiter {
    fn default() -> AuthFailureLimiter {
        AuthFailureLimiter::new(
            DEFAULT_MAX_FAILURES,
            DEFAULT_FAILURE_WINDOW,
            DEFAULT_MAX_CLIENTS,
        )
    }
}

/// Returns the address under which `client` is counted: IPv4 as is, IPv6 cut to its /64.
fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::api::keys::create_key;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const HOUR: Duration = Duration::from_secs(3600);

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn assert_security_headers(response: &Response) {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                response.headers().get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "header {name}"
            );
        }
        for name in REMOVED_HEADERS {
            assert!(
                response.headers().get(name).is_none(),
                "header {name} present"
            );
        }
    }

    fn test_router() -> Router {
        let leaky = || async {
            (
                [
                    ("server", "leaky/1.0"),
                    ("x-powered-by", "Express"),
                    ("x-frame-options", "ALLOWALL"),
                ],
                "ok",
            )
        };
        let failing = || async { ApiError::Internal };

        Router::new()
            .route("/", get(leaky))
            .route("/error", get(failing))
            .layer(security_headers())
    }

    async fn send(router: Router, uri: &str) -> Response {
        router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn headers_set_on_success_response() {
        let response = send(test_router(), "/").await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_security_headers(&response);
    }

    #[tokio::test]
    async fn headers_set_on_error_and_fallback() {
        let error = send(test_router(), "/error").await;
        let fallback = send(test_router(), "/no/such/route").await;

        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_security_headers(&error);
        assert_eq!(fallback.status(), StatusCode::NOT_FOUND);
        assert_security_headers(&fallback);
    }

    #[test]
    fn security_header_names_are_unique() {
        let mut names: Vec<&str> = SECURITY_HEADERS.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();

        assert_eq!(names.len(), SECURITY_HEADERS.len());
    }

    #[tokio::test]
    async fn unauthorized_body_is_generic() {
        let response = ApiError::Unauthorized.into_response();

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        assert_eq!(
            body_json(response).await,
            serde_json::json!({
                "error": "unauthorized",
                "message": "missing or invalid credentials",
            })
        );
    }

    #[tokio::test]
    async fn too_many_requests_sets_retry_after() {
        let response = ApiError::TooManyRequests {
            retry_after_seconds: 42,
        }
        .into_response();

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "42");
        assert_eq!(body_json(response).await["error"], "too_many_requests");
    }

    #[tokio::test]
    async fn api_error_statuses_and_codes() {
        let cases = [
            (
                ApiError::BadRequest {
                    message: "bad table name".into(),
                },
                StatusCode::BAD_REQUEST,
                "bad_request",
                "bad table name",
            ),
            (
                ApiError::NotFound {
                    message: "no parked change 7".into(),
                },
                StatusCode::NOT_FOUND,
                "not_found",
                "no parked change 7",
            ),
            (
                ApiError::Conflict {
                    message: "a sync is running".into(),
                },
                StatusCode::CONFLICT,
                "conflict",
                "a sync is running",
            ),
            (
                ApiError::ServiceUnavailable {
                    message: "MySQL is unreachable".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "MySQL is unreachable",
            ),
        ];

        for (error, status, code, message) in cases {
            let response = error.into_response();
            assert_eq!(response.status(), status, "{code}");
            let content_type = response.headers().get(header::CONTENT_TYPE).unwrap();
            assert_eq!(content_type, "application/json", "{code}");
            let body = body_json(response).await;
            assert_eq!(body["error"], code);
            assert_eq!(body["message"], message);
        }
    }

    #[tokio::test]
    async fn internal_error_has_fixed_message() {
        let body = body_json(ApiError::Internal.into_response()).await;

        assert_eq!(body["error"], "internal");
        assert_eq!(
            body["message"],
            "internal error; the daemon log has the details"
        );
    }

    struct AuthFixture {
        _dir: tempfile::TempDir,
        ring: KeyRing,
        jwt: JwtKeys,
        key: String,
        key_id: String,
        other_key: String,
    }

    fn auth_fixture() -> AuthFixture {
        let dir = tempfile::tempdir().unwrap();
        let (info, key) = create_key(dir.path(), "client").unwrap();
        let (_, other_key) = create_key(dir.path(), "other").unwrap();
        let ring = KeyRing::load(dir.path(), None).unwrap();

        AuthFixture {
            _dir: dir,
            ring,
            jwt: JwtKeys::new(SECRET).unwrap(),
            key,
            key_id: info.id,
            other_key,
        }
    }

    fn headers(api_key: Option<&str>, authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            headers.insert(API_KEY_HEADER, HeaderValue::from_str(key).unwrap());
        }
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn authenticate_accepts_matching_key_and_token() {
        let fixture = auth_fixture();
        let (token, _) = fixture.jwt.issue(&fixture.key_id, HOUR).unwrap();

        for scheme in ["Bearer", "bearer"] {
            let headers = headers(Some(&fixture.key), Some(&format!("{scheme} {token}")));
            let result = authenticate(&headers, &fixture.ring, &fixture.jwt);
            assert_eq!(result.unwrap(), fixture.key_id, "{scheme}");
        }
    }

    #[test]
    fn authenticate_rejects_each_bad_credential() {
        let fixture = auth_fixture();
        let (token, _) = fixture.jwt.issue(&fixture.key_id, HOUR).unwrap();
        let bearer = format!("Bearer {token}");
        let other_jwt = JwtKeys::new("another secret of at least 32 bytes!").unwrap();
        let (foreign_token, _) = other_jwt.issue(&fixture.key_id, HOUR).unwrap();
        let foreign_bearer = format!("Bearer {foreign_token}");
        let basic = format!("Basic {token}");

        let cases: [(&str, HeaderMap); 7] = [
            ("no headers", headers(None, None)),
            ("no API key", headers(None, Some(&bearer))),
            (
                "unknown API key",
                headers(Some("p2ms_unknown"), Some(&bearer)),
            ),
            ("no token", headers(Some(&fixture.key), None)),
            ("Basic scheme", headers(Some(&fixture.key), Some(&basic))),
            (
                "token of other secret",
                headers(Some(&fixture.key), Some(&foreign_bearer)),
            ),
            (
                "token for other key",
                headers(Some(&fixture.other_key), Some(&bearer)),
            ),
        ];

        for (case, headers) in cases {
            let result = authenticate(&headers, &fixture.ring, &fixture.jwt);
            assert!(result.is_err(), "{case} was accepted");
        }
    }

    #[test]
    fn authenticate_reports_subject_mismatch() {
        let fixture = auth_fixture();
        let (token, _) = fixture.jwt.issue(&fixture.key_id, HOUR).unwrap();
        let headers = headers(Some(&fixture.other_key), Some(&format!("Bearer {token}")));

        let result = authenticate(&headers, &fixture.ring, &fixture.jwt);

        assert!(
            matches!(result, Err(AuthFailure::SubjectMismatch)),
            "{result:?}"
        );
    }

    #[test]
    fn authenticate_rejects_repeated_api_key() {
        let fixture = auth_fixture();
        let (token, _) = fixture.jwt.issue(&fixture.key_id, HOUR).unwrap();
        let mut headers = headers(Some(&fixture.key), Some(&format!("Bearer {token}")));
        headers.append(API_KEY_HEADER, HeaderValue::from_str(&fixture.key).unwrap());

        let result = authenticate(&headers, &fixture.ring, &fixture.jwt);

        assert!(
            matches!(result, Err(AuthFailure::MissingApiKey)),
            "{result:?}"
        );
    }

    #[test]
    fn auth_failure_becomes_generic_unauthorized() {
        let failures = [
            AuthFailure::MissingApiKey,
            AuthFailure::UnknownApiKey,
            AuthFailure::MissingBearer,
            AuthFailure::Token(TokenError::Expired),
            AuthFailure::SubjectMismatch,
        ];

        for failure in failures {
            assert_eq!(ApiError::from(failure), ApiError::Unauthorized);
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn limiter_blocks_after_max_failures() {
        let limiter = AuthFailureLimiter::new(3, Duration::from_secs(60), 100);
        let start = Instant::now();

        for attempt in 0..3 {
            assert!(limiter.check(ip(1), start).is_ok(), "attempt {attempt}");
            limiter.record_failure(ip(1), start);
        }

        let later = start + Duration::from_millis(20_500);
        assert_eq!(
            limiter.check(ip(1), later),
            Err(ApiError::TooManyRequests {
                retry_after_seconds: 40
            })
        );
        assert!(limiter.check(ip(2), later).is_ok(), "other client blocked");
    }

    #[test]
    fn limiter_window_expires() {
        let limiter = AuthFailureLimiter::new(2, Duration::from_secs(60), 100);
        let start = Instant::now();
        limiter.record_failure(ip(1), start);
        limiter.record_failure(ip(1), start);
        assert!(limiter.check(ip(1), start).is_err());

        let after_window = start + Duration::from_secs(60);
        assert!(limiter.check(ip(1), after_window).is_ok());

        limiter.record_failure(ip(1), after_window);
        assert!(
            limiter.check(ip(1), after_window).is_ok(),
            "old failures still counted"
        );
        limiter.record_failure(ip(1), after_window);
        assert!(limiter.check(ip(1), after_window).is_err());
    }

    #[test]
    fn limiter_retry_after_is_at_least_one_second() {
        let limiter = AuthFailureLimiter::new(1, Duration::from_secs(60), 100);
        let start = Instant::now();
        limiter.record_failure(ip(1), start);

        let result = limiter.check(ip(1), start + Duration::from_millis(59_999));

        assert_eq!(
            result,
            Err(ApiError::TooManyRequests {
                retry_after_seconds: 1
            })
        );
    }

    #[test]
    fn limiter_caps_tracked_clients() {
        let limiter = AuthFailureLimiter::new(1, Duration::from_secs(60), 3);
        let start = Instant::now();

        for last in 1..=5u8 {
            limiter.record_failure(ip(last), start + Duration::from_secs(u64::from(last)));
        }

        let now = start + Duration::from_secs(6);
        assert_eq!(limiter.tracked_clients(), 3);
        assert!(limiter.check(ip(1), now).is_ok(), "oldest client kept");
        assert!(
            limiter.check(ip(2), now).is_ok(),
            "second oldest client kept"
        );
        for last in 3..=5u8 {
            assert!(
                limiter.check(ip(last), now).is_err(),
                "client {last} dropped"
            );
        }
    }

    #[test]
    fn limiter_evicts_expired_windows_first() {
        let limiter = AuthFailureLimiter::new(1, Duration::from_secs(60), 2);
        let start = Instant::now();
        limiter.record_failure(ip(1), start);
        limiter.record_failure(ip(2), start + Duration::from_secs(50));

        let now = start + Duration::from_secs(70);
        limiter.record_failure(ip(3), now);

        assert_eq!(limiter.tracked_clients(), 2);
        assert!(limiter.check(ip(2), now).is_err(), "live window dropped");
        assert!(limiter.check(ip(3), now).is_err());
    }

    #[test]
    fn limiter_groups_ipv6_by_64_prefix() {
        let limiter = AuthFailureLimiter::new(1, Duration::from_secs(60), 100);
        let start = Instant::now();
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();

        limiter.record_failure(first, start);

        assert!(limiter.check(same_net, start).is_err());
        assert!(limiter.check(other_net, start).is_ok());
    }

    #[test]
    fn limiter_treats_mapped_ipv4_as_ipv4() {
        let limiter = AuthFailureLimiter::new(1, Duration::from_secs(60), 100);
        let start = Instant::now();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();

        limiter.record_failure(mapped, start);

        assert!(limiter.check(ip(1), start).is_err());
        assert!(limiter.check(ip(2), start).is_ok());
    }
}
