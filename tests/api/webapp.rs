//! The web app served at `/`: its page for every screen, under a policy that runs only its own
//! files; the files from the binary (compressed for clients that take it); what it reads of
//! the node at `/api/v1/app/config`.

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[actix_web::test]
async fn every_screen_is_the_page_under_a_strict_policy() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/signin",
        "/cart",
        "/orders/0190f0d2-0000-7000-8000-000000000001",
        "/stores/anything",
        "/vendor",
        "/vendor/stock",
        "/courier",
        "/admin/users",
    ] {
        let page = app.get(path).await;
        assert_eq!(page.status(), 200, "{path}");
        let headers = page.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(policy.contains("style-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = page.text().await.unwrap();
        assert!(body.contains("<main id=\"main\""), "{path}: {body}");
        // No inline script: every script is a file of the app.
        for tag in body.split("<script").skip(1) {
            assert!(
                tag.trim_start()
                    .starts_with("type=\"module\" src=\"/assets/"),
                "{tag}"
            );
        }
    }
    // Paths that are neither a screen nor the API stay problems.
    assert_problem(app.get("/no-such-screen").await, 404, "not_found").await;
    assert_problem(app.get("/vendor/a/b").await, 404, "not_found").await;
}

#[actix_web::test]
async fn the_files_come_from_the_binary_compressed_when_asked() {
    let app = spawn_app().await;
    let page = app.get("/").await.text().await.unwrap();
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert!(script.starts_with("/assets/app.js?v="), "{script}");

    let plain = app.get(&script).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(
        plain.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_len = plain.bytes().await.unwrap().len();

    let gzip = app
        .client
        .get(app.url(&script))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let body = gzip.bytes().await.unwrap();
    assert!(body.starts_with(&[0x1f, 0x8b]));
    assert!(body.len() * 2 < plain_len, "{} vs {plain_len}", body.len());

    let refused = app
        .client
        .get(app.url(&script))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());

    // A name without its content hash is checked again each time.
    let bare = app.get("/assets/app.css").await;
    assert_eq!(bare.status(), 200);
    assert_eq!(bare.headers()["cache-control"], "no-cache");
    assert!(
        bare.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_problem(app.get("/assets/../Cargo.toml").await, 404, "not_found").await;
    assert_problem(app.get("/assets/nothing.js").await, 404, "not_found").await;
}

#[actix_web::test]
async fn the_app_learns_the_map_tiles_and_the_payment_method() {
    let app = spawn_app().await;
    let config: serde_json::Value = app.get("/api/v1/app/config").await.json().await.unwrap();
    assert_eq!(
        config["map"]["tile_url"],
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    );
    assert_eq!(config["payments"]["method"], "simulated");
    let page = app.get("/").await;
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("img-src 'self' data: blob: https://tile.openstreetmap.org;"),
        "{policy}"
    );

    let plain = spawn_app_with(|s| {
        s.webapp.map_tile_url = None;
        s.webapp.map_attribution = "none".into();
    })
    .await;
    let config: serde_json::Value = plain.get("/api/v1/app/config").await.json().await.unwrap();
    assert!(config["map"]["tile_url"].is_null());
    let policy = plain.get("/").await.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("img-src 'self' data: blob:;"), "{policy}");
}
