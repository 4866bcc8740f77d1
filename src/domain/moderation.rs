//! Moderation of products and stores: users' reports, gathered per reported item, and the
//! decisions admins take on them.
//!
//! A reported item collects the open reports of different users (one each) until an admin
//! decides on it; the decision closes that round of reports, and later reports start a new one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::{check_line, check_text};
use super::ids::{DecisionId, ProductId, UserId, VendorId};

/// Longest free text of a report.
pub const MAX_REPORT_TEXT: usize = 1_000;
/// Longest reason of a decision.
pub const MAX_REASON: usize = 1_000;
/// Reports one round of one item remembers in full (later ones are only counted).
pub const MAX_REPORTS_KEPT: usize = 100;

/// What is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reported {
    Product(ProductId),
    Vendor(VendorId),
}

/// The kind of a reported item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Product,
    Vendor,
}

impl Reported {
    /// `product:{id}` or `vendor:{id}`: the item's key in the store and in the API.
    pub fn key(&self) -> String {
        match self {
            Reported::Product(id) => format!("product:{id}"),
            Reported::Vendor(id) => format!("vendor:{id}"),
        }
    }

    pub fn kind(&self) -> ItemKind {
        match self {
            Reported::Product(_) => ItemKind::Product,
            Reported::Vendor(_) => ItemKind::Vendor,
        }
    }

    /// Parses a key made by [`Reported::key`].
    pub fn parse(raw: &str) -> Option<Reported> {
        let (kind, id) = raw.split_once(':')?;
        match kind {
            "product" => id.parse().ok().map(Reported::Product),
            "vendor" => id.parse().ok().map(Reported::Vendor),
            _ => None,
        }
    }
}

/// Why a user reports an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    Prohibited,
    Counterfeit,
    Misleading,
    Offensive,
    Unsafe,
    Fraud,
    Other,
}

/// One user's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    #[schema(value_type = String, format = Uuid)]
    pub reporter: UserId,
    pub reason: ReportReason,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    pub at: DateTime<Utc>,
}

/// Whether an item's reports wait for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Waiting for an admin.
    Open,
    /// An admin decided on the reports so far.
    Decided,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Open => "open",
            ReportStatus::Decided => "decided",
        }
    }
}

/// The reports of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedItem {
    pub item: Reported,
    pub status: ReportStatus,
    /// Reports of the current round (the newest last), at most [`MAX_REPORTS_KEPT`].
    pub reports: Vec<Report>,
    /// Reports of the current round, kept or not.
    pub count: u32,
    /// Reports ever made.
    pub total: u32,
    /// When the current round began.
    pub opened_at: DateTime<Utc>,
    pub latest_at: DateTime<Utc>,
    /// The last decision on the item.
    pub last_decision: Option<DecisionId>,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRule {
    #[error("you have already reported this; an admin will look at it")]
    AlreadyReported,
    #[error("text: {0}")]
    InvalidText(String),
}

/// Report text as stored: trimmed, at most [`MAX_REPORT_TEXT`] characters.
pub fn report_text(raw: &str) -> Result<String, ReportRule> {
    check_text("text", raw.trim(), MAX_REPORT_TEXT).map_err(ReportRule::InvalidText)
}

/// A decision's reason as stored: one line or more, 1..=[`MAX_REASON`] characters.
pub fn reason(raw: &str) -> Result<String, String> {
    check_line("reason", raw, MAX_REASON)
}

impl ReportedItem {
    /// `report` added to `current` (absent: the item's first report): a new round starts after
    /// a decision; a user reports each round once.
    pub fn add(
        current: Option<&ReportedItem>,
        item: Reported,
        report: Report,
    ) -> Result<ReportedItem, ReportRule> {
        let at = report.at;
        let mut next = match current {
            Some(open) if open.status == ReportStatus::Open => {
                if open.reports.iter().any(|r| r.reporter == report.reporter) {
                    return Err(ReportRule::AlreadyReported);
                }
                open.clone()
            }
            Some(decided) => ReportedItem {
                status: ReportStatus::Open,
                reports: Vec::new(),
                count: 0,
                opened_at: at,
                ..decided.clone()
            },
            None => ReportedItem {
                item,
                status: ReportStatus::Open,
                reports: Vec::new(),
                count: 0,
                total: 0,
                opened_at: at,
                latest_at: at,
                last_decision: None,
            },
        };
        if next.reports.len() < MAX_REPORTS_KEPT {
            next.reports.push(report);
        }
        next.count = next.count.saturating_add(1);
        next.total = next.total.saturating_add(1);
        next.latest_at = at;
        Ok(next)
    }

    /// The round closed by `decision`.
    pub fn decided(&self, decision: DecisionId) -> ReportedItem {
        ReportedItem {
            status: ReportStatus::Decided,
            last_decision: Some(decision),
            ..self.clone()
        }
    }
}

/// What an admin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Took a product off the shelf for everyone but its store and admins.
    Hide,
    /// Put a hidden product back.
    Restore,
    /// Suspended a store: its products are not listed or sold.
    Suspend,
    /// Lifted a store's suspension.
    Reinstate,
    /// Closed the reports without acting on the item.
    Dismiss,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Hide => "hide",
            Action::Restore => "restore",
            Action::Suspend => "suspend",
            Action::Reinstate => "reinstate",
            Action::Dismiss => "dismiss",
        }
    }
}

/// One decision of an admin, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    #[schema(value_type = String, format = Uuid)]
    pub id: DecisionId,
    /// `product:{id}` or `vendor:{id}`.
    pub item: String,
    pub kind: ItemKind,
    pub action: Action,
    pub reason: String,
    #[schema(value_type = String, format = Uuid)]
    pub admin: UserId,
    /// Open reports the decision closed.
    pub reports_closed: u32,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reporter: UserId, at: DateTime<Utc>) -> Report {
        Report {
            reporter,
            reason: ReportReason::Counterfeit,
            text: String::new(),
            at,
        }
    }

    #[test]
    fn one_report_per_user_per_round() {
        let item = Reported::Product(ProductId::new());
        let (alice, bob) = (UserId::new(), UserId::new());
        let now = Utc::now();
        let first = ReportedItem::add(None, item, report(alice, now)).unwrap();
        assert_eq!(
            ReportedItem::add(Some(&first), item, report(alice, now)),
            Err(ReportRule::AlreadyReported)
        );
        let second = ReportedItem::add(Some(&first), item, report(bob, now)).unwrap();
        assert_eq!((second.count, second.total), (2, 2));
        let decided = second.decided(DecisionId::new());
        let again = ReportedItem::add(Some(&decided), item, report(alice, now)).unwrap();
        assert_eq!(again.status, ReportStatus::Open);
        assert_eq!((again.count, again.total), (1, 3));
    }

    #[test]
    fn keys_round_trip() {
        let item = Reported::Vendor(VendorId::new());
        assert_eq!(Reported::parse(&item.key()), Some(item));
        assert_eq!(Reported::parse("user:1"), None);
        assert!(reason("  ").is_err());
        assert!(reason("counterfeit goods").is_ok());
    }
}
