//! Reconciliation: the ledger against the payment provider's records for a period.
//!
//! The provider's records are what it confirmed to hexmarket: each payment's captured amount
//! and the refunds it reported (through signed webhooks and refund answers), and each
//! payout's transfer. For every payment created in the period the ledger's movements on the
//! provider's clearing account for that checkout must equal what was captured and refunded;
//! for every payout made in the period, a paid transfer must be booked out of clearing once
//! and a failed one not at all. Each disagreement is listed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ledger, LedgerError};
use crate::domain::ids::{CheckoutId, PayoutId};
use crate::domain::ledger::{LedgerAccount, PayoutStatus, TxKind};
use crate::payments::PaymentStatus;

/// One disagreement between the ledger and the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Difference {
    /// `captured`, `refunded` (a payment) or `paid_out` (a payout).
    pub kind: &'static str,
    /// The payment's or the payout's id.
    pub reference: String,
    /// The provider's reference (`pi_…`, `tr_…`), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<String>,
    pub currency: String,
    /// What the provider's records say, in minor units.
    pub provider_minor: i64,
    /// What the ledger booked, in minor units.
    pub ledger_minor: i64,
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reconciliation {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Payments created in the period that were compared.
    pub payments: u64,
    /// Payouts made in the period that were compared.
    pub payouts: u64,
    /// What the provider captured, refunded and transferred in the period, per currency.
    pub captured: BTreeMap<String, i64>,
    pub refunded: BTreeMap<String, i64>,
    pub paid_out: BTreeMap<String, i64>,
    /// Every disagreement; empty when the ledger and the provider agree.
    pub differences: Vec<Difference>,
}

#[derive(Default)]
struct Booked {
    received: i64,
    refunded: i64,
}

impl Ledger {
    /// Compares the ledger with the provider's records for payments and payouts created in
    /// `[from, to)`.
    pub async fn reconcile(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Reconciliation, LedgerError> {
        let inner = &self.inner;
        // The ledger's side: every movement of the clearing account, per checkout and payout.
        let mut by_checkout: BTreeMap<CheckoutId, Booked> = BTreeMap::new();
        let mut by_payout: BTreeMap<PayoutId, i64> = BTreeMap::new();
        let mut after = 0;
        loop {
            let (lines, more) = inner
                .repo
                .statement(
                    LedgerAccount::ProviderClearing,
                    after,
                    crate::store::MAX_PAGE,
                )
                .await?;
            for line in &lines {
                after = line.seq;
                let amount = line.amount.amount_minor;
                match (line.kind, line.checkout_id, line.payout_id) {
                    (TxKind::Payment | TxKind::Refund | TxKind::PaymentReturned, Some(c), _) => {
                        let booked = by_checkout.entry(c).or_default();
                        if amount > 0 {
                            booked.received += amount;
                        } else {
                            booked.refunded -= amount;
                        }
                    }
                    (TxKind::PayoutPaid, _, Some(p)) => *by_payout.entry(p).or_default() -= amount,
                    _ => {}
                }
            }
            if !more || lines.is_empty() {
                break;
            }
        }
        let mut report = Reconciliation {
            from,
            to,
            payments: 0,
            payouts: 0,
            captured: BTreeMap::new(),
            refunded: BTreeMap::new(),
            paid_out: BTreeMap::new(),
            differences: Vec::new(),
        };
        // The provider's side: payments.
        let mut cursor = None;
        loop {
            let (payments, next) = inner.payments.page(cursor, crate::store::MAX_PAGE).await?;
            for payment in payments
                .iter()
                .filter(|p| p.created_at >= from && p.created_at < to)
            {
                report.payments += 1;
                let currency = payment.amount.currency.code().to_owned();
                let captured = match payment.status {
                    PaymentStatus::Succeeded
                    | PaymentStatus::Refunded
                    | PaymentStatus::PartiallyRefunded => payment.amount.amount_minor,
                    PaymentStatus::Pending | PaymentStatus::Failed => 0,
                };
                *report.captured.entry(currency.clone()).or_default() += captured;
                *report.refunded.entry(currency.clone()).or_default() += payment.refunded_minor;
                let booked = by_checkout.remove(&payment.checkout_id).unwrap_or_default();
                for (kind, provider_minor, ledger_minor) in [
                    ("captured", captured, booked.received),
                    ("refunded", payment.refunded_minor, booked.refunded),
                ] {
                    if provider_minor != ledger_minor {
                        report.differences.push(Difference {
                            kind,
                            reference: payment.id.to_string(),
                            provider_ref: Some(payment.provider_ref.clone()),
                            currency: currency.clone(),
                            provider_minor,
                            ledger_minor,
                        });
                    }
                }
            }
            if next.is_none() || payments.is_empty() && next.is_none() {
                break;
            }
            cursor = next;
        }
        // Payouts.
        let mut cursor = None;
        loop {
            let (payouts, next) = self.payouts(None, cursor, crate::store::MAX_PAGE).await?;
            for payout in payouts
                .iter()
                .filter(|p| p.created_at >= from && p.created_at < to)
            {
                report.payouts += 1;
                let currency = payout.amount.currency.code().to_owned();
                let provider_minor = match payout.status {
                    PayoutStatus::Paid => payout.amount.amount_minor,
                    // In flight: the provider's answer is not in yet; nothing to compare.
                    PayoutStatus::Pending => continue,
                    PayoutStatus::Failed => 0,
                };
                *report.paid_out.entry(currency.clone()).or_default() += provider_minor;
                let ledger_minor = by_payout.get(&payout.id).copied().unwrap_or(0);
                if provider_minor != ledger_minor {
                    report.differences.push(Difference {
                        kind: "paid_out",
                        reference: payout.id.to_string(),
                        provider_ref: payout.provider_ref.clone(),
                        currency,
                        provider_minor,
                        ledger_minor,
                    });
                }
            }
            if next.is_none() {
                break;
            }
            cursor = next;
        }
        Ok(report)
    }
}
