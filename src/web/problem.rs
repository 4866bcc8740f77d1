//! One error type for every HTTP handler, rendered as RFC 9457 problem details.
//!
//! Client mistakes carry a stable snake_case `code` and a message about their own input.
//! Server faults become an opaque 500 (or a 503 for a dependency that is down) whose cause is
//! logged, never sent.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::ActorError;
use crate::actors::order::CommandError;
use crate::bus::BusError;
use crate::error_code::ErrorCode;
use crate::fulfilment::orders::OrderError;
use crate::store::StoreError;

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One offending field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `quantity` or `delivery_address.lat`.
    pub field: String,
    pub message: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    detail: String,
    fields: Vec<FieldError>,
    retry_after: Option<u64>,
    /// The underlying fault, logged and never sent.
    cause: Option<anyhow::Error>,
}

/// The problem-details body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            fields: Vec::new(),
            retry_after: None,
            cause: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422: the request is well-formed but its values are not acceptable.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let detail = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "some fields are invalid".to_owned(),
        };
        ApiError {
            fields,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ValidationFailed,
                detail,
            )
        }
    }

    /// 422 for a single field, with a code naming the rule it broke.
    pub fn field_rule(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            ..Self::invalid_field(field, message)
        }
    }

    /// 422 for a single field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    pub fn unauthorized(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    pub fn conflict(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 429 with `Retry-After` in whole seconds (at least one).
    pub fn too_many(code: ErrorCode, detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
            .with_retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// 503 for a dependency that is down; the cause is logged.
    pub fn unavailable(code: ErrorCode, cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                "a service this request needs is unavailable; try again shortly",
            )
        }
    }

    /// 500: something went wrong on our side; the cause is logged, the client learns nothing.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                "the server failed to handle this request",
            )
        }
    }

    /// Lists offending items (fields, or for instance the products a checkout is short of)
    /// in the problem's `errors`, whatever its status.
    pub fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.fields = fields;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem document as JSON (to record it, e.g. as an idempotent response). A server
    /// fault's cause is logged here, as it would be when answered.
    pub fn to_json(&self) -> String {
        if let Some(cause) = &self.cause {
            tracing::error!(code = self.code.as_str(), status = self.status.as_u16(), error = ?cause, "request failed");
        }
        serde_json::to_string(&self.problem()).unwrap_or_default()
    }

    fn problem(&self) -> Problem {
        Problem {
            kind: format!(
                "https://hexmarket.dev/problems/{}",
                self.code.as_str().replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
            errors: self.fields.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.detail
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            tracing::error!(code = self.code.as_str(), status = self.status.as_u16(), error = ?cause, "request failed");
        }
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.problem())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Timeout => {
                ApiError::unavailable(ErrorCode::StoreUnavailable, e)
            }
            StoreError::Corrupt { .. } | StoreError::Misuse(_) => ApiError::internal(e),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Unavailable(_) => ApiError::unavailable(ErrorCode::BusUnavailable, e),
            BusError::InvalidTopic(_) => ApiError::internal(e),
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Activation(store) => store.into(),
            ActorError::Crashed | ActorError::Unavailable => ApiError::internal(e),
        }
    }
}

/// Maps body-parsing failures of `web::Json` to problems.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let problem = match &err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the request body must be application/json",
        ),
        E::Deserialize(e) => deserialize_problem(e),
        _ => ApiError::bad_request(
            ErrorCode::MalformedJson,
            "the request body could not be read",
        ),
    };
    problem.into()
}

/// The problem for a JSON body that does not parse into the endpoint's type (also for
/// handlers that read the raw body themselves).
pub fn deserialize_problem(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("the request body is not valid JSON: {message}"),
        ),
        Category::Data if message.starts_with("unknown field") => {
            ApiError::bad_request(ErrorCode::UnknownField, message)
        }
        Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            message,
        ),
    }
}

/// Maps query-string failures to problems.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(ErrorCode::InvalidQuery, err.to_string()).into()
}

/// Maps path-segment failures to problems.
pub fn path_error(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(ErrorCode::InvalidPath, err.to_string()).into()
}

/// The problem for an error status that came without one.
pub fn status_problem(status: StatusCode) -> ApiError {
    let (code, detail) = match status.as_u16() {
        400 => (ErrorCode::BadRequest, "the request could not be read"),
        404 => (ErrorCode::NotFound, "no such resource"),
        405 => (
            ErrorCode::MethodNotAllowed,
            "this resource does not take this method; `Allow` lists the ones it takes",
        ),
        408 => (
            ErrorCode::RequestTimeout,
            "the request did not arrive in time",
        ),
        411 => (
            ErrorCode::LengthRequired,
            "the request body needs a Content-Length",
        ),
        413 => (ErrorCode::PayloadTooLarge, "the request body is too large"),
        415 => (
            ErrorCode::UnsupportedMediaType,
            "the request body is of a media type this endpoint does not take",
        ),
        431 => (
            ErrorCode::HeadersTooLarge,
            "the request's header fields are too large or too many",
        ),
        503 => (
            ErrorCode::ServiceUnavailable,
            "a service this request needs is unavailable; try again shortly",
        ),
        s if s >= 500 => (
            ErrorCode::InternalError,
            "the server failed to handle this request",
        ),
        _ => (ErrorCode::RequestRefused, "the request was refused"),
    };
    ApiError::new(status, code, detail)
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => ApiError::not_found("no such order"),
            CommandError::Illegal(illegal) => ApiError::conflict(
                ErrorCode::IllegalTransition,
                format!(
                    "the order cannot go from {} to {}",
                    illegal.from, illegal.to
                ),
            )
            .with_fields(vec![
                FieldError {
                    field: "from".to_owned(),
                    message: illegal.from.to_string(),
                },
                FieldError {
                    field: "to".to_owned(),
                    message: illegal.to.to_string(),
                },
            ]),
            CommandError::Store(e) => e.into(),
            CommandError::OutOfStock => ApiError::conflict(
                ErrorCode::InsufficientStock,
                "the order's stock is no longer available",
            ),
            CommandError::CouponExhausted => {
                ApiError::conflict(ErrorCode::CouponExhausted, e.to_string())
            }
            CommandError::Contended => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Contended,
                "the order changed while this request was applied; try again",
            ),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => ApiError::not_found("no such order"),
            OrderError::Forbidden(detail) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
            }
            OrderError::NoStore => ApiError::not_found("you do not run a store yet"),
            OrderError::TrackingEnded => {
                ApiError::new(StatusCode::GONE, ErrorCode::TrackingEnded, e.to_string())
            }
            OrderError::InvalidCursor => {
                ApiError::bad_request(ErrorCode::InvalidCursor, e.to_string())
            }
            OrderError::NoTotals | OrderError::NeverPaid => {
                ApiError::conflict(ErrorCode::NotRefundable, e.to_string())
            }
            OrderError::AlreadyRefunded(detail) => {
                ApiError::conflict(ErrorCode::AlreadyRefunded, detail)
            }
            OrderError::NotInOrder(_) => ApiError::invalid_field("lines", e.to_string()),
            OrderError::RefundExceedsTotal { .. } => {
                ApiError::field_rule(ErrorCode::RefundExceedsTotal, "lines", e.to_string())
            }
            OrderError::NoPayment(_) => ApiError::internal(e),
            OrderError::Settle(e) => ApiError::internal(e),
            OrderError::Command(e) => e.into(),
            OrderError::Catalog(e) => e.into(),
            OrderError::Payment(e) => e.into(),
            OrderError::Store(e) => e.into(),
            OrderError::Actor(e) => e.into(),
        }
    }
}
