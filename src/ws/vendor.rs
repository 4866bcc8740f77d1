//! `/ws/vendor?after_seq=N`: a vendor's orders, live. Every event of the vendor's paid orders
//! is an entry of the vendor's feed with its own sequence number; the session says `hello`
//! with the feed's last number, replays the entries after `N`, then forwards new ones,
//! dropping any it already sent.

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde::Deserialize;

use super::hygiene::{self, Hygiene, LiveSession, TokenBucket, close_too_slow};
use crate::bus::{Delivery, Subscription};
use crate::domain::identity::Role;
use crate::domain::ids::VendorId;
use crate::error_code::ErrorCode;
use crate::store::live::FeedEntry;
use crate::streams::frames::VendorHello;
use crate::streams::vendor_topic;
use crate::web::gate::ConnectionGuard;
use crate::web::{ApiError, AppState};

/// Entries replayed on connect, at most; a client further behind reloads its order list.
const REPLAY_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    pub after_seq: Option<u64>,
    pub ticket: Option<String>,
}

struct FeedDelivery(Delivery);

impl Message for FeedDelivery {
    type Result = ();
}

/// One vendor screen.
pub struct VendorSession {
    state: web::Data<AppState>,
    hygiene: Hygiene,
    opening: Vec<String>,
    subscription: Option<Subscription>,
    last_seq: u64,
    _guard: ConnectionGuard,
}

/// `GET /ws/vendor` — upgrades a vendor's connection.
pub async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let (user, guard) = state.ws.open(&req, &state.identity.tokens).await?;
    user.require_role(&[Role::Vendor])?;
    let vendor: VendorId = state
        .catalog
        .vendor_of(user.id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::FORBIDDEN,
                ErrorCode::NoStore,
                "open your store first",
            )
        })?
        .id;
    let subscription = state
        .bus
        .subscribe(&vendor_topic(vendor))
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::BusUnavailable, e))?;
    let (opening, last_seq) = opening(&state, vendor, query.after_seq).await?;
    let session = VendorSession {
        hygiene: Hygiene::of_session(&state.ws, TokenBucket::watcher(), &user),
        state,
        opening,
        subscription: Some(subscription),
        last_seq,
        _guard: guard,
    };
    super::upgrade(session, &req, stream)
}

/// What a vendor is sent first: a hello with the feed's head, then the entries after
/// `after_seq` when it resumes; and the last sequence number sent.
async fn opening(
    state: &AppState,
    vendor: VendorId,
    after_seq: Option<u64>,
) -> Result<(Vec<String>, u64), ApiError> {
    let head = state.live.feed.last_seq(vendor).await?;
    let mut opening = Vec::new();
    opening.extend(super::tagged(
        "hello",
        &VendorHello {
            vendor_id: vendor,
            seq: head,
        },
    ));
    let mut last_seq = head;
    if let Some(after) = after_seq {
        let entries = state.live.feed.after(vendor, after, REPLAY_LIMIT).await?;
        for entry in &entries {
            opening.extend(super::tagged("order_event", entry));
        }
        last_seq = entries.last().map_or(after, |e| e.seq).max(head);
    }
    Ok((opening, last_seq))
}

impl Actor for VendorSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        hygiene::start(self, ctx);
        ctx.add_stream(super::closing(&self.state));
        for frame in self.opening.drain(..) {
            ctx.text(frame);
        }
        if let Some(subscription) = self.subscription.take() {
            ctx.add_stream(super::stream_of(subscription, FeedDelivery));
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for VendorSession {
    fn handle(&mut self, frame: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        hygiene::handle_frame(self, frame, ctx);
    }
}

impl StreamHandler<FeedDelivery> for VendorSession {
    fn handle(&mut self, FeedDelivery(delivery): FeedDelivery, ctx: &mut Self::Context) {
        match delivery {
            Delivery::Message(payload) => {
                let Ok(entry) = serde_json::from_slice::<FeedEntry>(&payload) else {
                    return;
                };
                if entry.seq <= self.last_seq {
                    return;
                }
                self.last_seq = entry.seq;
                if let Some(frame) = super::tagged("order_event", &entry) {
                    ctx.text(frame);
                }
            }
            Delivery::Lagged(_) => close_too_slow(ctx),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl LiveSession for VendorSession {
    fn hygiene(&mut self) -> &mut Hygiene {
        &mut self.hygiene
    }
}

super::closes_when_the_node_stops!(VendorSession);
