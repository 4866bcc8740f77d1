//! `/ws/orders/{id}?after_seq=N`: one order's story, live, for its customer, its vendor, its
//! courier and admins.
//!
//! The handler subscribes to the order's topics first, then reads the order and (with
//! `after_seq`) its event log, so the session starts with a snapshot and every event after
//! `N` up to the snapshot's sequence number, then continues with live events whose sequence
//! number is higher than the last one sent: no status event is ever missed or repeated.
//! Location frames flow only while a courier is assigned and the order has not reached its
//! end, at most one per second per watcher; a newer position supersedes an unsent older one.
//! If the bounded subscription overflows on events, the session closes with 1013 and the
//! client resumes from the log.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use bytes::Bytes;
use serde::Deserialize;

use super::hygiene::{self, Hygiene, LiveSession, TokenBucket, close_too_slow};
use crate::bus::{Delivery, Subscription};
use crate::domain::ids::OrderId;
use crate::domain::order::OrderEvent;
use crate::error_code::ErrorCode;
use crate::fulfilment::orders::Orders;
use crate::streams::frames::{LocationFrame, WatchEvent, WatchSnapshot};
use crate::streams::{order_live_topic, order_topic};
use crate::web::gate::ConnectionGuard;
use crate::web::{ApiError, AppState};

/// Watchers get at most one location frame per this interval on average…
pub const LOCATION_EVERY: Duration = Duration::from_secs(1);
/// …and never two closer than this: a courier pinging once a second with a little jitter is
/// forwarded at once instead of waiting out the rest of the second.
pub const LOCATION_MIN_GAP: Duration = Duration::from_millis(750);

/// Paces one watcher's location frames: a token bucket filling at one frame per
/// [`LOCATION_EVERY`] that holds at most enough for one frame now and the next after
/// [`LOCATION_MIN_GAP`].
#[derive(Debug, Clone, Copy)]
struct Pace {
    credit: f64,
    at: Instant,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Pace {
            credit: 1.0,
            at: now,
        }
    }

    fn capacity() -> f64 {
        2.0 - LOCATION_MIN_GAP.as_secs_f64() / LOCATION_EVERY.as_secs_f64()
    }

    /// Takes a frame's worth of credit, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / LOCATION_EVERY.as_secs_f64();
        self.credit = (self.credit + earned).min(Self::capacity());
        self.at = now;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            Ok(())
        } else {
            Err(LOCATION_EVERY.mul_f64(1.0 - self.credit))
        }
    }
}
/// Events replayed on connect, at most (an order has a few dozen at most).
const REPLAY_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The last sequence number the client saw; events after it are replayed.
    pub after_seq: Option<u64>,
    /// A single-use ticket instead of an `Authorization` header.
    pub ticket: Option<String>,
}

enum Feed {
    Event(Delivery),
    Location(Delivery),
}

impl Message for Feed {
    type Result = ();
}

/// One watcher of one order.
pub struct WatchSession {
    order: OrderId,
    state: web::Data<AppState>,
    hygiene: Hygiene,
    /// Frames to write first (snapshot and replay).
    opening: Vec<String>,
    subscriptions: Option<(Subscription, Subscription)>,
    last_seq: u64,
    /// A courier is on the order and it has not reached its end.
    tracking: bool,
    pace: Pace,
    pending_location: Option<Bytes>,
    flush_scheduled: bool,
    _guard: ConnectionGuard,
}

/// `GET /ws/orders/{id}` — upgrades a watcher's connection.
pub async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, ApiError> {
    let order: OrderId = path
        .parse()
        .map_err(|_| ApiError::not_found("no such order"))?;
    let (user, guard) = state.ws.open(&req, &state.identity.tokens).await?;
    let orders = &state.fulfilment.orders;
    // The order's customer, vendor, courier and admins may watch; anyone else learns nothing.
    orders.visible(&user.viewer(), order).await?;

    let subscriptions = subscribe(&state, order).await?;
    // Read after subscribing: whatever happens from here on arrives live as well.
    let opening = Opening::read(orders, order, query.after_seq).await?;
    let session = WatchSession {
        order,
        hygiene: Hygiene::of_session(&state.ws, TokenBucket::watcher(), &user),
        state,
        opening: opening.frames,
        subscriptions: Some(subscriptions),
        last_seq: opening.last_seq,
        tracking: opening.tracking,
        pace: Pace::new(Instant::now()),
        pending_location: None,
        flush_scheduled: false,
        _guard: guard,
    };
    super::upgrade(session, &req, stream)
}

/// The order's event topic and its courier-position topic.
async fn subscribe(
    state: &AppState,
    order: OrderId,
) -> Result<(Subscription, Subscription), ApiError> {
    let topics = async {
        let events = state.bus.subscribe(&order_topic(order)).await?;
        let locations = state.bus.subscribe(&order_live_topic(order)).await?;
        Ok::<_, crate::bus::BusError>((events, locations))
    };
    topics
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::BusUnavailable, e))
}

/// What a watcher is sent first: a snapshot of the order, then the events after `after_seq`
/// when it resumes.
struct Opening {
    frames: Vec<String>,
    last_seq: u64,
    tracking: bool,
}

impl Opening {
    async fn read(
        orders: &Orders,
        order: OrderId,
        after_seq: Option<u64>,
    ) -> Result<Self, ApiError> {
        let record = orders.load(order).await?;
        let courier = orders.courier_position(&record).await;
        let snapshot = WatchSnapshot {
            order_id: order,
            status: record.status(),
            seq: record.seq,
            eta_s: courier.as_ref().map(|c| c.eta_s).filter(|eta| *eta > 0),
            courier,
        };
        let mut frames = Vec::new();
        frames.extend(super::tagged("snapshot", &snapshot));
        let mut last_seq = record.seq;
        if let Some(after) = after_seq {
            let (events, _) = orders.events_after(order, after, REPLAY_LIMIT).await?;
            for event in &events {
                frames.extend(super::tagged(
                    "event",
                    &WatchEvent {
                        order_id: order,
                        event,
                    },
                ));
                last_seq = last_seq.max(event.seq);
            }
        }
        Ok(Opening {
            frames,
            last_seq,
            tracking: record.is_tracked(),
        })
    }
}

impl Actor for WatchSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        hygiene::start(self, ctx);
        ctx.add_stream(super::closing(&self.state));
        for frame in self.opening.drain(..) {
            ctx.text(frame);
        }
        if let Some((events, locations)) = self.subscriptions.take() {
            ctx.add_stream(super::stream_of(events, Feed::Event));
            ctx.add_stream(super::stream_of(locations, Feed::Location));
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WatchSession {
    fn handle(&mut self, frame: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        hygiene::handle_frame(self, frame, ctx);
    }
}

impl StreamHandler<Feed> for WatchSession {
    fn handle(&mut self, feed: Feed, ctx: &mut Self::Context) {
        match feed {
            Feed::Event(Delivery::Message(payload)) => self.on_event(&payload, ctx),
            Feed::Event(Delivery::Lagged(_)) => {
                self.state.metrics.ws_frame_dropped("lagged").inc();
                close_too_slow(ctx);
            }
            Feed::Location(Delivery::Message(payload)) => self.on_location(payload, ctx),
            Feed::Location(Delivery::Lagged(n)) => {
                self.state.metrics.ws_frame_dropped("superseded").inc_by(n);
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl LiveSession for WatchSession {
    fn hygiene(&mut self) -> &mut Hygiene {
        &mut self.hygiene
    }
}

impl WatchSession {
    fn on_event(&mut self, payload: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        let Ok(event) = serde_json::from_slice::<OrderEvent>(payload) else {
            return;
        };
        if event.seq <= self.last_seq {
            return;
        }
        self.last_seq = event.seq;
        if let Some(frame) = super::tagged(
            "event",
            &WatchEvent {
                order_id: self.order,
                event: &event,
            },
        ) {
            ctx.text(frame);
        }
        if matches!(
            event.kind,
            crate::domain::order::OrderEventKind::CourierAssigned { .. }
        ) {
            self.tracking = true;
        }
        if event.status_after.has_ended() {
            // The position stops with the delivery, for good.
            self.tracking = false;
            self.pending_location = None;
            self.state.live.board.remove(self.order);
        }
    }

    fn on_location(&mut self, payload: Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.tracking {
            return;
        }
        // On the in-process bus the courier's actor, on this node, has already put the
        // position on the board; across nodes the board learns it here.
        if self.state.bus.backend() != "local"
            && let Ok(frame) = serde_json::from_slice::<LocationFrame>(&payload)
        {
            self.state.live.board.set(self.order, frame);
        }
        if self.pending_location.replace(payload).is_some() {
            self.state.metrics.ws_frame_dropped("superseded").inc();
        }
        if !self.flush_scheduled {
            self.flush(ctx);
        }
    }

    /// Sends the pending position if the pace allows, else comes back when it will.
    fn flush(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.flush_scheduled = false;
        if !self.tracking || self.pending_location.is_none() {
            return;
        }
        match self.pace.take(Instant::now()) {
            Ok(()) => {
                if let Some(payload) = self.pending_location.take() {
                    send_text(payload, ctx);
                }
            }
            Err(wait) => {
                self.flush_scheduled = true;
                ctx.run_later(wait, |session, ctx| session.flush(ctx));
            }
        }
    }
}

/// Writes a UTF-8 payload from the bus as a text frame.
fn send_text(payload: Bytes, ctx: &mut ws::WebsocketContext<WatchSession>) {
    match std::str::from_utf8(&payload) {
        Ok(text) => ctx.text(text.to_owned()),
        Err(_) => tracing::debug!("location frame is not UTF-8"),
    }
}

super::closes_when_the_node_stops!(WatchSession);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_gets_a_second_a_frame_on_average_and_none_closer_than_the_gap() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        assert!(pace.take(start).is_ok());
        // Too soon: told how long to wait.
        let wait = pace.take(start + Duration::from_millis(100)).unwrap_err();
        assert!(wait > Duration::from_millis(500), "{wait:?}");
        // A ping a little early (jitter) after a quiet second still goes at once …
        let mut pace = Pace::new(start);
        let mut at = start;
        assert!(pace.take(at).is_ok());
        at += Duration::from_millis(1_400);
        assert!(pace.take(at).is_ok());
        at += Duration::from_millis(800);
        assert!(pace.take(at).is_ok());
        // … but never twice within the gap, and no faster than one a second over time.
        assert!(pace.take(at + Duration::from_millis(700)).is_err());
        let mut pace = Pace::new(start);
        let sent = (0..100)
            .filter(|i| pace.take(start + Duration::from_millis(100 * i)).is_ok())
            .count();
        assert!((10..=11).contains(&sent), "{sent} frames in 10 s");
    }
}
