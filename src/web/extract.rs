//! The authenticated caller, and the checks every handler uses: roles, ownership, step-up.

use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use chrono::{DateTime, Utc};

use super::{ApiError, AppState};
use crate::domain::identity::Role;
use crate::domain::ids::UserId;
use crate::error_code::ErrorCode;
use crate::fulfilment::orders::Viewer;
use crate::identity::tokens::{AMR_HWK, AMR_MFA, AMR_OTP, Claims};

/// A step-up (OTP) counts for this long.
pub const STEP_UP_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

/// The caller, proven by a valid access token in `Authorization: Bearer …`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
    pub claims: Claims,
}

impl AuthUser {
    /// An administrator whose token proves the second factor: only such a caller gets an
    /// administrator's powers, everywhere.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.has_second_factor()
    }

    /// Whether the token was minted after a second factor (TOTP or a recovery code).
    pub fn has_second_factor(&self) -> bool {
        self.claims.amr.iter().any(|m| m == AMR_MFA)
    }

    /// The caller as the fulfilment services see them.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            id: self.id,
            role: self.role,
            admin: self.is_admin(),
        }
    }

    /// See [`require_admin`].
    pub fn require_admin(&self) -> Result<(), ApiError> {
        require_admin(self.role, self.has_second_factor())
    }

    /// See [`require_role`].
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        require_role(self.role, roles)
    }

    /// Passes for the owner and for admins; anyone else learns nothing (404), not even that
    /// the object exists.
    pub fn require_owner_or_admin(&self, owner: UserId) -> Result<(), ApiError> {
        if self.id == owner || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_found("no such resource"))
        }
    }

    /// 403 `step_up_required` unless the caller proved a one-time code (SMS, TOTP or a
    /// recovery code) in the last five minutes.
    pub fn require_step_up(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        let recent = self
            .claims
            .otp_at
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .is_some_and(|at| {
                now - at <= STEP_UP_WINDOW && at <= now + chrono::Duration::seconds(30)
            });
        let proved = self.claims.amr.iter().any(|m| m == AMR_OTP || m == AMR_HWK);
        if recent && proved {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::StepUpRequired,
                "step up and retry with the new access token: with the authenticator app or a recovery code (POST /api/v1/auth/step-up), with a passkey (POST /api/v1/auth/step-up/passkey/options, then POST /api/v1/auth/step-up/passkey), or with an SMS code (POST /api/v1/auth/phone/otp, then POST /api/v1/auth/phone/verify, purpose step_up)",
            ))
        }
    }
}

impl AuthUser {
    /// 403 `recent_sign_in_required` unless the caller signed in (or stepped up) in the last
    /// five minutes: adding or removing a way to sign in needs more than a token that may
    /// have been lifted from a session left open.
    pub fn require_recent_sign_in(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self.require_step_up(now).is_ok() {
            return Ok(());
        }
        let fresh = DateTime::from_timestamp(self.claims.auth_time, 0).is_some_and(|at| {
            now - at <= STEP_UP_WINDOW && at <= now + chrono::Duration::seconds(30)
        });
        if fresh {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RecentSignInRequired,
                "sign in again (or step up) and retry within five minutes",
            ))
        }
    }
}

/// 403 `forbidden` unless `role` is one of `roles`: the role check of every handler and every
/// WebSocket handshake.
pub fn require_role(role: Role, roles: &[Role]) -> Result<(), ApiError> {
    if roles.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "your role cannot do this",
        ))
    }
}

/// 403 `forbidden` for other roles; 403 `second_factor_required` for an administrator whose
/// token was obtained without the second factor (they may still enrol one).
pub fn require_admin(role: Role, second_factor: bool) -> Result<(), ApiError> {
    require_role(role, &[Role::Admin])?;
    if second_factor {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::SecondFactorRequired,
            "administrators act only with a second factor: enrol an authenticator (POST /api/v1/auth/totp) if you have none, then log in with a code (otp) or step up (POST /api/v1/auth/step-up)",
        ))
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// The caller on endpoints guests may use too: `None` without `Authorization`, but a token that
/// is presented must be valid (401 otherwise). A revoked or expired token is never silently
/// taken for a guest, who would then fill a cart that is not the user's.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequest for MaybeUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION);
        ready(if presented {
            authenticate(req).map(|user| MaybeUser(Some(user)))
        } else {
            Ok(MaybeUser(None))
        })
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let unauthorized = || {
        ApiError::unauthorized(
            ErrorCode::Unauthenticated,
            "a valid access token is required",
        )
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("application state missing")))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(unauthorized)?;
    let claims = state.identity.tokens.verify(token.trim()).map_err(|e| {
        tracing::debug!(error = %e, "access token refused");
        unauthorized()
    })?;
    Ok(AuthUser {
        id: claims.sub,
        role: claims.role,
        claims,
    })
}
