//! `/ws/notifications`: the signed-in user's in-app notifications, live. The session says
//! `hello` with the unread count, then forwards each new notification as it is written
//! (`notification` frames, the same entries `GET /api/v1/notifications` lists). A client that
//! was away reads what it missed from that list; the stream carries what happens while it
//! is connected. Any role may open it.

use std::collections::HashSet;

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde::Deserialize;
use uuid::Uuid;

use super::hygiene::{self, Hygiene, LiveSession, TokenBucket, close_too_slow};
use crate::bus::{Delivery, Subscription};
use crate::domain::notification::FeedItem;
use crate::error_code::ErrorCode;
use crate::streams::frames::NotificationsHello;
use crate::streams::notifications_topic;
use crate::web::gate::ConnectionGuard;
use crate::web::{ApiError, AppState};

/// Ids remembered to drop a notification delivered twice (a second node's publish).
const SEEN: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsQuery {
    pub ticket: Option<String>,
}

struct Published(Delivery);

impl Message for Published {
    type Result = ();
}

/// One user's notification stream.
pub struct NotificationsSession {
    state: web::Data<AppState>,
    hygiene: Hygiene,
    hello: Option<String>,
    subscription: Option<Subscription>,
    seen: HashSet<Uuid>,
    _guard: ConnectionGuard,
}

/// `GET /ws/notifications` — upgrades the connection.
pub async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    _query: web::Query<NotificationsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (user, guard) = state.ws.open(&req, &state.identity.tokens).await?;
    // Subscribed before the count is read: nothing written in between is missed.
    let subscription = state
        .bus
        .subscribe(&notifications_topic(user.id))
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::BusUnavailable, e))?;
    let unread = state.notifications.unread(user.id).await?;
    let session = NotificationsSession {
        hygiene: Hygiene::of_session(&state.ws, TokenBucket::watcher(), &user),
        state,
        hello: super::tagged("hello", &NotificationsHello { unread }),
        subscription: Some(subscription),
        seen: HashSet::new(),
        _guard: guard,
    };
    super::upgrade(session, &req, stream)
}

impl Actor for NotificationsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        hygiene::start(self, ctx);
        ctx.add_stream(super::closing(&self.state));
        if let Some(hello) = self.hello.take() {
            ctx.text(hello);
        }
        if let Some(subscription) = self.subscription.take() {
            ctx.add_stream(super::stream_of(subscription, Published));
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for NotificationsSession {
    fn handle(&mut self, frame: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        hygiene::handle_frame(self, frame, ctx);
    }
}

impl StreamHandler<Published> for NotificationsSession {
    fn handle(&mut self, Published(delivery): Published, ctx: &mut Self::Context) {
        match delivery {
            Delivery::Message(payload) => {
                let Ok(item) = serde_json::from_slice::<FeedItem>(&payload) else {
                    return;
                };
                if self.seen.len() >= SEEN {
                    self.seen.clear();
                }
                if !self.seen.insert(item.id) {
                    return;
                }
                if let Some(frame) = super::tagged("notification", &item) {
                    ctx.text(frame);
                }
            }
            Delivery::Lagged(_) => close_too_slow(ctx),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl LiveSession for NotificationsSession {
    fn hygiene(&mut self) -> &mut Hygiene {
        &mut self.hygiene
    }
}

super::closes_when_the_node_stops!(NotificationsSession);
