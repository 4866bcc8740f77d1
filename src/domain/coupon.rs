//! Coupons: a percentage or a fixed amount off the goods of one order, platform-wide or for
//! one store, with a minimum spend, a validity window and limits per customer and in total.
//!
//! A coupon's redemptions live in its own row, keyed by the order they discount, and change
//! only by compare-and-set, as stock holds do: a checkout holds a redemption before its order
//! exists, the payment makes it used, and an order that expires or whose payment fails gives
//! it back. A late payment for an order whose redemption was given back takes one again if
//! the limits still allow (else the payment goes back, as when the stock is gone). So the
//! redemptions counted are never more than the limits, whatever runs concurrently.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{OrderId, UserId, VendorId};
use crate::domain::ledger::WHOLE_BPS;
use crate::domain::money::Money;

/// Most redemptions one coupon may allow (they are kept in its row).
pub const MAX_TOTAL_LIMIT: u32 = 100_000;

/// What a coupon takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponValue {
    /// A share of the goods, in basis points (1,000 = 10 %).
    PercentBps(u32),
    /// A fixed amount, at most the goods' subtotal.
    Fixed(Money),
}

/// Who gives the discount up: the platform (the store is paid as if there were none) or the
/// store (its share is smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FundedBy {
    Platform,
    Store,
}

/// One redemption: an order that was (or is being) bought with the coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub customer: UserId,
    pub at: DateTime<Utc>,
    /// Its order was paid (else it is held by a checkout waiting for its payment).
    pub paid: bool,
}

/// A coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Upper-case letters, digits, `-` and `_`, 3 to 32 of them.
    pub code: String,
    pub value: CouponValue,
    /// The one store whose orders it applies to; none for every store.
    pub store_id: Option<VendorId>,
    pub funded_by: FundedBy,
    /// The least the goods must cost for it to apply.
    pub min_spend: Option<Money>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Redemptions one customer may have.
    pub per_customer: u32,
    /// Redemptions in all.
    pub total_limit: u32,
    pub active: bool,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    /// Held and used redemptions, by the order they discount.
    #[serde(default)]
    pub redemptions: BTreeMap<OrderId, Redemption>,
}

/// Why a coupon does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponRefusal {
    #[error("no coupon has that code")]
    Unknown,
    #[error("the coupon is not valid now")]
    Expired,
    #[error("the coupon has been redeemed as often as it may be")]
    Exhausted,
    #[error("the coupon needs goods worth at least {0}")]
    MinSpend(Money),
    #[error("the coupon does not apply to anything in this cart")]
    NotApplicable,
}

/// Normalises a code as typed (`summer-25` → `SUMMER-25`); `None` when it cannot be one.
pub fn normalise_code(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_uppercase();
    let valid = (3..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(code)
}

impl Coupon {
    /// Whether it may be used at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.active
            && self.starts_at.is_none_or(|s| s <= now)
            && self.ends_at.is_none_or(|e| now < e)
    }

    /// Redemptions held or used.
    pub fn redeemed(&self) -> u32 {
        self.redemptions.len() as u32
    }

    /// Redemptions paid for.
    pub fn used(&self) -> u32 {
        self.redemptions.values().filter(|r| r.paid).count() as u32
    }

    /// What it takes off goods worth `subtotal` at `now`.
    pub fn discount_on(&self, subtotal: Money, now: DateTime<Utc>) -> Result<i64, CouponRefusal> {
        if !self.is_live(now) {
            return Err(CouponRefusal::Expired);
        }
        if let Some(min) = self.min_spend {
            if min.currency != subtotal.currency {
                return Err(CouponRefusal::NotApplicable);
            }
            if subtotal.amount_minor < min.amount_minor {
                return Err(CouponRefusal::MinSpend(min));
            }
        }
        let off = match self.value {
            CouponValue::PercentBps(bps) => {
                let bps = i128::from(bps.min(WHOLE_BPS));
                (i128::from(subtotal.amount_minor) * bps / i128::from(WHOLE_BPS)) as i64
            }
            CouponValue::Fixed(amount) => {
                if amount.currency != subtotal.currency {
                    return Err(CouponRefusal::NotApplicable);
                }
                amount.amount_minor
            }
        };
        Ok(off.clamp(0, subtotal.amount_minor))
    }

    /// Drops holds taken before `stale_before` that were never paid: a checkout that died
    /// before its order existed leaves one that no expiry would give back. (A late payment
    /// for such an order takes a redemption again, as for any order whose hold was given
    /// back.) Whether it dropped any.
    pub fn drop_stale(&mut self, stale_before: DateTime<Utc>) -> bool {
        let before = self.redemptions.len();
        self.redemptions
            .retain(|_, r| r.paid || r.at >= stale_before);
        self.redemptions.len() != before
    }

    /// Holds a redemption for `order` (again: no change), dropping stale holds first (see
    /// [`Coupon::drop_stale`]). Refused when the customer or the coupon has no redemption
    /// left.
    pub fn hold(
        &mut self,
        order: OrderId,
        customer: UserId,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, CouponRefusal> {
        if self.redemptions.contains_key(&order) {
            return Ok(false);
        }
        self.drop_stale(stale_before);
        let mine = self
            .redemptions
            .values()
            .filter(|r| r.customer == customer)
            .count() as u32;
        if mine >= self.per_customer || self.redeemed() >= self.total_limit {
            return Err(CouponRefusal::Exhausted);
        }
        self.redemptions.insert(
            order,
            Redemption {
                customer,
                at: now,
                paid: false,
            },
        );
        Ok(true)
    }

    /// The order was paid: its redemption is used, taken again first if it had been given
    /// back (a late payment) and the limits allow.
    pub fn use_for(
        &mut self,
        order: OrderId,
        customer: UserId,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, CouponRefusal> {
        let changed = self.hold(order, customer, now, stale_before)?;
        match self.redemptions.get_mut(&order) {
            Some(r) if !r.paid => {
                r.paid = true;
                Ok(true)
            }
            _ => Ok(changed),
        }
    }

    /// Gives back the redemption of an order that was never paid. `false`: none held.
    pub fn give_back(&mut self, order: OrderId) -> bool {
        match self.redemptions.get(&order) {
            Some(r) if !r.paid => self.redemptions.remove(&order).is_some(),
            _ => false,
        }
    }
}

/// A discount on an order, frozen at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderDiscount {
    pub code: String,
    /// Taken off the goods.
    pub amount: Money,
    pub funded_by: FundedBy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn coupon(per_customer: u32, total_limit: u32) -> Coupon {
        Coupon {
            code: "SUMMER".into(),
            value: CouponValue::PercentBps(1_000),
            store_id: None,
            funded_by: FundedBy::Platform,
            min_spend: Some(Money::new(1_000, Currency::EUR)),
            starts_at: None,
            ends_at: None,
            per_customer,
            total_limit,
            active: true,
            created_by: UserId::new(),
            created_at: Utc::now(),
            redemptions: BTreeMap::new(),
        }
    }

    #[test]
    fn limits_count_held_and_used_redemptions_and_a_given_back_one_frees_its_place() {
        let now = Utc::now();
        let stale = now - chrono::Duration::minutes(30);
        let mut c = coupon(1, 2);
        let (a, b, x) = (UserId::new(), UserId::new(), UserId::new());
        let (o1, o2, o3, o4) = (
            OrderId::new(),
            OrderId::new(),
            OrderId::new(),
            OrderId::new(),
        );
        assert_eq!(c.hold(o1, a, now, stale), Ok(true));
        assert_eq!(c.hold(o1, a, now, stale), Ok(false), "again: no change");
        assert_eq!(
            c.hold(o2, a, now, stale),
            Err(CouponRefusal::Exhausted),
            "per customer"
        );
        assert_eq!(c.hold(o3, b, now, stale), Ok(true));
        assert_eq!(
            c.hold(o4, x, now, stale),
            Err(CouponRefusal::Exhausted),
            "in total"
        );
        assert!(c.give_back(o3));
        assert_eq!(c.use_for(o1, a, now, stale), Ok(true));
        assert!(!c.give_back(o1), "a used redemption stays");
        // A late payment for the order given back takes a place again while there is one.
        assert_eq!(c.use_for(o3, b, now, stale), Ok(true));
        assert_eq!((c.redeemed(), c.used()), (2, 2));
        assert_eq!(c.use_for(o4, x, now, stale), Err(CouponRefusal::Exhausted));
        // A hold nobody paid for, from a checkout that died long ago, stops counting.
        let mut d = coupon(1, 1);
        assert_eq!(
            d.hold(o1, a, stale - chrono::Duration::seconds(1), stale),
            Ok(true)
        );
        assert_eq!(d.hold(o2, b, now, stale), Ok(true));
        assert_eq!(d.redeemed(), 1);
    }

    #[test]
    fn a_discount_needs_the_window_and_the_minimum_and_never_exceeds_the_goods() {
        let now = Utc::now();
        let eur = |a| Money::new(a, Currency::EUR);
        let mut c = coupon(1, 10);
        assert_eq!(c.discount_on(eur(2_345), now), Ok(234));
        assert_eq!(
            c.discount_on(eur(999), now),
            Err(CouponRefusal::MinSpend(eur(1_000)))
        );
        c.value = CouponValue::Fixed(eur(5_000));
        assert_eq!(c.discount_on(eur(1_200), now), Ok(1_200));
        c.ends_at = Some(now);
        assert_eq!(c.discount_on(eur(1_200), now), Err(CouponRefusal::Expired));
        assert_eq!(normalise_code(" summer-25 "), Some("SUMMER-25".into()));
        assert_eq!(normalise_code("a b"), None);
        assert_eq!(normalise_code("ab"), None);
    }
}
