//! The web app at `/`: one page for customers, vendors, couriers and administrators, built from
//! `webapp/` (`npm run build`) and compiled into the binary, so the node serves it with nothing
//! else installed; and `GET /api/v1/app/config`, what the page needs to know of this node.
//!
//! The page runs on the public API alone. Its policy lets it run only its own scripts and
//! styles (nothing inline), load images from itself and the map's tile server, and talk to
//! its own origin (HTTP and WebSockets), plus Stripe's hosts when Stripe takes the payments.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Settings;
use crate::web::ApiError;

/// One embedded file of the app, with its gzip-compressed twin.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/webapp/dist/", $name)),
            gzip: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/webapp/dist/",
                $name,
                ".gz"
            )),
        }
    };
}

const PAGE: Asset = asset!("index.html", "text/html; charset=utf-8");

const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("h3.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("manifest.webmanifest", "application/manifest+json"),
];

/// The page's paths: every screen of the app can be opened, bookmarked and reloaded.
const PAGE_PATHS: &[&str] = &[
    "/",
    "/signin",
    "/signup",
    "/account",
    "/stores/{id}",
    "/products/{id}",
    "/cart",
    "/checkout",
    "/orders",
    "/orders/{id}",
    "/vendor",
    "/vendor/{screen}",
    "/courier",
    "/admin",
    "/admin/{screen}",
];

/// What the page is told about the node, and the policy it is served under.
pub struct WebApp {
    config: AppConfig,
    policy: HeaderValue,
}

/// What the web app needs to know of the node it is served by.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppConfig {
    pub map: MapConfig,
    pub payments: PaymentConfig,
}

/// The map's tiles.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MapConfig {
    /// Tile URL template (`{z}/{x}/{y}`, `{s}` for subdomains); null: no tiles, a plain
    /// background.
    pub tile_url: Option<String>,
    pub attribution: String,
}

/// How checkouts are paid on this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentConfig {
    /// The `payment_method` a checkout takes here.
    #[schema(example = "simulated")]
    pub method: &'static str,
    /// Stripe's publishable key for the Payment Element (with `method: stripe`, when set).
    pub stripe_publishable_key: Option<String>,
}

impl WebApp {
    pub fn new(settings: &Settings) -> Self {
        let stripe = settings.stripe.is_some();
        let config = AppConfig {
            map: MapConfig {
                tile_url: settings.webapp.map_tile_url.clone(),
                attribution: settings.webapp.map_attribution.clone(),
            },
            payments: PaymentConfig {
                method: if stripe { "stripe" } else { "simulated" },
                stripe_publishable_key: settings
                    .webapp
                    .stripe_publishable_key
                    .clone()
                    .filter(|_| stripe),
            },
        };
        let policy = content_security_policy(
            config.map.tile_url.as_deref(),
            config.payments.stripe_publishable_key.is_some(),
        );
        WebApp {
            policy: HeaderValue::from_str(&policy).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'")
            }),
            config,
        }
    }
}

/// The page's Content-Security-Policy: its own files only, no inline script or style.
fn content_security_policy(tile_url: Option<&str>, stripe: bool) -> String {
    let tiles = tile_url.map(tile_source).unwrap_or_default();
    let (script, frame, connect) = if stripe {
        (
            " https://js.stripe.com",
            "https://js.stripe.com https://hooks.stripe.com",
            " https://api.stripe.com",
        )
    } else {
        ("", "'none'", "")
    };
    format!(
        "default-src 'none'; script-src 'self'{script}; style-src 'self'; \
         img-src 'self' data: blob:{tiles}; connect-src 'self'{connect}; \
         manifest-src 'self'; media-src 'self'; frame-src {frame}; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// The tile server as a CSP source: its scheme and host, `{s}` (subdomains) as a wildcard.
fn tile_source(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.split_once("{s}.") {
        Some((_, parent)) => format!("*.{parent}"),
        None => host.to_owned(),
    };
    if host.contains('{') {
        return String::new();
    }
    format!(" {scheme}://{host}")
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in PAGE_PATHS {
        cfg.route(path, web::get().to(page));
    }
    cfg.route("/assets/{file}", web::get().to(asset));
}

/// Inside the `/api/v1` scope.
pub fn configure_api(cfg: &mut web::ServiceConfig) {
    cfg.route("/app/config", web::get().to(app_config));
}

/// What the web app needs to know of this node: map tiles and how checkouts are paid.
#[utoipa::path(get, path = "/api/v1/app/config", tag = "app",
    responses((status = 200, body = AppConfig)))]
pub async fn app_config(app: web::Data<WebApp>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(&app.config)
}

async fn page(req: HttpRequest, app: web::Data<WebApp>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, app.policy.clone()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((
            header::HeaderName::from_static("permissions-policy"),
            "geolocation=(self), camera=(), microphone=(), payment=(self)",
        ))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    send(&req, response, &PAGE)
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some(found) = ASSETS.iter().find(|a| a.name == file.as_str()) else {
        return Err(ApiError::not_found("no such file of the web app"));
    };
    let mut response = HttpResponse::Ok();
    response.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    // The page names its files with their content hash (`?v=`): such a name never changes
    // content, so browsers keep it; a bare name is checked again each time.
    if req.query_string().starts_with("v=") {
        response.insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"));
    } else {
        response.insert_header((header::CACHE_CONTROL, "no-cache"));
    }
    Ok(send(&req, response, found))
}

/// The file, compressed when the client takes gzip.
fn send(
    req: &HttpRequest,
    mut response: actix_web::HttpResponseBuilder,
    asset: &Asset,
) -> HttpResponse {
    response
        .content_type(asset.content_type)
        .insert_header((header::VARY, "accept-encoding"));
    if accepts_gzip(req) {
        response
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(asset.gzip)
    } else {
        response.body(asset.body)
    }
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_tile_server_and_allows_no_inline_code() {
        let policy =
            content_security_policy(Some("https://{s}.tile.example.org/{z}/{x}/{y}.png"), false);
        assert!(policy.contains("img-src 'self' data: blob: https://*.tile.example.org;"));
        assert!(policy.contains("script-src 'self';"));
        assert!(!policy.contains("unsafe"));
        assert!(policy.contains("frame-src 'none'"));
        let plain = content_security_policy(None, false);
        assert!(plain.contains("img-src 'self' data: blob:;"));
        let stripe =
            content_security_policy(Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png"), true);
        assert!(stripe.contains("script-src 'self' https://js.stripe.com;"));
        assert!(stripe.contains("https://tile.openstreetmap.org;"));
    }

    #[test]
    fn every_file_has_its_compressed_twin() {
        for asset in ASSETS.iter().chain([&PAGE]) {
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
            assert!(
                asset.gzip.starts_with(&[0x1f, 0x8b]),
                "{} has no gzip twin",
                asset.name
            );
        }
    }
}
