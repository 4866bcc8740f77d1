//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::actors::Entity as _;
use crate::actors::cart::CartActor;
use crate::metrics::KindLabels;
use crate::web::AppState;

/// How long a readiness probe waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; `degraded` when the node serves without Redis (rate limits per node, no
    /// cross-node events); `unavailable` when the store is down.
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

/// The node can serve: its store answers. Redis being down only degrades it (status
/// `degraded`, still 200): every node shares one Redis, so answering 503 would take the whole
/// fleet out of the load balancer for an outage the nodes ride out on their own.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, body = Health, description = "the store answers; `status` is `ok`, or `degraded` with `checks` naming what is down"),
    (status = 503, body = Health, description = "the store is down"),
))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let store = probe(state.store.ping()).await;
    let store_ok = store == "ok";
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
        let (backend, degraded) = state.identity.limiter_state().await;
        checks.push(Check {
            name: "rate_limiter",
            backend,
            status: if degraded {
                "degraded: Redis unreachable, limiting on this node".to_owned()
            } else {
                "ok".to_owned()
            },
        });
    }
    if !store_ok {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "unavailable",
            checks,
        })
    } else if checks.iter().all(|c| c.status == "ok") {
        HttpResponse::Ok().json(Health {
            status: "ok",
            checks,
        })
    } else {
        HttpResponse::Ok().json(Health {
            status: "degraded",
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
