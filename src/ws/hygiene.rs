//! What every session does alike: heartbeats, idle and access-expiry closes, the inbound frame
//! size and rate limits, error frames and close codes.
//!
//! A session actor implements [`LiveSession`], starts with [`start_session`], calls [`start`]
//! from `started()` and hands every inbound frame to [`handle_frame`]; it only ever sees the
//! text frames that passed these checks, in [`LiveSession::on_text`].

use std::time::{Duration, Instant};

use actix::{
    ActorContext as _, ActorFutureExt as _, ActorState, ActorStreamExt as _, AsyncContext as _,
    StreamHandler,
};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error_code::ErrorCode;
use crate::identity::revocation::RevocationWatch;
use crate::web::gate::{WsGate, WsUser};

/// How often the server pings.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// A session that sent no frame at all (pong included) for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest inbound frame; a larger one closes the session with 1009.
pub const MAX_FRAME: usize = 64 * 1024;
/// Close code sent when the access the session was opened with ends: it expired (reason
/// `token_expired`) or was revoked (reason `token_revoked`). Either way the client needs a new
/// access token before it reconnects.
pub const TOKEN_EXPIRED: u16 = 4001;

/// A per-session inbound rate limit: `burst` frames at once, refilled at `rate_per_s`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u32, burst: u32) -> Self {
        TokenBucket {
            rate_per_s: f64::from(rate_per_s),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Couriers stream locations: 20 frames/s, burst 40.
    pub fn courier() -> Self {
        Self::new(20, 40)
    }

    /// Everyone else mostly listens: 5 frames/s, burst 20.
    pub fn watcher() -> Self {
        Self::new(5, 20)
    }

    /// Spends one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The shared per-session state; a session actor keeps one and lends it through
/// [`LiveSession::hygiene`].
#[derive(Debug)]
pub struct Hygiene {
    last_heard: Instant,
    bucket: TokenBucket,
    expires_at: DateTime<Utc>,
    clock: Clock,
    revocation: Option<RevocationWatch>,
}

impl Hygiene {
    /// `expires_at` is the user's access expiry ([`WsUser::expires_at`]); `clock` is the one it
    /// is measured against (the gate's, [`WsGate::clock`]).
    ///
    /// [`WsUser::expires_at`]: crate::web::gate::WsUser::expires_at
    /// [`WsGate::clock`]: crate::web::gate::WsGate::clock
    pub fn new(bucket: TokenBucket, expires_at: DateTime<Utc>, clock: Clock) -> Self {
        Hygiene {
            last_heard: Instant::now(),
            bucket,
            expires_at,
            clock,
            revocation: None,
        }
    }

    /// The hygiene of a session `user` opened through `gate`: closed when their access expires
    /// or is revoked.
    pub fn of_session(gate: &WsGate, bucket: TokenBucket, user: &WsUser) -> Self {
        Hygiene::new(bucket, user.expires_at, gate.clock().clone())
            .revoked_by(gate.revocation_watch(user))
    }

    /// Also closes the session when `watch` reports its access revoked.
    pub fn revoked_by(mut self, watch: RevocationWatch) -> Self {
        self.revocation = Some(watch);
        self
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
}

/// A WebSocket session actor that shares the hygiene of this module.
pub trait LiveSession: actix::Actor<Context = ws::WebsocketContext<Self>> {
    fn hygiene(&mut self) -> &mut Hygiene;

    /// A text frame that passed the rate limit. Streams that only speak keep the default,
    /// which answers every message with an error frame.
    fn on_text(&mut self, _text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        send_error(
            ctx,
            ErrorCode::UnknownType,
            "this stream only speaks; it takes no messages",
        );
    }
}

/// Upgrades the request and starts `session`, with inbound frames capped at [`MAX_FRAME`].
pub fn start_session<S>(
    session: S,
    req: &HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error>
where
    S: LiveSession + StreamHandler<Result<ws::Message, ws::ProtocolError>>,
{
    ws::WsResponseBuilder::new(session, req, stream)
        .frame_size(MAX_FRAME)
        .start()
}

/// Starts the heartbeat, the access-expiry timer and the wait for a revocation; call it from
/// the session's `started()`.
///
/// Each is polled only when it is due or woken ([`wake_gated`](super::wake_gated)), not on
/// every frame the session handles.
pub fn start<S: LiveSession>(session: &mut S, ctx: &mut ws::WebsocketContext<S>) {
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beats = futures_util::stream::unfold(beats, |mut beats| async move {
        beats.tick().await;
        Some(((), beats))
    });
    ctx.spawn(
        actix::fut::wrap_stream::<_, S>(super::wake_gated(beats))
            .map(|(), session: &mut S, ctx| {
                let quiet = session.hygiene().last_heard.elapsed();
                if quiet > IDLE_TIMEOUT {
                    tracing::debug!("WebSocket session idle, closing");
                    close(ctx, CloseCode::Normal, "idle");
                } else if quiet >= PING_EVERY / 2 {
                    // A peer that spoke lately (a courier streaming its position) is known to
                    // be there; only quiet ones are asked.
                    ctx.ping(b"");
                }
            })
            .finish(),
    );
    let hygiene = session.hygiene();
    let left = (hygiene.expires_at - hygiene.clock.now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    ctx.spawn(
        actix::fut::wrap_future::<_, S>(super::wake_gated(tokio::time::sleep(left))).map(
            |(), _, ctx| {
                tracing::debug!("WebSocket access expired, closing");
                close(ctx, CloseCode::Other(TOKEN_EXPIRED), "token_expired");
            },
        ),
    );
    if let Some(watch) = hygiene.revocation.take() {
        // Woken by the node's in-memory marks (raised by this node, the bus or the store
        // poll), so a revoked session closes as soon as its node learns of the revocation.
        ctx.spawn(
            actix::fut::wrap_future::<_, S>(super::wake_gated(watch.revoked())).map(
                |(), _, ctx| {
                    tracing::debug!("WebSocket access revoked, closing");
                    close(ctx, CloseCode::Other(TOKEN_EXPIRED), "token_revoked");
                },
            ),
        );
    }
}

/// Handles one inbound frame; call it from the session's `StreamHandler::handle`.
pub fn handle_frame<S: LiveSession>(
    session: &mut S,
    frame: Result<ws::Message, ws::ProtocolError>,
    ctx: &mut ws::WebsocketContext<S>,
) {
    // Frames still queued when the session decided to close are not acted on.
    if ctx.state() != ActorState::Running {
        return;
    }
    let now = Instant::now();
    let hygiene = session.hygiene();
    hygiene.last_heard = now;
    let frame = match frame {
        Ok(frame) => frame,
        Err(ws::ProtocolError::Overflow) => {
            close(ctx, CloseCode::Size, "frame_too_large");
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket protocol error");
            close(ctx, CloseCode::Protocol, "protocol_error");
            return;
        }
    };
    // Every frame a peer can repeat at will costs a token (pings too: each one makes us
    // write a pong); a close is the last frame anyway.
    let counted = !matches!(frame, ws::Message::Close(_) | ws::Message::Nop);
    if counted && !hygiene.bucket.take(now) {
        tracing::debug!("WebSocket session over its rate limit, closing");
        close(ctx, CloseCode::Policy, "rate_limited");
        return;
    }
    match frame {
        ws::Message::Text(text) => session.on_text(&text, ctx),
        ws::Message::Ping(payload) => ctx.pong(&payload),
        ws::Message::Pong(_) | ws::Message::Nop => {}
        ws::Message::Binary(_) => send_error(
            ctx,
            ErrorCode::UnsupportedFrame,
            "binary frames are not supported; send JSON text frames",
        ),
        // The codec does not reassemble fragments, and accepting them would let a message
        // grow past MAX_FRAME one fragment at a time.
        ws::Message::Continuation(_) => {
            send_error(
                ctx,
                ErrorCode::UnsupportedFrame,
                "fragmented messages are not supported; send each message as one frame",
            );
            close(ctx, CloseCode::Unsupported, "fragmented_message");
        }
        ws::Message::Close(reason) => {
            ctx.close(reason);
            ctx.stop();
        }
    }
}

/// Sends `{"type":"error","code":..,"message":..}`; the session stays open.
pub fn send_error<A>(ctx: &mut ws::WebsocketContext<A>, code: ErrorCode, message: &str)
where
    A: actix::Actor<Context = ws::WebsocketContext<A>>,
{
    let frame = serde_json::json!({ "type": "error", "code": code.as_str(), "message": message });
    ctx.text(frame.to_string());
}

/// Sends a close frame and stops the session (queued frames still go out first).
pub fn close<A>(ctx: &mut ws::WebsocketContext<A>, code: CloseCode, reason: &str)
where
    A: actix::Actor<Context = ws::WebsocketContext<A>>,
{
    ctx.close(Some(CloseReason {
        code,
        description: Some(reason.to_owned()),
    }));
    ctx.stop();
}

/// Closes a watcher that fell behind on events (1013 "too_slow"); it resumes with `after_seq`.
pub fn close_too_slow<A>(ctx: &mut ws::WebsocketContext<A>)
where
    A: actix::Actor<Context = ws::WebsocketContext<A>>,
{
    close(ctx, CloseCode::Again, "too_slow");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses() {
        let mut bucket = TokenBucket::new(5, 20);
        let now = bucket.last;
        for i in 0..20 {
            assert!(bucket.take(now), "frame {i} of the burst");
        }
        assert!(!bucket.take(now));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let mut bucket = TokenBucket::courier();
        let start = bucket.last;
        for _ in 0..40 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start));

        // 20/s: one token every 50 ms.
        let later = start + Duration::from_millis(100);
        assert!(bucket.take(later));
        assert!(bucket.take(later));
        assert!(!bucket.take(later));

        let much_later = later + Duration::from_secs(60);
        let allowed = (0..100).filter(|_| bucket.take(much_later)).count();
        assert_eq!(allowed, 40, "the refill stops at the burst");
    }

    #[test]
    fn a_bucket_ignores_time_going_backwards() {
        let mut bucket = TokenBucket::watcher();
        let start = bucket.last + Duration::from_secs(1);
        for _ in 0..20 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start - Duration::from_millis(500)));
    }

    #[test]
    fn the_close_codes_are_the_protocols() {
        assert_eq!(u16::from(CloseCode::Size), 1009);
        assert_eq!(u16::from(CloseCode::Policy), 1008);
        assert_eq!(u16::from(CloseCode::Again), 1013);
        assert_eq!(u16::from(CloseCode::Other(TOKEN_EXPIRED)), 4001);
    }
}
