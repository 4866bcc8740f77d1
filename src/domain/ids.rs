//! Entity ids: UUIDv7 (time-ordered) newtypes, so a cart id can never be passed as an order id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! entity_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

entity_id!(
    /// A cart, owned by a customer or by the holder of a guest cart token.
    CartId
);
entity_id!(
    /// A product in the catalog.
    ProductId
);
entity_id!(
    /// A user account of any role.
    UserId
);
entity_id!(
    /// A family of refresh tokens descending from one login.
    SessionId
);
entity_id!(
    /// A vendor's store.
    VendorId
);
entity_id!(
    /// A node of the category tree.
    CategoryId
);
entity_id!(
    /// A review of a product or a vendor.
    ReviewId
);
entity_id!(
    /// One vendor's share of a checkout.
    OrderId
);
entity_id!(
    /// A support ticket between a user and the platform's admins.
    TicketId
);
entity_id!(
    /// One moderation decision of an admin (hiding, restoring, suspending, reinstating).
    DecisionId
);
entity_id!(
    /// A checkout: the orders of one purchase, paid by one payment.
    CheckoutId
);
entity_id!(
    /// The payment of one checkout, at one provider.
    PaymentId
);
entity_id!(
    /// One transfer of a store's or a courier's payable balance to them.
    PayoutId
);
entity_id!(
    /// One run of payouts (scheduled, or asked for by an admin).
    PayoutRunId
);

/// An id derived from `seed` (the same seed, the same id), laid out as a version 7 UUID with
/// the RFC 4122 variant like every other id. For things a retry must find again: the checkout
/// of an idempotency key, the order of a checkout and a store.
pub fn derived_uuid(seed: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    Uuid::from_bytes(bytes)
}
