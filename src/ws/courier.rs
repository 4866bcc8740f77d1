//! `/ws/courier`: a courier's session. In: going on- and offline, GPS (one point or a batch),
//! answers to offers, pickups and deliveries. Out: acknowledgements, offers, assignments and
//! errors. Every request goes to the courier's actor (or the dispatcher), and its answer is
//! written back when it comes; offers and assignments arrive on the courier's inbox topic.

use std::collections::VecDeque;

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde::Deserialize;
use uuid::Uuid;

use super::hygiene::{self, Hygiene, LiveSession, TokenBucket, send_error};
use crate::actors::courier::{
    Connected, CourierError, Delivered, GoOffline, GoOnline, PickedUp, ReportLocations,
};
use crate::bus::Delivery;
use crate::domain::courier::{GpsPoint, MAX_BATCH};
use crate::domain::identity::Role;
use crate::domain::ids::OrderId;
use crate::error_code::ErrorCode;
use crate::fulfilment::dispatcher::DispatchError;
use crate::streams::frames::{CourierAck, InboxFrame, location_ack};
use crate::streams::inbox_topic;
use crate::web::gate::{ConnectionGuard, WsUser};
use crate::web::{ApiError, AppState};

/// Offers a session remembers (offer id → order), newest last.
const REMEMBERED_OFFERS: usize = 16;

/// What a courier sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Incoming {
    GoOnline,
    GoOffline,
    Location {
        #[serde(default)]
        point: Option<GpsPoint>,
        #[serde(default)]
        points: Option<Vec<GpsPoint>>,
    },
    OfferResponse {
        offer_id: Uuid,
        accept: bool,
    },
    PickedUp {
        order_id: OrderId,
    },
    Delivered {
        order_id: OrderId,
        code: String,
    },
}

/// A location frame read as a plain struct. Nearly every frame a courier sends is one, and
/// serde reads an internally tagged enum by first copying the whole frame into a buffer of
/// untyped values; this reads the points straight into place. It accepts exactly what
/// [`Incoming::Location`] accepts (an escaped `type` string or a repeated key fails here and
/// goes the enum's way).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    point: Option<GpsPoint>,
    #[serde(default)]
    points: Option<Vec<GpsPoint>>,
}

const KNOWN_TYPES: [&str; 6] = [
    "go_online",
    "go_offline",
    "location",
    "offer_response",
    "picked_up",
    "delivered",
];

struct Inbox(Delivery);

impl Message for Inbox {
    type Result = ();
}

/// One courier's connection.
pub struct CourierSession {
    user: WsUser,
    state: web::Data<AppState>,
    hygiene: Hygiene,
    offers: VecDeque<(Uuid, OrderId)>,
    inbox: Option<crate::bus::Subscription>,
    _guard: ConnectionGuard,
}

/// `GET /ws/courier` — upgrades a courier's connection.
pub async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, guard) = state.ws.open(&req, &state.identity.tokens).await?;
    user.require_role(&[Role::Courier])?;
    let inbox = state
        .bus
        .subscribe(&inbox_topic(user.id))
        .await
        .map_err(|e| ApiError::unavailable(ErrorCode::BusUnavailable, e))?;
    let session = CourierSession {
        hygiene: Hygiene::of_session(&state.ws, TokenBucket::courier(), &user),
        user,
        state,
        offers: VecDeque::new(),
        inbox: Some(inbox),
        _guard: guard,
    };
    super::upgrade(session, &req, stream)
}

impl Actor for CourierSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        hygiene::start(self, ctx);
        ctx.add_stream(super::closing(&self.state));
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(super::stream_of(inbox, Inbox));
        }
        // The courier's actor may be running on another thread (a `GET /couriers/me` before
        // the socket activates it on the actor pool): brought here, every frame of this
        // session reaches it and is answered without waking another thread.
        let couriers = self.state.live.couriers.clone();
        let id = self.user.id;
        actix::spawn(async move {
            if let Err(e) = couriers.bring_here(id).await {
                tracing::debug!(courier_id = %id, error = %e, "courier actor not moved");
            }
            let _ = couriers.send_here(id, Connected(true)).await;
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let couriers = self.state.live.couriers.clone();
        let id = self.user.id;
        actix::spawn(async move {
            let _ = couriers.send_here(id, Connected(false)).await;
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for CourierSession {
    fn handle(&mut self, frame: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        hygiene::handle_frame(self, frame, ctx);
    }
}

impl StreamHandler<Inbox> for CourierSession {
    fn handle(&mut self, Inbox(delivery): Inbox, ctx: &mut Self::Context) {
        let Delivery::Message(payload) = delivery else {
            self.state.metrics.ws_frame_dropped("lagged").inc();
            return;
        };
        let Ok(text) = std::str::from_utf8(&payload) else {
            return;
        };
        match serde_json::from_str::<InboxFrame>(text) {
            Ok(InboxFrame::Offer {
                offer_id, order_id, ..
            }) => {
                if self.offers.len() >= REMEMBERED_OFFERS {
                    self.offers.pop_front();
                }
                self.offers.push_back((offer_id, order_id));
            }
            Ok(InboxFrame::OrderCancelled { order_id }) => {
                let couriers = self.state.live.couriers.clone();
                let id = self.user.id;
                actix::spawn(async move {
                    let _ = couriers
                        .send_here(id, crate::actors::courier::Unassign(order_id))
                        .await;
                });
            }
            Ok(InboxFrame::Assignment { .. }) => {
                // Handed over by a dispatcher elsewhere: the actor here re-reads its row.
                let couriers = self.state.live.couriers.clone();
                let id = self.user.id;
                actix::spawn(async move {
                    let _ = couriers.send_here(id, crate::actors::courier::Reload).await;
                });
            }
            Ok(InboxFrame::OfferWithdrawn { .. }) | Err(_) => {}
        }
        ctx.text(text.to_owned());
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl LiveSession for CourierSession {
    fn hygiene(&mut self) -> &mut Hygiene {
        &mut self.hygiene
    }

    fn on_text(&mut self, text: &str, ctx: &mut Self::Context) {
        // The common cases in one pass; a frame that does not parse is looked at again to say
        // what is wrong with it.
        if let Ok(LocationIn {
            kind: "location",
            point,
            points,
        }) = serde_json::from_str::<LocationIn>(text)
        {
            return self.act(Incoming::Location { point, points }, ctx);
        }
        if let Ok(incoming) = serde_json::from_str::<Incoming>(text) {
            return self.act(incoming, ctx);
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) => {
                return send_error(ctx, ErrorCode::InvalidJson, "the frame is not valid JSON");
            }
        };
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        if !kind.as_deref().is_some_and(|k| KNOWN_TYPES.contains(&k)) {
            return send_error(
                ctx,
                ErrorCode::UnknownType,
                "type must be one of go_online, go_offline, location, offer_response, picked_up, delivered",
            );
        }
        let incoming: Incoming = match serde_json::from_value(value) {
            Ok(incoming) => incoming,
            Err(e) if kind.as_deref() == Some("location") => {
                return send_error(ctx, ErrorCode::InvalidLocation, &e.to_string());
            }
            Err(e) => return send_error(ctx, ErrorCode::InvalidMessage, &e.to_string()),
        };
        self.act(incoming, ctx);
    }
}

impl CourierSession {
    fn act(&mut self, incoming: Incoming, ctx: &mut ws::WebsocketContext<Self>) {
        let couriers = self.state.live.couriers.clone();
        let id = self.user.id;
        match incoming {
            Incoming::GoOnline => {
                let work = async move { couriers.send_here(id, GoOnline).await };
                reply(ctx, work, |view| {
                    ack(&CourierAck::GoOnline {
                        online: view.online,
                    })
                });
            }
            Incoming::GoOffline => {
                let work = async move { couriers.send_here(id, GoOffline).await };
                reply(ctx, work, |view| {
                    ack(&CourierAck::GoOffline {
                        online: view.online,
                    })
                });
            }
            Incoming::Location { point, points } => {
                let batch = match (point, points) {
                    (Some(point), None) => vec![point],
                    (None, Some(points)) if !points.is_empty() && points.len() <= MAX_BATCH => {
                        points
                    }
                    _ => {
                        return send_error(
                            ctx,
                            ErrorCode::InvalidLocation,
                            "send either point or points (1 to 50 of them)",
                        );
                    }
                };
                if let Some(e) = batch.iter().find_map(|p| p.validate().err()) {
                    return send_error(ctx, ErrorCode::InvalidLocation, &e);
                }
                let work = async move { couriers.send_here(id, ReportLocations(batch)).await };
                reply(ctx, work, |ack| location_ack(ack.accepted, ack.dropped));
            }
            Incoming::OfferResponse { offer_id, accept } => {
                let Some(order) = self
                    .offers
                    .iter()
                    .find(|(offer, _)| *offer == offer_id)
                    .map(|(_, order)| *order)
                else {
                    return send_error(ctx, ErrorCode::OfferExpired, "no such offer is open");
                };
                let dispatcher = self.state.live.dispatcher.clone();
                let work = async move { dispatcher.respond(id, order, offer_id, accept).await };
                ctx.spawn(
                    work.into_actor(self)
                        .map(move |outcome, _, ctx| match outcome {
                            Ok(Some(assignment)) => ctx.text(assignment.to_string()),
                            Ok(None) => ctx.text(ack(&CourierAck::OfferResponse { offer_id })),
                            Err(DispatchError::OfferGone) => send_error(
                                ctx,
                                ErrorCode::OfferExpired,
                                "the offer expired or was withdrawn",
                            ),
                            Err(DispatchError::AtCapacity) => send_error(
                                ctx,
                                ErrorCode::AtCapacity,
                                "you already carry as many orders as your profile allows",
                            ),
                            Err(DispatchError::OrderGone) => send_error(
                                ctx,
                                ErrorCode::OfferExpired,
                                "the order no longer needs a courier",
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "offer response failed");
                                send_error(ctx, ErrorCode::Unavailable, "try again")
                            }
                        }),
                );
            }
            Incoming::PickedUp { order_id } => {
                let work = async move { couriers.send_here(id, PickedUp(order_id)).await };
                reply(ctx, work, move |()| ack(&CourierAck::PickedUp { order_id }));
            }
            Incoming::Delivered { order_id, code } => {
                let work = async move { couriers.send_here(id, Delivered(order_id, code)).await };
                reply(ctx, work, move |()| {
                    ack(&CourierAck::Delivered { order_id })
                });
            }
        }
    }
}

/// An acknowledgement as the courier gets it.
fn ack(of: &CourierAck) -> String {
    super::tagged("ack", of).unwrap_or_default()
}

/// Runs `work` and writes its answer (or the error frame) when it comes.
fn reply<T, F, R>(ctx: &mut ws::WebsocketContext<CourierSession>, work: F, render: R)
where
    T: 'static,
    F: std::future::Future<Output = Result<Result<T, CourierError>, crate::actors::ActorError>>
        + 'static,
    R: FnOnce(T) -> String + 'static,
{
    ctx.spawn(actix::fut::wrap_future::<_, CourierSession>(work).map(
        move |outcome, _: &mut CourierSession, ctx| match outcome {
            Ok(Ok(answer)) => ctx.text(render(answer)),
            Ok(Err(e)) => {
                let (code, message) = error_frame(&e);
                send_error(ctx, code, &message);
            }
            Err(e) => {
                tracing::warn!(error = %e, "courier actor unavailable");
                send_error(ctx, ErrorCode::Unavailable, "try again");
            }
        },
    ));
}

/// The error frame for a refused request.
fn error_frame(e: &CourierError) -> (ErrorCode, String) {
    let code = match e {
        CourierError::NotOnline => ErrorCode::NotOnline,
        CourierError::NotYourOrder => ErrorCode::NotYourOrder,
        CourierError::AtCapacity => ErrorCode::AtCapacity,
        CourierError::WrongCode => ErrorCode::WrongCode,
        CourierError::TooManyAttempts => ErrorCode::TooManyAttempts,
        CourierError::Illegal(_) => ErrorCode::IllegalTransition,
        CourierError::Conflict => ErrorCode::Conflict,
        CourierError::Store(_) | CourierError::Unavailable(_) => ErrorCode::Unavailable,
    };
    let message = match e {
        CourierError::Store(_) | CourierError::Unavailable(_) => "try again".to_owned(),
        other => other.to_string(),
    };
    (code, message)
}

super::closes_when_the_node_stops!(CourierSession);

#[cfg(test)]
mod tests {
    use super::*;

    /// The struct path takes a frame only if the enum would have read it the same way.
    #[test]
    fn location_frames_read_alike_on_both_paths() {
        let point =
            r#"{"lat":52.5,"lng":13.4,"accuracy_m":5,"recorded_at":"2026-12-07T10:00:00Z"}"#;
        let frames = [
            format!(r#"{{"type":"location","point":{point}}}"#),
            format!(r#"{{"point":{point},"type":"location"}}"#),
            format!(r#"{{"type":"location","points":[{point},{point}]}}"#),
            format!(r#"{{"type":"location","point":{point},"points":[{point}]}}"#),
            r#"{"type":"location"}"#.to_owned(),
            r#"{"type":"location","point":null}"#.to_owned(),
            format!(r#"{{"type":"location","point":{point},"extra":1}}"#),
            format!(r#"{{"type":"locat\u0069on","point":{point}}}"#),
            format!(r#"{{"type":"location","type":"location","point":{point}}}"#),
            format!(r#"{{"type":"go_online","point":{point}}}"#),
            r#"{"type":"go_online"}"#.to_owned(),
            r#"{"type":"location","point":{"lat":"x"}}"#.to_owned(),
        ];
        let mut taken = 0;
        for frame in &frames {
            let Ok(fast) = serde_json::from_str::<LocationIn>(frame) else {
                continue;
            };
            if fast.kind != "location" {
                continue;
            }
            taken += 1;
            match serde_json::from_str::<Incoming>(frame) {
                Ok(Incoming::Location { point, points }) => {
                    assert_eq!((point, points), (fast.point, fast.points), "{frame}");
                }
                other => panic!("{frame}: the enum reads {other:?}"),
            }
        }
        assert_eq!(
            taken, 6,
            "the well-formed location frames take the struct path"
        );
    }
}
