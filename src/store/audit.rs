//! The audit trail in the store: an append-only table, partition = month of the action
//! (`2026-12`), clustering = the action's time counted down from a far future, then its id,
//! so a scan reads a month newest first.
//!
//! Rows are written with plain, unconditional puts and never changed or removed: nothing in
//! hexmarket holds a way to edit one.

use chrono::{DateTime, Datelike as _, Months, NaiveDate, Utc};

use super::{Key, ScanRange, SharedStore, StoreResult, Table, decode, encode};
use crate::domain::audit::{AuditEntry, AuditFilter};

/// Milliseconds the clustering key counts down from (the year 2286).
const FAR_MS: i64 = 9_999_999_999_999;

/// Most rows one read looks at before it answers with what it found and a cursor: a filter
/// that matches little cannot make one request read the whole trail.
pub const SCAN_BUDGET: usize = 2_000;

/// Where a read of the trail stopped: the month and the last row looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    month: NaiveDate,
    after: String,
}

impl AuditCursor {
    /// The cursor as an opaque token.
    pub fn token(&self) -> String {
        format!("{}/{}", self.month.format("%Y-%m"), self.after)
    }

    /// Reads a token [`token`](Self::token) made; `None` when it is not one.
    pub fn parse(token: &str) -> Option<AuditCursor> {
        let (month, after) = token.split_once('/')?;
        let month = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()?;
        let (count, id) = after.split_once('.')?;
        let valid = count.len() == 13
            && count.bytes().all(|b| b.is_ascii_digit())
            && uuid::Uuid::parse_str(id).is_ok();
        valid.then(|| AuditCursor {
            month,
            after: after.to_owned(),
        })
    }
}

/// Typed access to `audit_log`.
#[derive(Clone)]
pub struct AuditRepo {
    store: SharedStore,
}

impl AuditRepo {
    pub fn new(store: SharedStore) -> Self {
        AuditRepo { store }
    }

    /// Appends an entry; durable when this returns.
    pub async fn append(&self, entry: &AuditEntry) -> StoreResult<()> {
        let key = Key::new(partition(first_of_month(entry.at)), clustering(entry));
        let data = encode(Table::AuditLog, entry)?;
        self.store
            .put(Table::AuditLog, vec![(key, data)], None)
            .await
    }

    /// Up to `limit` entries matching `filter` with `from <= at <= to`, newest first, from
    /// `cursor` on; and where to go on, while the range may hold more.
    pub async fn page(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        filter: &AuditFilter,
        limit: usize,
        cursor: Option<AuditCursor>,
    ) -> StoreResult<(Vec<AuditEntry>, Option<AuditCursor>)> {
        let oldest = first_of_month(from);
        let (mut month, mut after) = match cursor {
            Some(c) => (c.month, Some(c.after)),
            None => (first_of_month(to), None),
        };
        let floor = format!("{:013}~", FAR_MS - from.timestamp_millis());
        let ceiling = format!("{:013}~", FAR_MS - to.timestamp_millis() - 1);
        let mut found = Vec::new();
        let mut budget = SCAN_BUDGET;
        while month >= oldest {
            loop {
                let range = ScanRange {
                    after: Some(after.take().unwrap_or_else(|| ceiling.clone())),
                    before: Some(floor.clone()),
                    limit: budget.min(limit - found.len()).max(1),
                };
                let page = self
                    .store
                    .scan(Table::AuditLog, &partition(month), range)
                    .await?;
                budget = budget.saturating_sub(page.rows.len());
                let last = page.rows.last().map(|r| r.key.clustering.clone());
                for row in &page.rows {
                    let entry: AuditEntry = decode(Table::AuditLog, &row.data)?;
                    if filter.matches(&entry) {
                        found.push(entry);
                    }
                }
                let Some(last) = last else { break };
                if found.len() >= limit || budget == 0 {
                    let more = page.next.is_some() || month > oldest;
                    return Ok((found, more.then_some(AuditCursor { month, after: last })));
                }
                if page.next.is_none() {
                    break;
                }
                after = Some(last);
            }
            let Some(earlier) = month.checked_sub_months(Months::new(1)) else {
                break;
            };
            month = earlier;
        }
        Ok((found, None))
    }
}

fn first_of_month(at: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(NaiveDate::MIN)
}

fn partition(month: NaiveDate) -> String {
    month.format("%Y-%m").to_string()
}

fn clustering(entry: &AuditEntry) -> String {
    format!(
        "{:013}.{}",
        FAR_MS - entry.at.timestamp_millis().clamp(0, FAR_MS),
        entry.id
    )
}
