//! The consumer: reads the order journal behind its cursor and turns each order event into
//! in-app entries and outbox messages.
//!
//! Each round the node takes (or renews) the consumer's lease on the cursor row, then reads
//! notes up to [`SETTLE`](crate::store::journal::SETTLE) ago, a page at a time, derives them
//! concurrently and moves the cursor past them. A note whose event is not in the order's log
//! yet (its writer is between the note and the append) stops the page there until it appears
//! or [`GIVE_UP_AFTER`] passes (the writer died or lost the race: nothing to tell). A node that
//! loses the cursor row to another stops; what it derived meanwhile is idempotent.

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use futures_util::stream;

use super::Notifications;
use super::templates::{MessageContext, MessageLine};
use crate::domain::account::User;
use crate::domain::catalog::Vendor;
use crate::domain::ids::UserId;
use crate::domain::notification::{
    Audience, FeedItem, Medium, MessageOf, OutboxMessage, audiences, event_of, notification_id,
    push_id, wants,
};
use crate::domain::order::{OrderEvent, OrderEventKind, OrderRecord};
use crate::domain::webhook::{WebhookScope, delivery_id};
use crate::store::StoreResult;
use crate::store::journal::{AtEvent, ConsumerCursor, JournalNote, Position};

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "notifications";
/// How often a node looks at the journal.
pub const ROUND: Duration = Duration::from_millis(250);
/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// Notes read per page.
const PAGE: usize = 500;
/// Notes derived at once.
const CONCURRENCY: usize = 128;
/// A note whose event is still missing this long after it was written is dropped.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// Where a consumer that never ran starts: this far back.
const FIRST_START_LOOKBACK_MS: i64 = 60_000;

/// What became of one note.
enum Derived {
    Done,
    /// The event is not in the log yet: stop before this note for now.
    NotYet,
}

impl Notifications {
    /// One round: take the lease, then derive notes until the journal is read up to the
    /// settle horizon. Returns how many notes were derived.
    pub async fn consume(&self) -> StoreResult<usize> {
        let inner = &self.inner;
        let now = Utc::now();
        let (mut cursor, mut version) = match inner.journal.cursor(CONSUMER).await? {
            Some(found) => (found.value, found.version),
            None => (
                ConsumerCursor {
                    position: Position::at(now.timestamp_millis() - FIRST_START_LOOKBACK_MS),
                    holder: inner.node,
                    lease_until: now,
                },
                0,
            ),
        };
        if cursor.holder != inner.node && cursor.lease_until > now {
            *inner.lease.lock() = None;
            return Ok(0);
        }
        let lease = chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut derived = 0;
        // A lease of this node's with more than half to run is not renewed before reading: an
        // idle round writes nothing.
        let mut renew = cursor.holder != inner.node || cursor.lease_until - Utc::now() < lease / 2;
        if !renew {
            *inner.lease.lock() = Some(cursor.lease_until);
        }
        loop {
            if renew {
                cursor.holder = inner.node;
                cursor.lease_until = Utc::now() + lease;
                match inner
                    .journal
                    .save_cursor(CONSUMER, version, &cursor)
                    .await?
                {
                    Some(v) => {
                        version = v;
                        *inner.lease.lock() = Some(cursor.lease_until);
                    }
                    None => {
                        *inner.lease.lock() = None;
                        return Ok(derived);
                    }
                }
            }
            renew = true;
            let until =
                Utc::now().timestamp_millis() - crate::store::journal::SETTLE.as_millis() as i64;
            let (notes, end) = inner.journal.read(&cursor.position, until, PAGE).await?;
            if notes.is_empty() {
                if end != cursor.position {
                    cursor.position = end;
                    continue;
                }
                return Ok(derived);
            }
            let outcomes: Vec<StoreResult<Derived>> = stream::iter(notes.iter().copied())
                .map(|note| {
                    let this = self.clone();
                    async move { this.derive(&note).await }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            let mut stopped = false;
            for (note, outcome) in notes.iter().zip(outcomes) {
                match outcome? {
                    Derived::Done => {
                        derived += 1;
                        inner.metrics.notification_events.inc();
                        cursor.position = Position {
                            minute: note.at_ms.div_euclid(60_000),
                            after: Some(note.clustering()),
                        };
                    }
                    Derived::NotYet => {
                        stopped = true;
                        break;
                    }
                }
            }
            if !stopped && notes.len() < PAGE {
                cursor.position = end;
            }
            if stopped || notes.len() < PAGE {
                cursor.lease_until = Utc::now() + lease;
                let kept = inner
                    .journal
                    .save_cursor(CONSUMER, version, &cursor)
                    .await?
                    .is_some();
                *inner.lease.lock() = kept.then_some(cursor.lease_until);
                return Ok(derived);
            }
        }
    }

    /// Turns one note into in-app entries and outbox messages.
    async fn derive(&self, note: &JournalNote) -> StoreResult<Derived> {
        let inner = &self.inner;
        let missing = || {
            if Utc::now() - note.at() > GIVE_UP_AFTER {
                Derived::Done
            } else {
                Derived::NotYet
            }
        };
        if note.described && self.nobody_hears(note).await? {
            return Ok(Derived::Done);
        }
        let Some(event) = inner.orders.event(note.order_id, note.seq).await? else {
            return Ok(missing());
        };
        let Some(kind) = event_of(&event.kind) else {
            return Ok(Derived::Done);
        };
        let Some(record) = inner.orders.load(note.order_id).await? else {
            return Ok(missing());
        };
        let record = record.value;
        // The row follows its log within moments; until it has caught up with this event it
        // may not name everyone concerned (the payment, the courier), nor the refunds.
        if record.seq < event.seq
            && let Derived::NotYet = missing()
        {
            return Ok(Derived::NotYet);
        }
        let then = parties_then(note, &record, &event);
        // The store is read once, and only when someone is told something.
        let mut store: Option<Option<Vendor>> = None;
        for &audience in audiences(kind) {
            if audience == Audience::Store && store.is_none() {
                store = Some(self.store_of(&record).await?);
            }
            let owner = store.as_ref().and_then(|s| s.as_ref().map(|s| s.owner));
            let Some(recipient) = recipient(audience, &record, then, owner) else {
                continue;
            };
            let Some(user) = inner.users.get(recipient).await?.map(|u| u.value) else {
                continue;
            };
            let media: Vec<Medium> = [Medium::InApp, Medium::Email, Medium::Sms, Medium::Push]
                .into_iter()
                .filter(|&m| wants(&user.notifications, audience, kind, m))
                .collect();
            if user.erased || media.is_empty() {
                continue;
            }
            if store.is_none() {
                store = Some(self.store_of(&record).await?);
            }
            let store = store.as_ref().and_then(Option::as_ref);
            if media.contains(&Medium::InApp) {
                let context = self.context(&user, audience, &record, &event, store);
                let rendered =
                    match inner
                        .templates
                        .render_short(user.locale, audience, kind, &context)
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "notification not rendered; skipped");
                            continue;
                        }
                    };
                let item = FeedItem {
                    id: notification_id(record.id(), event.seq, user.id, Medium::InApp),
                    at: event.at,
                    event: Some(kind),
                    audience: Some(audience),
                    order_id: Some(record.id()),
                    notice: None,
                    subject: None,
                    title: rendered.title,
                    body: rendered.body,
                    read_at: None,
                };
                if inner.feed.add(user.id, &item).await? {
                    inner.metrics.notification("in_app", "written").inc();
                    self.publish(user.id, &item).await;
                }
            }
            let now = inner.clock.now();
            // One message per browser for push; one per channel otherwise.
            let targets = media
                .iter()
                .filter(|&&m| m != Medium::InApp)
                .flat_map(|&medium| match medium {
                    Medium::Push => user
                        .push_subscriptions
                        .iter()
                        .map(|s| {
                            let id = push_id(record.id(), event.seq, user.id, s.id);
                            (medium, id, Some(s.id))
                        })
                        .collect::<Vec<_>>(),
                    _ => vec![(
                        medium,
                        notification_id(record.id(), event.seq, user.id, medium),
                        None,
                    )],
                })
                .collect::<Vec<_>>();
            for (medium, id, endpoint) in targets {
                let of = MessageOf {
                    id,
                    medium,
                    recipient: user.id,
                    audience,
                    event: kind,
                    order_id: record.id(),
                    order_seq: event.seq,
                    endpoint,
                };
                inner
                    .outbox
                    .enqueue(&OutboxMessage::pending(of, now))
                    .await?;
            }
        }
        self.derive_webhooks(kind, &record, &event, then.paid)
            .await?;
        Ok(Derived::Done)
    }

    /// One delivery per endpoint that asked for this event: the store's own endpoints once the
    /// order was `paid`, the platform's always.
    async fn derive_webhooks(
        &self,
        kind: crate::domain::account::NotificationEvent,
        record: &OrderRecord,
        event: &OrderEvent,
        paid: bool,
    ) -> StoreResult<()> {
        let inner = &self.inner;
        let now = inner.clock.now();
        for endpoint in inner.webhooks.for_vendor(record.order.vendor_id).await? {
            let store_scoped = matches!(endpoint.scope, WebhookScope::Store { .. });
            if !endpoint.wants(kind) || (store_scoped && !paid) {
                continue;
            }
            let audience = if store_scoped {
                Audience::Store
            } else {
                Audience::Customer
            };
            let of = MessageOf {
                id: delivery_id(record.id(), event.seq, endpoint.id),
                medium: Medium::Webhook,
                recipient: endpoint.owner,
                audience,
                event: kind,
                order_id: record.id(),
                order_seq: event.seq,
                endpoint: Some(endpoint.id),
            };
            let message = OutboxMessage::pending(of, now);
            inner.outbox.enqueue(&message).await?;
            // Keyed by the event's time, so a second derivation meets the same row.
            inner
                .webhooks
                .log(endpoint.id, event.at, message.id)
                .await?;
        }
        Ok(())
    }

    /// Whether a described note can be passed over without reading its order: its event is
    /// nobody's news, or it is the order's creation and its customer wants no message about
    /// that. (A note whose writer lost the race for its number describes an event that is not
    /// in the log; the winner's note describes the one that is.)
    async fn nobody_hears(&self, note: &JournalNote) -> StoreResult<bool> {
        let Some(event) = note.event else {
            return Ok(true);
        };
        if event != crate::domain::account::NotificationEvent::OrderCreated || note.seq != 1 {
            return Ok(false);
        }
        let Some(customer) = note.customer else {
            return Ok(false);
        };
        Ok(match self.inner.users.get(customer).await? {
            Some(user) => {
                user.value.erased
                    || ![Medium::InApp, Medium::Email, Medium::Sms, Medium::Push]
                        .into_iter()
                        .any(|m| wants(&user.value.notifications, Audience::Customer, event, m))
            }
            None => true,
        })
    }

    async fn store_of(&self, record: &OrderRecord) -> StoreResult<Option<Vendor>> {
        Ok(self
            .inner
            .vendors
            .vendor(record.order.vendor_id)
            .await?
            .map(|v| v.value))
    }

    /// What the templates of a message about `event` to `user` are rendered with.
    pub(crate) fn context(
        &self,
        user: &User,
        audience: Audience,
        record: &OrderRecord,
        event: &OrderEvent,
        store: Option<&Vendor>,
    ) -> MessageContext {
        let id = record.id().to_string();
        let amount = match &event.kind {
            OrderEventKind::Refunded { amount, .. }
            | OrderEventKind::PaymentReturned { amount } => amount.to_string(),
            _ => String::new(),
        };
        MessageContext {
            name: user.name.clone(),
            reference: id.chars().take(8).collect::<String>().to_uppercase(),
            store: store.map(|s| s.name.clone()).unwrap_or_default(),
            total: record
                .totals
                .map(|t| t.total.to_string())
                .unwrap_or_default(),
            amount,
            reason: record.rejection_reason.clone().unwrap_or_default(),
            code: match audience {
                Audience::Customer => record.handoff_code.clone().unwrap_or_default(),
                _ => String::new(),
            },
            items: record.order.lines.iter().map(|l| l.quantity).sum(),
            lines: record
                .order
                .lines
                .iter()
                .map(|l| MessageLine {
                    title: l.title.clone(),
                    quantity: l.quantity,
                    price: l
                        .unit_price
                        .times(l.quantity)
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                })
                .collect(),
            link: format!(
                "{}/orders/{id}",
                self.inner.public_url.trim_end_matches('/')
            ),
        }
    }
}

/// Who is `audience` for this order: the customer; the store's owner once the order was
/// paid; the courier named by the event or carrying the order.
fn recipient(
    audience: Audience,
    record: &OrderRecord,
    then: AtEvent,
    store_owner: Option<UserId>,
) -> Option<UserId> {
    match audience {
        Audience::Customer => Some(record.order.customer_id),
        Audience::Store => store_owner.filter(|_| then.paid),
        Audience::Courier => then.courier,
    }
}

/// The order's parties as of the event: as its writer noted them, when the note describes the
/// event in the log; otherwise as the order's row has them now. (A writer that lost the race
/// for the event's number left a note describing its own event, which is not the one in the
/// log; notes of old writers describe nothing.)
fn parties_then(note: &JournalNote, record: &OrderRecord, event: &OrderEvent) -> AtEvent {
    let assigned = match &event.kind {
        OrderEventKind::CourierAssigned { courier } => Some(*courier),
        _ => None,
    };
    let describes = |then: &AtEvent| {
        note.event == event_of(&event.kind)
            && assigned.is_none_or(|c| then.courier == Some(c))
            && (event.kind != OrderEventKind::Paid || then.paid)
    };
    match note.then {
        Some(then) if describes(&then) => then,
        _ => AtEvent::after(record, event),
    }
}
