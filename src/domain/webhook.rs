//! Webhooks: endpoints stores and admins register to hear of order events, and the signature
//! every delivery carries.
//!
//! A delivery is a `POST` of a JSON event with the headers `Hexmarket-Webhook-Id` (the
//! delivery's id: the same on every attempt) and `Hexmarket-Signature: t={unix seconds},v1={hex
//! HMAC-SHA256 of "{t}.{body}" under the endpoint's secret}`. A receiver recomputes the HMAC over
//! the raw body, compares in constant time, and refuses a `t` more than a few minutes old.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::account::NotificationEvent;
use super::ids::{OrderId, UserId, VendorId};

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Endpoints one owner may register.
pub const MAX_ENDPOINTS: usize = 10;

/// Whose events an endpoint hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebhookScope {
    /// One store's orders (registered by its owner).
    Store {
        #[schema(value_type = String, format = Uuid)]
        vendor_id: VendorId,
    },
    /// Every order of the platform (registered by an admin).
    Platform,
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub owner: UserId,
    pub scope: WebhookScope,
    pub url: String,
    pub events: Vec<NotificationEvent>,
    /// The signing secret (`whsec_…`), shown to the owner.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event: NotificationEvent) -> bool {
        self.events.contains(&event)
    }
}

/// A fresh signing secret: `whsec_` and 32 random bytes, base64url.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The `Hexmarket-Signature` header of `body` sent at `timestamp` (unix seconds).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

/// Hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

/// The id of the delivery of event `seq` of `order` to `endpoint`: the same inputs, the same id.
pub fn delivery_id(order: OrderId, seq: u64, endpoint: Uuid) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"hexmarket.webhook.v1\0");
    hash.update(order.as_uuid().as_bytes());
    hash.update(seq.to_be_bytes());
    hash.update(endpoint.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether an address is one a webhook must not reach unless the operator allows it: loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast, broadcast, documentation and
/// unique-local ranges, and IPv4 addresses mapped into IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently, with Python's hmac module.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        let header = signature_header("whsec_test", 5, b"x");
        assert!(header.starts_with("t=5,v1=") && header.len() == "t=5,v1=".len() + 64);
        assert_ne!(signature("whsec_a", 5, b"x"), signature("whsec_b", 5, b"x"));
        assert_ne!(signature("whsec_a", 5, b"x"), signature("whsec_a", 6, b"x"));
    }

    #[test]
    fn private_and_special_ranges_are_refused_and_public_ones_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
