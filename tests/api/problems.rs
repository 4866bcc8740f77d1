//! Errors raised outside the handlers are problem details too: unknown routes, methods a
//! resource does not take, bodies over a limit, oversized headers. What the HTTP parser
//! answers before hexmarket sees the request is pinned here as well.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{assert_problem, spawn_app};

#[actix_web::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/api/v1/nothing-here").await, 404, "not_found").await;
    assert_eq!(body["title"], "Not Found");
    assert_problem(app.get("/nowhere").await, 404, "not_found").await;
}

#[actix_web::test]
async fn a_method_a_route_does_not_take_is_a_405_problem_with_allow() {
    let app = spawn_app().await;
    // A route of one method.
    let response = app
        .client
        .get(app.url("/api/v1/checkout"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    assert_problem(response, 405, "method_not_allowed").await;

    // A resource of several methods.
    let response = app
        .client
        .put(app.url("/api/v1/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    assert_problem(response, 405, "method_not_allowed").await;

    // A path with a parameter.
    let id = uuid::Uuid::now_v7();
    let response = app
        .client
        .put(app.url(&format!("/api/v1/orders/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    assert_problem(response, 405, "method_not_allowed").await;
}

#[actix_web::test]
async fn a_raw_body_over_its_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/payments/stripe/webhook"))
        .header("content-type", "application/json")
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;
}

#[actix_web::test]
async fn a_json_body_over_its_limit_is_a_413_problem() {
    let app = spawn_app_with_small_json_limit().await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"email":"{}","password":"x"}}"#,
            "a".repeat(2048)
        ))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;
}

async fn spawn_app_with_small_json_limit() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.json_limit = 1024).await
}

#[actix_web::test]
async fn oversized_or_too_many_headers_are_a_431_problem() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 431, "headers_too_large").await;
    assert_eq!(body["title"], "Request Header Fields Too Large");

    let mut request = app.client.get(app.url("/health"));
    for i in 0..70 {
        request = request.header(format!("x-field-{i}"), "1");
    }
    assert_problem(request.send().await.unwrap(), 431, "headers_too_large").await;

    // Within the limits, the same request passes.
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-padding", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends raw bytes and returns the status line and the whole answer.
fn raw_exchange(address: &str, request: &[u8]) -> (String, String) {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer)
}

/// Requests the HTTP parser cannot read never reach hexmarket: actix-http answers them itself
/// with an empty body and offers no hook to give them one (see the README). What is pinned here
/// is that they are refused and the connection closed.
#[actix_web::test]
async fn requests_the_http_parser_refuses_get_400_or_431_and_a_closed_connection() {
    let app = spawn_app().await;
    let address = app.address.clone();
    let (malformed, oversized) = actix_web::rt::task::spawn_blocking(move || {
        let malformed = raw_exchange(
            &address,
            b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        );
        let mut big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 140 * 1024));
        big.extend(b"\r\n\r\n");
        let oversized = raw_exchange(&address, &big);
        (malformed, oversized)
    })
    .await
    .unwrap();
    assert!(malformed.0.starts_with("HTTP/1.1 400"), "{}", malformed.1);
    assert!(oversized.0.starts_with("HTTP/1.1 431"), "{}", oversized.1);
}

/// The codes of the README's error tables (those headed `| code |`): every backquoted code of
/// their first column.
fn readme_codes() -> std::collections::BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut codes = std::collections::BTreeSet::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| code |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table {
            let first = line.split('|').nth(1).unwrap_or_default();
            codes.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    codes.remove("---");
    codes
}

#[test]
fn the_readme_lists_every_error_code_and_no_other() {
    let documented = readme_codes();
    let sent: std::collections::BTreeSet<String> = hexmarket::error_code::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let undocumented: Vec<_> = sent.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&sent).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "codes sent but not in the README's tables: {undocumented:?}; in the tables but never sent: {unknown:?}"
    );
}
