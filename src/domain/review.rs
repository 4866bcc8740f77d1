//! Reviews and the rating aggregates they feed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{OrderId, ReviewId, UserId};

/// Longest review text.
pub const MAX_REVIEW_TEXT: usize = 2_000;

/// What a review is about, as the store's partition key (`product:{id}`, `vendor:{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReviewTarget {
    Product(crate::domain::ids::ProductId),
    Vendor(crate::domain::ids::VendorId),
}

impl ReviewTarget {
    pub fn key(&self) -> String {
        match self {
            ReviewTarget::Product(id) => format!("product:{id}"),
            ReviewTarget::Vendor(id) => format!("vendor:{id}"),
        }
    }

    /// The product reviewed, if the target is a product.
    pub fn product(&self) -> Option<crate::domain::ids::ProductId> {
        match self {
            ReviewTarget::Product(id) => Some(*id),
            ReviewTarget::Vendor(_) => None,
        }
    }
}

/// Review text as stored: trimmed, at most [`MAX_REVIEW_TEXT`] characters, no control
/// characters but line breaks (and tabs). May be empty: stars alone are a review.
pub fn review_text(raw: &str) -> Result<String, String> {
    crate::domain::catalog::check_text("text", raw.trim(), MAX_REVIEW_TEXT)
}

/// A star rating, 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "u8", into = "u8")]
#[schema(value_type = u8, minimum = 1, maximum = 5)]
pub struct Stars(u8);

impl Stars {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Stars {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        if (1..=5).contains(&n) {
            Ok(Stars(n))
        } else {
            Err(format!("rating must be from 1 to 5, not {n}"))
        }
    }
}

impl From<Stars> for u8 {
    fn from(s: Stars) -> u8 {
        s.0
    }
}

/// One customer's review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    #[schema(value_type = String, format = Uuid)]
    pub id: ReviewId,
    /// `product:{id}` or `vendor:{id}`.
    pub target: String,
    #[schema(value_type = String, format = Uuid)]
    pub author: UserId,
    /// The delivered order that entitles the author to review.
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    pub rating: Stars,
    pub text: String,
    pub created_at: DateTime<Utc>,
    /// Hidden by an admin (then shown to nobody but admins).
    #[serde(default)]
    pub hidden: bool,
    /// How many users reported it.
    #[serde(default)]
    pub reports: u32,
    /// Who reported it, so each user reports a review at most once (changed in the same
    /// compare-and-set as `reports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(ignore)]
    pub reporters: Vec<UserId>,
    /// Whether the target's rating aggregate includes this review. It lags `!hidden` only
    /// while a change is being settled; see `store::reviews` for the protocol.
    #[serde(default)]
    #[schema(ignore)]
    pub counted: bool,
}

impl Review {
    /// Whether the review should count towards its target's rating.
    pub fn should_count(&self) -> bool {
        !self.hidden
    }
}

/// Count and sum of the visible ratings of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingTotals {
    pub count: u64,
    pub sum: u64,
}

impl RatingTotals {
    /// Adds (`include`) or removes one rating.
    pub fn apply(&mut self, rating: Stars, include: bool) {
        let stars = u64::from(rating.get());
        if include {
            self.count += 1;
            self.sum += stars;
        } else {
            self.count = self.count.saturating_sub(1);
            self.sum = self.sum.saturating_sub(stars);
        }
    }

    /// The mean rating, absent without ratings.
    pub fn average(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }
}

/// The rating of a product or vendor as shown to clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RatingSummary {
    /// Mean of the visible ratings, absent when there are none.
    pub average: Option<f64>,
    pub count: u64,
}

impl From<RatingTotals> for RatingSummary {
    fn from(t: RatingTotals) -> Self {
        RatingSummary {
            average: t.average().map(|a| (a * 100.0).round() / 100.0),
            count: t.count,
        }
    }
}
