//! Image uploads and media serving.

use std::io::Cursor;

use hexmarket::domain::catalog::{ImageRef, Product, Vendor};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::CategoryId;
use image::{DynamicImage, ImageFormat, RgbImage};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{TestApp, assert_problem, spawn_app};

const BOUNDARY: &str = "hexmarket-test-boundary-5b1f0c";
const MIB: usize = 1024 * 1024;

/// A `multipart/form-data` body with one file part, and its content type.
fn multipart(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    }))
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// Marker planted in the EXIF block; it must never be served.
const EXIF_SECRET: &[u8] = b"GPS 52.5200N 13.4050E";

/// A JPEG with an EXIF (APP1) segment right after SOI: orientation 6 (rotate 90° clockwise to
/// display) and a planted location string.
fn jpeg_with_exif(width: u32, height: u32) -> Vec<u8> {
    let jpeg = encoded(&picture(width, height), ImageFormat::Jpeg);
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&6u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    tiff.extend_from_slice(EXIF_SECRET);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let length = u16::try_from(app1.len() + 2).unwrap();

    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl TestApp {
    async fn upload_image(
        &self,
        product: &Product,
        token: Option<&str>,
        (content_type, body): (String, Vec<u8>),
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/products/{}/images", product.id)))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn images_of(&self, product: &Product) -> Vec<ImageRef> {
        self.catalog
            .repo
            .product(product.id)
            .await
            .unwrap()
            .unwrap()
            .value
            .images
    }
}

async fn store_with_product(app: &TestApp) -> (Vendor, String, Product) {
    let (vendor, token) = seed_vendor(app, "Pixel Bakery", berlin(0.0, 0.0)).await;
    let product = seed_product(app, &vendor, CategoryId::new(), "Sourdough", 450).await;
    (vendor, token, product)
}

fn png_upload(width: u32, height: u32) -> (String, Vec<u8>) {
    let png = encoded(&picture(width, height), ImageFormat::Png);
    multipart("image", "loaf.png", "image/png", &png)
}

#[actix_web::test]
async fn a_png_upload_is_stored_and_served_with_cache_headers() {
    // Arrange
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;

    // Act
    let response = app
        .upload_image(&product, Some(&token), png_upload(800, 600))
        .await;

    // Assert
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["index"], 0);
    assert_eq!(body["content_type"], "image/png");
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(800), Some(600))
    );
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("images/") && key.ends_with(".png"), "{key}");
    assert_eq!(body["url"], format!("/media/{key}"));
    assert_eq!(location, format!("/media/{key}"));
    assert_eq!(app.images_of(&product).await.len(), 1);

    let served = app.get(body["url"].as_str().unwrap()).await;
    assert_eq!(served.status(), 200);
    let headers = served.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let hash = key.trim_start_matches("images/").trim_end_matches(".png");
    assert_eq!(etag, format!("\"{hash}\""));
    let image = image::load_from_memory(&served.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (800, 600));

    let thumbnail = app.get(body["thumbnail_url"].as_str().unwrap()).await;
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(thumbnail.headers()["content-type"], "image/png");
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert!(thumbnail.width() <= 320 && thumbnail.height() <= 320);
    assert_eq!(thumbnail.width(), 320);

    let revalidated = app
        .client
        .get(app.url(body["url"].as_str().unwrap()))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
}

#[actix_web::test]
async fn a_jpeg_upload_loses_its_exif_and_keeps_standing_upright() {
    // Arrange
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;
    let original = jpeg_with_exif(640, 400);
    assert!(contains(&original, b"Exif\0\0") && contains(&original, EXIF_SECRET));

    // Act
    let response = app
        .upload_image(
            &product,
            Some(&token),
            multipart("image", "photo.jpg", "image/jpeg", &original),
        )
        .await;

    // Assert
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["content_type"], "image/jpeg");
    assert!(body["key"].as_str().unwrap().ends_with(".jpg"));
    // Orientation 6 was applied to the pixels before the metadata was dropped.
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(400), Some(640))
    );

    for url in [&body["url"], &body["thumbnail_url"]] {
        let served = app.get(url.as_str().unwrap()).await;
        assert_eq!(served.status(), 200);
        assert_eq!(served.headers()["content-type"], "image/jpeg");
        assert_eq!(
            served.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let bytes = served.bytes().await.unwrap();
        assert!(!contains(&bytes, b"Exif\0\0"), "{url} still has EXIF");
        assert!(
            !contains(&bytes, EXIF_SECRET),
            "{url} still has the location"
        );
        let image = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).unwrap();
        assert!(image.width() <= 640 && image.height() <= 640);
    }
    let thumbnail = app.get(body["thumbnail_url"].as_str().unwrap()).await;
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (200, 320));
}

#[actix_web::test]
async fn a_text_file_named_png_is_refused_with_415() {
    // Arrange
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;

    // Act
    let response = app
        .upload_image(
            &product,
            Some(&token),
            multipart(
                "image",
                "totally-a-picture.png",
                "image/png",
                b"just some text\n",
            ),
        )
        .await;

    // Assert
    assert_problem(response, 415, "unsupported_media_type").await;
    assert!(app.images_of(&product).await.is_empty());
}

#[actix_web::test]
async fn a_body_that_is_not_multipart_is_refused_with_415() {
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;
    let png = encoded(&picture(16, 16), ImageFormat::Png);

    let response = app
        .upload_image(&product, Some(&token), ("image/png".to_owned(), png))
        .await;

    assert_problem(response, 415, "unsupported_media_type").await;
    assert!(app.images_of(&product).await.is_empty());
}

#[actix_web::test]
async fn an_upload_over_5_mib_is_refused_with_413() {
    // Arrange
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;
    let mut big = encoded(&picture(64, 64), ImageFormat::Png);
    big.resize(6 * MIB, 0);

    // Act: the declared length alone is too much.
    let response = app
        .upload_image(
            &product,
            Some(&token),
            multipart("image", "huge.png", "image/png", &big),
        )
        .await;

    // Assert
    assert_problem(response, 413, "payload_too_large").await;
    assert!(app.images_of(&product).await.is_empty());

    // Act: a length within the framing allowance, found too large while streaming.
    big.truncate(5 * MIB + 1024);
    let response = app
        .upload_image(
            &product,
            Some(&token),
            multipart("image", "huge.png", "image/png", &big),
        )
        .await;

    // Assert
    assert_problem(response, 413, "payload_too_large").await;
    assert!(app.images_of(&product).await.is_empty());
}

#[actix_web::test]
async fn another_vendor_gets_404_and_an_anonymous_caller_401() {
    // Arrange
    let app = spawn_app().await;
    let (_, _, product) = store_with_product(&app).await;
    let (_, other_token) = seed_vendor(&app, "Rival Bakery", berlin(0.01, 0.0)).await;
    let (_, customer_token) = user_token(&app, Role::Customer);

    // Act + Assert
    for token in [&other_token, &customer_token] {
        let response = app
            .upload_image(&product, Some(token), png_upload(32, 32))
            .await;
        assert_problem(response, 404, "not_found").await;
    }
    let response = app.upload_image(&product, None, png_upload(32, 32)).await;
    assert_problem(response, 401, "unauthenticated").await;
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/products/{}/images/0", product.id)))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
    assert!(app.images_of(&product).await.is_empty());
}

#[actix_web::test]
async fn an_admin_may_add_images_to_any_product() {
    let app = spawn_app().await;
    let (_, _, product) = store_with_product(&app).await;
    let admin_token = app.admin_token().await;

    let response = app
        .upload_image(&product, Some(&admin_token), png_upload(32, 32))
        .await;

    assert_eq!(response.status(), 201);
    assert_eq!(app.images_of(&product).await.len(), 1);
}

/// Sends a request line exactly as written (an HTTP client would normalise `..` away).
async fn raw_get_status(app: &TestApp, target: &str) -> u16 {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.contains("application/problem+json"), "{response}");
    response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap()
}

#[actix_web::test]
async fn media_keys_cannot_escape_the_store() {
    // Arrange: something worth stealing next to the media directory.
    let app = spawn_app().await;
    std::fs::write(app.data_dir.path().join("secret.key"), b"top secret").unwrap();
    std::fs::write(
        app.data_dir.path().join("media").join("secret.key"),
        b"top secret",
    )
    .unwrap();
    let missing = format!("/media/images/{}.png", "0".repeat(64));

    // Act + Assert
    for path in [
        "/media/../store",
        "/media/images/..%2F..%2Fsecret.key",
        "/media/secret.key",
        "/media/images/../../secret.key",
        "/media/%2e%2e/secret.key",
        missing.as_str(),
    ] {
        assert_problem(app.get(path).await, 404, "not_found").await;
        assert_eq!(raw_get_status(&app, path).await, 404, "{path}");
    }
}

#[actix_web::test]
async fn the_eleventh_image_is_refused_with_422() {
    // Arrange
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;
    for i in 0..10 {
        let response = app
            .upload_image(&product, Some(&token), png_upload(8 + i, 8))
            .await;
        assert_eq!(response.status(), 201);
    }
    let before = app.images_of(&product).await;
    assert_eq!(before.len(), 10);

    // Act
    let response = app
        .upload_image(&product, Some(&token), png_upload(40, 40))
        .await;

    // Assert
    assert_problem(response, 422, "too_many_images").await;
    assert_eq!(app.images_of(&product).await, before);
}

#[actix_web::test]
async fn deleting_an_image_removes_it_and_objects_nothing_else_uses() {
    // Arrange: the same picture twice, and another one.
    let app = spawn_app().await;
    let (_, token, product) = store_with_product(&app).await;
    let mut views = Vec::new();
    for upload in [png_upload(64, 48), png_upload(64, 48), png_upload(30, 30)] {
        let response = app.upload_image(&product, Some(&token), upload).await;
        assert_eq!(response.status(), 201);
        views.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(views[0]["key"], views[1]["key"]);
    let delete = |index: usize| {
        app.client
            .delete(app.url(&format!("/api/v1/products/{}/images/{index}", product.id)))
            .bearer_auth(&token)
            .send()
    };

    // Act + Assert: a shared picture stays while still in use.
    assert_eq!(delete(0).await.unwrap().status(), 204);
    assert_eq!(app.images_of(&product).await.len(), 2);
    assert_eq!(
        app.get(views[1]["url"].as_str().unwrap()).await.status(),
        200
    );

    // Act + Assert: the last use of it goes with its objects.
    assert_eq!(delete(0).await.unwrap().status(), 204);
    let remaining = app.images_of(&product).await;
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].key, views[2]["key"].as_str().unwrap());
    for url in [&views[1]["url"], &views[1]["thumbnail_url"]] {
        assert_problem(app.get(url.as_str().unwrap()).await, 404, "not_found").await;
    }
    assert_eq!(
        app.get(views[2]["url"].as_str().unwrap()).await.status(),
        200
    );

    assert_problem(delete(5).await.unwrap(), 404, "not_found").await;
}
