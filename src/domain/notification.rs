//! Notifications: which order events reach whom, on which channels, and the ids that make each
//! message unique.
//!
//! The rules are pure functions of an order event: [`event_of`] names the notification an
//! event is (some events, such as `preparing`, are nobody's news), [`audiences`] says who hears
//! of it, and [`wants`] decides a channel from the recipient's preferences, the defaults
//! ([`default_on`]) and the messages nobody can switch off ([`mandatory`]). Every recipient of
//! an event but `order_created` (see [`in_app`]) also gets it in their in-app feed, which has no
//! switch.
//!
//! A notification's id is derived from the order event, the recipient and the channel
//! ([`notification_id`]), so deriving the same event twice — a retried consumer, a second node,
//! a restart — names the same messages, and the outbox keeps each once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::account::{Channel, NotificationEvent, NotificationPrefs};
use super::ids::{OrderId, UserId};
use super::order::OrderEventKind;

/// In what capacity a user hears of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The customer who placed the order.
    Customer,
    /// The owner of the store the order is from.
    Store,
    /// The courier carrying it.
    Courier,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Customer => "customer",
            Audience::Store => "store",
            Audience::Courier => "courier",
        }
    }
}

/// Where one message goes: a user-facing [`Channel`], or the user's in-app feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    InApp,
    Email,
    Sms,
    Push,
    /// A registered webhook endpoint (not a user's channel: endpoints choose their events).
    Webhook,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::InApp => "in_app",
            Medium::Email => "email",
            Medium::Sms => "sms",
            Medium::Push => "push",
            Medium::Webhook => "webhook",
        }
    }

    /// The preference channel that switches this medium (the in-app feed has none).
    pub fn channel(self) -> Option<Channel> {
        match self {
            Medium::InApp | Medium::Webhook => None,
            Medium::Email => Some(Channel::Email),
            Medium::Sms => Some(Channel::Sms),
            Medium::Push => Some(Channel::Push),
        }
    }
}

impl NotificationEvent {
    /// The snake_case name used in the API and in template names.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::OrderCreated => "order_created",
            NotificationEvent::OrderPaid => "order_paid",
            NotificationEvent::PaymentFailed => "payment_failed",
            NotificationEvent::OrderAccepted => "order_accepted",
            NotificationEvent::OrderRejected => "order_rejected",
            NotificationEvent::OrderReady => "order_ready",
            NotificationEvent::CourierAssigned => "courier_assigned",
            NotificationEvent::OrderPickedUp => "order_picked_up",
            NotificationEvent::OrderArriving => "order_arriving",
            NotificationEvent::OrderDelivered => "order_delivered",
            NotificationEvent::OrderCancelled => "order_cancelled",
            NotificationEvent::OrderRefunded => "order_refunded",
        }
    }
}

/// The notification an order event is, if it is anybody's news.
pub fn event_of(kind: &OrderEventKind) -> Option<NotificationEvent> {
    use NotificationEvent as N;
    use OrderEventKind as K;
    Some(match kind {
        K::Created => N::OrderCreated,
        K::Paid => N::OrderPaid,
        K::PaymentFailed => N::PaymentFailed,
        K::Accepted => N::OrderAccepted,
        K::Rejected { .. } => N::OrderRejected,
        K::Ready => N::OrderReady,
        K::CourierAssigned { .. } => N::CourierAssigned,
        K::PickedUp => N::OrderPickedUp,
        K::Arriving => N::OrderArriving,
        K::Delivered { .. } => N::OrderDelivered,
        K::Cancelled { .. } => N::OrderCancelled,
        // A late payment given back is a refund to the customer.
        K::Refunded { .. } | K::PaymentReturned { .. } => N::OrderRefunded,
        K::Expired | K::Preparing | K::ArrivedAtPickup => return None,
    })
}

/// Who hears of an event. The store hears of an order from its payment on; the courier once
/// there is one.
pub fn audiences(event: NotificationEvent) -> &'static [Audience] {
    use Audience::{Courier, Customer, Store};
    use NotificationEvent as N;
    match event {
        N::OrderCreated
        | N::PaymentFailed
        | N::OrderAccepted
        | N::OrderRejected
        | N::OrderArriving => &[Customer],
        N::OrderPaid | N::OrderPickedUp | N::OrderRefunded => &[Customer, Store],
        N::OrderReady => &[Customer, Courier],
        N::CourierAssigned | N::OrderDelivered | N::OrderCancelled => &[Customer, Store, Courier],
    }
}

/// Whether a channel is on for an event when the recipient said nothing about it.
pub fn default_on(audience: Audience, event: NotificationEvent, channel: Channel) -> bool {
    use NotificationEvent as N;
    match (audience, channel) {
        (Audience::Customer, Channel::Email) => matches!(
            event,
            N::OrderPaid
                | N::PaymentFailed
                | N::OrderRejected
                | N::OrderDelivered
                | N::OrderCancelled
                | N::OrderRefunded
        ),
        (Audience::Customer, Channel::Sms) => event == N::OrderArriving,
        (Audience::Customer, Channel::Push) => !matches!(event, N::OrderCreated | N::OrderReady),
        (Audience::Store, Channel::Email) => {
            matches!(event, N::OrderPaid | N::OrderCancelled | N::OrderRefunded)
        }
        (Audience::Store, Channel::Sms) => false,
        (Audience::Store, Channel::Push) => matches!(event, N::OrderPaid | N::OrderCancelled),
        (Audience::Courier, Channel::Email | Channel::Sms) => false,
        (Audience::Courier, Channel::Push) => matches!(
            event,
            N::OrderReady | N::CourierAssigned | N::OrderCancelled
        ),
    }
}

/// Messages that go out whatever the preferences say: the customer's receipts (payment and
/// refund, by email).
pub fn mandatory(audience: Audience, event: NotificationEvent, channel: Channel) -> bool {
    audience == Audience::Customer
        && channel == Channel::Email
        && matches!(
            event,
            NotificationEvent::OrderPaid | NotificationEvent::OrderRefunded
        )
}

/// Whether an event goes to the in-app feed: every one but `order_created`, the customer's own
/// action (the checkout's answer confirms it; they hear of it again when it is paid).
pub fn in_app(event: NotificationEvent) -> bool {
    event != NotificationEvent::OrderCreated
}

/// Whether a recipient with `prefs` gets `event` on `medium`.
pub fn wants(
    prefs: &NotificationPrefs,
    audience: Audience,
    event: NotificationEvent,
    medium: Medium,
) -> bool {
    let Some(channel) = medium.channel() else {
        return medium == Medium::InApp && in_app(event);
    };
    if mandatory(audience, event, channel) {
        return true;
    }
    prefs
        .get(&channel)
        .and_then(|events| events.get(&event))
        .copied()
        .unwrap_or_else(|| default_on(audience, event, channel))
}

/// Every preference filled in: what the recipient chose, and the default elsewhere (mandatory
/// messages read `true`).
pub fn effective_prefs(prefs: &NotificationPrefs, audience: Audience) -> NotificationPrefs {
    Channel::ALL
        .iter()
        .map(|&channel| {
            let events = NotificationEvent::ALL
                .iter()
                .map(|&event| {
                    let medium = match channel {
                        Channel::Email => Medium::Email,
                        Channel::Sms => Medium::Sms,
                        Channel::Push => Medium::Push,
                    };
                    (event, wants(prefs, audience, event, medium))
                })
                .collect();
            (channel, events)
        })
        .collect()
}

/// The id of the message about event `seq` of `order` to `recipient` on `medium`: the same
/// inputs always give the same id (a UUID of version 8 made of SHA-256 of the inputs).
pub fn notification_id(order: OrderId, seq: u64, recipient: UserId, medium: Medium) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"hexmarket.notification.v1\0");
    hash.update(order.as_uuid().as_bytes());
    hash.update(seq.to_be_bytes());
    hash.update(recipient.as_uuid().as_bytes());
    hash.update(medium.as_str().as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The id of the push message about event `seq` of `order` to one of the recipient's browsers.
pub fn push_id(order: OrderId, seq: u64, recipient: UserId, subscription: Uuid) -> Uuid {
    let base = notification_id(order, seq, recipient, Medium::Push);
    let mut hash = Sha256::new();
    hash.update(base.as_bytes());
    hash.update(subscription.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// News for one user about something other than an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// An admin answered the user's support ticket.
    SupportReply,
    /// The user's support ticket changed status.
    SupportStatus,
    /// The author of a ticket assigned to the admin wrote.
    SupportMessage,
    /// A moderator took the store's product down.
    ProductHidden,
    /// A moderator put the store's product back.
    ProductRestored,
    /// A moderator suspended the user's store.
    StoreSuspended,
    /// A moderator lifted the store's suspension.
    StoreReinstated,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::SupportReply => "support_reply",
            Notice::SupportStatus => "support_status",
            Notice::SupportMessage => "support_message",
            Notice::ProductHidden => "product_hidden",
            Notice::ProductRestored => "product_restored",
            Notice::StoreSuspended => "store_suspended",
            Notice::StoreReinstated => "store_reinstated",
        }
    }
}

/// The id of notice `kind` about `subject` to `recipient`, told for the occasion `occasion`
/// (a message's number, a decision's id): the same inputs give the same id, so a retried
/// request writes the notice once.
pub fn notice_id(kind: Notice, subject: &str, occasion: &str, recipient: UserId) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"hexmarket.notice.v1\0");
    hash.update(kind.as_str().as_bytes());
    hash.update(b"\0");
    hash.update(subject.as_bytes());
    hash.update(b"\0");
    hash.update(occasion.as_bytes());
    hash.update(b"\0");
    hash.update(recipient.as_uuid().as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// One entry of a user's in-app feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedItem {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// The order event it tells of (absent on notices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<NotificationEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    /// What a notice (news about anything but an order) is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// The notice's subject: `ticket:{id}`, `product:{id}` or `vendor:{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// One line, in the recipient's language.
    pub title: String,
    /// A sentence or two, in the recipient's language.
    pub body: String,
    /// When the recipient marked it read; absent while unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
}

/// Where a message in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// The provider accepted it.
    Sent,
    /// Given up on: refused for good, or out of attempts. An admin can send it again.
    Dead,
    /// Nothing to send it to (no address, no verified phone, no push subscription).
    Skipped,
}

/// One message for an external channel, as the outbox keeps it. What it says is rendered
/// when it is sent, from the order event it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxMessage {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub medium: Medium,
    #[schema(value_type = String, format = Uuid)]
    pub recipient: UserId,
    pub audience: Audience,
    pub event: NotificationEvent,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// The event's number in the order's log.
    pub order_seq: u64,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (for pending messages).
    pub next_at: DateTime<Utc>,
    /// Why the last attempt failed; never the message's content or a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
    /// The webhook endpoint, for webhook deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub endpoint: Option<Uuid>,
}

/// What a new message is about: the order event, and who hears of it on which medium.
#[derive(Debug, Clone, Copy)]
pub struct MessageOf {
    pub id: Uuid,
    pub medium: Medium,
    pub recipient: UserId,
    pub audience: Audience,
    pub event: NotificationEvent,
    pub order_id: OrderId,
    pub order_seq: u64,
    /// The push subscription or webhook endpoint it goes to.
    pub endpoint: Option<Uuid>,
}

impl OutboxMessage {
    /// A message due at once, not yet attempted.
    pub fn pending(of: MessageOf, now: DateTime<Utc>) -> Self {
        OutboxMessage {
            id: of.id,
            medium: of.medium,
            recipient: of.recipient,
            audience: of.audience,
            event: of.event,
            order_id: of.order_id,
            order_seq: of.order_seq,
            state: DeliveryState::Pending,
            attempts: 0,
            next_at: now,
            last_error: None,
            created_at: now,
            done_at: None,
            endpoint: of.endpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_every_input_and_nothing_else() {
        let (order, user) = (OrderId::new(), UserId::new());
        let id = notification_id(order, 3, user, Medium::Email);
        assert_eq!(id, notification_id(order, 3, user, Medium::Email));
        assert_ne!(id, notification_id(order, 4, user, Medium::Email));
        assert_ne!(id, notification_id(order, 3, UserId::new(), Medium::Email));
        assert_ne!(id, notification_id(order, 3, user, Medium::Sms));
        assert_ne!(id, notification_id(OrderId::new(), 3, user, Medium::Email));
        assert_eq!(id.get_version_num(), 8);
    }

    #[test]
    fn receipts_cannot_be_switched_off_and_other_messages_can() {
        let mut prefs = NotificationPrefs::new();
        prefs.entry(Channel::Email).or_default().extend([
            (NotificationEvent::OrderPaid, false),
            (NotificationEvent::OrderDelivered, false),
        ]);
        let paid = NotificationEvent::OrderPaid;
        assert!(wants(&prefs, Audience::Customer, paid, Medium::Email));
        assert!(!wants(
            &prefs,
            Audience::Customer,
            NotificationEvent::OrderDelivered,
            Medium::Email
        ));
        // The same switch for a store owner is obeyed.
        assert!(!wants(&prefs, Audience::Store, paid, Medium::Email));
        // The feed has no switch.
        assert!(wants(&prefs, Audience::Customer, paid, Medium::InApp));
    }

    #[test]
    fn defaults_follow_the_table() {
        let none = NotificationPrefs::new();
        let arriving = NotificationEvent::OrderArriving;
        assert!(wants(&none, Audience::Customer, arriving, Medium::Sms));
        assert!(!wants(
            &none,
            Audience::Customer,
            NotificationEvent::OrderAccepted,
            Medium::Sms
        ));
        assert!(!wants(
            &none,
            Audience::Customer,
            NotificationEvent::OrderCreated,
            Medium::Email
        ));
        assert!(wants(
            &none,
            Audience::Store,
            NotificationEvent::OrderPaid,
            Medium::Email
        ));
    }

    #[test]
    fn every_order_event_with_news_has_an_audience_including_the_customer() {
        for event in NotificationEvent::ALL {
            assert!(audiences(event).contains(&Audience::Customer), "{event:?}");
        }
        assert_eq!(event_of(&OrderEventKind::Preparing), None);
        assert_eq!(
            event_of(&OrderEventKind::PaymentReturned {
                amount: crate::domain::money::Money::new(100, crate::domain::money::Currency::EUR)
            }),
            Some(NotificationEvent::OrderRefunded)
        );
    }
}
