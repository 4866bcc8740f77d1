//! Reviews of products and vendors by customers whose order was delivered, and the rating
//! aggregates they feed.
//!
//! Writing a review takes three steps over three tables, none atomic with the others:
//!
//! 1. **Claim** the order line (`review_claims`, insert-if-absent). The claim fixes the review
//!    id and the author, so a second review of the same line is refused (409) while a retry by
//!    the same author after a crash can finish the first one.
//! 2. **Write the review** under the id from the claim (insert-if-absent, so a retry never
//!    makes a second row).
//! 3. **Settle the aggregate** ([`ReviewRepo::settle`]): idempotent, so it can be repeated by a
//!    retry or by moderation without counting a review twice.
//!
//! A retry that finds the claim but no review completes the review and answers 201; one that
//! finds the review already written repairs the aggregate if needed and answers 409
//! `already_reviewed`, as any second attempt does.

use crate::clock::Clock;
use crate::domain::ids::{OrderId, ReviewId, UserId};
use crate::domain::review::{RatingSummary, Review, ReviewTarget, Stars, review_text};
use crate::store::catalog::CatalogRepo;
use crate::store::orders::OrderRepo;
use crate::store::reviews::{ReviewClaim, ReviewRepo, claim_key, review_key};
use crate::store::typed::Change;
use crate::store::{SharedStore, StoreError};

use super::indexing::{Indexer, Wait};

/// Reporters remembered per review.
pub const MAX_REPORTERS: usize = 100;
/// Largest page of reviews one listing returns.
pub const MAX_PAGE: usize = 100;

/// Why a review operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The review text broke a rule (too long, control characters).
    #[error("{0}")]
    InvalidText(String),
    /// The product or vendor does not exist.
    #[error("no such {0}")]
    TargetNotFound(&'static str),
    /// The author has no delivered order entitling them to this review.
    #[error("only the customer of a delivered order of it can review it")]
    NotEligible,
    /// This order line (or order, for a vendor) was already used for a review.
    #[error("this order was already used to review it")]
    AlreadyReviewed,
    #[error("no such review")]
    ReviewNotFound,
    #[error("you have already reported this review")]
    AlreadyReported,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a target's reviews, oldest first, with the target's rating.
#[derive(Debug, Clone)]
pub struct ReviewPage {
    pub reviews: Vec<Review>,
    /// Continue after this review; absent on the last page.
    pub next: Option<ReviewId>,
    pub rating: RatingSummary,
}

/// Writing, listing, reporting and moderating reviews.
#[derive(Clone)]
pub struct ReviewService {
    repo: ReviewRepo,
    orders: OrderRepo,
    catalog: CatalogRepo,
    clock: Clock,
    indexer: Indexer,
}

impl ReviewService {
    pub fn new(store: SharedStore, clock: Clock, indexer: Indexer) -> Self {
        ReviewService {
            repo: ReviewRepo::new(store.clone()),
            orders: OrderRepo::new(store.clone()),
            catalog: CatalogRepo::new(store),
            clock,
            indexer,
        }
    }

    /// The review tables, for readers that need the rows themselves.
    pub fn repo(&self) -> &ReviewRepo {
        &self.repo
    }

    /// Publishes `author`'s review of `target`, entitled by the delivered order `order_id`.
    #[tracing::instrument(skip(self, text), fields(author = %author, target = %target.key(), order_id = %order_id))]
    pub async fn create(
        &self,
        author: UserId,
        target: ReviewTarget,
        order_id: OrderId,
        rating: Stars,
        text: &str,
    ) -> Result<Review, ReviewError> {
        let text = review_text(text).map_err(ReviewError::InvalidText)?;
        self.require_target(&target).await?;
        self.require_eligible(author, &target, order_id).await?;

        let claim = ReviewClaim {
            review_id: ReviewId::new(),
            author,
        };
        let claim = match self
            .repo
            .claims
            .insert(&claim_key(order_id, &target), &claim)
            .await?
        {
            Ok(_) => claim,
            // The same author again: finish what an interrupted attempt started.
            Err(Some(existing)) if existing.value.author == author => existing.value,
            Err(_) => return Err(ReviewError::AlreadyReviewed),
        };

        let review = Review {
            id: claim.review_id,
            target: target.key(),
            author,
            order_id,
            rating,
            text,
            created_at: self.clock.now(),
            hidden: false,
            reports: 0,
            reporters: Vec::new(),
            counted: false,
        };
        let written = self
            .repo
            .reviews
            .insert(&review_key(&target, review.id), &review)
            .await?
            .is_ok();
        let settled = self.repo.settle(&target, review.id).await?;
        self.rating_changed(&target).await;
        if !written {
            return Err(ReviewError::AlreadyReviewed);
        }
        tracing::info!(review_id = %review.id, "review published");
        Ok(settled.unwrap_or(review))
    }

    /// Up to `limit` (1..=[`MAX_PAGE`]) reviews of `target` after the review `after`, oldest
    /// first; hidden ones only with `include_hidden`.
    pub async fn list(
        &self,
        target: ReviewTarget,
        after: Option<ReviewId>,
        limit: usize,
        include_hidden: bool,
    ) -> Result<ReviewPage, ReviewError> {
        self.require_target(&target).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut cursor = after.map(|id| id.to_string());
        let mut reviews = Vec::with_capacity(limit + 1);
        // Read one more than asked for, so the last page does not promise a next one; hidden
        // reviews are skipped, so keep reading until the page is full or the partition ends.
        let next = loop {
            let rows = self.repo.page(&target, cursor.take(), limit + 1).await?;
            reviews.extend(
                rows.reviews
                    .into_iter()
                    .filter(|r| include_hidden || !r.hidden),
            );
            if reviews.len() > limit {
                reviews.truncate(limit);
                break reviews.last().map(|r| r.id);
            }
            match rows.next {
                Some(next) => cursor = Some(next),
                None => break None,
            }
        };
        let rating = self.repo.totals(&target).await?.into();
        Ok(ReviewPage {
            reviews,
            next,
            rating,
        })
    }

    /// Records `reporter`'s report of a visible review; each user reports a review once.
    #[tracing::instrument(skip(self), fields(target = %target.key(), review_id = %id, reporter = %reporter))]
    pub async fn report(
        &self,
        target: ReviewTarget,
        id: ReviewId,
        reporter: UserId,
    ) -> Result<Review, ReviewError> {
        let (review, _) = self
            .repo
            .reviews
            .modify(&review_key(&target, id), |current| {
                let Some(review) = current.filter(|r| !r.hidden) else {
                    return Err(ReviewError::ReviewNotFound);
                };
                if review.reporters.contains(&reporter) {
                    return Err(ReviewError::AlreadyReported);
                }
                let mut review = review.clone();
                // Who reported is remembered for the first MAX_REPORTERS reports (enough to
                // stop anyone reporting twice while it matters); later ones are only counted,
                // so a review's row stays bounded.
                if review.reporters.len() < MAX_REPORTERS {
                    review.reporters.push(reporter);
                }
                review.reports = review.reports.saturating_add(1);
                Ok(Change::Put(review.clone(), review))
            })
            .await
            .map_err(modify_error)?;
        tracing::info!(reports = review.reports, "review reported");
        Ok(review)
    }

    /// Hides or shows a review (admins); hidden reviews leave the rating aggregate.
    #[tracing::instrument(skip(self), fields(target = %target.key(), review_id = %id))]
    pub async fn set_hidden(
        &self,
        target: ReviewTarget,
        id: ReviewId,
        hidden: bool,
    ) -> Result<Review, ReviewError> {
        self.repo
            .reviews
            .modify(&review_key(&target, id), |current| {
                let Some(review) = current else {
                    return Err(ReviewError::ReviewNotFound);
                };
                if review.hidden == hidden {
                    return Ok(Change::Keep(()));
                }
                let mut review = review.clone();
                review.hidden = hidden;
                Ok(Change::Put(review, ()))
            })
            .await
            .map_err(modify_error)?;
        // Settle even when nothing changed: it repairs an aggregate left behind by a crash.
        let review = self
            .repo
            .settle(&target, id)
            .await?
            .ok_or(ReviewError::ReviewNotFound)?;
        self.rating_changed(&target).await;
        tracing::info!(hidden, "review moderated");
        Ok(review)
    }

    /// The rating of a product or vendor from its visible reviews.
    pub async fn rating(&self, target: ReviewTarget) -> Result<RatingSummary, ReviewError> {
        Ok(self.repo.totals(&target).await?.into())
    }

    async fn require_target(&self, target: &ReviewTarget) -> Result<(), ReviewError> {
        let exists = match target {
            ReviewTarget::Product(id) => self.catalog.product(*id).await?.is_some(),
            ReviewTarget::Vendor(id) => self.catalog.vendor(*id).await?.is_some(),
        };
        if exists {
            Ok(())
        } else {
            Err(ReviewError::TargetNotFound(match target {
                ReviewTarget::Product(_) => "product",
                ReviewTarget::Vendor(_) => "vendor",
            }))
        }
    }

    /// The order must be the author's, delivered, and of the target: containing the product,
    /// or from the vendor. Every failure looks the same, so nobody learns about others' orders.
    async fn require_eligible(
        &self,
        author: UserId,
        target: &ReviewTarget,
        order_id: OrderId,
    ) -> Result<(), ReviewError> {
        let order = self
            .orders
            .get(order_id)
            .await?
            .ok_or(ReviewError::NotEligible)?
            .value;
        let of_target = match target {
            ReviewTarget::Product(id) => order.contains(*id),
            ReviewTarget::Vendor(id) => order.vendor_id == *id,
        };
        if order.customer_id == author && order.is_delivered() && of_target {
            Ok(())
        } else {
            Err(ReviewError::NotEligible)
        }
    }

    /// Tells the search index a product's rating may have changed; a failure only delays it.
    async fn rating_changed(&self, target: &ReviewTarget) {
        if let Some(product) = target.product()
            && let Err(e) = self.indexer.refresh(&[product], Wait::No).await
        {
            tracing::warn!(error = ?e, product_id = %product, "search index not refreshed after a rating change");
        }
    }
}

fn modify_error(e: crate::store::typed::ModifyError<ReviewError>) -> ReviewError {
    match e {
        crate::store::typed::ModifyError::Rejected(e) => e,
        crate::store::typed::ModifyError::Store(e) => ReviewError::Store(e),
    }
}
