//! The second factor over HTTP: enrolling an authenticator app (TOTP), confirming it with its
//! first code, removing it, and stepping up with a code or a recovery code.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::identity::SecondFactorProof;
use crate::identity::tokens::ACCESS_TTL;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/auth/totp")
            .route(web::post().to(begin_totp))
            .route(web::delete().to(disable_totp)),
    )
    .route("/auth/totp/confirm", web::post().to(confirm_totp))
    .route(
        "/auth/totp/recovery-codes",
        web::post().to(renew_recovery_codes),
    )
    .route("/auth/step-up", web::post().to(step_up));
}

/// Longest recovery code accepted as input (they are `xxxxx-xxxxx`; some slack for spaces).
const MAX_RECOVERY_CODE_CHARS: usize = 32;

/// Reads the second factor a request carries in `otp` or `recovery_code` (at most one).
pub fn parse_second_factor(
    otp: Option<String>,
    recovery_code: Option<String>,
) -> Result<Option<SecondFactorProof>, ApiError> {
    match (otp, recovery_code) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "recovery_code",
            "send either otp or recovery_code, not both",
        )),
        (Some(code), None) => {
            six_digits(&code, "otp")?;
            Ok(Some(SecondFactorProof::Totp(code)))
        }
        (None, Some(code)) => {
            let fine = !code.trim().is_empty()
                && code.chars().count() <= MAX_RECOVERY_CODE_CHARS
                && code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ');
            if fine {
                Ok(Some(SecondFactorProof::RecoveryCode(code)))
            } else {
                Err(ApiError::invalid_field(
                    "recovery_code",
                    "must be a recovery code such as abcde-fghij",
                ))
            }
        }
        (None, None) => Ok(None),
    }
}

fn six_digits(code: &str, field: &str) -> Result<(), ApiError> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(field, "must be six digits"))
    }
}

/// A new authenticator secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "otpauth_uri": "otpauth://totp/hexmarket:jane@example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=hexmarket&algorithm=SHA1&digits=6&period=30", "expires_in": 900}))]
pub struct TotpEnrolmentView {
    /// The secret in base32, for typing into an authenticator app.
    pub secret: String,
    /// The same secret as an `otpauth://` URI, for a QR code.
    pub otpauth_uri: String,
    /// Seconds left to confirm it with a code (`POST /api/v1/auth/totp/confirm`).
    pub expires_in: i64,
}

/// Starts enrolling an authenticator app (TOTP, RFC 6238: SHA-1, 30 s, 6 digits). Replacing
/// an active authenticator needs a recent step-up; the active one works until the new one is
/// confirmed.
#[utoipa::path(post, path = "/api/v1/auth/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 201, body = TotpEnrolmentView),
        (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem, description = "step_up_required (an authenticator is already active)")))]
pub async fn begin_totp(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let enrolled = state
        .identity
        .users
        .get(user.id)
        .await?
        .is_some_and(|u| u.value.second_factor.enabled());
    if enrolled {
        user.require_step_up(state.identity.clock.now())?;
    }
    let enrolment = state.identity.begin_totp(user.id).await?;
    Ok(HttpResponse::Created().json(TotpEnrolmentView {
        secret: enrolment.secret,
        otpauth_uri: enrolment.uri,
        expires_in: enrolment.expires_in.num_seconds(),
    }))
}

/// The first code of the new authenticator.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "492039"}))]
pub struct ConfirmTotp {
    /// Six digits from the authenticator app.
    #[schema(pattern = r"^[0-9]{6}$")]
    pub code: String,
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"recovery_codes": ["k3j4h-5q1yb", "x0b9q-2h8m1"]}))]
pub struct RecoveryCodes {
    /// Each works once in place of a code (`recovery_code` at login or step-up). Only their
    /// hashes are kept: store them offline now.
    pub recovery_codes: Vec<String>,
}

/// Activates the pending authenticator with its first code and answers ten single-use
/// recovery codes (replacing earlier ones). From then on login needs a code.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = ConfirmTotp, security(("bearer" = [])),
    responses((status = 200, body = RecoveryCodes),
        (status = 400, body = crate::web::problem::Problem, description = "invalid_code"),
        (status = 409, body = crate::web::problem::Problem, description = "totp_not_enrolled: nothing pending, or it expired"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After")))]
pub async fn confirm_totp(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ConfirmTotp>,
) -> Result<HttpResponse, ApiError> {
    six_digits(&body.code, "code")?;
    let recovery_codes = state.identity.confirm_totp(user.id, &body.code).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes { recovery_codes }))
}

/// Replaces the recovery codes with ten fresh ones (needs a recent step-up); the old ones
/// stop working.
#[utoipa::path(post, path = "/api/v1/auth/totp/recovery-codes", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = RecoveryCodes),
        (status = 403, body = crate::web::problem::Problem, description = "step_up_required"),
        (status = 409, body = crate::web::problem::Problem, description = "totp_not_enrolled")))]
pub async fn renew_recovery_codes(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_step_up(state.identity.clock.now())?;
    let recovery_codes = state.identity.renew_recovery_codes(user.id).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes { recovery_codes }))
}

/// Removes the authenticator and the recovery codes (needs a recent step-up). Administrators
/// cannot: they must keep a second factor.
#[utoipa::path(delete, path = "/api/v1/auth/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 204),
        (status = 403, body = crate::web::problem::Problem, description = "step_up_required"),
        (status = 409, body = crate::web::problem::Problem, description = "totp_not_enrolled or second_factor_mandatory")))]
pub async fn disable_totp(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_step_up(state.identity.clock.now())?;
    state.identity.disable_totp(user.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A second factor: a code from the authenticator app or a recovery code (exactly one of the
/// two).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"otp": "492039"}), min_properties = 1, max_properties = 1)]
pub struct StepUpRequest {
    /// Six digits from the authenticator app.
    #[schema(nullable = false, pattern = r"^[0-9]{6}$")]
    pub otp: Option<String>,
    /// A recovery code (works once).
    #[schema(
        nullable = false,
        max_length = 32,
        pattern = r"^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$"
    )]
    pub recovery_code: Option<String>,
}

/// A step-up access token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepUpResponse {
    /// Valid for sensitive operations for five minutes; its `amr` includes `otp` and `mfa`.
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Steps up with the second factor (the alternative to an SMS code): answers an access token
/// that sensitive operations (email, password, phone, administration) accept for five
/// minutes. Each TOTP code works once.
#[utoipa::path(post, path = "/api/v1/auth/step-up", tag = "auth", request_body = StepUpRequest, security(("bearer" = [])),
    responses((status = 200, body = StepUpResponse),
        (status = 400, body = crate::web::problem::Problem, description = "invalid_code: wrong, expired or already used"),
        (status = 409, body = crate::web::problem::Problem, description = "totp_not_enrolled"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed: neither or both fields, or a malformed code"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After")))]
pub async fn step_up(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<StepUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let StepUpRequest { otp, recovery_code } = body.into_inner();
    let proof = parse_second_factor(otp, recovery_code)?
        .ok_or_else(|| ApiError::invalid_field("otp", "send otp or recovery_code"))?;
    let auth_time = chrono::DateTime::from_timestamp(user.claims.auth_time, 0)
        .unwrap_or_else(|| state.identity.clock.now());
    let access_token = state
        .identity
        .step_up_with_second_factor(user.id, &proof, auth_time, &user.claims.amr)
        .await?;
    Ok(HttpResponse::Ok().json(StepUpResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TTL.num_seconds(),
    }))
}
