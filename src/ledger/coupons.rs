//! Coupons as the API meets them: created by admins (any, platform- or store-funded) and by
//! store owners (their own store's, funded by their store), quoted on a cart, held by a
//! checkout for the one order they discount.
//!
//! A coupon discounts the goods of one order of a checkout: a store's coupon that store's
//! order, a platform-wide one the order with the largest subtotal. Its minimum spend is
//! checked on that order's goods.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ledger, LedgerError};
use crate::domain::coupon::{Coupon, CouponRefusal, FundedBy, OrderDiscount};
use crate::domain::ids::{OrderId, UserId, VendorId};
use crate::domain::money::Money;
use crate::store::coupons::{CouponRepo, RedeemError};

/// Why a coupon call failed.
#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error(transparent)]
    Refused(#[from] CouponRefusal),
    #[error("a coupon with that code exists")]
    CodeTaken,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<RedeemError> for CouponError {
    fn from(e: RedeemError) -> Self {
        match e {
            RedeemError::Refused(r) => CouponError::Refused(r),
            RedeemError::Store(e) => CouponError::Ledger(e.into()),
        }
    }
}

impl From<crate::store::StoreError> for CouponError {
    fn from(e: crate::store::StoreError) -> Self {
        CouponError::Ledger(e.into())
    }
}

/// What a coupon takes off a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Quote {
    pub code: String,
    /// The store whose goods it discounts.
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub discount: Money,
    pub funded_by: FundedBy,
}

impl Quote {
    pub fn discount(&self) -> OrderDiscount {
        OrderDiscount {
            code: self.code.clone(),
            amount: self.discount,
            funded_by: self.funded_by,
        }
    }
}

impl Ledger {
    pub fn coupons(&self) -> &CouponRepo {
        &self.inner.coupons
    }

    /// Creates a coupon (its code already normalised and its fields checked).
    pub async fn create_coupon(&self, coupon: Coupon) -> Result<Coupon, CouponError> {
        if self.inner.coupons.create(&coupon).await? {
            Ok(coupon)
        } else {
            Err(CouponError::CodeTaken)
        }
    }

    pub async fn coupon(&self, code: &str) -> Result<Option<Coupon>, CouponError> {
        Ok(self.inner.coupons.get(code).await?.map(|v| v.value))
    }

    /// Switches a coupon on or off. `None`: no such coupon.
    pub async fn set_coupon_active(
        &self,
        code: &str,
        active: bool,
    ) -> Result<Option<Coupon>, CouponError> {
        Ok(self
            .inner
            .coupons
            .change(code, |c| {
                let changed = c.active != active;
                c.active = active;
                Ok(changed)
            })
            .await?)
    }

    /// Every coupon (of one store, when given), a page at a time.
    pub async fn coupons_page(
        &self,
        store: Option<VendorId>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Coupon>, Option<String>), CouponError> {
        let (mut page, next) = self.inner.coupons.page(cursor, limit).await?;
        if let Some(store) = store {
            page.retain(|c| c.store_id == Some(store));
        }
        Ok((page, next))
    }

    /// What coupon `code` takes off goods worth `subtotals` (per store) for `customer` at
    /// `now`: refused with the reason a customer should hear. A `preview` (the cart) also
    /// says when no redemption is left; a checkout learns that when it holds one.
    pub async fn quote(
        &self,
        code: &str,
        customer: UserId,
        subtotals: &[(VendorId, Money)],
        now: DateTime<Utc>,
        preview: bool,
    ) -> Result<Quote, CouponError> {
        let mut coupon = self
            .inner
            .coupons
            .get(code)
            .await?
            .ok_or(CouponRefusal::Unknown)?
            .value;
        coupon.drop_stale(now - self.coupon_hold());
        let target = match coupon.store_id {
            Some(store) => subtotals.iter().find(|(v, _)| *v == store),
            None => subtotals
                .iter()
                .max_by_key(|(_, s)| s.amount_minor)
                .filter(|_| !subtotals.is_empty()),
        };
        let Some(&(vendor_id, subtotal)) = target else {
            return Err(CouponRefusal::NotApplicable.into());
        };
        let off = coupon.discount_on(subtotal, now)?;
        if off == 0 {
            return Err(CouponRefusal::NotApplicable.into());
        }
        let mine = coupon
            .redemptions
            .values()
            .filter(|r| r.customer == customer)
            .count() as u32;
        if preview && (coupon.redeemed() >= coupon.total_limit || mine >= coupon.per_customer) {
            return Err(CouponRefusal::Exhausted.into());
        }
        Ok(Quote {
            code: coupon.code,
            vendor_id,
            discount: Money::new(off, subtotal.currency),
            funded_by: coupon.funded_by,
        })
    }

    /// Holds a redemption of `code` for `order` (again: no change).
    pub async fn hold_coupon(
        &self,
        code: &str,
        order: OrderId,
        customer: UserId,
    ) -> Result<(), CouponError> {
        let now = self.inner.clock.now();
        let stale_before = now - self.coupon_hold();
        match self
            .inner
            .coupons
            .change(code, |c| c.hold(order, customer, now, stale_before))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(CouponRefusal::Unknown.into()),
        }
    }

    /// Gives back the redemption a checkout held for an order it did not place.
    pub async fn give_back_coupon(&self, code: &str, order: OrderId) -> Result<(), CouponError> {
        self.inner
            .coupons
            .change(code, |c| Ok(c.give_back(order)))
            .await?;
        Ok(())
    }
}
