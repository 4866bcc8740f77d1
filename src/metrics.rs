//! Prometheus metrics of the process, rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub medium: &'static str,
    pub outcome: &'static str,
}

/// Every metric hexmarket exports. Cheap to clone: the handles share their values.
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub live_actors: Family<KindLabels, Gauge>,
    pub ws_sessions: Gauge,
    /// GPS points accepted from couriers.
    pub gps_accepted: Counter,
    gps_dropped: Family<ReasonLabels, Counter>,
    /// Frames not sent to a WebSocket client, by reason (`superseded` locations, `lagged`).
    ws_frames_dropped: Family<ReasonLabels, Counter>,
    /// Rate limit decisions made by the node's own limiter while Redis was unreachable.
    pub rate_limiter_fallbacks: Counter,
    /// Notifications by medium and outcome (`written` in-app; `sent`, `retried`, `dead`,
    /// `skipped` for the outbox).
    notifications: Family<NotificationLabels, Counter>,
    /// Order events the notification consumer has read from the journal.
    pub notification_events: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hexmarket");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        let live_actors = Family::<KindLabels, Gauge>::default();
        registry.register(
            "live_actors",
            "Activated entity actors by kind",
            live_actors.clone(),
        );
        let ws_sessions = Gauge::default();
        registry.register(
            "ws_sessions",
            "Open WebSocket sessions",
            ws_sessions.clone(),
        );
        let gps_accepted = Counter::default();
        registry.register(
            "gps_points_accepted",
            "GPS points accepted from couriers",
            gps_accepted.clone(),
        );
        let gps_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gps_points_dropped",
            "GPS points dropped by cleaning, by reason",
            gps_dropped.clone(),
        );
        // Every reason shows from the start, at zero.
        for reason in crate::domain::courier::DropReason::ALL {
            drop(gps_dropped.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        let ws_frames_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ws_frames_dropped",
            "Frames not sent to WebSocket clients, by reason",
            ws_frames_dropped.clone(),
        );
        let rate_limiter_fallbacks = Counter::default();
        registry.register(
            "rate_limiter_fallbacks",
            "Rate limit decisions made by this node's own limiter because Redis was unreachable",
            rate_limiter_fallbacks.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by medium and outcome (written in-app; sent, retried, dead, skipped; recovered: taken by the provider before a restart)",
            notifications.clone(),
        );
        let notification_events = Counter::default();
        registry.register(
            "notification_events",
            "Order events the notification consumer read from the order journal",
            notification_events.clone(),
        );
        Metrics {
            registry: std::sync::Arc::new(registry),
            notifications,
            notification_events,
            rate_limiter_fallbacks,
            gps_accepted,
            gps_dropped,
            ws_frames_dropped,
            http_requests,
            http_latency,
            live_actors,
            ws_sessions,
        }
    }

    /// The counter of GPS points dropped for `reason`.
    pub fn gps_dropped(&self, reason: &'static str) -> Counter {
        self.gps_dropped
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// The counter of WebSocket frames dropped for `reason`.
    pub fn ws_frame_dropped(&self, reason: &'static str) -> Counter {
        self.ws_frames_dropped
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// The counter of notifications on `medium` that came to `outcome`.
    pub fn notification(&self, medium: &'static str, outcome: &'static str) -> Counter {
        self.notifications
            .get_or_create(&NotificationLabels { medium, outcome })
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
