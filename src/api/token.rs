//! JSON Web Tokens for the HTTPS API, signed and verified with HS256 only.
//!
//! A token's `sub` claim is the id of the API key it was issued for, and the API accepts a
//! request only when the token and the presented API key belong together. Verification pins
//! the algorithm to HS256, so tokens with `alg: none`, another HMAC size or an asymmetric
//! algorithm are rejected before any signature check. `exp` and `sub` are required.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::TryRng;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};

/// Minimum length of `JWT_SECRET`, in bytes. HS256 is HMAC with SHA-256, and its key should be
/// at least as long as the 256-bit hash output.
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

const JTI_RANDOM_BYTES: usize = 16;

/// Errors of token issue and verification. None of them contains the secret or the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `JWT_SECRET` is shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "JWT_SECRET is too short: it needs at least {MIN_SECRET_BYTES} bytes; generate one with \
         `openssl rand -base64 32`"
    )]
    SecretTooShort,
    /// The requested lifetime is zero or too large to represent.
    #[error("invalid token lifetime of {ttl_seconds} s: use a positive number of seconds")]
    InvalidTtl {
        /// The requested lifetime, in whole seconds.
        ttl_seconds: u64,
    },
    /// The operating system's random number generator failed.
    #[error("failed to read random bytes from the operating system")]
    Random(#[source] rand::rngs::SysError),
    /// jsonwebtoken failed to sign the claims.
    #[error("failed to sign the JWT")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token's `exp` lies more than [`LEEWAY_SECONDS`] in the past.
    #[error("JWT expired")]
    Expired,
    /// The token is missing, malformed, wrongly signed or fails a claim check.
    #[error("JWT invalid: {reason}")]
    Invalid {
        /// Short description of the check that failed, safe to log.
        reason: &'static str,
    },
}

/// Claims of an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Id of the API key the token was issued for.
    pub sub: String,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry time, seconds since the Unix epoch.
    pub exp: u64,
    /// Random token id (32 hex digits), for audit logs.
    pub jti: String,
}

/// Claims as received, before the required ones are checked.
#[derive(Deserialize)]
struct WireClaims {
    sub: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
    jti: Option<String>,
}

impl WireClaims {
    fn into_claims(self) -> Result<Claims, TokenError> {
        let missing = |reason| TokenError::Invalid { reason };

        Ok(Claims {
            sub: self.sub.ok_or(missing("missing sub claim"))?,
            iat: self.iat.ok_or(missing("missing iat claim"))?,
            exp: self.exp.ok_or(missing("missing exp claim"))?,
            jti: self.jti.ok_or(missing("missing jti claim"))?,
        })
    }
}

/// Signing and verification keys derived from `JWT_SECRET`, plus the pinned validation rules.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Longest accepted `exp - iat`; `None` accepts any.
    max_lifetime: Option<u64>,
}

impl JwtKeys {
    /// Builds the keys from `secret`, the value of `JWT_SECRET`. Fails if it is shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn new(secret: &str) -> Result<JwtKeys, TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::SecretTooShort);
        }
        // Both constructors fail only on an empty secret, which the length check excludes.
        let encoding =
            EncodingKey::from_secret(secret.as_bytes()).map_err(|_| TokenError::SecretTooShort)?;
        let decoding =
            DecodingKey::from_secret(secret.as_bytes()).map_err(|_| TokenError::SecretTooShort)?;

        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        // An `nbf` is optional, but honoured when present.
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;

        Ok(JwtKeys {
            encoding,
            decoding,
            validation,
            max_lifetime: None,
        })
    }

    /// Rejects tokens whose lifetime (`exp - iat`) is longer than `lifetime`, so that a token
    /// signed elsewhere with the secret cannot outlive the configured `JWT_TTL`.
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> JwtKeys {
        self.max_lifetime = Some(lifetime.as_secs());
        self
    }

    /// Issues a token for the API key `key_id`, valid for `ttl` from now. Returns the token and
    /// its expiry time.
    pub fn issue(
        &self,
        key_id: &str,
        ttl: Duration,
    ) -> Result<(String, DateTime<Utc>), TokenError> {
        self.issue_at(key_id, ttl, Utc::now())
    }

    fn issue_at(
        &self,
        key_id: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), TokenError> {
        let invalid_ttl = TokenError::InvalidTtl {
            ttl_seconds: ttl.as_secs(),
        };
        let ttl_seconds = i64::try_from(ttl.as_secs()).map_err(|_| invalid_ttl)?;
        if ttl_seconds == 0 {
            return Err(TokenError::InvalidTtl { ttl_seconds: 0 });
        }
        let issued_at = now.timestamp();
        let expires_at = issued_at
            .checked_add(ttl_seconds)
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .ok_or(TokenError::InvalidTtl {
                ttl_seconds: ttl.as_secs(),
            })?;

        let mut jti = [0u8; JTI_RANDOM_BYTES];
        SysRng
            .try_fill_bytes(&mut jti)
            .map_err(TokenError::Random)?;
        let claims = Claims {
            sub: key_id.to_owned(),
            iat: u64::try_from(issued_at).unwrap_or(0),
            exp: u64::try_from(expires_at.timestamp()).unwrap_or(0),
            jti: hex::encode(jti),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Sign)?;

        Ok((token, expires_at))
    }

    /// Verifies `token` and returns its claims. Rejects any algorithm but HS256, a wrong
    /// signature, a missing claim, an empty `sub`, an expired token and a token issued in the
    /// future (both beyond [`LEEWAY_SECONDS`]).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // Optional fields let jsonwebtoken report a missing `exp` or `sub` as such, because it
        // deserializes the claims before it checks the required ones.
        let data = jsonwebtoken::decode::<WireClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| classify(error.kind()))?;
        let claims = data.claims.into_claims()?;

        if claims.sub.is_empty() {
            return Err(TokenError::Invalid {
                reason: "empty sub claim",
            });
        }
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        if claims.iat > now.saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::Invalid {
                reason: "iat claim in the future",
            });
        }
        if let Some(max_lifetime) = self.max_lifetime
            && claims.exp.saturating_sub(claims.iat) > max_lifetime.saturating_add(LEEWAY_SECONDS)
        {
            return Err(TokenError::Invalid {
                reason: "lifetime longer than JWT_TTL",
            });
        }

        Ok(claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

/// Maps a jsonwebtoken error to a reason without token content. serde_json messages can quote
/// claim values, so they are not passed on.
fn classify(kind: &ErrorKind) -> TokenError {
    let reason = match kind {
        ErrorKind::ExpiredSignature => return TokenError::Expired,
        ErrorKind::InvalidSignature => "signature mismatch",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => "algorithm not allowed",
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => "unknown algorithm",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "missing exp claim",
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => "missing sub claim",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        ErrorKind::InvalidClaimFormat(_) => "claim of the wrong type",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidToken => "not three dot-separated parts",
        ErrorKind::Base64(_) => "invalid base64url",
        ErrorKind::Json(_) => "invalid JSON in header or claims",
        ErrorKind::Utf8(_) => "invalid UTF-8",
        _ => "rejected by the JWT library",
    };

    TokenError::Invalid { reason }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha256};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const HOUR: Duration = Duration::from_secs(3600);

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// HMAC-SHA256 (RFC 2104), to sign hand-made tokens with headers jsonwebtoken refuses to
    /// produce.
    fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let inner_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
        let outer_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&inner_pad)
            .chain_update(message)
            .finalize();

        Sha256::new()
            .chain_update(&outer_pad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// Builds a token from raw header and claims JSON, signed with HMAC-SHA256 and `SECRET`.
    fn hand_made_token(header: &str, claims: &str) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = hmac_sha256(SECRET.as_bytes(), message.as_bytes());

        format!("{message}.{}", b64(&signature))
    }

    fn valid_claims_json() -> String {
        let now = Utc::now().timestamp();
        format!(
            r#"{{"sub":"0011aabb","iat":{now},"exp":{},"jti":"x"}}"#,
            now + 3600
        )
    }

    #[test]
    fn issued_token_verifies() {
        let keys = keys();

        let (token, expires_at) = keys.issue("0011aabb", HOUR).unwrap();
        let claims = keys.verify(&token).unwrap();

        assert_eq!(claims.sub, "0011aabb");
        assert_eq!(claims.exp, claims.iat + 3600);
        assert_eq!(claims.exp as i64, expires_at.timestamp());
        assert_eq!(claims.jti.len(), 32);
    }

    #[test]
    fn token_not_yet_valid_is_rejected() {
        let now = Utc::now().timestamp();
        let claims = format!(
            r#"{{"sub":"0011aabb","iat":{now},"nbf":{},"exp":{},"jti":"x"}}"#,
            now + 1000,
            now + 3600
        );
        let token = hand_made_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims);

        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn lifetime_beyond_ttl_is_rejected() {
        let long_lived = keys();
        let (token, _) = long_lived.issue("0011aabb", HOUR * 24).unwrap();
        let capped = keys().with_max_lifetime(HOUR);

        let error = capped.verify(&token).unwrap_err();
        assert!(error.to_string().contains("JWT_TTL"), "{error}");
        let (short, _) = long_lived.issue("0011aabb", HOUR).unwrap();
        assert!(capped.verify(&short).is_ok());
    }

    #[test]
    fn issued_tokens_have_distinct_jti() {
        let keys = keys();

        let (first, _) = keys.issue("0011aabb", HOUR).unwrap();
        let (second, _) = keys.issue("0011aabb", HOUR).unwrap();

        assert_ne!(
            keys.verify(&first).unwrap().jti,
            keys.verify(&second).unwrap().jti
        );
    }

    #[test]
    fn hand_made_signature_matches_library() {
        // Checks the test's HMAC helper, so the header tests below sign correctly.
        let keys = keys();
        let (token, _) = keys.issue("0011aabb", HOUR).unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();

        let expected = hmac_sha256(SECRET.as_bytes(), message.as_bytes());

        assert_eq!(signature, b64(&expected));
    }

    #[test]
    fn hand_made_hs256_token_verifies() {
        let token = hand_made_token(r#"{"alg":"HS256","typ":"JWT"}"#, &valid_claims_json());

        let claims = keys().verify(&token).unwrap();

        assert_eq!(claims.sub, "0011aabb");
    }

    #[test]
    fn short_secret_is_rejected_without_value() {
        let secret = "a".repeat(MIN_SECRET_BYTES - 1);

        let error = JwtKeys::new(&secret).unwrap_err();

        let message = error.to_string();
        assert!(matches!(error, TokenError::SecretTooShort));
        assert!(message.contains("JWT_SECRET"), "{message}");
        assert!(message.contains("openssl rand"), "{message}");
        assert!(!message.contains(&secret), "{message}");
    }

    #[test]
    fn zero_ttl_is_rejected() {
        let result = keys().issue("0011aabb", Duration::ZERO);

        assert!(
            matches!(result, Err(TokenError::InvalidTtl { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn huge_ttl_is_rejected() {
        let result = keys().issue("0011aabb", Duration::from_secs(u64::MAX));

        assert!(
            matches!(result, Err(TokenError::InvalidTtl { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn missing_or_garbage_token_is_rejected() {
        let keys = keys();

        for token in ["", "garbage", "a.b", "a.b.c", "...", "eyJ.eyJ.sig"] {
            let result = keys.verify(token);
            assert!(
                matches!(result, Err(TokenError::Invalid { .. })),
                "{token:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn expired_token_is_rejected() {
        let keys = keys();
        let issued = Utc::now() - chrono::Duration::seconds(7200);
        let (token, _) = keys.issue_at("0011aabb", HOUR, issued).unwrap();

        let result = keys.verify(&token);

        assert!(matches!(result, Err(TokenError::Expired)), "{result:?}");
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let keys = keys();
        let issued = Utc::now() - chrono::Duration::seconds(3600 + 10);
        let (token, _) = keys.issue_at("0011aabb", HOUR, issued).unwrap();

        let result = keys.verify(&token);

        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn alg_none_is_rejected() {
        let claims = valid_claims_json();
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.as_bytes())
        );
        let signed = hand_made_token(r#"{"alg":"none","typ":"JWT"}"#, &claims);

        for token in [unsigned, signed] {
            let result = keys().verify(&token);
            assert!(
                matches!(result, Err(TokenError::Invalid { .. })),
                "{token} gave {result:?}"
            );
        }
    }

    #[test]
    fn hs512_is_rejected() {
        let claims = Claims {
            sub: "0011aabb".to_owned(),
            iat: Utc::now().timestamp() as u64,
            exp: Utc::now().timestamp() as u64 + 3600,
            jti: "x".to_owned(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();

        let result = keys().verify(&token);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "algorithm not allowed"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn rs256_header_is_rejected() {
        // Key confusion: an RS256 header over a valid HMAC signature made with the secret.
        let token = hand_made_token(r#"{"alg":"RS256","typ":"JWT"}"#, &valid_claims_json());

        let result = keys().verify(&token);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "algorithm not allowed"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let other = JwtKeys::new("another secret of at least 32 bytes!").unwrap();
        let (token, _) = other.issue("0011aabb", HOUR).unwrap();

        let result = keys().verify(&token);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "signature mismatch"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let keys = keys();
        let (token, _) = keys.issue("0011aabb", HOUR).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged_payload = payload.replace("0011aabb", "ffffffff");
        assert_ne!(payload, forged_payload);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged_payload.as_bytes()),
            parts[2]
        );

        let result = keys.verify(&forged);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "signature mismatch"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn missing_exp_is_rejected() {
        let now = Utc::now().timestamp();
        let claims = format!(r#"{{"sub":"0011aabb","iat":{now},"jti":"x"}}"#);
        let token = hand_made_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims);

        let result = keys().verify(&token);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "missing exp claim"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn missing_or_empty_sub_is_rejected() {
        let now = Utc::now().timestamp();
        let exp = now + 3600;
        let cases = [
            format!(r#"{{"iat":{now},"exp":{exp},"jti":"x"}}"#),
            format!(r#"{{"sub":"","iat":{now},"exp":{exp},"jti":"x"}}"#),
        ];

        for claims in cases {
            let token = hand_made_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
            let result = keys().verify(&token);
            assert!(
                matches!(result, Err(TokenError::Invalid { .. })),
                "{claims} gave {result:?}"
            );
        }
    }

    #[test]
    fn missing_iat_or_jti_is_rejected() {
        let now = Utc::now().timestamp();
        let exp = now + 3600;
        let cases = [
            (
                format!(r#"{{"sub":"0011aabb","exp":{exp},"jti":"x"}}"#),
                "missing iat claim",
            ),
            (
                format!(r#"{{"sub":"0011aabb","iat":{now},"exp":{exp}}}"#),
                "missing jti claim",
            ),
        ];

        for (claims, expected) in cases {
            let token = hand_made_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
            let result = keys().verify(&token);
            assert!(
                matches!(result, Err(TokenError::Invalid { reason }) if reason == expected),
                "{claims} gave {result:?}"
            );
        }
    }

    #[test]
    fn future_iat_is_rejected() {
        let keys = keys();
        let issued = Utc::now() + chrono::Duration::seconds(600);
        let (token, _) = keys.issue_at("0011aabb", HOUR, issued).unwrap();

        let result = keys.verify(&token);

        assert!(
            matches!(
                result,
                Err(TokenError::Invalid {
                    reason: "iat claim in the future"
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn debug_hides_secret() {
        let debug = format!("{:?}", keys());

        assert!(!debug.contains(SECRET), "{debug}");
    }
}
