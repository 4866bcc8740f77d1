//! Moderation of products and stores: users report them, admins work one queue of reported
//! items and hide or restore a product, suspend or reinstate a store, or dismiss the reports;
//! every decision is kept in a history and its reason told to the store's owner.
//!
//! A decision takes effect on the catalog first (the product's `hidden` flag, the store's
//! status, each re-indexed and dropped from the caches, so the public stops finding it at
//! once), then closes the round of reports it answers, then is written to the history, then
//! told. A request that finds the item already as asked is refused (409 `conflict`) and writes
//! nothing, unless the history shows the decision that put it there was never recorded (a
//! process stopped between the writes): then the request finishes it.

use std::time::Duration;

use crate::catalog::vendors::VendorPatch;
use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::domain::catalog::{Product, Vendor, VendorStatus};
use crate::domain::ids::{DecisionId, ProductId, UserId, VendorId};
use crate::domain::moderation::{
    Action, Decision, ItemKind, Report, ReportReason, ReportRule, ReportStatus, Reported,
    ReportedItem, reason as check_reason, report_text,
};
use crate::domain::notification::Notice;
use crate::notifications::{Notifications, UserNotice};
use crate::ratelimit::{Decision as Limit, LimitError, Quota, SharedLimiter};
use crate::store::catalog::id_key;
use crate::store::moderation::ModerationRepo;
use crate::store::typed::{Change, ModifyError};
use crate::store::{SharedStore, StoreError};

/// Reports one user may file.
pub const REPORT_QUOTA: Quota = Quota::per_hour(20);
/// Largest page of a list.
pub const MAX_PAGE: usize = 100;
/// Queue entries one request reads at most while filtering.
const QUEUE_BUDGET: usize = 2_000;

/// Why a moderation operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// No such product or store (or not one the public may see, for reports).
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Report(#[from] ReportRule),
    #[error("reason: {0}")]
    InvalidReason(String),
    /// The item is already as the decision would leave it.
    #[error("{0}")]
    AlreadyDone(&'static str),
    #[error("too many reports; try again later")]
    Limited { retry_after: Duration },
    #[error(transparent)]
    Limiter(#[from] LimitError),
    #[error(transparent)]
    Catalog(CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CatalogError> for ModerationError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Store(e) => ModerationError::Store(e),
            other => ModerationError::Catalog(other),
        }
    }
}

fn flatten<E: Into<ModerationError>>(e: ModifyError<E>) -> ModerationError {
    match e {
        ModifyError::Rejected(e) => e.into(),
        ModifyError::Store(e) => ModerationError::Store(e),
    }
}

/// An item of the queue, with the item's current state.
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub reports: ReportedItem,
    /// The product, if the item is one (absent if it was deleted since).
    pub product: Option<Product>,
    /// The store: the item, or the product's.
    pub vendor: Option<Vendor>,
}

/// What the moderation service is built from.
pub struct ModerationParts {
    pub store: SharedStore,
    pub catalog: Catalog,
    pub notifications: Notifications,
    pub limiter: SharedLimiter,
    pub clock: Clock,
}

/// The moderation service, cheap to clone.
#[derive(Clone)]
pub struct Moderation {
    repo: ModerationRepo,
    catalog: Catalog,
    notifications: Notifications,
    limiter: SharedLimiter,
    clock: Clock,
}

impl Moderation {
    pub fn new(parts: ModerationParts) -> Self {
        Moderation {
            repo: ModerationRepo::new(parts.store),
            catalog: parts.catalog,
            notifications: parts.notifications,
            limiter: parts.limiter,
            clock: parts.clock,
        }
    }

    /// Files `reporter`'s report of a product or store the public can see.
    #[tracing::instrument(skip(self, text), fields(reporter = %reporter, item = %item.key()))]
    pub async fn report(
        &self,
        reporter: UserId,
        item: Reported,
        reason: ReportReason,
        text: &str,
    ) -> Result<ReportedItem, ModerationError> {
        let text = report_text(text)?;
        match item {
            Reported::Product(id) => {
                self.catalog
                    .product_view(id, None)
                    .await
                    .map_err(|e| match e {
                        CatalogError::NotFound => ModerationError::NotFound("product"),
                        other => other.into(),
                    })?;
            }
            Reported::Vendor(id) => {
                let listed = self
                    .catalog
                    .repo
                    .vendor(id)
                    .await?
                    .is_some_and(|v| v.value.status != VendorStatus::Suspended);
                if !listed {
                    return Err(ModerationError::NotFound("store"));
                }
            }
        }
        let key = format!("moderation:report:{reporter}");
        if let Limit::Limited { retry_after } = self.limiter.hit(&key, REPORT_QUOTA).await? {
            return Err(ModerationError::Limited { retry_after });
        }
        let report = Report {
            reporter,
            reason,
            text,
            at: self.clock.now(),
        };
        let (reported, _) = self
            .repo
            .modify(&item, |current| {
                let next = ReportedItem::add(current, item, report.clone())?;
                Ok::<_, ReportRule>(Change::Put(next.clone(), next))
            })
            .await
            .map_err(flatten)?;
        tracing::info!(count = reported.count, "item reported");
        Ok(reported)
    }

    /// The queue: items whose reports are in `status`, oldest round first, of one kind if
    /// asked.
    pub async fn queue(
        &self,
        status: ReportStatus,
        kind: Option<ItemKind>,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<QueueItem>, Option<String>), ModerationError> {
        let (rows, next) = self
            .repo
            .queue(
                status,
                after,
                limit.clamp(1, MAX_PAGE),
                QUEUE_BUDGET,
                |item| kind.is_none_or(|k| item.item.kind() == k),
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for (_, row) in rows {
            let reports = row.value;
            let (product, vendor_id) = match reports.item {
                Reported::Product(id) => {
                    let product = self.catalog.repo.product(id).await?.map(|p| p.value);
                    let vendor = product.as_ref().map(|p| p.vendor_id);
                    (product, vendor)
                }
                Reported::Vendor(id) => (None, Some(id)),
            };
            let vendor = match vendor_id {
                Some(id) => self.catalog.repo.vendor(id).await?.map(|v| v.value),
                None => None,
            };
            items.push(QueueItem {
                reports,
                product,
                vendor,
            });
        }
        Ok((items, next))
    }

    /// The history of decisions, newest first: of one item or of all.
    pub async fn history(
        &self,
        item: Option<Reported>,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Decision>, Option<String>), ModerationError> {
        let key = item.map(|i| i.key());
        Ok(self
            .repo
            .history(key.as_deref(), after, limit.clamp(1, MAX_PAGE))
            .await?)
    }

    /// Hides (`hidden`) or restores a product; the product before and after, and the
    /// decision.
    #[tracing::instrument(skip(self, reason), fields(admin = %admin, product_id = %id, hidden))]
    pub async fn set_product_hidden(
        &self,
        admin: UserId,
        id: ProductId,
        hidden: bool,
        reason: &str,
    ) -> Result<(Product, Product, Decision), ModerationError> {
        let reason = check_reason(reason).map_err(ModerationError::InvalidReason)?;
        let now = self.clock.now();
        let action = if hidden {
            Action::Hide
        } else {
            Action::Restore
        };
        let ((before, after, changed), _) = self
            .catalog
            .repo
            .products
            .modify(&id_key(id), |current| {
                let Some(before) = current else {
                    return Err(ModerationError::NotFound("product"));
                };
                if before.hidden == hidden {
                    return Ok(Change::Keep((before.clone(), before.clone(), false)));
                }
                let mut after = before.clone();
                after.hidden = hidden;
                after.updated_at = now;
                Ok(Change::Put(after.clone(), (before.clone(), after, true)))
            })
            .await
            .map_err(flatten)?;
        let item = Reported::Product(id);
        if !changed && !self.unrecorded(&item, action).await? {
            return Err(ModerationError::AlreadyDone(if hidden {
                "the product is hidden already"
            } else {
                "the product is not hidden"
            }));
        }
        self.catalog.product_changed(id).await;
        let decision = self.decide(admin, item, action, reason).await?;
        if let Some(owner) = self
            .catalog
            .repo
            .vendor(after.vendor_id)
            .await?
            .map(|v| v.value.owner)
        {
            let (kind, title) = if hidden {
                (
                    Notice::ProductHidden,
                    format!("“{}” was taken down by our moderators", after.title),
                )
            } else {
                (
                    Notice::ProductRestored,
                    format!("“{}” is listed again", after.title),
                )
            };
            self.tell(owner, kind, &decision, title).await;
        }
        Ok((before, after, decision))
    }

    /// Suspends (`suspended`) or reinstates a store; the store before and after, and the
    /// decision.
    #[tracing::instrument(skip(self, reason), fields(admin = %admin, vendor_id = %id, suspended))]
    pub async fn set_vendor_suspended(
        &self,
        admin: UserId,
        id: VendorId,
        suspended: bool,
        reason: &str,
    ) -> Result<(Vendor, Vendor, Decision), ModerationError> {
        let reason = check_reason(reason).map_err(ModerationError::InvalidReason)?;
        let before = self
            .catalog
            .repo
            .vendor(id)
            .await?
            .ok_or(ModerationError::NotFound("store"))?
            .value;
        let action = if suspended {
            Action::Suspend
        } else {
            Action::Reinstate
        };
        let is_suspended = before.status == VendorStatus::Suspended;
        let after = if is_suspended == suspended {
            if !self.unrecorded(&Reported::Vendor(id), action).await? {
                return Err(ModerationError::AlreadyDone(if suspended {
                    "the store is suspended already"
                } else {
                    "the store is not suspended"
                }));
            }
            before.clone()
        } else {
            let status = if suspended {
                VendorStatus::Suspended
            } else {
                VendorStatus::Active
            };
            let patch = VendorPatch {
                status: Some(status),
                ..VendorPatch::default()
            };
            self.catalog.update_vendor(id, admin, true, patch).await?
        };
        let decision = self
            .decide(admin, Reported::Vendor(id), action, reason)
            .await?;
        let (kind, title) = if suspended {
            (
                Notice::StoreSuspended,
                format!("Your store “{}” was suspended", after.name),
            )
        } else {
            (
                Notice::StoreReinstated,
                format!("Your store “{}” is open again", after.name),
            )
        };
        self.tell(after.owner, kind, &decision, title).await;
        Ok((before, after, decision))
    }

    /// Closes an item's open reports without acting on the item.
    #[tracing::instrument(skip(self, reason), fields(admin = %admin, item = %item.key()))]
    pub async fn dismiss(
        &self,
        admin: UserId,
        item: Reported,
        reason: &str,
    ) -> Result<Decision, ModerationError> {
        let reason = check_reason(reason).map_err(ModerationError::InvalidReason)?;
        let open = self
            .repo
            .item(&item)
            .await?
            .is_some_and(|r| r.value.status == ReportStatus::Open);
        if !open {
            return Err(ModerationError::AlreadyDone("no open reports on this item"));
        }
        self.decide(admin, item, Action::Dismiss, reason).await
    }

    /// Whether `item`, found already as `action` leaves it, got there by a decision that was
    /// never recorded (a process stopped between the catalog's write and the history's): the
    /// newest recorded decision is the opposite one, or, for a product found hidden, there is
    /// none (only moderators hide products). Such a decision is then finished, not refused.
    async fn unrecorded(&self, item: &Reported, action: Action) -> Result<bool, ModerationError> {
        let (latest, _) = self.repo.history(Some(&item.key()), None, 1).await?;
        let last = latest.first().map(|d| d.action);
        Ok(match action {
            Action::Hide => matches!(last, None | Some(Action::Restore)),
            Action::Restore => last == Some(Action::Hide),
            Action::Suspend => last == Some(Action::Reinstate),
            Action::Reinstate => last == Some(Action::Suspend),
            Action::Dismiss => false,
        })
    }

    /// Closes the open round of reports of `item` and records the decision.
    async fn decide(
        &self,
        admin: UserId,
        item: Reported,
        action: Action,
        reason: String,
    ) -> Result<Decision, ModerationError> {
        let id = DecisionId::new();
        let (closed, _) = self
            .repo
            .modify(&item, |current| match current {
                Some(open) if open.status == ReportStatus::Open => {
                    Ok::<_, ModerationError>(Change::Put(open.decided(id), open.count))
                }
                _ => Ok(Change::Keep(0)),
            })
            .await
            .map_err(flatten)?;
        let decision = Decision {
            id,
            item: item.key(),
            kind: item.kind(),
            action,
            reason,
            admin,
            reports_closed: closed,
            at: self.clock.now(),
        };
        self.repo.record(&decision).await?;
        tracing::info!(decision_id = %id, action = action.as_str(), reports_closed = closed, "moderation decision");
        Ok(decision)
    }

    /// Tells a store's owner of a decision and its reason; a failure is logged only.
    async fn tell(&self, owner: UserId, kind: Notice, decision: &Decision, title: String) {
        let notice = UserNotice {
            recipient: owner,
            kind,
            subject: decision.item.clone(),
            occasion: decision.id.to_string(),
            at: decision.at,
            title,
            body: format!("Reason: {}", decision.reason),
        };
        if let Err(e) = self.notifications.notify(notice).await {
            tracing::warn!(error = %e, owner = %owner, "moderation notice not written");
        }
    }
}
