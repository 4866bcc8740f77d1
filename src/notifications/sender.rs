//! The sender: sends the outbox's due messages on the node that holds the consumer's lease.
//!
//! Each message is rendered when it is sent (in the recipient's language, to their address of
//! the moment) and its outcome recorded by compare-and-set on its row: sent; skipped (nothing
//! to send it to: an erased account, no verified phone); retried later after a failure the
//! provider may get over (unreachable, timed out, 5xx, rate limited), with exponential backoff
//! and jitter; or dead after a refusal of this message or [`MAX_ATTEMPTS`] failures. A
//! provider's failure never reaches the order: it only delays or drops the message, with a
//! record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use futures_util::stream;

use super::Notifications;
use crate::domain::notification::{DeliveryState, Medium, OutboxMessage};
use crate::notify::{Email, NotifyError, Sms};
use crate::store::StoreResult;
use crate::store::notifications::{OutboxRepo, Queued};
use crate::store::typed::Versioned;

/// How often the outbox is looked at.
pub const ROUND: Duration = Duration::from_millis(200);
/// Attempts before a message is given up on.
pub const MAX_ATTEMPTS: u32 = 10;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Messages taken per round, and sent at once.
const BATCH: usize = 512;
const CONCURRENCY: usize = 128;
/// How far before the oldest row it saw last a round starts reading the queue: a message
/// queued as due at `t` can reach the store a little after a round that began at `t` read it.
const LATE_ROWS: Duration = Duration::from_secs(2);
/// How often the sender reads the whole queue (rows queued as due long ago: by a node whose
/// clock is behind, or by an earlier version), and when it starts to lead.
const WHOLE_QUEUE_EVERY: Duration = Duration::from_secs(30);

/// Where the sender's next round starts to read the queue.
#[derive(Debug, Default)]
pub(super) struct QueueCursor {
    from: Option<DateTime<Utc>>,
    whole_at: Option<std::time::Instant>,
}

impl QueueCursor {
    /// Where a round starting now reads from; `None`: the whole queue.
    fn start(&mut self) -> Option<DateTime<Utc>> {
        match self.whole_at {
            Some(at) if at.elapsed() < WHOLE_QUEUE_EVERY => self.from,
            _ => {
                self.whole_at = Some(std::time::Instant::now());
                None
            }
        }
    }

    /// After a round that read at `now` and found `oldest` first.
    fn advance(&mut self, now: DateTime<Utc>, oldest: Option<DateTime<Utc>>) {
        let oldest = oldest.map_or(now, |o| o.min(now));
        self.from = Some(oldest - chrono::Duration::from_std(LATE_ROWS).unwrap_or_default());
    }

    /// Not leading any more: the next round (if it leads again) reads the whole queue.
    fn reset(&mut self) {
        *self = QueueCursor::default();
    }
}

/// The delay before attempt `attempts + 1`: doubling from [`FIRST_BACKOFF`], capped, and
/// drawn between half and all of it so that retries of many messages spread out.
pub fn backoff(attempts: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let ceiling = doubled.min(MAX_BACKOFF);
    let half = ceiling / 2;
    half + Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
}

impl Notifications {
    /// Sends every due message (while this node leads); how many were attempted.
    pub async fn send_due(&self) -> StoreResult<usize> {
        let mut attempted = 0;
        if !self.leads() {
            self.inner.queue_cursor.lock().reset();
        }
        while self.leads() {
            let now = self.inner.clock.now();
            let from = self.inner.queue_cursor.lock().start();
            let due = self.inner.outbox.due(now, from, BATCH).await?;
            let oldest = due.first().map(|q| q.due);
            self.inner.queue_cursor.lock().advance(now, oldest);
            if due.is_empty() {
                break;
            }
            let outcomes: Vec<StoreResult<()>> = stream::iter(due.iter().cloned())
                .map(|queued| {
                    let this = self.clone();
                    async move { this.send_one(queued).await }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for outcome in outcomes {
                outcome?;
            }
            attempted += due.len();
            if due.len() < BATCH {
                break;
            }
        }
        Ok(attempted)
    }

    async fn send_one(&self, queued: Queued) -> StoreResult<()> {
        let inner = &self.inner;
        let id = queued.id;
        let row = match inner.outbox.get(id).await? {
            Some(row) if OutboxRepo::in_place(&queued, &row.value) => row,
            other => {
                // Its queue row outlived the outcome (a crash in between) or the message moved
                // on (a retry, a redelivery): put the queue right.
                let message = other.map(|r| r.value);
                return inner.outbox.requeue(&queued, message.as_ref()).await;
            }
        };
        let now = inner.clock.now();
        if row.value.next_at > now || !self.leads() {
            return Ok(());
        }
        let handed_before = inner.handed.was_handed(id, row.version);
        let outcome = if handed_before {
            // A provider took it before this process (or its record) died: never again.
            tracing::info!(notification = %id, medium = row.value.medium.as_str(),
                "handed to its provider before a restart; recorded as sent, not sent again");
            Attempt::Sent
        } else {
            let outcome = self.attempt(&row.value).await?;
            if let Attempt::Sent = outcome {
                inner.handed.handed(id, row.version);
            }
            outcome
        };
        let message = outcome_of(&row, outcome, now);
        let counted = match message.state {
            DeliveryState::Sent if handed_before => "recovered",
            DeliveryState::Sent => "sent",
            DeliveryState::Pending => "retried",
            DeliveryState::Dead => "dead",
            DeliveryState::Skipped => "skipped",
        };
        inner
            .metrics
            .notification(message.medium.as_str(), counted)
            .inc();
        match message.state {
            DeliveryState::Dead => tracing::warn!(
                notification = %id, medium = message.medium.as_str(),
                error = message.last_error.as_deref().unwrap_or(""),
                "notification given up on"),
            DeliveryState::Pending => tracing::info!(
                notification = %id, medium = message.medium.as_str(), attempts = message.attempts,
                error = message.last_error.as_deref().unwrap_or(""),
                "notification not sent; retried later"),
            _ => {}
        }
        inner.outbox.record(row.version, &message, &queued).await?;
        inner.handed.recorded(id);
        Ok(())
    }

    /// Renders and sends one message.
    async fn attempt(&self, message: &OutboxMessage) -> StoreResult<Attempt> {
        let inner = &self.inner;
        let Some(user) = inner.users.get(message.recipient).await?.map(|u| u.value) else {
            return Ok(Attempt::Skipped("no such account"));
        };
        if user.erased {
            return Ok(Attempt::Skipped("the account was erased"));
        }
        let Some(record) = inner.orders.load(message.order_id).await?.map(|r| r.value) else {
            return Ok(Attempt::Skipped("no such order"));
        };
        let Some(event) = inner
            .orders
            .event(message.order_id, message.order_seq)
            .await?
        else {
            return Ok(Attempt::Skipped("no such order event"));
        };
        if message.medium == Medium::Webhook {
            return Ok(match self.post_webhook(message, &record, &event).await? {
                Some(Ok(())) => Attempt::Sent,
                Some(Err(e)) => Attempt::Failed(e),
                None => Attempt::Skipped("the endpoint was deleted"),
            });
        }
        let store = inner
            .vendors
            .vendor(record.order.vendor_id)
            .await?
            .map(|v| v.value);
        let context = self.context(&user, message.audience, &record, &event, store.as_ref());
        let key = (user.locale, message.audience, message.event);
        let rendered = if message.medium == Medium::Email {
            inner.templates.render(key.0, key.1, key.2, &context)
        } else {
            inner.templates.render_short(key.0, key.1, key.2, &context)
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Failed(NotifyError::Invalid(e.to_string()))),
        };
        let sent = match message.medium {
            Medium::Email => {
                let email = Email::new(
                    user.email.as_str(),
                    rendered.subject.clone(),
                    rendered.text.clone(),
                )
                .with_html(rendered.html.clone())
                .with_id(message.id);
                inner.email.send(&email).await
            }
            Medium::Sms => match (&user.phone, user.phone_verified) {
                (Some(phone), true) => {
                    inner
                        .sms
                        .send(&Sms::new(phone.as_str(), rendered.sms()))
                        .await
                }
                _ => return Ok(Attempt::Skipped("no verified phone")),
            },
            Medium::Push => {
                let Some(subscription) = user
                    .push_subscriptions
                    .iter()
                    .find(|s| Some(s.id) == message.endpoint)
                else {
                    return Ok(Attempt::Skipped("the push subscription is gone"));
                };
                let payload = serde_json::json!({
                    "id": message.id,
                    "event": message.event,
                    "order_id": message.order_id,
                    "title": rendered.title,
                    "body": rendered.body,
                });
                match self.post_push(message, subscription, &payload).await? {
                    Some(sent) => sent,
                    None => {
                        return Ok(Attempt::Skipped(
                            "the push service dropped the subscription",
                        ));
                    }
                }
            }
            Medium::InApp | Medium::Webhook => return Ok(Attempt::Skipped("not an outbox medium")),
        };
        Ok(match sent {
            Ok(()) => Attempt::Sent,
            Err(e) => Attempt::Failed(e),
        })
    }
}

/// What one attempt came to.
enum Attempt {
    Sent,
    Skipped(&'static str),
    Failed(NotifyError),
}

fn outcome_of(
    row: &Versioned<OutboxMessage>,
    attempt: Attempt,
    now: DateTime<Utc>,
) -> OutboxMessage {
    let message = &row.value;
    let attempts = message.attempts + 1;
    let done = |state, error: Option<String>| OutboxMessage {
        state,
        attempts,
        last_error: error.or_else(|| message.last_error.clone()),
        done_at: Some(now),
        ..message.clone()
    };
    match attempt {
        Attempt::Sent => done(DeliveryState::Sent, None),
        Attempt::Skipped(why) => done(DeliveryState::Skipped, Some(why.to_owned())),
        Attempt::Failed(NotifyError::Invalid(why)) => done(DeliveryState::Dead, Some(why)),
        Attempt::Failed(NotifyError::Unavailable(why))
            if out_of_attempts(message, attempts, now) =>
        {
            done(DeliveryState::Dead, Some(why))
        }
        Attempt::Failed(NotifyError::Unavailable(why)) => OutboxMessage {
            state: DeliveryState::Pending,
            attempts,
            next_at: now + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default(),
            last_error: Some(why),
            ..message.clone()
        },
    }
}

/// Whether a failed message has had its last attempt: [`MAX_ATTEMPTS`] for people's channels;
/// a day of retries for webhooks.
fn out_of_attempts(message: &OutboxMessage, attempts: u32, now: DateTime<Utc>) -> bool {
    match message.medium {
        Medium::Webhook => now - message.created_at >= super::webhooks::RETRY_FOR,
        _ => attempts >= MAX_ATTEMPTS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempts in 1..=30 {
            let d = backoff(attempts);
            let full = FIRST_BACKOFF
                .saturating_mul(1u32 << (attempts - 1).min(20))
                .min(MAX_BACKOFF);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} vs {full:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn a_round_reads_from_a_little_before_the_oldest_row_it_found_and_now_and_then_everything() {
        let mut cursor = QueueCursor::default();
        assert_eq!(
            cursor.start(),
            None,
            "the first round reads the whole queue"
        );
        let now = Utc::now();
        let late = chrono::Duration::from_std(LATE_ROWS).unwrap();
        let oldest = now - chrono::Duration::seconds(10);
        cursor.advance(now, Some(oldest));
        assert_eq!(cursor.start(), Some(oldest - late));
        cursor.advance(now, None);
        assert_eq!(
            cursor.start(),
            Some(now - late),
            "nothing was due: from now on"
        );
        cursor.whole_at = Some(std::time::Instant::now() - WHOLE_QUEUE_EVERY);
        assert_eq!(cursor.start(), None, "the whole queue again");
        assert_eq!(cursor.start(), Some(now - late));
        cursor.reset();
        assert_eq!(cursor.start(), None, "a node that leads again reads it all");
    }
}
