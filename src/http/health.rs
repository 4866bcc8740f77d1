//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use crate::actors::Entity as _;
use crate::actors::cart::CartActor;
use crate::metrics::KindLabels;

/// How long a readiness probe waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency is down.
    pub status: &'static str,
    /// Each dependency: `ok` or why it is not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub backend: &'static str,
    pub status: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        checks: Vec::new(),
    })
}

/// The node can serve: its store (and Redis, when configured) answer.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, body = Health, description = "every dependency answers"),
    (status = 503, body = Health, description = "a dependency is down; `checks` says which"),
))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let store = probe(state.store.ping()).await;
    let mut checks = vec![Check {
        name: "store",
        backend: state.store.backend(),
        status: store,
    }];
    if state.redis {
        let bus = probe(state.bus.ping()).await;
        checks.push(Check {
            name: "redis",
            backend: state.bus.backend(),
            status: bus,
        });
    }
    if checks.iter().all(|c| c.status == "ok") {
        HttpResponse::Ok().json(Health {
            status: "ok",
            checks,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "unavailable",
            checks,
        })
    }
}

async fn probe<E: std::fmt::Display>(check: impl Future<Output = Result<(), E>>) -> String {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    }
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .live_actors
        .get_or_create(&KindLabels {
            kind: CartActor::KIND,
        })
        .set(state.carts.live() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
