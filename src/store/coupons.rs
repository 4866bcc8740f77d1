//! Typed access to coupons: one row per code, its redemptions inside, changed only by
//! compare-and-set (see [`crate::domain::coupon`]).

use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, SharedStore, StoreResult, Table};
use crate::domain::coupon::{Coupon, CouponRefusal};

/// What a change of a coupon's redemptions came to.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error(transparent)]
    Refused(#[from] CouponRefusal),
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// Coupons.
#[derive(Clone)]
pub struct CouponRepo {
    rows: Rows<Coupon>,
}

impl CouponRepo {
    pub fn new(store: SharedStore) -> Self {
        CouponRepo {
            rows: Rows::new(store, Table::Coupons),
        }
    }

    pub async fn get(&self, code: &str) -> StoreResult<Option<Versioned<Coupon>>> {
        self.rows.get(&Key::single(code)).await
    }

    /// Creates a coupon; `false` when its code is taken.
    pub async fn create(&self, coupon: &Coupon) -> StoreResult<bool> {
        Ok(self
            .rows
            .insert(&Key::single(&coupon.code), coupon)
            .await?
            .is_ok())
    }

    /// Changes a coupon by `step` (which says whether it changed anything), re-read and
    /// retried on a lost race. `None`: no such coupon.
    pub async fn change(
        &self,
        code: &str,
        mut step: impl FnMut(&mut Coupon) -> Result<bool, CouponRefusal>,
    ) -> Result<Option<Coupon>, RedeemError> {
        let outcome = self
            .rows
            .modify(&Key::single(code), |current| {
                let Some(current) = current else {
                    return Ok(Change::Keep(None));
                };
                let mut next = current.clone();
                Ok(if step(&mut next)? {
                    Change::Put(next.clone(), Some(next))
                } else {
                    Change::Keep(Some(next))
                })
            })
            .await;
        match outcome {
            Ok((coupon, _)) => Ok(coupon),
            Err(ModifyError::Rejected(refusal)) => Err(RedeemError::Refused(refusal)),
            Err(ModifyError::Store(e)) => Err(e.into()),
        }
    }

    /// A page of every coupon, in the store's own order.
    pub async fn page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Coupon>, Option<String>)> {
        let (rows, next) = self.rows.scan_table(cursor, limit).await?;
        Ok((rows.into_iter().map(|(_, r)| r.value).collect(), next))
    }
}
