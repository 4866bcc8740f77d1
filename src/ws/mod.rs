//! WebSocket sessions, each an actix-web-actors session actor:
//!
//! - `/ws/courier` ([`courier`]): a courier's GPS in, offers and assignments out;
//! - `/ws/orders/{id}` ([`orders`]): one order's status events and courier position, resumable
//!   with `after_seq`;
//! - `/ws/vendor` ([`vendor`]): a vendor's order feed, resumable with `after_seq`;
//! - `/ws/admin/ops` ([`ops`]): couriers and open orders per H3 cell, every 2 s;
//! - `/ws/notifications` ([`notifications`]): the signed-in user's in-app notifications.
//!
//! Every handshake goes through [`WsGate`](crate::web::gate::WsGate) (token or ticket, origin, connection
//! cap) and every session through [`hygiene`] (heartbeats, frame size, inbound rate, token
//! expiry). Live data reaches a session from the bus: the HTTP handler subscribes *before*
//! reading anything durable, so nothing published in between is missed, and the session
//! drops duplicates by sequence number. What a session writes is bounded: location frames
//! are coalesced, and a subscription that overflows its bounded buffer on a stream of events
//! closes the session with 1013 so the client resumes from the log. Open sessions are counted
//! in the `hexmarket_ws_sessions` gauge.

pub mod courier;
pub mod hygiene;
pub mod notifications;
pub mod ops;
pub mod orders;
pub mod vendor;

use actix_web::web;
use futures_util::Stream;

use crate::bus::{Delivery, Subscription};
use crate::error_code::ErrorCode;

/// Mounts the WebSocket endpoints (outside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/courier", web::get().to(courier::open))
        .route("/ws/orders/{id}", web::get().to(orders::open))
        .route("/ws/vendor", web::get().to(vendor::open))
        .route("/ws/admin/ops", web::get().to(ops::open))
        .route("/ws/notifications", web::get().to(notifications::open));
}

/// A subscription as a stream the session actor can `add_stream`, each delivery wrapped by
/// `wrap` so one actor can tell several subscriptions apart.
pub(crate) fn stream_of<T: 'static>(
    subscription: Subscription,
    wrap: fn(Delivery) -> T,
) -> impl Stream<Item = T> + 'static {
    futures_util::stream::unfold(subscription, move |mut subscription| async move {
        subscription
            .recv()
            .await
            .map(|delivery| (wrap(delivery), subscription))
    })
}

/// Upgrades the connection to a session; a request that is not a WebSocket handshake gets
/// 400 `not_a_websocket`.
pub(crate) fn upgrade<S>(
    session: S,
    req: &actix_web::HttpRequest,
    stream: web::Payload,
) -> Result<actix_web::HttpResponse, crate::web::ApiError>
where
    S: hygiene::LiveSession
        + actix::StreamHandler<
            Result<actix_web_actors::ws::Message, actix_web_actors::ws::ProtocolError>,
        >,
{
    hygiene::start_session(session, req, stream).map_err(|e| {
        crate::web::ApiError::bad_request(
            ErrorCode::NotAWebsocket,
            format!("expected a WebSocket handshake: {e}"),
        )
    })
}

/// The node is stopping.
pub(crate) struct Closing;

impl actix::Message for Closing {
    type Result = ();
}

/// A stream that yields [`Closing`] once, when the node starts stopping.
pub(crate) fn closing(state: &crate::web::AppState) -> impl Stream<Item = Closing> + 'static {
    let mut rx = state.closing.subscribe();
    futures_util::stream::once(async move {
        // A closed channel means the node is gone: stop as well.
        let _ = rx.recv().await;
        Closing
    })
}

/// Closes the session with 1001 when the node starts stopping (see [`closing`]).
macro_rules! closes_when_the_node_stops {
    ($session:ty) => {
        impl actix::StreamHandler<super::Closing> for $session {
            fn handle(&mut self, _: super::Closing, ctx: &mut Self::Context) {
                super::going_away(ctx);
            }

            fn finished(&mut self, _: &mut Self::Context) {}
        }
    };
}
pub(crate) use closes_when_the_node_stops;

/// Closes a session because the node is stopping; clients reconnect (to another node).
pub(crate) fn going_away<A>(ctx: &mut actix_web_actors::ws::WebsocketContext<A>)
where
    A: actix::Actor<Context = actix_web_actors::ws::WebsocketContext<A>>,
{
    hygiene::close(
        ctx,
        actix_web_actors::ws::CloseCode::Away,
        "server_restarting",
    );
}

/// `{"type": kind, ...fields of value}` as text.
pub(crate) fn tagged<T: serde::Serialize>(kind: &str, value: &T) -> Option<String> {
    let mut value = serde_json::to_value(value).ok()?;
    let object = value.as_object_mut()?;
    object.insert("type".to_owned(), kind.into());
    serde_json::to_string(&value).ok()
}
