//! Reviews of products and vendors, reports, and admin moderation.
//!
//! Listings are public and run oldest first; the cursor is the id of the last review of the
//! previous page (a plain clustering key, so there is nothing to tamper with beyond choosing
//! where to start; anything that is not a review id is refused as `invalid_cursor`). Hidden
//! reviews are listed to admins only. Reporting twice answers 409 `already_reported`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::reviews::{MAX_PAGE, ReviewError, ReviewPage};
use crate::domain::identity::Role;
use crate::domain::ids::{OrderId, ProductId, ReviewId, UserId, VendorId};
use crate::domain::review::{RatingSummary, Review, ReviewTarget, Stars};
use crate::error_code::ErrorCode;
use crate::web::extract::{AuthUser, MaybeUser};
use crate::web::{ApiError, AppState};

/// Reviews per page when the client does not say.
const DEFAULT_LIMIT: usize = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products/{id}/reviews")
            .route(web::get().to(list_product_reviews))
            .route(web::post().to(create_product_review)),
    )
    .service(
        web::resource("/vendors/{id}/reviews")
            .route(web::get().to(list_vendor_reviews))
            .route(web::post().to(create_vendor_review)),
    )
    .route(
        "/products/{id}/reviews/{review_id}/report",
        web::post().to(report_product_review),
    )
    .route(
        "/vendors/{id}/reviews/{review_id}/report",
        web::post().to(report_vendor_review),
    )
    .route(
        "/admin/reviews/{kind}/{id}/{review_id}",
        web::patch().to(moderate_review),
    );
}

/// A review as clients see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ReviewId,
    /// `product:{id}` or `vendor:{id}`.
    pub target: String,
    #[schema(value_type = String, format = Uuid)]
    pub author: UserId,
    pub rating: Stars,
    pub text: String,
    pub created_at: DateTime<Utc>,
    /// Hidden by an admin (only admins see hidden reviews).
    pub hidden: bool,
    /// How many users reported it (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<u32>,
}

impl ReviewView {
    fn new(review: Review, admin: bool) -> Self {
        ReviewView {
            id: review.id,
            target: review.target,
            author: review.author,
            rating: review.rating,
            text: review.text,
            created_at: review.created_at,
            hidden: review.hidden,
            reports: admin.then_some(review.reports),
        }
    }
}

/// A page of reviews with the target's rating.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewList {
    /// From the visible reviews only.
    pub rating: RatingSummary,
    /// Oldest first.
    pub reviews: Vec<ReviewView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A review of something the caller received.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order_id": "0197a5d2-8c1e-7b3a-9f10-3c2d4e5f6a7b", "rating": 5, "text": "Still warm."}))]
pub struct NewReview {
    /// The caller's delivered order that included the product (or came from the vendor).
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    pub rating: Stars,
    /// Up to 2,000 characters; may be empty.
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub text: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Hides or shows a review.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"hidden": true}))]
pub struct Moderation {
    pub hidden: bool,
}

/// What kind of target an admin path names.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Products,
    Vendors,
}

impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::InvalidText(message) => ApiError::invalid_field("text", message),
            ReviewError::TargetNotFound(_) | ReviewError::ReviewNotFound => {
                ApiError::not_found(e.to_string())
            }
            ReviewError::NotEligible => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::NotEligible, e.to_string())
            }
            ReviewError::AlreadyReviewed => {
                ApiError::conflict(ErrorCode::AlreadyReviewed, e.to_string())
            }
            ReviewError::AlreadyReported => {
                ApiError::conflict(ErrorCode::AlreadyReported, e.to_string())
            }
            ReviewError::Store(store) => store.into(),
        }
    }
}

async fn create(
    state: &AppState,
    user: &AuthUser,
    target: ReviewTarget,
    body: NewReview,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Customer])?;
    let review = state
        .catalog
        .reviews
        .create(user.id, target, body.order_id, body.rating, &body.text)
        .await?;
    Ok(HttpResponse::Created().json(ReviewView::new(review, false)))
}

async fn list(
    state: &AppState,
    viewer: Option<&AuthUser>,
    target: ReviewTarget,
    query: ReviewQuery,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|c| c.parse::<ReviewId>())
        .transpose()
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidCursor, "the cursor is not valid"))?;
    let admin = viewer.is_some_and(AuthUser::is_admin);
    let ReviewPage {
        reviews,
        next,
        rating,
    } = state
        .catalog
        .reviews
        .list(target, after, limit, admin)
        .await?;
    Ok(HttpResponse::Ok().json(ReviewList {
        rating,
        reviews: reviews
            .into_iter()
            .map(|r| ReviewView::new(r, admin))
            .collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

async fn report(
    state: &AppState,
    user: &AuthUser,
    target: ReviewTarget,
    id: ReviewId,
) -> Result<HttpResponse, ApiError> {
    state.catalog.reviews.report(target, id, user.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reviews a product from one of the caller's delivered orders (customers only; one review
/// per order line).
#[utoipa::path(post, path = "/api/v1/products/{id}/reviews", tag = "reviews", request_body = NewReview,
    params(("id" = String, Path, format = Uuid, description = "product id")), security(("bearer" = [])),
    responses((status = 201, body = ReviewView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_product_review(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<ProductId>,
    body: web::Json<NewReview>,
) -> Result<HttpResponse, ApiError> {
    let target = ReviewTarget::Product(path.into_inner());
    create(&state, &user, target, body.into_inner()).await
}

/// Reviews a vendor from one of the caller's delivered orders (customers only; one review
/// per order).
#[utoipa::path(post, path = "/api/v1/vendors/{id}/reviews", tag = "reviews", request_body = NewReview,
    params(("id" = String, Path, format = Uuid, description = "vendor id")), security(("bearer" = [])),
    responses((status = 201, body = ReviewView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_vendor_review(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<VendorId>,
    body: web::Json<NewReview>,
) -> Result<HttpResponse, ApiError> {
    let target = ReviewTarget::Vendor(path.into_inner());
    create(&state, &user, target, body.into_inner()).await
}

/// A product's reviews, oldest first, and its rating. Hidden reviews are listed to admins
/// only.
#[utoipa::path(get, path = "/api/v1/products/{id}/reviews", tag = "reviews",
    params(("id" = String, Path, format = Uuid, description = "product id"), ReviewQuery),
    responses((status = 200, body = ReviewList), (status = 400, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn list_product_reviews(
    state: web::Data<AppState>,
    MaybeUser(viewer): MaybeUser,
    path: web::Path<ProductId>,
    query: web::Query<ReviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = ReviewTarget::Product(path.into_inner());
    list(&state, viewer.as_ref(), target, query.into_inner()).await
}

/// A vendor's reviews, oldest first, and its rating. Hidden reviews are listed to admins
/// only.
#[utoipa::path(get, path = "/api/v1/vendors/{id}/reviews", tag = "reviews",
    params(("id" = String, Path, format = Uuid, description = "vendor id"), ReviewQuery),
    responses((status = 200, body = ReviewList), (status = 400, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn list_vendor_reviews(
    state: web::Data<AppState>,
    MaybeUser(viewer): MaybeUser,
    path: web::Path<VendorId>,
    query: web::Query<ReviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = ReviewTarget::Vendor(path.into_inner());
    list(&state, viewer.as_ref(), target, query.into_inner()).await
}

/// Reports a product review to the moderators (any signed-in user, once per review).
#[utoipa::path(post, path = "/api/v1/products/{id}/reviews/{review_id}/report", tag = "reviews",
    params(("id" = String, Path, format = Uuid, description = "product id"), ("review_id" = String, Path, format = Uuid)),
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
pub async fn report_product_review(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(ProductId, ReviewId)>,
) -> Result<HttpResponse, ApiError> {
    let (product, id) = path.into_inner();
    report(&state, &user, ReviewTarget::Product(product), id).await
}

/// Reports a vendor review to the moderators (any signed-in user, once per review).
#[utoipa::path(post, path = "/api/v1/vendors/{id}/reviews/{review_id}/report", tag = "reviews",
    params(("id" = String, Path, format = Uuid, description = "vendor id"), ("review_id" = String, Path, format = Uuid)),
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
pub async fn report_vendor_review(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(VendorId, ReviewId)>,
) -> Result<HttpResponse, ApiError> {
    let (vendor, id) = path.into_inner();
    report(&state, &user, ReviewTarget::Vendor(vendor), id).await
}

/// Hides or shows a review (admins only). Hidden reviews leave the rating and the public
/// listing.
#[utoipa::path(patch, path = "/api/v1/admin/reviews/{kind}/{id}/{review_id}", tag = "admin",
    request_body = Moderation,
    params(("kind" = TargetKind, Path, description = "`products` or `vendors`"),
        ("id" = String, Path, format = Uuid, description = "product or vendor id"), ("review_id" = String, Path, format = Uuid)),
    security(("bearer" = [])),
    responses((status = 200, body = ReviewView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn moderate_review(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: super::client_addr::ClientAddr,
    path: web::Path<(TargetKind, Uuid, ReviewId)>,
    body: web::Json<Moderation>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let (kind, target, id) = path.into_inner();
    let target = match kind {
        TargetKind::Products => ReviewTarget::Product(target.into()),
        TargetKind::Vendors => ReviewTarget::Vendor(target.into()),
    };
    let review = state
        .catalog
        .reviews
        .set_hidden(target, id, body.hidden)
        .await?;
    let action = if body.hidden {
        "review.hide"
    } else {
        "review.restore"
    };
    state
        .audit
        .record(
            super::audit::entry(&admin, from, action, format!("review:{id}"))
                .after(serde_json::json!({"hidden": body.hidden})),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ReviewView::new(review, true)))
}
