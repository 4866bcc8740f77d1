//! Sign-in with identity providers (OpenID Connect) and with passkeys (WebAuthn) over HTTP,
//! and the caller's linked identities and passkeys.
//!
//! A provider flow: `POST /auth/oidc/{provider}/start` answers the provider's authorization
//! URL (and sets a cookie tying the flow to this browser); the provider sends the user back to
//! `/auth/oidc/{provider}/callback` (GET, or a form POST for Apple), which answers what came
//! of it. The refresh cookie is set only for the browser that started the flow, so a callback
//! link someone else started signs nobody in by cookie.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::auth::{TokenResponse, refresh_cookie, tokens_response};
use super::client_addr::ClientAddr;
use super::mfa::{StepUpResponse, parse_second_factor};
use crate::domain::account::{LinkedIdentity, StoredPasskey};
use crate::domain::identity::Email;
use crate::error_code::ErrorCode;
use crate::identity::federation::{FederationError, Intent};
use crate::identity::passkeys::{Challenge, MAX_NAME_CHARS};
use crate::identity::tokens::ACCESS_TTL;
use crate::identity::{LinkProof, ProviderSignIn};
use crate::web::extract::{AuthUser, MaybeUser};
use crate::web::{ApiError, AppState};

/// The cookie tying a provider flow to the browser that started it.
const FLOW_COOKIE: &str = "hexmarket_oidc";
const FLOW_COOKIE_PATH: &str = "/api/v1/auth/oidc";
/// Longest `code` or `state` taken from a provider's redirect.
const MAX_PARAM_CHARS: usize = 2048;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/oidc/providers", web::get().to(list_providers))
        .route("/auth/oidc/link", web::post().to(complete_link))
        .route("/auth/oidc/{provider}/start", web::post().to(start))
        .service(
            web::resource("/auth/oidc/{provider}/callback")
                .route(web::get().to(callback_get))
                .route(web::post().to(callback_post)),
        )
        .route(
            "/auth/passkeys/register/options",
            web::post().to(register_options),
        )
        .route("/auth/passkeys/register", web::post().to(register))
        .route(
            "/auth/passkeys/sign-in/options",
            web::post().to(sign_in_options),
        )
        .route("/auth/passkeys/sign-in", web::post().to(sign_in))
        .route(
            "/auth/step-up/passkey/options",
            web::post().to(step_up_options),
        )
        .route("/auth/step-up/passkey", web::post().to(step_up))
        .route("/me/identities", web::get().to(list_identities))
        .route("/me/identities/{id}", web::delete().to(remove_identity))
        .route("/me/passkeys", web::get().to(list_passkeys))
        .route("/me/passkeys/{id}", web::delete().to(remove_passkey));
}

impl From<FederationError> for ApiError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::UnknownProvider(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::OidcProviderUnknown,
                e.to_string(),
            ),
            FederationError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::OidcProviderUnavailable,
                e.to_string(),
            ),
            FederationError::StateMismatch => {
                ApiError::bad_request(ErrorCode::OidcStateMismatch, e.to_string())
            }
            FederationError::ProviderError(_) => {
                ApiError::bad_request(ErrorCode::OidcProviderError, e.to_string())
            }
            FederationError::CodeRejected(_) => {
                ApiError::bad_request(ErrorCode::OidcCodeRejected, e.to_string())
            }
            FederationError::TokenInvalid(_) => {
                ApiError::unauthorized(ErrorCode::OidcTokenInvalid, e.to_string())
            }
            FederationError::Store(store) => store.into(),
        }
    }
}

/// A provider users may sign in with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "google", "display_name": "Google", "redirect_uri": "https://shop.example.com/api/v1/auth/oidc/google/callback"}))]
pub struct OidcProvider {
    /// The name in this API's paths.
    pub name: String,
    pub display_name: String,
    /// The redirect URI registered with the provider for this deployment.
    pub redirect_uri: String,
}

/// The identity providers configured (`HEXMARKET_OIDC_PROVIDERS`), for a sign-in page's
/// buttons. Empty when none is.
#[utoipa::path(get, path = "/api/v1/auth/oidc/providers", tag = "sign-in",
    responses((status = 200, body = [OidcProvider])))]
pub async fn list_providers(state: web::Data<AppState>) -> HttpResponse {
    let providers: Vec<OidcProvider> = state
        .identity
        .federation
        .providers()
        .into_iter()
        .map(|p| OidcProvider {
            name: p.name,
            display_name: p.display_name,
            redirect_uri: p.redirect_uri,
        })
        .collect();
    HttpResponse::Ok().json(providers)
}

/// What a provider flow is for.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OidcIntent {
    /// Sign in, or sign up when no account has the provider's email.
    #[default]
    SignIn,
    /// Link the provider identity to the signed-in caller (needs a bearer token from a
    /// sign-in or step-up of the last five minutes).
    Link,
}

/// Starting a provider flow.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"intent": "sign_in"}))]
pub struct OidcStartRequest {
    #[serde(default)]
    pub intent: OidcIntent,
}

/// Where to send the user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"authorization_url": "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&client_id=…&state=…&code_challenge=…&code_challenge_method=S256&nonce=…", "state": "x3Jq…", "expires_in": 600}))]
pub struct OidcStartResponse {
    /// Open this in the browser; the provider sends the user back to the callback.
    pub authorization_url: String,
    /// The flow's `state`, also inside `authorization_url`; the callback must bring it back.
    pub state: String,
    /// Seconds the flow waits for the callback.
    pub expires_in: i64,
}

/// Starts sign-in (or linking) with an identity provider: answers the authorization URL
/// (authorization code flow with PKCE, `state` and `nonce`) and sets the `hexmarket_oidc`
/// cookie that ties the callback to this browser.
#[utoipa::path(post, path = "/api/v1/auth/oidc/{provider}/start", tag = "sign-in",
    params(("provider" = String, Path, description = "A name from GET /api/v1/auth/oidc/providers")),
    request_body(content = OidcStartRequest, description = "Optional; the default is sign_in"),
    responses((status = 200, body = OidcStartResponse),
        (status = 401, body = crate::web::problem::Problem, description = "unauthenticated (link without a bearer token)"),
        (status = 403, body = crate::web::problem::Problem, description = "recent_sign_in_required (link)"),
        (status = 404, body = crate::web::problem::Problem, description = "oidc_provider_unknown"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After"),
        (status = 503, body = crate::web::problem::Problem, description = "oidc_provider_unavailable: discovery failed")))]
pub async fn start(
    state: web::Data<AppState>,
    path: web::Path<String>,
    MaybeUser(user): MaybeUser,
    client: ClientAddr,
    body: Option<web::Json<OidcStartRequest>>,
) -> Result<HttpResponse, ApiError> {
    let provider = path.into_inner();
    let intent = body.map(|b| b.intent).unwrap_or_default();
    let intent = match intent {
        OidcIntent::SignIn => Intent::SignIn,
        OidcIntent::Link => {
            let user = user.ok_or_else(|| {
                ApiError::unauthorized(
                    ErrorCode::Unauthenticated,
                    "linking needs the bearer token of the account to link to",
                )
            })?;
            user.require_recent_sign_in(state.identity.clock.now())?;
            Intent::Link { user_id: user.id }
        }
    };
    state
        .identity
        .limit_flow(&format!("oidc-start:{client}"))
        .await?;
    let started = state.identity.federation.start(&provider, intent).await?;
    // The provider's way back may be a cross-site form POST (Apple), which a Lax cookie
    // does not follow; it needs `SameSite=None`, which browsers take only when `Secure`.
    let same_site = if state.secure_cookies {
        SameSite::None
    } else {
        SameSite::Lax
    };
    let cookie = Cookie::build(FLOW_COOKIE, started.binding)
        .path(FLOW_COOKIE_PATH)
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(same_site)
        .max_age(CookieDuration::seconds(started.expires_in.num_seconds()))
        .finish();
    Ok(HttpResponse::Ok().cookie(cookie).json(OidcStartResponse {
        authorization_url: started.authorization_url,
        state: started.state,
        expires_in: started.expires_in.num_seconds(),
    }))
}

/// What the provider sends back (query of the GET, or form of the POST).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OidcCallbackParams {
    /// The authorization code.
    #[param(max_length = 2048)]
    pub code: Option<String>,
    /// The flow's `state`.
    #[param(max_length = 2048)]
    pub state: Option<String>,
    /// Set by the provider when the user declined or it failed.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What a provider flow came to.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OidcOutcome {
    /// Signed in: the tokens are in the answer.
    SignedIn,
    /// The identity is now linked to the account that started the flow.
    Linked,
    /// An account has the provider's (verified) email: prove it with `link_token` at
    /// `POST /api/v1/auth/oidc/link` (its password or one of its passkeys) to link and sign in.
    LinkRequired,
}

impl OidcOutcome {
    fn as_str(self) -> &'static str {
        match self {
            OidcOutcome::SignedIn => "signed_in",
            OidcOutcome::Linked => "linked",
            OidcOutcome::LinkRequired => "link_required",
        }
    }
}

/// The answer of a provider's callback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"outcome": "signed_in", "account_created": true, "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl", "refresh_token": "0190f0d2….q1Yk3b0X9bq2", "token_type": "Bearer", "expires_in": 600}))]
pub struct OidcCallbackResponse {
    pub outcome: OidcOutcome,
    /// `signed_in`: whether the sign-in made a new customer account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_created: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// `linked`: the identity now linked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<LinkedIdentityView>,
    /// `link_required`: proves the account at `POST /api/v1/auth/oidc/link` (ten minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_token: Option<String>,
    /// `link_required`: the account's email, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl OidcCallbackResponse {
    fn of(outcome: OidcOutcome) -> Self {
        OidcCallbackResponse {
            outcome,
            account_created: None,
            access_token: None,
            refresh_token: None,
            token_type: None,
            expires_in: None,
            identity: None,
            link_token: None,
            email: None,
        }
    }
}

/// The provider's way back: checks `state` (once), exchanges the code with the PKCE verifier,
/// checks the ID token (signature against the provider's keys, `iss`, `aud`, `exp`, `nonce`)
/// and signs in, signs up, links, or asks for proof of an existing account. Register
/// `{HEXMARKET_PUBLIC_URL}/api/v1/auth/oidc/{provider}/callback` with the provider.
#[utoipa::path(get, path = "/api/v1/auth/oidc/{provider}/callback", tag = "sign-in",
    params(("provider" = String, Path), OidcCallbackParams),
    responses((status = 200, body = OidcCallbackResponse),
        (status = 303, description = "a browser sent back by the provider (`Sec-Fetch-Mode: navigate`): to the web app's `/signin#oidc=signed_in|linked|link_required|error&…` (with `link_token` and `email`, or the problem's `code`); the session cookie is set as with the JSON answer"),
        (status = 400, body = crate::web::problem::Problem, description = "oidc_state_mismatch (unknown, expired or used state; a link finished by another client), oidc_code_rejected (the provider refused the code, e.g. replayed), oidc_provider_error (the provider answered an error)"),
        (status = 401, body = crate::web::problem::Problem, description = "oidc_token_invalid: signature, issuer, audience, expiry or nonce"),
        (status = 403, body = crate::web::problem::Problem, description = "account_banned"),
        (status = 404, body = crate::web::problem::Problem, description = "oidc_provider_unknown"),
        (status = 409, body = crate::web::problem::Problem, description = "oidc_email_unverified, identity_taken"),
        (status = 422, body = crate::web::problem::Problem, description = "oidc_email_missing, validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts"),
        (status = 503, body = crate::web::problem::Problem, description = "oidc_provider_unavailable")))]
pub async fn callback_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    client: ClientAddr,
    MaybeUser(user): MaybeUser,
    query: web::Query<OidcCallbackParams>,
) -> Result<HttpResponse, ApiError> {
    let answer = callback(
        &state,
        &req,
        &path.into_inner(),
        client,
        user,
        query.into_inner(),
    )
    .await;
    respond(&req, answer)
}

/// The provider's way back as a form POST (`response_mode=form_post`, as Apple answers):
/// the same as the GET.
#[utoipa::path(post, path = "/api/v1/auth/oidc/{provider}/callback", tag = "sign-in",
    params(("provider" = String, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "code, state (or error, error_description), and from Apple user"),
    responses((status = 200, body = OidcCallbackResponse),
        (status = 303, description = "a browser sent back by the provider (`Sec-Fetch-Mode: navigate`): to the web app's `/signin#oidc=signed_in|linked|link_required|error&…` (with `link_token` and `email`, or the problem's `code`); the session cookie is set as with the JSON answer"),
        (status = 400, body = crate::web::problem::Problem, description = "oidc_state_mismatch, oidc_code_rejected, oidc_provider_error"),
        (status = 401, body = crate::web::problem::Problem, description = "oidc_token_invalid"),
        (status = 404, body = crate::web::problem::Problem, description = "oidc_provider_unknown"),
        (status = 403, body = crate::web::problem::Problem, description = "account_banned"),
        (status = 409, body = crate::web::problem::Problem, description = "oidc_email_unverified, identity_taken"),
        (status = 422, body = crate::web::problem::Problem, description = "oidc_email_missing, validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts"),
        (status = 503, body = crate::web::problem::Problem, description = "oidc_provider_unavailable")))]
pub async fn callback_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    client: ClientAddr,
    MaybeUser(user): MaybeUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mut params = OidcCallbackParams::default();
    for (name, value) in openidconnect::url::form_urlencoded::parse(&body) {
        let value = Some(value.into_owned());
        match name.as_ref() {
            "code" => params.code = value,
            "state" => params.state = value,
            "error" => params.error = value,
            "error_description" => params.error_description = value,
            _ => {}
        }
    }
    let answer = callback(&state, &req, &path.into_inner(), client, user, params).await;
    respond(&req, answer)
}

/// What a callback ends with: cookies to set and the outcome.
struct CallbackAnswer {
    cookies: Vec<Cookie<'static>>,
    body: OidcCallbackResponse,
}

/// The callback's answer: JSON for API clients; for a browser that the provider sent back
/// (a top-level navigation, `Sec-Fetch-Mode: navigate`), a redirect to the web app's sign-in
/// page with the outcome in the fragment, which never reaches a server or a log. Tokens are
/// never put there: the browser that started the flow has its session cookie.
fn respond(
    req: &HttpRequest,
    answer: Result<CallbackAnswer, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let navigation = req
        .headers()
        .get("sec-fetch-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"navigate"));
    if !navigation {
        let answer = answer?;
        let mut response = HttpResponse::Ok();
        for cookie in answer.cookies {
            response.cookie(cookie);
        }
        return Ok(response.json(answer.body));
    }
    let (cookies, fragment) = match answer {
        Ok(answer) => {
            let body = &answer.body;
            let mut fragment = openidconnect::url::form_urlencoded::Serializer::new(String::new());
            fragment.append_pair("oidc", body.outcome.as_str());
            if let Some(token) = &body.link_token {
                fragment.append_pair("link_token", token);
            }
            if let Some(email) = &body.email {
                fragment.append_pair("email", email);
            }
            (answer.cookies, fragment.finish())
        }
        Err(e) => {
            let mut fragment = openidconnect::url::form_urlencoded::Serializer::new(String::new());
            fragment
                .append_pair("oidc", "error")
                .append_pair("code", e.code());
            (Vec::new(), fragment.finish())
        }
    };
    let mut response = HttpResponse::SeeOther();
    for cookie in cookies {
        response.cookie(cookie);
    }
    Ok(response
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/signin#{fragment}"),
        ))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .finish())
}

fn bounded<'a>(value: Option<&'a str>, field: &str) -> Result<&'a str, ApiError> {
    match value {
        Some(v) if !v.is_empty() && v.chars().count() <= MAX_PARAM_CHARS => Ok(v),
        _ => Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {MAX_PARAM_CHARS} characters"),
        )),
    }
}

async fn callback(
    state: &AppState,
    req: &HttpRequest,
    provider: &str,
    client: ClientAddr,
    caller: Option<AuthUser>,
    params: OidcCallbackParams,
) -> Result<CallbackAnswer, ApiError> {
    let identity = &state.identity;
    identity
        .limit_flow(&format!("oidc-callback:{client}"))
        .await?;
    let flow_state = match params.state.as_deref() {
        Some(s) if !s.is_empty() && s.chars().count() <= MAX_PARAM_CHARS => s,
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::OidcStateMismatch,
                "the callback carries no state",
            ));
        }
    };
    if let Some(error) = params.error.as_deref() {
        // The flow is spent either way: the user starts again.
        let _ = identity.federation.take_flow(provider, flow_state).await;
        let detail = params.error_description.as_deref().unwrap_or(error);
        let detail: String = detail.chars().take(200).collect();
        return Err(FederationError::ProviderError(detail).into());
    }
    let code = bounded(params.code.as_deref(), "code")?;
    let client = client.to_string();
    identity.check_sign_in_address(&client).await?;
    // An unknown state guesses nothing; what counts against the address is a code or an ID
    // token the provider's side refused.
    let flow = identity.federation.take_flow(provider, flow_state).await?;
    let cookie = req.cookie(FLOW_COOKIE);
    let bound = flow.bound_to(cookie.as_ref().map(|c| c.value()));
    let asserted = match identity.federation.finish(&flow, code).await {
        Ok(asserted) => asserted,
        Err(e) => {
            if matches!(
                e,
                FederationError::TokenInvalid(_) | FederationError::CodeRejected(_)
            ) {
                identity.sign_in_failed(&client).await;
            }
            return Err(e.into());
        }
    };
    let mut spent = Cookie::build(FLOW_COOKIE, "")
        .path(FLOW_COOKIE_PATH)
        .finish();
    spent.make_removal();
    match flow.intent {
        Intent::Link { user_id } => {
            // Only the account that started the link may finish it: by its browser's cookie,
            // or by its bearer token for API clients.
            let by_caller = caller.as_ref().is_some_and(|u| u.id == user_id);
            if !bound && !by_caller {
                return Err(ApiError::bad_request(
                    ErrorCode::OidcStateMismatch,
                    "this link was started by another client",
                ));
            }
            let linked = identity.link_provider(user_id, &asserted).await?;
            let mut answer = OidcCallbackResponse::of(OidcOutcome::Linked);
            answer.identity = Some(LinkedIdentityView::from(&linked));
            Ok(CallbackAnswer {
                cookies: vec![spent],
                body: answer,
            })
        }
        Intent::SignIn => match identity.sign_in_with_provider(&asserted).await? {
            ProviderSignIn::SignedIn { tokens, created } => {
                let mut cookies = vec![spent];
                if bound {
                    cookies.push(refresh_cookie(state, &tokens.refresh_token));
                }
                let tokens = TokenResponse::from(tokens);
                let mut answer = OidcCallbackResponse::of(OidcOutcome::SignedIn);
                answer.account_created = Some(created);
                answer.access_token = Some(tokens.access_token);
                answer.refresh_token = Some(tokens.refresh_token);
                answer.token_type = Some(tokens.token_type);
                answer.expires_in = Some(tokens.expires_in);
                Ok(CallbackAnswer {
                    cookies,
                    body: answer,
                })
            }
            ProviderSignIn::LinkRequired { link_token, email } => {
                let mut answer = OidcCallbackResponse::of(OidcOutcome::LinkRequired);
                answer.link_token = Some(link_token);
                answer.email = Some(email);
                Ok(CallbackAnswer {
                    cookies: vec![spent],
                    body: answer,
                })
            }
        },
    }
}

/// A passkey's answer to a challenge.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ceremony_id": "0DQTN0EJl0WK_Di_w6Ql6zB_iy09Q-9ADix1MFAAWZ4", "credential": {"id": "q1Yk3b0X9bq2H8m1g7v4rQ", "rawId": "q1Yk3b0X9bq2H8m1g7v4rQ", "type": "public-key", "response": {"clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0", "authenticatorData": "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ", "signature": "MEUCIQ", "userHandle": "AZDw0oxqcACAAAAAAAAAAQ"}}}))]
pub struct PasskeyAnswer {
    /// The `ceremony_id` of the challenge.
    #[schema(min_length = 1, max_length = 64)]
    pub ceremony_id: String,
    /// What `navigator.credentials.get()` resolved to, as JSON (`PublicKeyCredential.toJSON()`:
    /// `id`, `rawId`, `type` and `response` with `clientDataJSON`, `authenticatorData`,
    /// `signature` and `userHandle`, binary fields base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

impl PasskeyAnswer {
    fn parts(&self) -> Result<(&str, PublicKeyCredential), ApiError> {
        Ok((
            ceremony(&self.ceremony_id)?,
            serde_json::from_value(self.credential.clone()).map_err(|e| {
                ApiError::invalid_field("credential", format!("not a WebAuthn assertion: {e}"))
            })?,
        ))
    }
}

/// A ceremony id or link token as the document describes it: 1 to 64 characters (what is not
/// one the server issued is then simply unknown).
fn ceremony(id: &str) -> Result<&str, ApiError> {
    if !id.is_empty() && id.chars().count() <= 64 {
        Ok(id)
    } else {
        Err(ApiError::invalid_field(
            "ceremony_id",
            "must be the ceremony_id of a challenge",
        ))
    }
}

/// Completing a link that waits for proof of the account: its password (with `otp` or
/// `recovery_code` when it has an authenticator), or one of its passkeys.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"link_token": "J2o9…", "password": "correct horse battery staple"}))]
pub struct OidcLinkRequest {
    /// From the callback's `link_required` answer.
    #[schema(min_length = 1, max_length = 64)]
    pub link_token: String,
    #[schema(nullable = false, max_length = 128)]
    pub password: Option<String>,
    #[schema(nullable = false, pattern = r"^[0-9]{6}$")]
    pub otp: Option<String>,
    #[schema(nullable = false, max_length = 32)]
    pub recovery_code: Option<String>,
    /// A passkey's answer to `POST /api/v1/auth/passkeys/sign-in/options` (instead of the
    /// password).
    #[schema(nullable = false)]
    pub passkey: Option<PasskeyAnswer>,
}

/// Links a provider identity to the existing account with its email, once the user proves
/// that account, and signs in.
#[utoipa::path(post, path = "/api/v1/auth/oidc/link", tag = "sign-in", request_body = OidcLinkRequest,
    responses((status = 200, body = TokenResponse),
        (status = 400, body = crate::web::problem::Problem, description = "ceremony_unknown: the link token is unknown, expired or used; invalid_code"),
        (status = 401, body = crate::web::problem::Problem, description = "invalid_credentials, second_factor_required, passkey_not_recognised, passkey_invalid, passkey_cloned"),
        (status = 409, body = crate::web::problem::Problem, description = "identity_taken"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed: neither or both of password and passkey"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts")))]
pub async fn complete_link(
    state: web::Data<AppState>,
    client: ClientAddr,
    body: web::Json<OidcLinkRequest>,
) -> Result<HttpResponse, ApiError> {
    let OidcLinkRequest {
        link_token,
        password,
        otp,
        recovery_code,
        passkey,
    } = body.into_inner();
    let link_token = ceremony(&link_token)
        .map_err(|_| ApiError::invalid_field("link_token", "must be a link token"))?
        .to_owned();
    let second_factor = parse_second_factor(otp, recovery_code)?;
    let client = client.to_string();
    let pair = match (password, passkey) {
        (Some(password), None) => {
            if password.chars().count() > crate::domain::identity::MAX_PASSWORD_CHARS {
                return Err(ApiError::unauthorized(
                    ErrorCode::InvalidCredentials,
                    "wrong email or password",
                ));
            }
            let proof = LinkProof::Password {
                password,
                second_factor: second_factor.as_ref(),
            };
            state
                .identity
                .complete_link(&link_token, proof, &client)
                .await?
        }
        (None, Some(answer)) => {
            let (ceremony, credential) = answer.parts()?;
            let proof = LinkProof::Passkey {
                ceremony,
                credential: &credential,
            };
            state
                .identity
                .complete_link(&link_token, proof, &client)
                .await?
        }
        _ => {
            return Err(ApiError::invalid_field(
                "password",
                "send either password or passkey",
            ));
        }
    };
    Ok(tokens_response(&state, pair))
}

/// A challenge for an authenticator.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasskeyChallenge {
    /// Send it back with the authenticator's answer (valid five minutes, once).
    pub ceremony_id: String,
    /// `{"publicKey": …}`: pass `publicKey` to `navigator.credentials.create()` (registration)
    /// or `navigator.credentials.get()` (sign-in, step-up); binary fields are base64url.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

fn challenge_view<T: Serialize>(challenge: Challenge<T>) -> Result<HttpResponse, ApiError> {
    let options = serde_json::to_value(&challenge.options).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(PasskeyChallenge {
        ceremony_id: challenge.ceremony_id,
        options,
    }))
}

/// Starts registering a passkey for the caller (needs a sign-in or step-up of the last five
/// minutes). The account's own passkeys are excluded.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register/options", tag = "sign-in", security(("bearer" = [])),
    responses((status = 200, body = PasskeyChallenge),
        (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem, description = "recent_sign_in_required"),
        (status = 409, body = crate::web::problem::Problem, description = "passkey_limit")))]
pub async fn register_options(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_recent_sign_in(state.identity.clock.now())?;
    challenge_view(state.identity.begin_passkey_registration(user.id).await?)
}

/// A new passkey.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ceremony_id": "0DQTN0EJl0WK_Di_w6Ql6zB_iy09Q-9ADix1MFAAWZ4", "name": "laptop", "credential": {"id": "q1Yk3b0X9bq2H8m1g7v4rQ", "rawId": "q1Yk3b0X9bq2H8m1g7v4rQ", "type": "public-key", "response": {"clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0", "attestationObject": "o2NmbXRkbm9uZQ"}}}))]
pub struct NewPasskey {
    #[schema(min_length = 1, max_length = 64)]
    pub ceremony_id: String,
    /// The user's name for it ("passkey" when absent): up to 64 characters, not all blank,
    /// no control characters.
    #[schema(
        nullable = false,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// What `navigator.credentials.create()` resolved to, as JSON (`id`, `rawId`, `type` and
    /// `response` with `clientDataJSON` and `attestationObject`, binary fields base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// A registered passkey.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasskeyView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// The credential id (base64url).
    pub credential_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&StoredPasskey> for PasskeyView {
    fn from(p: &StoredPasskey) -> Self {
        PasskeyView {
            id: p.id.to_string(),
            name: p.name.clone(),
            credential_id: p.credential_id.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// Finishes registering a passkey: checks the authenticator's answer (origin, challenge,
/// user verification) and keeps the credential.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register", tag = "sign-in", request_body = NewPasskey, security(("bearer" = [])),
    responses((status = 201, body = PasskeyView),
        (status = 400, body = crate::web::problem::Problem, description = "ceremony_unknown"),
        (status = 401, body = crate::web::problem::Problem, description = "passkey_invalid: the answer does not hold (origin, challenge, user verification)"),
        (status = 409, body = crate::web::problem::Problem, description = "passkey_taken, passkey_limit"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed")))]
pub async fn register(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewPasskey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ceremony_id = ceremony(&body.ceremony_id)?;
    let name = match body.name.as_deref().map(str::trim) {
        None => "passkey".to_owned(),
        Some(n)
            if !n.is_empty()
                && n.chars().count() <= MAX_NAME_CHARS
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 64 characters without control characters",
            ));
        }
    };
    let credential: RegisterPublicKeyCredential =
        serde_json::from_value(body.credential).map_err(|e| {
            ApiError::invalid_field("credential", format!("not a WebAuthn registration: {e}"))
        })?;
    let stored = state
        .identity
        .finish_passkey_registration(user.id, ceremony_id, name, &credential)
        .await?;
    Ok(HttpResponse::Created().json(PasskeyView::from(&stored)))
}

/// Which account signs in (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "jane@example.com"}))]
pub struct PasskeySignInOptions {
    /// With it, that account's passkeys are offered; without, the authenticator offers its
    /// discoverable passkeys for this site.
    #[schema(nullable = false, format = Email, max_length = 254)]
    pub email: Option<String>,
}

/// Starts a passkey sign-in.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/sign-in/options", tag = "sign-in",
    request_body(content = PasskeySignInOptions, description = "Optional"),
    responses((status = 200, body = PasskeyChallenge),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After")))]
pub async fn sign_in_options(
    state: web::Data<AppState>,
    client: ClientAddr,
    body: Option<web::Json<PasskeySignInOptions>>,
) -> Result<HttpResponse, ApiError> {
    let email = body
        .and_then(|b| b.into_inner().email)
        .map(|e| Email::parse(&e).map_err(|m| ApiError::invalid_field("email", m)))
        .transpose()?;
    state
        .identity
        .limit_flow(&format!("passkey-options:{client}"))
        .await?;
    challenge_view(state.identity.begin_passkey_sign_in(email.as_ref()).await?)
}

/// Signs in with a passkey: checks the assertion (origin, challenge, signature, user
/// verification, a growing signature counter) and opens a session. Failures count against
/// the client's address like failed password logins.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/sign-in", tag = "sign-in", request_body = PasskeyAnswer,
    responses((status = 200, body = TokenResponse),
        (status = 400, body = crate::web::problem::Problem, description = "ceremony_unknown"),
        (status = 401, body = crate::web::problem::Problem, description = "passkey_not_recognised, passkey_invalid, passkey_cloned"),
        (status = 403, body = crate::web::problem::Problem, description = "account_banned"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts, with Retry-After")))]
pub async fn sign_in(
    state: web::Data<AppState>,
    client: ClientAddr,
    body: web::Json<PasskeyAnswer>,
) -> Result<HttpResponse, ApiError> {
    let (ceremony_id, credential) = body.parts()?;
    let pair = state
        .identity
        .finish_passkey_sign_in(ceremony_id, &credential, &client.to_string())
        .await?;
    Ok(tokens_response(&state, pair))
}

/// Starts a step-up with one of the caller's passkeys.
#[utoipa::path(post, path = "/api/v1/auth/step-up/passkey/options", tag = "sign-in", security(("bearer" = [])),
    responses((status = 200, body = PasskeyChallenge),
        (status = 401, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "no_passkeys")))]
pub async fn step_up_options(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    challenge_view(state.identity.begin_passkey_step_up(user.id).await?)
}

/// Steps up with a passkey (the same standing as an authenticator or SMS code): answers an
/// access token that sensitive operations accept for five minutes.
#[utoipa::path(post, path = "/api/v1/auth/step-up/passkey", tag = "sign-in", request_body = PasskeyAnswer, security(("bearer" = [])),
    responses((status = 200, body = StepUpResponse),
        (status = 400, body = crate::web::problem::Problem, description = "ceremony_unknown"),
        (status = 401, body = crate::web::problem::Problem, description = "passkey_not_recognised, passkey_invalid, passkey_cloned"),
        (status = 422, body = crate::web::problem::Problem, description = "validation_failed"),
        (status = 429, body = crate::web::problem::Problem, description = "too_many_attempts")))]
pub async fn step_up(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<PasskeyAnswer>,
) -> Result<HttpResponse, ApiError> {
    let (ceremony_id, credential) = body.parts()?;
    let auth_time = chrono::DateTime::from_timestamp(user.claims.auth_time, 0)
        .unwrap_or_else(|| state.identity.clock.now());
    let access_token = state
        .identity
        .finish_passkey_step_up(
            user.id,
            ceremony_id,
            &credential,
            auth_time,
            &user.claims.amr,
        )
        .await?;
    Ok(HttpResponse::Ok().json(StepUpResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TTL.num_seconds(),
    }))
}

/// An identity-provider account linked to the caller's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkedIdentityView {
    #[schema(format = Uuid)]
    pub id: String,
    pub provider: String,
    /// The provider's id of the user.
    pub subject: String,
    pub email: Option<String>,
    pub linked_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&LinkedIdentity> for LinkedIdentityView {
    fn from(i: &LinkedIdentity) -> Self {
        LinkedIdentityView {
            id: i.id.to_string(),
            provider: i.provider.clone(),
            subject: i.subject.clone(),
            email: i.email.clone(),
            linked_at: i.linked_at,
            last_used_at: i.last_used_at,
        }
    }
}

/// The identity-provider accounts linked to the caller's.
#[utoipa::path(get, path = "/api/v1/me/identities", tag = "sign-in", security(("bearer" = [])),
    responses((status = 200, body = [LinkedIdentityView]), (status = 401, body = crate::web::problem::Problem)))]
pub async fn list_identities(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let views: Vec<LinkedIdentityView> = super::me::current(&state, &user)
        .await?
        .identities
        .iter()
        .map(LinkedIdentityView::from)
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

fn uuid_path(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found("no such item"))
}

/// Unlinks an identity-provider account (needs a sign-in or step-up of the last five
/// minutes); never the account's last way to sign in.
#[utoipa::path(delete, path = "/api/v1/me/identities/{id}", tag = "sign-in", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 204),
        (status = 403, body = crate::web::problem::Problem, description = "recent_sign_in_required"),
        (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "last_sign_in_method")))]
pub async fn remove_identity(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uuid_path(&path)?;
    user.require_recent_sign_in(state.identity.clock.now())?;
    state.identity.remove_identity(user.id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's passkeys.
#[utoipa::path(get, path = "/api/v1/me/passkeys", tag = "sign-in", security(("bearer" = [])),
    responses((status = 200, body = [PasskeyView]), (status = 401, body = crate::web::problem::Problem)))]
pub async fn list_passkeys(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let views: Vec<PasskeyView> = super::me::current(&state, &user)
        .await?
        .passkeys
        .iter()
        .map(PasskeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Removes a passkey (needs a sign-in or step-up of the last five minutes); never the
/// account's last way to sign in.
#[utoipa::path(delete, path = "/api/v1/me/passkeys/{id}", tag = "sign-in", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)),
    responses((status = 204),
        (status = 403, body = crate::web::problem::Problem, description = "recent_sign_in_required"),
        (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "last_sign_in_method")))]
pub async fn remove_passkey(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uuid_path(&path)?;
    user.require_recent_sign_in(state.identity.clock.now())?;
    state.identity.remove_passkey(user.id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
