//! An account: who the user is, how they sign in, where they deliver to and what they want to
//! be told.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::identity::{Email, Phone, Role};
use super::ids::UserId;

/// A delivery address the user saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedAddress {
    /// 1 to 50 characters, not all blank.
    #[schema(max_length = 50, pattern = r"\S")]
    pub label: String,
    /// 1 to 300 characters, not all blank.
    #[schema(max_length = 300, pattern = r"\S")]
    pub text: String,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
}

/// A channel notifications can go out on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];
}

/// An event a user can be notified of (see `domain::notification` for who hears of which).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    OrderCreated,
    OrderPaid,
    PaymentFailed,
    OrderAccepted,
    OrderRejected,
    OrderReady,
    CourierAssigned,
    OrderPickedUp,
    OrderArriving,
    OrderDelivered,
    OrderCancelled,
    OrderRefunded,
}

impl NotificationEvent {
    pub const ALL: [NotificationEvent; 12] = [
        NotificationEvent::OrderCreated,
        NotificationEvent::OrderPaid,
        NotificationEvent::PaymentFailed,
        NotificationEvent::OrderAccepted,
        NotificationEvent::OrderRejected,
        NotificationEvent::OrderReady,
        NotificationEvent::CourierAssigned,
        NotificationEvent::OrderPickedUp,
        NotificationEvent::OrderArriving,
        NotificationEvent::OrderDelivered,
        NotificationEvent::OrderCancelled,
        NotificationEvent::OrderRefunded,
    ];
}

/// The language messages are written in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    En,
    De,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::De];

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }
}

/// Per channel, per event: send or not. Absent entries mean the default for the recipient
/// (`domain::notification::default_on`).
pub type NotificationPrefs = BTreeMap<Channel, BTreeMap<NotificationEvent, bool>>;

/// The document's schema of [`NotificationPrefs`]: an object keyed by channel, each an object
/// keyed by event, each a boolean; no other keys.
pub fn notification_prefs_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    fn name(value: impl Serialize) -> String {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    let closed = || Some(AdditionalProperties::FreeForm(false));
    let events = NotificationEvent::ALL.iter().fold(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(closed()),
        |o, e| o.property(name(e), ObjectBuilder::new().schema_type(Type::Boolean)),
    );
    let events = events.build();
    Channel::ALL
        .iter()
        .fold(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(closed())
                .description(Some(
                    "Per channel, per event: send (true) or not (false); an absent entry means the default (see the README's notification table). The customer's payment and refund receipts by email are sent whatever this says.",
                )),
            |o, c| o.property(name(c), events.clone()),
        )
        .build()
}

/// A browser's Web Push subscription (what `PushManager.subscribe` returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: uuid::Uuid,
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (65 bytes, uncompressed).
    pub p256dh: String,
    /// The browser's authentication secret, base64url (16 bytes).
    pub auth: String,
    pub created_at: DateTime<Utc>,
}

/// An identity at an OpenID Connect provider that signs in to this account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    pub id: uuid::Uuid,
    /// The provider's name in the configuration (`google`, `apple`, …).
    pub provider: String,
    /// The provider's stable id of the user (`sub`).
    pub subject: String,
    /// The email the provider gave when the identity was linked, if any.
    pub email: Option<String>,
    pub linked_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A passkey (WebAuthn credential) that signs in to this account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPasskey {
    pub id: uuid::Uuid,
    /// The user's name for it ("laptop", "phone").
    pub name: String,
    /// The credential id, base64url, as the authenticator reports it.
    pub credential_id: String,
    /// The verified credential (public key, signature counter, flags) as the WebAuthn library
    /// keeps it.
    pub credential: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub email_verified: bool,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    pub name: String,
    pub role: Role,
    pub phone: Option<Phone>,
    pub phone_verified: bool,
    pub banned: bool,
    pub addresses: Vec<SavedAddress>,
    pub notifications: NotificationPrefs,
    /// Personal data was erased at the user's request; the row stays for order history.
    #[serde(default)]
    pub erased: bool,
    /// TOTP and recovery codes, when enrolled.
    #[serde(default)]
    pub second_factor: super::second_factor::SecondFactor,
    /// The language of the messages the user is sent.
    #[serde(default)]
    pub locale: Locale,
    /// Browsers that receive the user's push notifications.
    #[serde(default)]
    pub push_subscriptions: Vec<PushSubscription>,
    /// Identity-provider accounts linked to this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<LinkedIdentity>,
    /// Registered passkeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<StoredPasskey>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// Whether a password signs in to this account (accounts made through a provider have
    /// none until they set one).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    /// How many ways there are to sign in: the password, each passkey, each linked identity.
    pub fn sign_in_methods(&self) -> usize {
        usize::from(self.has_password()) + self.passkeys.len() + self.identities.len()
    }

    /// A new account: nothing verified, no phone, default preferences and language.
    pub fn new(
        email: Email,
        password_hash: String,
        name: String,
        role: Role,
        now: DateTime<Utc>,
    ) -> Self {
        User {
            id: UserId::new(),
            email,
            email_verified: false,
            password_hash,
            name,
            role,
            phone: None,
            phone_verified: false,
            banned: false,
            addresses: Vec::new(),
            notifications: NotificationPrefs::new(),
            erased: false,
            second_factor: Default::default(),
            locale: Locale::default(),
            push_subscriptions: Vec::new(),
            identities: Vec::new(),
            passkeys: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }
}
