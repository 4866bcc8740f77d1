//! Image uploads for products and serving stored media.
//!
//! Uploads are `multipart/form-data` with one file part named `image`, read as a stream and
//! refused with 413 the moment they pass [`MAX_UPLOAD_BYTES`]; the image itself is validated
//! and re-encoded by [`Media`](crate::media::Media). Media are served from `/media/{key}`
//! with caching headers for immutable content.

use std::time::Duration;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective, ETag, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::domain::catalog::{ImageRef, MAX_IMAGES, Product};
use crate::domain::ids::ProductId;
use crate::error_code::ErrorCode;
use crate::media::{MAX_UPLOAD_BYTES, MediaError, MediaKey};
use crate::store::catalog::id_key;
use crate::store::typed::{Change, ModifyError};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// Name of the multipart part that carries the image.
pub const IMAGE_FIELD: &str = "image";
/// Room for the multipart framing (boundaries, part headers, small extra fields) on top of the
/// image itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;
/// An upload must arrive within this time; slower clients tie up a worker for nothing.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Served media are cached for a year: a key's bytes never change.
const MAX_AGE_SECS: u32 = 31_536_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products/{id}/images", web::post().to(upload_image))
        .route(
            "/products/{id}/images/{index}",
            web::delete().to(delete_image),
        );
}

/// Routes outside `/api/v1` (`/media/{key}`).
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.route("/media/{key:.*}", web::get().to(serve_media));
}

/// The upload form (documentation only: the body is read as a stream).
#[derive(Debug, utoipa::ToSchema)]
pub struct ImageUpload {
    /// A JPEG, PNG or WebP image of at most 5 MiB and 8,000 × 8,000 pixels.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
}

/// A product image as stored, with where to fetch it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImageView {
    /// Position among the product's images (what `DELETE …/images/{index}` takes).
    pub index: usize,
    #[serde(flatten)]
    pub image: ImageRef,
    /// Path of the image, e.g. `/media/images/….jpg`.
    pub url: String,
    /// Path of the thumbnail (fits in 320 × 320).
    pub thumbnail_url: String,
}

impl ImageView {
    fn new(index: usize, image: ImageRef) -> Self {
        ImageView {
            index,
            url: media_url(&image.key),
            thumbnail_url: media_url(&image.thumbnail_key),
            image,
        }
    }
}

/// Where a stored object is served.
pub fn media_url(key: &str) -> String {
    format!("/media/{key}")
}

fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("an image may be at most {MAX_UPLOAD_BYTES} bytes"),
    )
}

fn unsupported_media_type(detail: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
        detail,
    )
}

fn too_many_images() -> ApiError {
    ApiError::field_rule(
        ErrorCode::TooManyImages,
        "images",
        format!("a product may have at most {MAX_IMAGES} images"),
    )
}

pub(crate) fn media_error(e: MediaError) -> ApiError {
    match e {
        MediaError::TooLarge { .. } => payload_too_large(),
        MediaError::Unsupported(detail) => unsupported_media_type(detail),
        MediaError::Invalid(detail) => {
            ApiError::field_rule(ErrorCode::InvalidImage, IMAGE_FIELD, detail)
        }
        MediaError::Store(_) => ApiError::unavailable(ErrorCode::MediaUnavailable, e),
        MediaError::Internal(_) => ApiError::internal(e),
    }
}

/// Why a change to a product's images was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no such product")]
    NoProduct,
    #[error("no such image")]
    NoImage,
    #[error("too many images")]
    TooMany,
}

fn modify_error(e: ModifyError<Refused>) -> ApiError {
    match e {
        ModifyError::Rejected(Refused::NoProduct) => ApiError::not_found("no such product"),
        ModifyError::Rejected(Refused::NoImage) => ApiError::not_found("no such image"),
        ModifyError::Rejected(Refused::TooMany) => too_many_images(),
        ModifyError::Store(e) => e.into(),
    }
}

/// The product, if the caller may change it: its vendor's owner or an admin. Anyone else gets
/// 404, as if it did not exist.
async fn product_for_owner(
    state: &AppState,
    user: &AuthUser,
    id: ProductId,
) -> Result<Product, ApiError> {
    let (product, _) = state
        .catalog
        .product_for_owner(id, user.id, user.is_admin())
        .await?;
    Ok(product)
}

/// Adds an image to a product (its vendor or an admin).
#[utoipa::path(post, path = "/api/v1/products/{id}/images", tag = "catalog",
    params(("id" = String, Path, format = Uuid, description = "product id")),
    request_body(content = inline(ImageUpload), content_type = "multipart/form-data"),
    responses((status = 201, body = ImageView, description = "stored; `Location` is the image"),
        (status = 400, body = crate::web::problem::Problem), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 408, body = crate::web::problem::Problem),
        (status = 413, body = crate::web::problem::Problem, description = "over 5 MiB"),
        (status = 415, body = crate::web::problem::Problem, description = "not a JPEG, PNG or WebP"),
        (status = 422, body = crate::web::problem::Problem, description = "`too_many_images` or `invalid_image`")),
    security(("bearer" = [])))]
#[tracing::instrument(name = "media.upload", skip_all, fields(product_id = %*path))]
pub async fn upload_image(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<ProductId>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let product_id = path.into_inner();
    // Refused before a byte of the body is read.
    let product = product_for_owner(&state, &user, product_id).await?;
    if product.images.len() >= MAX_IMAGES {
        return Err(too_many_images());
    }
    let bytes = read_upload(&req, payload).await?;

    let media = &state.catalog.media;
    let stored = media
        .store_image(&product_id.to_string(), bytes)
        .await
        .map_err(media_error)?;
    let index = match append_image(&state, product_id, &stored).await {
        Ok(index) => index,
        Err(e) => {
            discard_unreferenced(&state, product_id, &stored).await;
            return Err(modify_error(e));
        }
    };
    state.catalog.product_changed(product_id).await;
    tracing::info!(key = %stored.key, index, "product image added");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, media_url(&stored.key)))
        .json(ImageView::new(index, stored)))
}

/// Removes a product's image (its vendor or an admin). The stored objects are deleted unless
/// another image of the product still uses them.
#[utoipa::path(delete, path = "/api/v1/products/{id}/images/{index}", tag = "catalog",
    params(("id" = String, Path, format = Uuid, description = "product id"),
        ("index" = usize, Path, description = "position among the product's images")),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)),
    security(("bearer" = [])))]
#[tracing::instrument(name = "media.delete_image", skip_all, fields(product_id = %path.0, index = path.1))]
pub async fn delete_image(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(ProductId, usize)>,
) -> Result<HttpResponse, ApiError> {
    let (product_id, index) = path.into_inner();
    product_for_owner(&state, &user, product_id).await?;
    let (removed, remaining) = remove_image(&state, product_id, index)
        .await
        .map_err(modify_error)?;
    state.catalog.product_changed(product_id).await;
    state
        .catalog
        .media
        .delete(unreferenced(&removed, &remaining))
        .await;
    tracing::info!(key = %removed.key, "product image removed");
    Ok(HttpResponse::NoContent().finish())
}

/// Appends a stored image to the product; its index.
async fn append_image(
    state: &AppState,
    product_id: ProductId,
    stored: &ImageRef,
) -> Result<usize, ModifyError<Refused>> {
    let now = state.catalog.clock.now();
    let (index, _) = state
        .catalog
        .repo
        .products
        .modify(&id_key(product_id), |current| {
            let mut product = current.cloned().ok_or(Refused::NoProduct)?;
            if product.images.len() >= MAX_IMAGES {
                return Err(Refused::TooMany);
            }
            product.images.push(stored.clone());
            product.updated_at = now;
            let index = product.images.len() - 1;
            Ok(Change::Put(product, index))
        })
        .await?;
    Ok(index)
}

/// Takes the image at `index` out of the product; it and the images left.
async fn remove_image(
    state: &AppState,
    product_id: ProductId,
    index: usize,
) -> Result<(ImageRef, Vec<ImageRef>), ModifyError<Refused>> {
    let now = state.catalog.clock.now();
    let (outcome, _) = state
        .catalog
        .repo
        .products
        .modify(&id_key(product_id), |current| {
            let mut product = current.cloned().ok_or(Refused::NoProduct)?;
            if index >= product.images.len() {
                return Err(Refused::NoImage);
            }
            let removed = product.images.remove(index);
            product.updated_at = now;
            let remaining = product.images.clone();
            Ok(Change::Put(product, (removed, remaining)))
        })
        .await?;
    Ok(outcome)
}

/// Serves a stored image or thumbnail.
#[utoipa::path(get, path = "/media/{key}", tag = "media",
    params(("key" = String, Path, description = "`images/{sha256}.{ext}` or `thumbs/{sha256}.{ext}`"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier response")),
    responses(
        (status = 200, description = "the image; cacheable for a year", content(("image/jpeg"), ("image/png"), ("image/webp")),
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "unchanged"),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn serve_media(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let not_found = || ApiError::not_found("no such media");
    let key = MediaKey::parse(&raw).ok_or_else(not_found)?;
    let etag = EntityTag::new_strong(key.hash().to_owned());
    // A client holding this tag holds these bytes: a key's content never changes.
    let if_none_match = req.get_header::<IfNoneMatch>();
    if let Some(IfNoneMatch::Items(tags)) = &if_none_match
        && tags.iter().any(|tag| tag.weak_eq(&etag))
    {
        return Ok(cached_response(HttpResponse::NotModified(), etag).finish());
    }
    let (bytes, content_type) = state
        .catalog
        .media
        .open(&raw)
        .await
        .map_err(media_error)?
        .ok_or_else(not_found)?;
    if let Some(IfNoneMatch::Any) = if_none_match {
        return Ok(cached_response(HttpResponse::NotModified(), etag).finish());
    }
    Ok(cached_response(HttpResponse::Ok(), etag)
        .content_type(content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'"))
        .body(bytes))
}

fn cached_response(
    mut response: actix_web::HttpResponseBuilder,
    etag: EntityTag,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header(ETag(etag))
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(MAX_AGE_SECS),
            CacheDirective::Extension("immutable".to_owned(), None),
        ]));
    response
}

/// Reads the `image` part of an upload (as [`read_image_part`]) within [`UPLOAD_TIMEOUT`].
pub(crate) async fn read_upload(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(UPLOAD_TIMEOUT, read_image_part(req, payload)).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the upload took too long",
        )),
    }
}

/// Reads the `image` part of a multipart body, refusing it the moment it grows past
/// [`MAX_UPLOAD_BYTES`]. Other parts are skipped, but count towards the same bound.
async fn read_image_part(req: &HttpRequest, payload: web::Payload) -> Result<Bytes, ApiError> {
    let multipart_form = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|mime| mime.type_() == "multipart" && mime.subtype() == "form-data");
    if !multipart_form {
        return Err(unsupported_media_type(format!(
            "send the image as multipart/form-data, in a part named `{IMAGE_FIELD}`"
        )));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD) {
        return Err(payload_too_large());
    }

    let mut multipart = Multipart::new(req.headers(), payload);
    let mut image: Option<Bytes> = None;
    let mut skipped = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(multipart_error)?;
        let wanted = field.name() == Some(IMAGE_FIELD);
        if wanted && image.is_some() {
            return Err(ApiError::bad_request(
                ErrorCode::OneImagePerRequest,
                format!("send exactly one part named `{IMAGE_FIELD}`"),
            ));
        }
        let mut buffer = BytesMut::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            if wanted {
                if buffer.len() + chunk.len() > MAX_UPLOAD_BYTES {
                    return Err(payload_too_large());
                }
                buffer.extend_from_slice(&chunk);
            } else {
                skipped += chunk.len();
                if skipped > MULTIPART_OVERHEAD {
                    return Err(payload_too_large());
                }
            }
        }
        if wanted {
            image = Some(buffer.freeze());
        }
    }
    image.filter(|bytes| !bytes.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::ImageMissing,
            format!("send the image in a multipart/form-data part named `{IMAGE_FIELD}`"),
        )
    })
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    use actix_multipart::MultipartError as E;
    use actix_web::error::PayloadError;
    match e {
        E::Payload(PayloadError::Overflow) => payload_too_large(),
        E::ContentTypeMissing | E::ContentTypeParse | E::ContentTypeIncompatible => {
            unsupported_media_type("the request body must be multipart/form-data")
        }
        other => ApiError::bad_request(
            ErrorCode::MalformedMultipart,
            format!("the multipart body could not be read: {other}"),
        ),
    }
}

/// The keys of `removed` that no image in `remaining` uses.
fn unreferenced<'a>(removed: &'a ImageRef, remaining: &[ImageRef]) -> Vec<&'a str> {
    let used = |key: &str| {
        remaining
            .iter()
            .any(|image| image.key == key || image.thumbnail_key == key)
    };
    [removed.key.as_str(), removed.thumbnail_key.as_str()]
        .into_iter()
        .filter(|key| !used(key))
        .collect()
}

/// Deletes the objects of an upload that did not make it into the product, unless the product
/// already had the same picture (then the objects are shared).
async fn discard_unreferenced(state: &AppState, product_id: ProductId, stored: &ImageRef) {
    let remaining = match state.catalog.repo.product(product_id).await {
        Ok(product) => product.map(|p| p.value.images).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, key = %stored.key, "upload not cleaned up");
            return;
        }
    };
    state
        .catalog
        .media
        .delete(unreferenced(stored, &remaining))
        .await;
}
