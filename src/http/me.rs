//! The caller's own profile: read, change, export, erase.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::{AccountView, parse_name, parse_phone};
use crate::domain::account::{Locale, NotificationPrefs, SavedAddress, User};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// Most saved addresses per account.
pub const MAX_ADDRESSES: usize = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/me")
            .route(web::get().to(get_me))
            .route(web::patch().to(patch_me))
            .route(web::delete().to(delete_me)),
    )
    .route("/me/export", web::get().to(export_me))
    .route("/me/password", web::post().to(change_password))
    .route("/me/email", web::post().to(change_email));
}

/// The caller's profile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[serde(flatten)]
    pub account: AccountView,
    pub addresses: Vec<SavedAddress>,
    #[schema(schema_with = crate::domain::account::notification_prefs_schema)]
    pub notifications: NotificationPrefs,
    /// The language of the messages the caller is sent.
    pub locale: Locale,
}

impl From<&User> for Profile {
    fn from(u: &User) -> Self {
        Profile {
            account: u.into(),
            addresses: u.addresses.clone(),
            notifications: u.notifications.clone(),
            locale: u.locale,
        }
    }
}

/// The caller's account (404 once erased).
pub(crate) async fn current(state: &AppState, user: &AuthUser) -> Result<User, ApiError> {
    state
        .identity
        .users
        .get(user.id)
        .await?
        .map(|v| v.value)
        .filter(|u| !u.erased)
        .ok_or_else(|| ApiError::not_found("no such account"))
}

/// Reads the caller's profile.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = crate::web::problem::Problem)))]
pub async fn get_me(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Profile::from(&current(&state, &user).await?)))
}

/// Fields of the profile a user may change. Changing the phone needs a recent step-up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Jane Doe", "addresses": [{"label": "home", "text": "1 High Street, London", "lat": 51.5074, "lng": -0.1278}], "notifications": {"sms": {"order_paid": false}}}))]
pub struct PatchMe {
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(pattern = r"^\+[1-9][0-9]{7,14}$")]
    pub phone: Option<String>,
    pub addresses: Option<Vec<SavedAddress>>,
    #[schema(schema_with = crate::domain::account::notification_prefs_schema)]
    pub notifications: Option<NotificationPrefs>,
    /// The language of the messages the caller is sent.
    pub locale: Option<Locale>,
}

fn check_addresses(addresses: &[SavedAddress]) -> Result<(), ApiError> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(ApiError::invalid_field(
            "addresses",
            format!("at most {MAX_ADDRESSES}"),
        ));
    }
    for (i, a) in addresses.iter().enumerate() {
        let field = |f: &str| format!("addresses[{i}].{f}");
        if a.label.trim().is_empty() || a.label.chars().count() > 50 {
            return Err(ApiError::invalid_field(
                &field("label"),
                "must be 1 to 50 characters",
            ));
        }
        if a.text.trim().is_empty() || a.text.chars().count() > 300 {
            return Err(ApiError::invalid_field(
                &field("text"),
                "must be 1 to 300 characters",
            ));
        }
        if !(-90.0..=90.0).contains(&a.lat) || !a.lat.is_finite() {
            return Err(ApiError::invalid_field(
                &field("lat"),
                "must be between -90 and 90",
            ));
        }
        if !(-180.0..=180.0).contains(&a.lng) || !a.lng.is_finite() {
            return Err(ApiError::invalid_field(
                &field("lng"),
                "must be between -180 and 180",
            ));
        }
    }
    Ok(())
}

/// Changes the caller's profile.
#[utoipa::path(patch, path = "/api/v1/me", tag = "me", request_body = PatchMe, security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 400, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem, description = "step_up_required (phone)"),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn patch_me(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<PatchMe>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.into_inner();
    let name = patch.name.as_deref().map(parse_name).transpose()?;
    let phone = patch.phone.as_deref().map(parse_phone).transpose()?;
    if phone.is_some() {
        user.require_step_up(state.identity.clock.now())?;
    }
    if let Some(addresses) = &patch.addresses {
        check_addresses(addresses)?;
    }
    let updated = state
        .identity
        .modify_user(user.id, |u| {
            if let Some(name) = &name {
                u.name = name.clone();
            }
            if let Some(phone) = &phone
                && u.phone.as_ref() != Some(phone)
            {
                u.phone = Some(phone.clone());
                u.phone_verified = false;
            }
            if let Some(addresses) = &patch.addresses {
                u.addresses = addresses.clone();
            }
            if let Some(prefs) = &patch.notifications {
                u.notifications = prefs.clone();
            }
            if let Some(locale) = patch.locale {
                u.locale = locale;
            }
            Ok(())
        })
        .await?;
    Ok(HttpResponse::Ok().json(Profile::from(&updated)))
}

/// Everything hexmarket keeps about the caller, as JSON (GDPR access and portability).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "all personal data"), (status = 401, body = crate::web::problem::Problem)))]
pub async fn export_me(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let me = current(&state, &user).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"hexmarket-export.json\"",
        ))
        .json(serde_json::json!({
            "exported_at": state.identity.clock.now(),
            "profile": Profile::from(&me),
            "linked_identities": me
                .identities
                .iter()
                .map(super::sign_in::LinkedIdentityView::from)
                .collect::<Vec<_>>(),
            "passkeys": me
                .passkeys
                .iter()
                .map(super::sign_in::PasskeyView::from)
                .collect::<Vec<_>>(),
        })))
}

/// Erases the caller's personal data and ends every session; orders stay, anonymised.
#[utoipa::path(delete, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem)))]
pub async fn delete_me(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let before = current(&state, &user).await?;
    let placeholder = crate::domain::identity::Email::parse(&format!(
        "erased-{}@erased.invalid",
        user.id.as_uuid().simple()
    ))
    .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    state
        .identity
        .modify_user(user.id, |u| {
            u.email = placeholder.clone();
            u.email_verified = false;
            u.name = String::new();
            u.phone = None;
            u.phone_verified = false;
            u.addresses.clear();
            u.notifications.clear();
            u.password_hash = String::new();
            u.second_factor = Default::default();
            u.erased = true;
            Ok(())
        })
        .await?;
    state
        .identity
        .users
        .release_email(&before.email, user.id)
        .await?;
    // Its passkeys and provider identities sign in to nothing any more.
    state.identity.forget_sign_in_credentials(&before).await?;
    state.identity.revoke_all(user.id).await?;
    tracing::info!(user_id = %user.id, "personal data erased");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "correct horse battery staple", "new_password": "a brand new passphrase"}))]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the password (needs a recent step-up and the current password); ends every session.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", request_body = ChangePassword, security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem, description = "invalid_credentials"),
        (status = 403, body = crate::web::problem::Problem, description = "step_up_required"),
        (status = 422, body = crate::web::problem::Problem, description = "a password rule")))]
pub async fn change_password(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    user.require_step_up(state.identity.clock.now())?;
    let ChangePassword {
        current_password,
        new_password,
    } = body.into_inner();
    state
        .identity
        .change_password(user.id, current_password, new_password)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmail {
    #[schema(example = "jane.new@example.com")]
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

/// Moves the account to another email address (needs a recent step-up); it is unverified
/// until confirmed.
#[utoipa::path(post, path = "/api/v1/me/email", tag = "me", request_body = ChangeEmail, security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 403, body = crate::web::problem::Problem, description = "step_up_required"),
        (status = 409, body = crate::web::problem::Problem, description = "email_taken")))]
pub async fn change_email(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ChangeEmail>,
) -> Result<HttpResponse, ApiError> {
    let email = super::auth::parse_email(&body.email)?;
    user.require_step_up(state.identity.clock.now())?;
    let updated = state.identity.change_email(user.id, email).await?;
    Ok(HttpResponse::Ok().json(Profile::from(&updated)))
}
