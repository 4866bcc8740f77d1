//! Registration, login, refresh and logout.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::client_addr::ClientAddr;
use crate::domain::identity::{Email, Phone, SelfServiceRole};
use crate::error_code::ErrorCode;
use crate::identity::{IdentityError, NewAccount, OtpPurpose, TokenPair};
use crate::notify::NotifyError;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// Name of the cookie carrying the refresh token for browsers.
pub const REFRESH_COOKIE: &str = "hexmarket_refresh";
pub(crate) const COOKIE_PATH: &str = "/api/v1/auth";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/register", web::post().to(register))
        .route("/auth/login", web::post().to(login))
        .route("/auth/refresh", web::post().to(refresh))
        .route("/auth/logout", web::post().to(logout))
        .route("/auth/logout-all", web::post().to(logout_all))
        .route("/auth/phone/otp", web::post().to(send_otp))
        .route("/auth/phone/verify", web::post().to(verify_otp))
        .route(
            "/auth/email/verify/request",
            web::post().to(request_email_verification),
        )
        .route("/auth/email/verify/confirm", web::post().to(confirm_email))
        .route("/auth/password/forgot", web::post().to(forgot_password))
        .route("/auth/password/reset", web::post().to(reset_password));
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::EmailTaken => ApiError::conflict(ErrorCode::EmailTaken, e.to_string()),
            IdentityError::Password(rule) => {
                ApiError::field_rule(rule.code(), "password", rule.to_string())
            }
            IdentityError::InvalidCredentials => {
                ApiError::unauthorized(ErrorCode::InvalidCredentials, e.to_string())
            }
            IdentityError::Banned => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::AccountBanned,
                e.to_string(),
            ),
            IdentityError::TooManyAttempts { retry_after } => ApiError::too_many(
                ErrorCode::TooManyAttempts,
                "too many attempts; retry later",
                retry_after,
            ),
            IdentityError::InvalidRefreshToken => {
                ApiError::unauthorized(ErrorCode::InvalidRefreshToken, e.to_string())
            }
            IdentityError::NotFound => ApiError::not_found("no such account"),
            IdentityError::InvalidCursor => {
                ApiError::bad_request(ErrorCode::InvalidCursor, e.to_string())
            }
            IdentityError::Contended => ApiError::conflict(ErrorCode::Contended, e.to_string()),
            IdentityError::NoPhone => ApiError::conflict(ErrorCode::PhoneMissing, e.to_string()),
            IdentityError::InvalidCode => {
                ApiError::bad_request(ErrorCode::InvalidCode, e.to_string())
            }
            IdentityError::CodeExhausted => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::CodeExhausted,
                e.to_string(),
            ),
            IdentityError::InvalidToken => {
                ApiError::bad_request(ErrorCode::InvalidToken, e.to_string())
            }
            IdentityError::AlreadyVerified => {
                ApiError::conflict(ErrorCode::EmailAlreadyVerified, e.to_string())
            }
            IdentityError::SecondFactorRequired => {
                ApiError::unauthorized(ErrorCode::SecondFactorRequired, e.to_string())
            }
            IdentityError::TotpNotEnrolled => {
                ApiError::conflict(ErrorCode::TotpNotEnrolled, e.to_string())
            }
            IdentityError::SecondFactorMandatory => {
                ApiError::conflict(ErrorCode::SecondFactorMandatory, e.to_string())
            }
            IdentityError::CeremonyUnknown => {
                ApiError::bad_request(ErrorCode::CeremonyUnknown, e.to_string())
            }
            IdentityError::PasskeyNotRecognised => {
                ApiError::unauthorized(ErrorCode::PasskeyNotRecognised, e.to_string())
            }
            IdentityError::PasskeyInvalid(_) => {
                ApiError::unauthorized(ErrorCode::PasskeyInvalid, e.to_string())
            }
            IdentityError::PasskeyCloned => {
                ApiError::unauthorized(ErrorCode::PasskeyCloned, e.to_string())
            }
            IdentityError::PasskeyTaken => {
                ApiError::conflict(ErrorCode::PasskeyTaken, e.to_string())
            }
            IdentityError::PasskeyLimit => {
                ApiError::conflict(ErrorCode::PasskeyLimit, e.to_string())
            }
            IdentityError::NoPasskeys => ApiError::conflict(ErrorCode::NoPasskeys, e.to_string()),
            IdentityError::LastSignInMethod => {
                ApiError::conflict(ErrorCode::LastSignInMethod, e.to_string())
            }
            IdentityError::ProviderEmailMissing => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::OidcEmailMissing,
                e.to_string(),
            ),
            IdentityError::ProviderEmailUnverified => {
                ApiError::conflict(ErrorCode::OidcEmailUnverified, e.to_string())
            }
            IdentityError::IdentityTaken => {
                ApiError::conflict(ErrorCode::IdentityTaken, e.to_string())
            }
            IdentityError::Delivery(NotifyError::Invalid(why)) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::DeliveryRefused,
                format!("the message could not be sent: {why}"),
            ),
            IdentityError::Delivery(cause @ NotifyError::Unavailable(_)) => {
                ApiError::unavailable(ErrorCode::DeliveryUnavailable, cause)
            }
            IdentityError::Store(store) => store.into(),
            IdentityError::Limiter(limiter) => {
                ApiError::unavailable(ErrorCode::RateLimiterUnavailable, limiter)
            }
            IdentityError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// A new account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "jane@example.com")]
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    #[schema(example = "Jane Doe")]
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    pub role: SelfServiceRole,
    #[schema(example = "+447700900123")]
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub phone: Option<String>,
}

/// The public view of an account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    #[schema(value_type = String, format = Uuid)]
    pub id: crate::domain::ids::UserId,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub role: crate::domain::identity::Role,
    pub phone: Option<String>,
    pub phone_verified: bool,
    /// Whether an authenticator app (TOTP) is enrolled: login then needs a code.
    pub totp_enabled: bool,
    /// Whether a password signs in (accounts made through an identity provider have none
    /// until one is set with `POST /api/v1/auth/password/forgot`).
    pub has_password: bool,
    /// How many passkeys are registered.
    pub passkeys: usize,
    /// How many identity-provider accounts are linked.
    pub linked_identities: usize,
    pub banned: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&crate::domain::account::User> for AccountView {
    fn from(u: &crate::domain::account::User) -> Self {
        AccountView {
            id: u.id,
            email: u.email.to_string(),
            email_verified: u.email_verified,
            name: u.name.clone(),
            role: u.role,
            phone: u.phone.as_ref().map(|p| p.as_str().to_owned()),
            phone_verified: u.phone_verified,
            totp_enabled: u.second_factor.enabled(),
            has_password: u.has_password(),
            passkeys: u.passkeys.len(),
            linked_identities: u.identities.len(),
            banned: u.banned,
            created_at: u.created_at,
        }
    }
}

/// Parses a display name: trimmed, 1 to 100 characters, no control characters.
pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|m| ApiError::invalid_field("email", m))
}

pub fn parse_phone(raw: &str) -> Result<Phone, ApiError> {
    Phone::parse(raw).map_err(|m| ApiError::invalid_field("phone", m))
}

/// Creates a customer, vendor or courier account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = AccountView), (status = 400, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "email_taken"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed or a password rule")))]
pub async fn register(
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = NewAccount {
        email: parse_email(&body.email)?,
        name: parse_name(&body.name)?,
        phone: body.phone.as_deref().map(parse_phone).transpose()?,
        role: body.role.into(),
        password: body.password,
    };
    let user = state.identity.register(account).await?;
    Ok(HttpResponse::Created().json(AccountView::from(&user)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
/// At most one of `otp` and `recovery_code` (hence at most three properties).
#[schema(example = json!({"email": "jane@example.com", "password": "correct horse battery staple"}), max_properties = 3)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// For accounts with an authenticator: six digits from it. Without `otp` or
    /// `recovery_code` such an account's login answers 401 `second_factor_required`.
    #[schema(example = "492039", nullable = false, pattern = r"^[0-9]{6}$")]
    pub otp: Option<String>,
    /// For accounts with an authenticator: a recovery code instead of `otp` (works once).
    #[schema(
        nullable = false,
        max_length = 32,
        pattern = r"^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$"
    )]
    pub recovery_code: Option<String>,
}

/// Tokens of a session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl", "refresh_token": "0190f0d28c6a70008000000000000001.0190f0d28c6a70008000000000000002.q1Yk3b0X9bq2H8m1g7v4rW0y5c6n2s9d8f7a1k3j4h5", "token_type": "Bearer", "expires_in": 600}))]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// The browser cookie carrying a refresh token.
pub(crate) fn refresh_cookie(state: &AppState, refresh_token: &str) -> Cookie<'static> {
    Cookie::build(REFRESH_COOKIE, refresh_token.to_owned())
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::days(30))
        .finish()
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        TokenResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
        }
    }
}

/// 200 with the tokens, the refresh token also in its cookie.
pub(crate) fn tokens_response(state: &AppState, pair: TokenPair) -> HttpResponse {
    let cookie = refresh_cookie(state, &pair.refresh_token);
    HttpResponse::Ok()
        .cookie(cookie)
        .json(TokenResponse::from(pair))
}

/// Logs in with email and password, plus `otp` (or `recovery_code`) when the account has an
/// authenticator: without one such a login answers 401 `second_factor_required`, and the
/// client asks for a code and sends the same request again with it.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse),
        (status = 400, body = crate::web::problem::Problem, description = "invalid_code: the second factor is wrong or already used"),
        (status = 401, body = crate::web::problem::Problem, description = "invalid_credentials, or second_factor_required"),
        (status = 403, body = crate::web::problem::Problem, description = "account_banned"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed: a malformed otp or recovery_code"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After")))]
pub async fn login(
    state: web::Data<AppState>,
    client: ClientAddr,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest {
        email,
        password,
        otp,
        recovery_code,
    } = body.into_inner();
    let second_factor = super::mfa::parse_second_factor(otp, recovery_code)?;
    let email = Email::parse(&email).map_err(|_| {
        ApiError::unauthorized(ErrorCode::InvalidCredentials, "wrong email or password")
    })?;
    if password.chars().count() > crate::domain::identity::MAX_PASSWORD_CHARS {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidCredentials,
            "wrong email or password",
        ));
    }
    let pair = state
        .identity
        .login(
            &email,
            password,
            second_factor.as_ref(),
            &client.to_string(),
        )
        .await?;
    Ok(tokens_response(&state, pair))
}

/// The refresh token, from the body or the cookie.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"refresh_token": "0190f0d28c6a70008000000000000001.0190f0d28c6a70008000000000000002.q1Yk3b0X9bq2H8m1g7v4rW0y5c6n2s9d8f7a1k3j4h5"}))]
pub struct RefreshRequest {
    pub refresh_token: Option<String>,
}

fn presented_refresh(
    req: &HttpRequest,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<String, ApiError> {
    body.and_then(|b| b.into_inner().refresh_token)
        .or_else(|| req.cookie(REFRESH_COOKIE).map(|c| c.value().to_owned()))
        .ok_or_else(|| {
            ApiError::unauthorized(ErrorCode::InvalidRefreshToken, "send the refresh token")
        })
}

/// Exchanges a refresh token for new tokens; the old refresh token stops working.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::web::problem::Problem)))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let presented = presented_refresh(&req, body)?;
    let pair = state.identity.refresh(&presented).await?;
    Ok(tokens_response(&state, pair))
}

fn cleared_cookie() -> Cookie<'static> {
    let mut cookie = Cookie::build(REFRESH_COOKIE, "").path(COOKIE_PATH).finish();
    cookie.make_removal();
    cookie
}

/// Ends this session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204), (status = 401, body = crate::web::problem::Problem)))]
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let presented = presented_refresh(&req, body)?;
    state.identity.logout(&presented).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

/// Ends every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem)))]
pub async fn logout_all(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    state.identity.revoke_all(user.id).await?;
    Ok(HttpResponse::NoContent().cookie(cleared_cookie()).finish())
}

/// Which code to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"purpose": "step_up"}))]
pub struct OtpRequest {
    pub purpose: OtpPurpose,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OtpSent {
    /// Seconds the code stays valid.
    pub expires_in: i64,
}

/// Sends a six-digit code by SMS to the caller's phone (at most 5 per number per hour).
#[utoipa::path(post, path = "/api/v1/auth/phone/otp", tag = "auth", request_body = OtpRequest, security(("bearer" = [])),
    responses((status = 202, body = OtpSent), (status = 409, body = crate::web::problem::Problem, description = "phone_missing"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After"),
        (status = 503, body = crate::web::problem::Problem, description = "delivery_unavailable")))]
pub async fn send_otp(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<OtpRequest>,
) -> Result<HttpResponse, ApiError> {
    let ttl = state.identity.send_otp(user.id, body.purpose).await?;
    Ok(HttpResponse::Accepted().json(OtpSent {
        expires_in: ttl.num_seconds(),
    }))
}

/// A code received by SMS.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpVerify {
    pub purpose: OtpPurpose,
    #[schema(example = "042917", pattern = "^[0-9]{6}$")]
    pub code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OtpVerified {
    pub phone_verified: bool,
    /// For `step_up`: an access token valid for sensitive operations for five minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

/// Checks a code: verifies the phone, or grants a step-up token.
#[utoipa::path(post, path = "/api/v1/auth/phone/verify", tag = "auth", request_body = OtpVerify, security(("bearer" = [])),
    responses((status = 200, body = OtpVerified), (status = 400, body = crate::web::problem::Problem, description = "invalid_code"),
        (status = 429, body = crate::web::problem::Problem, description = "code_exhausted: five wrong guesses")))]
pub async fn verify_otp(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<OtpVerify>,
) -> Result<HttpResponse, ApiError> {
    let OtpVerify { purpose, code } = body.into_inner();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_field("code", "must be six digits"));
    }
    let auth_time = chrono::DateTime::from_timestamp(user.claims.auth_time, 0)
        .unwrap_or_else(|| state.identity.clock.now());
    let outcome = state
        .identity
        .verify_otp(user.id, purpose, &code, auth_time, &user.claims.amr)
        .await?;
    Ok(HttpResponse::Ok().json(match outcome {
        crate::identity::OtpOutcome::PhoneVerified => OtpVerified {
            phone_verified: true,
            access_token: None,
            expires_in: None,
        },
        crate::identity::OtpOutcome::SteppedUp { access_token } => OtpVerified {
            phone_verified: true,
            access_token: Some(access_token),
            expires_in: Some(crate::identity::tokens::ACCESS_TTL.num_seconds()),
        },
    }))
}

/// Emails the caller a link to confirm their address.
#[utoipa::path(post, path = "/api/v1/auth/email/verify/request", tag = "auth", security(("bearer" = [])),
    responses((status = 202), (status = 409, body = crate::web::problem::Problem, description = "email_already_verified"),
        (status = 429, body = crate::web::problem::Problem)))]
pub async fn request_email_verification(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    state.identity.request_email_verification(user.id).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// A token from an email link.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "0190f0d28c6a70008000000000000001.q1Yk3b0X9bq2H8m1g7v4rW0y5c6n2s9d8f7a1k3j4h5"}))]
pub struct TokenRequest {
    pub token: String,
}

/// Confirms an email address with the token from the link.
#[utoipa::path(post, path = "/api/v1/auth/email/verify/confirm", tag = "auth", request_body = TokenRequest,
    responses((status = 204), (status = 400, body = crate::web::problem::Problem, description = "invalid_token")))]
pub async fn confirm_email(
    state: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    state.identity.confirm_email(&body.token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    #[schema(example = "jane@example.com")]
    pub email: String,
}

/// Emails a password-reset link if an account has this address; answers 202 either way.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "auth", request_body = ForgotRequest,
    responses((status = 202)))]
pub async fn forgot_password(
    state: web::Data<AppState>,
    body: web::Json<ForgotRequest>,
) -> Result<HttpResponse, ApiError> {
    // A malformed address cannot have an account: same answer, nothing sent.
    if let Ok(email) = Email::parse(&body.email) {
        state.identity.forgot_password(&email).await?;
    }
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "0190f0d28c6a70008000000000000001.q1Yk3b0X9bq2H8m1g7v4rW0y5c6n2s9d8f7a1k3j4h5", "new_password": "a brand new passphrase"}))]
pub struct ResetRequest {
    pub token: String,
    pub new_password: String,
}

/// Sets a new password with the token from a reset link; ends every session.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses((status = 204), (status = 400, body = crate::web::problem::Problem, description = "invalid_token"),
        (status = 422, body = crate::web::problem::Problem, description = "a password rule")))]
pub async fn reset_password(
    state: web::Data<AppState>,
    body: web::Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    let ResetRequest {
        token,
        new_password,
    } = body.into_inner();
    state.identity.reset_password(&token, new_password).await?;
    Ok(HttpResponse::NoContent().finish())
}
