//! Access tokens (JWT, HS256 pinned) and refresh tokens (opaque, 256-bit, stored hashed).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::revocation::Marks;
use crate::domain::identity::Role;
use crate::domain::ids::{SessionId, UserId};

pub const ISSUER: &str = "hexmarket";
pub const AUDIENCE: &str = "hexmarket-api";
/// Access tokens live ten minutes.
pub const ACCESS_TTL: Duration = Duration::minutes(10);
const ACCESS_TYPE: &str = "access";
/// `amr` (RFC 8176) of a password.
pub const AMR_PWD: &str = "pwd";
/// `amr` of a one-time code: an SMS code, a TOTP code or a recovery code.
pub const AMR_OTP: &str = "otp";
/// `amr` of a passkey (proof of possession of a hardware- or platform-held key, RFC 8176).
pub const AMR_HWK: &str = "hwk";
/// `amr` of a sign-in through an identity provider.
pub const AMR_FED: &str = "fed";
/// `amr` of a session that proved a second factor (TOTP or a recovery code); admins need it.
pub const AMR_MFA: &str = "mfa";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// A UUIDv7 whose timestamp is the issue time in milliseconds (see [`Claims::issued_at_ms`]).
    pub jti: String,
    pub typ: String,
    /// When the user last proved who they are (login), seconds since the epoch.
    pub auth_time: i64,
    /// How: `pwd`; `otp` after a step-up or a login with a one-time code; `mfa` when a
    /// second factor (TOTP or a recovery code) was proven.
    pub amr: Vec<String>,
    /// When the OTP step-up happened, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_at: Option<i64>,
}

impl Claims {
    /// When the token was issued, in milliseconds since the epoch: the timestamp of its UUIDv7
    /// `jti`, or `iat` rounded down to the second for a token whose `jti` is not one. Revocation
    /// marks are compared against this, so a token issued in the same second as a revocation
    /// is told apart from one issued just after it.
    pub fn issued_at_ms(&self) -> i64 {
        v7_millis(&self.jti).unwrap_or_else(|| self.iat.saturating_mul(1000))
    }
}

/// The 48-bit millisecond timestamp of a hyphenated UUIDv7, without parsing the rest.
fn v7_millis(jti: &str) -> Option<i64> {
    let bytes = jti.as_bytes();
    if bytes.len() != 36 || bytes[8] != b'-' || bytes[13] != b'-' || bytes[14] != b'7' {
        return None;
    }
    let high = u64::from_str_radix(jti.get(..8)?, 16).ok()?;
    let low = u64::from_str_radix(jti.get(9..13)?, 16).ok()?;
    i64::try_from((high << 16) | low).ok()
}

/// Why an access token was refused (all answered as 401 alike).
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(pub String);

/// Signs and verifies access tokens with one HS256 key, and refuses those a revocation mark
/// covers.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    marks: Marks,
}

impl AccessTokens {
    /// `secret` must be at least 32 bytes.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
        validation.leeway = 30;
        AccessTokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            marks: Marks::default(),
        }
    }

    /// The revocation marks [`verify`](Self::verify) consults (shared by every clone).
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// A token for a password login (plus `otp` when `otp_at` is given).
    pub fn issue(
        &self,
        user: UserId,
        role: Role,
        auth_time: DateTime<Utc>,
        otp_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        self.issue_with(user, role, auth_time, &[AMR_PWD], otp_at, now)
    }

    /// A token whose `amr` is `methods`, plus `otp` when `otp_at` is given.
    pub fn issue_with(
        &self,
        user: UserId,
        role: Role,
        auth_time: DateTime<Utc>,
        methods: &[impl AsRef<str>],
        otp_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let mut amr: Vec<String> = methods.iter().map(|m| m.as_ref().to_owned()).collect();
        // A step-up proof is a one-time code unless a passkey gave it.
        if otp_at.is_some() && !amr.iter().any(|m| m == AMR_OTP || m == AMR_HWK) {
            amr.push(AMR_OTP.to_owned());
        }
        let claims = Claims {
            sub: user,
            role,
            iat: now.timestamp(),
            exp: (now + ACCESS_TTL).timestamp(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: jti_at(now),
            typ: ACCESS_TYPE.to_owned(),
            auth_time: auth_time.timestamp(),
            amr,
            otp_at: otp_at.map(|t| t.timestamp()),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks signature, algorithm, issuer, audience, expiry and type, then that no revocation
    /// mark of the user covers the token (a lookup in memory, never a store read).
    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let claims = self.verify_signature(token)?;
        if self.marks.covers(claims.sub, claims.issued_at_ms()) {
            return Err(InvalidToken("revoked".into()));
        }
        Ok(claims)
    }

    /// [`verify`](Self::verify) without the revocation check: what a token proves on its own.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| InvalidToken(e.to_string()))?;
        if data.header.alg != Algorithm::HS256 {
            return Err(InvalidToken("algorithm".into()));
        }
        if data.claims.typ != ACCESS_TYPE {
            return Err(InvalidToken("not an access token".into()));
        }
        Ok(data.claims)
    }
}

/// A UUIDv7 stamped with `now` (the service's clock, which tests move), so that the issue
/// time in milliseconds travels inside the token.
fn jti_at(now: DateTime<Utc>) -> String {
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// A refresh token: `user.family.secret`, where only SHA-256 of the secret is stored.
pub struct RefreshToken {
    pub user_id: UserId,
    pub family: SessionId,
    pub secret: [u8; 32],
}

impl RefreshToken {
    pub fn generate(user_id: UserId, family: SessionId) -> Self {
        RefreshToken {
            user_id,
            family,
            secret: rand::random(),
        }
    }

    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let user_id = parts.next()?.parse::<UserId>().ok()?;
        let family = parts.next()?.parse::<SessionId>().ok()?;
        let secret: [u8; 32] = URL_SAFE_NO_PAD
            .decode(parts.next()?)
            .ok()?
            .try_into()
            .ok()?;
        parts.next().is_none().then_some(RefreshToken {
            user_id,
            family,
            secret,
        })
    }

    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.user_id.as_uuid().simple(),
            self.family.as_uuid().simple(),
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }

    /// The hash stored for this token.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.secret))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Compares two strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_round_trip_and_reject_garbage() {
        let token = RefreshToken::generate(UserId::new(), SessionId::new());
        let parsed = RefreshToken::parse(&token.encode()).unwrap();
        assert_eq!(parsed.hash(), token.hash());
        assert!(RefreshToken::parse("a.b.c").is_none());
        assert!(RefreshToken::parse(&format!("{}.x", token.encode())).is_none());
    }

    #[test]
    fn access_tokens_verify_and_carry_their_claims() {
        let tokens = AccessTokens::new(&[9; 32]);
        let user = UserId::new();
        let now = Utc::now();
        let jwt = tokens.issue(user, Role::Vendor, now, None, now).unwrap();
        let claims = tokens.verify(&jwt).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, Role::Vendor);
        assert_eq!(claims.amr, vec!["pwd"]);
        assert!(AccessTokens::new(&[8; 32]).verify(&jwt).is_err());
    }

    #[test]
    fn the_issue_time_travels_in_milliseconds_and_a_mark_at_or_after_it_refuses_the_token() {
        let tokens = AccessTokens::new(&[9; 32]);
        let user = UserId::new();
        let now = Utc::now();
        let ms = now.timestamp_millis();
        let jwt = tokens.issue(user, Role::Customer, now, None, now).unwrap();
        let claims = tokens.verify(&jwt).unwrap();
        assert_eq!(claims.issued_at_ms(), ms);
        assert_eq!(claims.iat, now.timestamp());

        tokens.marks().raise(user, ms - 1);
        assert!(tokens.verify(&jwt).is_ok(), "a mark before the issue time");
        tokens.marks().raise(user, ms);
        assert!(tokens.verify(&jwt).is_err(), "a mark at the issue time");
        assert!(tokens.verify_signature(&jwt).is_ok());
        // Another user's mark changes nothing for this one's tokens.
        let other = tokens
            .issue(UserId::new(), Role::Customer, now, None, now)
            .unwrap();
        assert!(tokens.verify(&other).is_ok());
    }

    #[test]
    fn a_jti_that_is_no_uuid_v7_falls_back_to_iat_in_whole_seconds() {
        let mut claims = Claims {
            sub: UserId::new(),
            role: Role::Customer,
            iat: 1_764_000_000,
            exp: 1_764_000_600,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: "not-a-uuid".into(),
            typ: ACCESS_TYPE.into(),
            auth_time: 1_764_000_000,
            amr: vec!["pwd".into()],
            otp_at: None,
        };
        assert_eq!(claims.issued_at_ms(), 1_764_000_000_000);
        claims.jti = uuid::Uuid::new_v4().to_string();
        assert_eq!(claims.issued_at_ms(), 1_764_000_000_000);
    }
}
