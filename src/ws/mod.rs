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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use actix_web::web;
use futures_util::Stream;
use futures_util::task::AtomicWaker;

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
    wake_gated(futures_util::stream::unfold(
        subscription,
        move |mut subscription| async move {
            subscription
                .recv()
                .await
                .map(|delivery| (wrap(delivery), subscription))
        },
    ))
}

/// `inner` (a stream or a future), polled only when it has woken the session (and at first,
/// and after each item).
///
/// A session's context polls every stream, future and timer it was given whenever anything
/// wakes it: a courier's inbox subscription, its revocation watch and its timers were polled
/// on each of the courier's GPS frames and each of its acknowledgements, and polling an empty
/// subscription takes its channel's lock.
pub(crate) fn wake_gated<S>(inner: S) -> WakeGated<S> {
    let gate = Arc::new(Gate {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    WakeGated {
        inner: Box::pin(inner),
        waker: Waker::from(Arc::clone(&gate)),
        gate,
    }
}

/// See [`wake_gated`].
pub(crate) struct WakeGated<S> {
    inner: Pin<Box<S>>,
    gate: Arc<Gate>,
    /// Wakes `gate`: what `inner` is polled with.
    waker: Waker,
}

/// Whether the stream behind it woke since it was last polled, and the task to wake.
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<S> WakeGated<S> {
    /// Polls `inner` with `poll` if it woke since it was last polled.
    fn poll_gated<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.gate.task.register(cx.waker());
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = poll(self.inner.as_mut(), &mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            // A stream may have more ready at once.
            self.gate.woken.store(true, Ordering::Release);
        }
        polled
    }
}

impl<S: Stream> Stream for WakeGated<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut()
            .poll_gated(cx, |inner, cx| inner.poll_next(cx))
    }
}

impl<F: Future> Future for WakeGated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().poll_gated(cx, |inner, cx| inner.poll(cx))
    }
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
    wake_gated(futures_util::stream::once(async move {
        // A closed channel means the node is gone: stop as well.
        let _ = rx.recv().await;
        Closing
    }))
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A stream of what is pushed into it, counting its polls.
    #[derive(Default)]
    struct Queue {
        items: Mutex<VecDeque<u32>>,
        waker: Mutex<Option<Waker>>,
        polls: AtomicUsize,
    }

    struct Reader(Arc<Queue>);

    impl Stream for Reader {
        type Item = u32;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if let Some(item) = self.0.items.lock().unwrap().pop_front() {
                return Poll::Ready(Some(item));
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_stream_is_polled_only_after_it_woke() {
        let queue = Arc::new(Queue::default());
        let mut gated = wake_gated(Reader(Arc::clone(&queue)));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let polls = || queue.polls.load(Ordering::SeqCst);

        // Polled at first; then not again until it wakes, however often the task is polled.
        assert!(Pin::new(&mut gated).poll_next(&mut cx).is_pending());
        for _ in 0..3 {
            assert!(Pin::new(&mut gated).poll_next(&mut cx).is_pending());
        }
        assert_eq!(polls(), 1);

        // Two items and a wake: the task is woken, and the stream polled until it is empty.
        queue.items.lock().unwrap().extend([7, 8]);
        queue.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Pin::new(&mut gated).poll_next(&mut cx),
            Poll::Ready(Some(7))
        );
        assert_eq!(
            Pin::new(&mut gated).poll_next(&mut cx),
            Poll::Ready(Some(8))
        );
        assert!(Pin::new(&mut gated).poll_next(&mut cx).is_pending());
        assert!(Pin::new(&mut gated).poll_next(&mut cx).is_pending());
        assert_eq!(polls(), 4);
    }

    #[test]
    fn a_gated_future_completes_once_woken() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let mut gated = wake_gated(rx);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        tx.send(5).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut gated).poll(&mut cx), Poll::Ready(Ok(5)));
    }
}
