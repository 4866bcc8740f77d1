//! Reviews in the store: the review rows, the claims that allow one review per order line, and
//! the rating aggregate of every target, kept exact across crashes and concurrent writers.
//!
//! # Keeping the aggregate exact
//!
//! A review and its target's aggregate live in different rows, and no backend writes two rows
//! atomically. Each review therefore carries `counted` (whether the aggregate includes it) and
//! the aggregate carries a small `pending` map, review id → whether the aggregate includes that
//! review, for the few reviews whose change is being settled right now. The invariant is:
//!
//! > the aggregate includes a review iff `pending[id]` says so, or, without an entry, iff the
//! > review's `counted` says so.
//!
//! [`ReviewRepo::settle`] moves a review to where it should be (`counted == !hidden`) in three
//! compare-and-set steps, each of which keeps the invariant: (1) change the totals and record
//! the new inclusion in `pending`, (2) set `counted` on the review, (3) drop the `pending`
//! entry once the review agrees with it. Every step reads the aggregate *before* the review and
//! writes conditionally on what it read, so a step decided on stale data loses its
//! compare-and-set and starts over. A process that dies between steps leaves a state from which
//! any later `settle` of the same review (a retried request, a moderation action) finishes the
//! work without counting anything twice. `pending` holds only in-flight reviews, so the
//! aggregate row stays small however many reviews a target has.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::typed::{MODIFY_ATTEMPTS, Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreError, StoreResult, Table, Version};
use crate::domain::ids::{OrderId, ReviewId, UserId};
use crate::domain::review::{RatingTotals, Review, ReviewTarget};

/// The claim of one order line (or one order's vendor) on a review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewClaim {
    /// The review this claim entitles; chosen when claiming, so a retry writes the same one.
    pub review_id: ReviewId,
    /// Who claimed it (only they may finish an interrupted review).
    pub author: UserId,
}

/// The stored aggregate of one target. Its JSON is a superset of [`RatingTotals`], so readers
/// that only need the totals decode the row as that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingRow {
    #[serde(flatten)]
    pub totals: RatingTotals,
    /// Reviews whose inclusion changed here but not yet on the review row.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<ReviewId, bool>,
}

/// The key of the claim of `order` on reviewing `target`.
pub fn claim_key(order: OrderId, target: &ReviewTarget) -> Key {
    Key::single(format!("{order}:{}", target.key()))
}

pub fn review_key(target: &ReviewTarget, id: ReviewId) -> Key {
    Key::new(target.key(), id.to_string())
}

pub fn rating_key(target: &ReviewTarget) -> Key {
    Key::single(target.key())
}

/// One page of a target's reviews, oldest first.
#[derive(Debug, Clone)]
pub struct ReviewRows {
    pub reviews: Vec<Review>,
    /// Clustering key of the last row read, to continue after; absent at the end.
    pub next: Option<String>,
}

/// Typed access to the review tables.
#[derive(Clone)]
pub struct ReviewRepo {
    pub reviews: Rows<Review>,
    pub claims: Rows<ReviewClaim>,
    pub ratings: Rows<RatingRow>,
}

impl ReviewRepo {
    pub fn new(store: SharedStore) -> Self {
        ReviewRepo {
            reviews: Rows::new(store.clone(), Table::Reviews),
            claims: Rows::new(store.clone(), Table::ReviewClaims),
            ratings: Rows::new(store, Table::Ratings),
        }
    }

    pub async fn review(
        &self,
        target: &ReviewTarget,
        id: ReviewId,
    ) -> StoreResult<Option<Versioned<Review>>> {
        self.reviews.get(&review_key(target, id)).await
    }

    /// The visible ratings of a target.
    pub async fn totals(&self, target: &ReviewTarget) -> StoreResult<RatingTotals> {
        Ok(self
            .ratings
            .get(&rating_key(target))
            .await?
            .map(|row| row.value.totals)
            .unwrap_or_default())
    }

    /// Up to `limit` rows of a target's reviews after the clustering key `after`.
    pub async fn page(
        &self,
        target: &ReviewTarget,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<ReviewRows> {
        let range = ScanRange {
            after,
            limit,
            ..ScanRange::default()
        };
        let (rows, next) = self.reviews.scan(&target.key(), range).await?;
        Ok(ReviewRows {
            reviews: rows.into_iter().map(|(_, row)| row.value).collect(),
            next,
        })
    }

    /// Brings the aggregate and the review's `counted` in line with whether the review should
    /// count (see the module docs). Idempotent; returns the settled review, `None` if there is
    /// no such review.
    #[tracing::instrument(skip(self), fields(target = %target.key(), review_id = %id))]
    pub async fn settle(&self, target: &ReviewTarget, id: ReviewId) -> StoreResult<Option<Review>> {
        let rating_key = rating_key(target);
        let review_key = review_key(target, id);
        for attempt in 0..MODIFY_ATTEMPTS {
            backoff(attempt).await;
            let (rating_version, mut rating) = split(self.ratings.get(&rating_key).await?);
            let Some(review) = self.reviews.get(&review_key).await? else {
                return Ok(None);
            };
            let wanted = review.value.should_count();
            let included = rating
                .pending
                .get(&id)
                .copied()
                .unwrap_or(review.value.counted);
            if included != wanted {
                rating.totals.apply(review.value.rating, wanted);
                rating.pending.insert(id, wanted);
                if !self
                    .put_rating(&rating_key, rating_version, &rating)
                    .await?
                {
                    continue;
                }
            }
            let in_flight = rating.pending.contains_key(&id);
            let mut settled = review.value;
            if settled.counted != wanted {
                settled.counted = wanted;
                if self
                    .reviews
                    .update(&review_key, review.version, &settled)
                    .await?
                    .is_err()
                {
                    continue;
                }
            }
            if in_flight {
                self.release(&rating_key, &review_key, id).await?;
            }
            return Ok(Some(settled));
        }
        Err(gave_up())
    }

    /// Drops the aggregate's `pending` entry of a review once the review row agrees with it.
    async fn release(&self, rating_key: &Key, review_key: &Key, id: ReviewId) -> StoreResult<()> {
        for attempt in 0..MODIFY_ATTEMPTS {
            backoff(attempt).await;
            let Some(rating) = self.ratings.get(rating_key).await? else {
                return Ok(());
            };
            let Some(&included) = rating.value.pending.get(&id) else {
                return Ok(());
            };
            let counted = self.reviews.get(review_key).await?.map(|r| r.value.counted);
            if counted != Some(included) {
                // Another settle is between its steps; it releases the entry itself.
                return Ok(());
            }
            let mut row = rating.value;
            row.pending.remove(&id);
            if self.put_rating(rating_key, rating.version, &row).await? {
                return Ok(());
            }
        }
        Err(gave_up())
    }

    /// Writes the aggregate if still at `version` (0: absent); whether it was written.
    async fn put_rating(&self, key: &Key, version: Version, row: &RatingRow) -> StoreResult<bool> {
        let outcome = if version == 0 {
            self.ratings.insert(key, row).await?
        } else {
            self.ratings.update(key, version, row).await?
        };
        Ok(outcome.is_ok())
    }
}

fn split(row: Option<Versioned<RatingRow>>) -> (Version, RatingRow) {
    row.map_or((0, RatingRow::default()), |r| (r.version, r.value))
}

/// A short jittered pause after the first few lost races, as in `Rows::modify`.
async fn backoff(attempt: usize) {
    if attempt > 3 {
        let pause = rand::random_range(0..=(1u64 << attempt.min(6)));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

fn gave_up() -> StoreError {
    StoreError::Unavailable(format!(
        "{}: gave up after {MODIFY_ATTEMPTS} conflicting writes",
        Table::Ratings
    ))
}
