//! Request telemetry: a request id on every request (taken from `X-Request-Id` when the client
//! sent a sane one, generated otherwise), returned in the response, attached to every log line
//! of the request through its span with the client's address, and the request counted and
//! timed in the metrics. And the limit on request headers, answered with a problem.

use std::time::Instant;

use actix_web::ResponseError as _;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, web};
use tracing::Instrument as _;

use crate::error_code::ErrorCode;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::web::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, for handlers that want to log or return it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn telemetry(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_id(v))
        .map_or_else(new_request_id, str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let client = super::client_addr::client_address(req.request());
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, path = %req.path(), client = %client);

    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            // Errors are normally turned into responses by ResponseError; this is a fallback.
            span.in_scope(|| tracing::warn!(error = %e, "request failed in middleware"));
            return Err(e);
        }
    };

    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.in_scope(|| {
        tracing::info!(status, route = %route, latency_ms = elapsed.as_secs_f64() * 1e3, "request")
    });
    if let Some(state) = state {
        state
            .metrics
            .http_requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        state
            .metrics
            .http_latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// Most header bytes (names and values) one request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields one request may carry.
pub const MAX_HEADER_FIELDS: usize = 64;

/// Refuses requests whose headers exceed [`MAX_HEADER_BYTES`] or [`MAX_HEADER_FIELDS`] with
/// 431 `headers_too_large`. The HTTP parser's own limits (a 128 KiB head, 96 fields) are
/// higher and answered by it without a body, so this limit is what clients meet.
pub async fn header_limits(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES {
        let problem = super::ApiError::new(
            actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!(
                "a request may carry at most {MAX_HEADER_FIELDS} header fields of \
                 {MAX_HEADER_BYTES} bytes in all"
            ),
        );
        return Ok(req
            .into_response(problem.error_response())
            .map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// A fresh request id: a UUIDv7 whose random bits come from the thread's generator, which is
/// seeded once (`Uuid::now_v7` asks the kernel for randomness on every call, a system call per
/// request).
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// Ids from clients are accepted only when short and plain, so they cannot forge log lines.
fn is_sane_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_time_ordered_uuids() {
        let ids: Vec<uuid::Uuid> = (0..1000)
            .map(|_| uuid::Uuid::parse_str(&new_request_id()).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(is_sane_id(&new_request_id()));
    }
}
