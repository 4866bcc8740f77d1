//! Problem bodies for the error responses no handler wrote (see [`error_bodies`]).

use actix_web::ResponseError as _;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};

use crate::web::problem::{PROBLEM_JSON, status_problem};

/// Gives every error response that reached the client without a body of its own a problem
/// body: actix-web's 405 of a resource, its 413 and 400 of payloads read by extractors this
/// crate does not configure, and anything else answered before a handler ran. Responses that
/// already carry JSON (problems, or the readiness probe's own body) pass unchanged; headers
/// such as `Allow` and `Retry-After` are kept.
pub fn error_bodies<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(problem_body)
}

fn problem_body<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let essence = ct.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.eq_ignore_ascii_case(PROBLEM_JSON)
        });
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (request, original) = res.into_parts();
    let mut response = status_problem(status).error_response();
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    if status == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
        && let Ok(allow) = HeaderValue::from_str(&super::openapi::allowed_methods(request.path()))
    {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, response).map_into_right_body(),
    ))
}
