//! Checkout rules that need no store: delivery addresses, delivery fees by distance, and the
//! checkout id a retried request must find again.

use serde::{Deserialize, Serialize};

use super::catalog::{MAX_ADDRESS, check_line};
use super::geo::GeoPoint;
use super::ids::{CheckoutId, OrderId, UserId, VendorId, derived_uuid};

/// Where an order is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryAddress {
    /// The address as the courier reads it (1–300 characters).
    #[schema(
        max_length = 300,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub text: String,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
}

impl DeliveryAddress {
    /// The address with its text trimmed, and its point; or the field that is wrong.
    pub fn validate(&self) -> Result<(DeliveryAddress, GeoPoint), (&'static str, String)> {
        let text = check_line("delivery_address.text", &self.text, MAX_ADDRESS)
            .map_err(|m| ("delivery_address.text", m))?;
        let point = GeoPoint::new(self.lat, self.lng).map_err(|m| {
            let field = if m.starts_with("latitude") {
                "delivery_address.lat"
            } else {
                "delivery_address.lng"
            };
            (field, m)
        })?;
        Ok((
            DeliveryAddress {
                text,
                lat: self.lat,
                lng: self.lng,
            },
            point,
        ))
    }
}

/// The checkout a customer's idempotency key names: the same (customer, key) always gives the
/// same id, so a retried checkout finds the orders and payment its first attempt created.
pub fn checkout_id_for(customer: UserId, idempotency_key: &str) -> CheckoutId {
    CheckoutId::from(derived_uuid(&format!(
        "checkout:{customer}:{idempotency_key}"
    )))
}

/// The order a checkout places with one store: the same on every retry of the checkout.
pub fn order_id_for(checkout: CheckoutId, vendor: VendorId) -> OrderId {
    OrderId::from(derived_uuid(&format!("order:{checkout}:{vendor}")))
}

/// A stored checkout: its customer and orders (so a payment outcome finds the orders).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutRecord {
    pub id: CheckoutId,
    pub customer: UserId,
    pub orders: Vec<OrderId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_validated_field_by_field() {
        let ok = DeliveryAddress {
            text: "  Torstraße 1, Berlin ".into(),
            lat: 52.53,
            lng: 13.40,
        };
        assert_eq!(
            ok.validate().map(|(a, _)| a.text),
            Ok("Torstraße 1, Berlin".into())
        );
        let bad_lat = DeliveryAddress {
            lat: 120.0,
            ..ok.clone()
        };
        assert_eq!(
            bad_lat.validate().map(|_| ()).map_err(|e| e.0),
            Err("delivery_address.lat")
        );
        let bad_lng = DeliveryAddress {
            lng: f64::NAN,
            ..ok.clone()
        };
        assert_eq!(
            bad_lng.validate().map(|_| ()).map_err(|e| e.0),
            Err("delivery_address.lng")
        );
        let empty = DeliveryAddress {
            text: " ".into(),
            ..ok
        };
        assert_eq!(
            empty.validate().map(|_| ()).map_err(|e| e.0),
            Err("delivery_address.text")
        );
    }

    #[test]
    fn a_key_names_one_checkout_per_customer() {
        let (a, b) = (UserId::new(), UserId::new());
        assert_eq!(checkout_id_for(a, "k1"), checkout_id_for(a, "k1"));
        assert_ne!(checkout_id_for(a, "k1"), checkout_id_for(a, "k2"));
        assert_ne!(checkout_id_for(a, "k1"), checkout_id_for(b, "k1"));
        assert_eq!(checkout_id_for(a, "k1").as_uuid().get_version_num(), 7);
    }
}
