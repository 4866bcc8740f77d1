//! Money as a double-entry ledger: accounts, balanced transactions, and how a paid order's
//! payment is shared between the store, the courier and the platform (and given back,
//! proportionally, when it is refunded).
//!
//! Amounts are signed integers in minor units: a debit is positive, a credit negative, and
//! the entries of a transaction sum to zero in every currency. The provider's clearing
//! account holds what customers paid and the provider still has. A paid order debits it and
//! credits the store's *pending* balance, the courier fees held for whoever delivers, and the
//! platform's commission and delivery-fee income. A verified delivery, once its hold period
//! is over, moves the store's and the courier's part to their *payable* balances; a payout
//! moves a payable balance out through the provider. A refund takes each share back in
//! proportion, from pending or from payable depending on whether the order was released.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{CheckoutId, OrderId, PayoutId, PayoutRunId, UserId, VendorId};
use crate::domain::money::{Currency, Money};

/// Basis points: 1/100 of a percent. 10,000 is the whole.
pub const WHOLE_BPS: u32 = 10_000;

/// A ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LedgerAccount {
    /// What customers paid that the payment provider holds for the platform (an asset).
    ProviderClearing,
    /// The platform's commission on goods (income).
    PlatformCommission,
    /// The platform's part of delivery fees (income).
    DeliveryFees,
    /// The courier's part of delivery fees of orders not delivered yet: owed to whoever
    /// delivers.
    CourierFeesHeld,
    /// Payments that arrived for orders that could no longer be served, until given back.
    UnservedPayments,
    /// Payouts sent to the provider and not yet confirmed.
    PayoutsInTransit,
    /// Discounts the platform gave (coupons it funds): an expense.
    Discounts,
    /// What a store will be owed once its orders' deliveries are verified and held.
    StorePending(VendorId),
    /// What the platform owes a store now: paid out by the next payout.
    StorePayable(VendorId),
    /// What the platform owes a courier now: paid out by the next payout.
    CourierPayable(UserId),
}

/// Why a string does not name an account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a ledger account")]
pub struct UnknownAccount(pub String);

impl LedgerAccount {
    /// Every account that is not one party's.
    pub const PLATFORM: [LedgerAccount; 7] = [
        LedgerAccount::ProviderClearing,
        LedgerAccount::PlatformCommission,
        LedgerAccount::DeliveryFees,
        LedgerAccount::CourierFeesHeld,
        LedgerAccount::UnservedPayments,
        LedgerAccount::PayoutsInTransit,
        LedgerAccount::Discounts,
    ];

    /// The store this account is one of.
    pub fn store(self) -> Option<VendorId> {
        match self {
            LedgerAccount::StorePending(v) | LedgerAccount::StorePayable(v) => Some(v),
            _ => None,
        }
    }

    /// The courier this account is one of.
    pub fn courier(self) -> Option<UserId> {
        match self {
            LedgerAccount::CourierPayable(u) => Some(u),
            _ => None,
        }
    }

    /// Whether payouts are made from this account.
    pub fn is_payable(self) -> bool {
        matches!(
            self,
            LedgerAccount::StorePayable(_) | LedgerAccount::CourierPayable(_)
        )
    }
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerAccount::ProviderClearing => f.write_str("provider_clearing"),
            LedgerAccount::PlatformCommission => f.write_str("platform_commission"),
            LedgerAccount::DeliveryFees => f.write_str("delivery_fees"),
            LedgerAccount::CourierFeesHeld => f.write_str("courier_fees_held"),
            LedgerAccount::UnservedPayments => f.write_str("unserved_payments"),
            LedgerAccount::PayoutsInTransit => f.write_str("payouts_in_transit"),
            LedgerAccount::Discounts => f.write_str("discounts"),
            LedgerAccount::StorePending(v) => write!(f, "store_pending:{v}"),
            LedgerAccount::StorePayable(v) => write!(f, "store_payable:{v}"),
            LedgerAccount::CourierPayable(u) => write!(f, "courier_payable:{u}"),
        }
    }
}

impl FromStr for LedgerAccount {
    type Err = UnknownAccount;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownAccount(raw.chars().take(80).collect());
        if let Some(found) = LedgerAccount::PLATFORM
            .iter()
            .find(|a| a.to_string() == raw)
        {
            return Ok(*found);
        }
        let (kind, id) = raw.split_once(':').ok_or_else(unknown)?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| unknown())?;
        match kind {
            "store_pending" => Ok(LedgerAccount::StorePending(id.into())),
            "store_payable" => Ok(LedgerAccount::StorePayable(id.into())),
            "courier_payable" => Ok(LedgerAccount::CourierPayable(id.into())),
            _ => Err(unknown()),
        }
    }
}

impl Serialize for LedgerAccount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LedgerAccount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for LedgerAccount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A ledger account: `provider_clearing`, `platform_commission`, `delivery_fees`, \
                 `courier_fees_held`, `unserved_payments`, `payouts_in_transit`, `discounts`, or one party's: \
                 `store_pending:{store id}`, `store_payable:{store id}`, `courier_payable:{user id}`",
            ))
            .pattern(Some(ACCOUNT_PATTERN))
            .examples([serde_json::json!(
                "store_payable:0193b0c4-5a7e-7d2a-9b1c-2f3e4d5a6b7c"
            )])
            .into()
    }
}

impl utoipa::ToSchema for LedgerAccount {}

/// What every account name matches.
pub const ACCOUNT_PATTERN: &str = "^(provider_clearing|platform_commission|delivery_fees|courier_fees_held|unserved_payments|payouts_in_transit|discounts|(store_pending|store_payable|courier_payable):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";

/// What a transaction records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// A customer's payment for an order.
    Payment,
    /// Part or all of an order's payment given back.
    Refund,
    /// A payment that arrived for an order that could no longer be served, and was given back.
    PaymentReturned,
    /// A verified delivery's shares made payable after the hold period.
    Release,
    /// A payable balance sent out.
    Payout,
    /// The provider confirmed a payout's transfer.
    PayoutPaid,
    /// The provider refused a payout: the money is back on the balance.
    PayoutFailed,
}

/// One booked transaction: balanced entries under a key derived from the business event, so
/// a retry or a replay finds it booked and books nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerTx {
    /// `order:{order}:{event seq}`, `release:{order}`, `payout:{payout}`, `payout:{payout}:paid`,
    /// `payout:{payout}:failed`.
    pub key: String,
    /// Position in the ledger: every transaction booked later has a larger one.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: TxKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub checkout_id: Option<CheckoutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub payout_id: Option<PayoutId>,
    /// A release: the order event it was computed through (refunds after it come out of the
    /// payable balances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
    pub entries: Vec<Entry>,
}

impl LedgerTx {
    pub fn order_key(order: OrderId, seq: u64) -> String {
        format!("order:{order}:{seq}")
    }

    pub fn release_key(order: OrderId) -> String {
        format!("release:{order}")
    }

    pub fn payout_key(payout: PayoutId) -> String {
        format!("payout:{payout}")
    }

    pub fn payout_end_key(payout: PayoutId, paid: bool) -> String {
        format!("payout:{payout}:{}", if paid { "paid" } else { "failed" })
    }

    /// The amount this transaction moved on `account` (0: none).
    pub fn on(&self, account: LedgerAccount) -> i64 {
        self.entries
            .iter()
            .filter(|e| e.account == account)
            .map(|e| e.amount.amount_minor)
            .sum()
    }
}

/// One line of an account's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementLine {
    /// The transaction's position in the ledger (the cursor of statements).
    pub seq: u64,
    pub tx_key: String,
    pub at: DateTime<Utc>,
    pub kind: TxKind,
    /// Debit positive, credit negative.
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub checkout_id: Option<CheckoutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub payout_id: Option<PayoutId>,
}

/// An account's balance: debits minus credits, per currency, through ledger position `through`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub amounts: BTreeMap<String, i64>,
    /// The last transaction applied to this balance.
    pub through: u64,
}

impl Balance {
    /// Adds the entries of transactions after `through` (each applied once).
    pub fn apply(&mut self, tx: &LedgerTx, account: LedgerAccount) -> bool {
        if tx.seq <= self.through {
            return false;
        }
        for entry in tx.entries.iter().filter(|e| e.account == account) {
            let sum = self
                .amounts
                .entry(entry.amount.currency.code().to_owned())
                .or_default();
            *sum = sum.saturating_add(entry.amount.amount_minor);
        }
        self.through = tx.seq;
        true
    }

    pub fn of(&self, currency: Currency) -> i64 {
        self.amounts.get(currency.code()).copied().unwrap_or(0)
    }
}

/// The rates an order's money is shared by, frozen on the order at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rates {
    /// The platform's commission on the goods (the subtotal), in basis points (1,500 = 15 %).
    #[schema(maximum = 10000, example = 1500)]
    pub commission_bps: u32,
    /// The courier's part of the delivery fee, in basis points (8,000 = 80 %).
    #[schema(maximum = 10000, example = 8000)]
    pub courier_fee_bps: u32,
}

impl Rates {
    /// Refuses a rate above the whole, naming the field.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.commission_bps > WHOLE_BPS {
            return Err("commission_bps");
        }
        if self.courier_fee_bps > WHOLE_BPS {
            return Err("courier_fee_bps");
        }
        Ok(())
    }
}

/// Where a payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Taken off the balance; the transfer is being made.
    Pending,
    /// The provider made the transfer.
    Paid,
    /// The provider refused: the amount is back on the balance.
    Failed,
}

/// One transfer of a payable balance to its store or courier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payout {
    #[schema(value_type = String, format = Uuid)]
    pub id: PayoutId,
    #[schema(value_type = String, format = Uuid)]
    pub run_id: PayoutRunId,
    /// The payable account paid out.
    pub account: LedgerAccount,
    pub amount: Money,
    pub status: PayoutStatus,
    /// The provider that makes the transfer (`simulated`, `stripe`).
    pub provider: String,
    /// The connected account the money goes to (Stripe `acct_…`), when the provider needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The provider's id of the transfer (`tr_…`, `sim_tr_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<String>,
    /// Why the provider refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One side of a transaction: `amount` debited (positive) or credited (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub account: LedgerAccount,
    pub amount: Money,
}

/// Why a set of entries is not a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbalanced {
    #[error("a transaction has at least two entries")]
    TooFew,
    #[error("an entry of zero")]
    ZeroEntry,
    #[error("the entries in {currency} sum to {sum}, not zero")]
    NonZero { currency: &'static str, sum: i64 },
    #[error("the amounts overflow")]
    Overflow,
}

/// Checks that `entries` can be booked: two or more, none zero, summing to zero per currency.
pub fn check_balanced(entries: &[Entry]) -> Result<(), Unbalanced> {
    if entries.len() < 2 {
        return Err(Unbalanced::TooFew);
    }
    let mut sums: BTreeMap<&'static str, i64> = BTreeMap::new();
    for entry in entries {
        if entry.amount.amount_minor == 0 {
            return Err(Unbalanced::ZeroEntry);
        }
        let sum = sums.entry(entry.amount.currency.code()).or_default();
        *sum = sum
            .checked_add(entry.amount.amount_minor)
            .ok_or(Unbalanced::Overflow)?;
    }
    match sums.into_iter().find(|&(_, sum)| sum != 0) {
        Some((currency, sum)) => Err(Unbalanced::NonZero { currency, sum }),
        None => Ok(()),
    }
}

/// How one order's payment is shared, in the order of [`Shares::parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shares {
    pub store: i64,
    pub commission: i64,
    pub courier: i64,
    pub delivery: i64,
}

impl Shares {
    /// The shares of a payment of `subtotal` for the goods and `delivery_fee`, by `rates`
    /// (each share rounded half up; the store and the platform's delivery income take what
    /// rounding leaves, so the shares always add up to the payment).
    pub fn of(subtotal: i64, delivery_fee: i64, rates: Rates) -> Shares {
        let commission = part(subtotal, rates.commission_bps);
        let courier = part(delivery_fee, rates.courier_fee_bps);
        Shares {
            store: subtotal - commission,
            commission,
            courier,
            delivery: delivery_fee - courier,
        }
    }

    pub fn total(&self) -> i64 {
        self.parts().iter().sum()
    }

    fn parts(&self) -> [i64; 4] {
        [self.store, self.commission, self.courier, self.delivery]
    }

    fn from_parts([store, commission, courier, delivery]: [i64; 4]) -> Shares {
        Shares {
            store,
            commission,
            courier,
            delivery,
        }
    }

    /// The part of a refund of `now` that each share gives back, after `taken` was given back
    /// by earlier refunds: `now` shared in proportion to what is left of each share, each part
    /// rounded down and what rounding leaves given to the largest remainders (the first of
    /// equal ones), never more than is left of a share. No part is negative, the parts add up
    /// to `now` (capped at what is left), and refunds that add up to the payment give back
    /// exactly every share.
    pub fn refund_part(&self, taken: &Shares, now: i64) -> Shares {
        let taken = taken.parts();
        let left: [i64; 4] = std::array::from_fn(|i| (self.parts()[i] - taken[i]).max(0));
        let total: i64 = left.iter().sum();
        if total <= 0 || now <= 0 {
            return Shares::from_parts([0; 4]);
        }
        let now = i128::from(now.min(total));
        let whole = i128::from(total);
        let mut part = [0i64; 4];
        let mut remainders = [(0i128, 0usize); 4];
        for (i, &share) in left.iter().enumerate() {
            let exact = i128::from(share) * now;
            part[i] = (exact / whole) as i64;
            remainders[i] = (exact % whole, i);
        }
        let mut short = now as i64 - part.iter().sum::<i64>();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().cycle().take(8) {
            if short == 0 {
                break;
            }
            if part[i] < left[i] {
                part[i] += 1;
                short -= 1;
            }
        }
        Shares::from_parts(part)
    }

    /// What refunds of `amounts`, one after another, gave back in all.
    pub fn given_back(&self, amounts: &[i64]) -> Shares {
        amounts
            .iter()
            .fold(Shares::from_parts([0; 4]), |taken, &now| {
                taken.plus(&self.refund_part(&taken, now))
            })
    }

    fn plus(&self, other: &Shares) -> Shares {
        let (a, b) = (self.parts(), other.parts());
        Shares::from_parts(std::array::from_fn(|i| a[i] + b[i]))
    }
    fn minus(&self, other: &Shares) -> Shares {
        let (a, b) = (self.parts(), other.parts());
        Shares::from_parts(std::array::from_fn(|i| a[i] - b[i]))
    }
}

/// The parties of one order's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub store: VendorId,
    /// The courier who delivered (none before a courier is assigned).
    pub courier: Option<UserId>,
    pub currency: Currency,
}

/// Entries from `(account, amount)` pairs, zero amounts left out.
fn entries_of(currency: Currency, pairs: &[(LedgerAccount, i64)]) -> Vec<Entry> {
    pairs
        .iter()
        .filter(|(_, amount)| *amount != 0)
        .map(|&(account, amount)| Entry {
            account,
            amount: Money::new(amount, currency),
        })
        .collect()
}

/// A discount on an order, as the ledger books it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discount {
    /// Given by the platform: the shares are of the full price, the platform pays the rest.
    pub platform: i64,
    /// Given by the store: the shares are of the discounted price (its own is smaller).
    pub store: i64,
}

/// A paid order: the payment received (with the discount the platform gives), shared into
/// the store's pending balance, the courier fees held for whoever delivers, and the
/// platform's income. A discount the store gives shows on its pending balance as the
/// full-price share less the discount.
pub fn payment_entries(shares: &Shares, parties: Parties, discount: Discount) -> Vec<Entry> {
    use LedgerAccount as A;
    let store = A::StorePending(parties.store);
    entries_of(
        parties.currency,
        &[
            (A::ProviderClearing, shares.total() - discount.platform),
            (A::Discounts, discount.platform),
            (store, -(shares.store + discount.store)),
            (store, discount.store),
            (A::PlatformCommission, -shares.commission),
            (A::CourierFeesHeld, -shares.courier),
            (A::DeliveryFees, -shares.delivery),
        ],
    )
}

/// What refunds of `refunds` (one after another) of a payment of `paid` take off shares
/// adding up to `gross` (more than `paid` when the platform gave a discount): each scaled by
/// `gross / paid`, rounded on the running total so that refunding all of `paid` takes back
/// exactly `gross`.
pub fn gross_refunds(paid: i64, gross: i64, refunds: &[i64]) -> Vec<i64> {
    let scaled = |x: i64| -> i64 {
        if paid <= 0 {
            return 0;
        }
        let x = i128::from(x.clamp(0, paid));
        ((x * i128::from(gross) + i128::from(paid) / 2) / i128::from(paid)) as i64
    };
    let mut before = 0i64;
    refunds
        .iter()
        .map(|&now| {
            let after = before.saturating_add(now.max(0));
            let step = scaled(after) - scaled(before);
            before = after;
            step
        })
        .collect()
}

/// A refund whose shares are `part`: taken back from the pending balances, or from the
/// payable ones when the order was released before the refund. Of `part`, the customer gets
/// back all but `discount_back`, the part of the platform's discount it takes back.
pub fn refund_entries(
    part: &Shares,
    parties: Parties,
    released: bool,
    discount_back: i64,
) -> Vec<Entry> {
    use LedgerAccount as A;
    let store = if released {
        A::StorePayable(parties.store)
    } else {
        A::StorePending(parties.store)
    };
    let courier = match parties.courier {
        Some(c) if released => A::CourierPayable(c),
        _ => A::CourierFeesHeld,
    };
    entries_of(
        parties.currency,
        &[
            (A::ProviderClearing, -(part.total() - discount_back)),
            (A::Discounts, -discount_back),
            (store, part.store),
            (A::PlatformCommission, part.commission),
            (courier, part.courier),
            (A::DeliveryFees, part.delivery),
        ],
    )
}

/// What a release makes payable: each share less what refunds through the release took.
pub fn release_left(shares: &Shares, refunds: &[i64]) -> Shares {
    shares.minus(&shares.given_back(refunds))
}

/// A release of what is `left` of an order's shares: the store's part from pending to
/// payable, the courier's from the fees held to the courier who delivered (or to the
/// platform's delivery income when nobody did).
pub fn release_entries(left: &Shares, parties: Parties) -> Vec<Entry> {
    use LedgerAccount as A;
    let courier = parties.courier.map_or(A::DeliveryFees, A::CourierPayable);
    entries_of(
        parties.currency,
        &[
            (A::StorePending(parties.store), left.store),
            (A::StorePayable(parties.store), -left.store),
            (A::CourierFeesHeld, left.courier),
            (courier, -left.courier),
        ],
    )
}

/// A payment that arrived for an order that could not be served, and went straight back.
pub fn returned_entries(amount: Money) -> Vec<Entry> {
    use LedgerAccount as A;
    entries_of(
        amount.currency,
        &[
            (A::ProviderClearing, amount.amount_minor),
            (A::UnservedPayments, -amount.amount_minor),
            (A::UnservedPayments, amount.amount_minor),
            (A::ProviderClearing, -amount.amount_minor),
        ],
    )
}

/// A payout of `amount` from `account`: taken off the payable balance into transit.
pub fn payout_entries(account: LedgerAccount, amount: Money) -> Vec<Entry> {
    entries_of(
        amount.currency,
        &[
            (account, amount.amount_minor),
            (LedgerAccount::PayoutsInTransit, -amount.amount_minor),
        ],
    )
}

/// The end of a payout in transit: out of the provider's clearing when it was paid, back on
/// `account` when it failed.
pub fn payout_end_entries(account: LedgerAccount, amount: Money, paid: bool) -> Vec<Entry> {
    let to = if paid {
        LedgerAccount::ProviderClearing
    } else {
        account
    };
    entries_of(
        amount.currency,
        &[
            (LedgerAccount::PayoutsInTransit, amount.amount_minor),
            (to, -amount.amount_minor),
        ],
    )
}

/// `amount × bps / 10,000`, rounded half up (amounts are never negative here).
fn part(amount: i64, bps: u32) -> i64 {
    let bps = i128::from(bps.min(WHOLE_BPS));
    ((i128::from(amount) * bps + i128::from(WHOLE_BPS / 2)) / i128::from(WHOLE_BPS)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::EUR
    }

    const RATES: Rates = Rates {
        commission_bps: 1_500,
        courier_fee_bps: 8_000,
    };

    #[test]
    fn shares_add_up_to_the_payment_whatever_the_rounding() {
        for subtotal in [1, 3, 99, 1_001, 12_345, 999_999] {
            for fee in [0, 1, 299, 350] {
                let shares = Shares::of(subtotal, fee, RATES);
                assert_eq!(shares.total(), subtotal + fee, "{shares:?}");
                assert!(shares.parts().iter().all(|&p| p >= 0), "{shares:?}");
            }
        }
        let shares = Shares::of(10_000, 300, RATES);
        assert_eq!((shares.store, shares.commission), (8_500, 1_500));
        assert_eq!((shares.courier, shares.delivery), (240, 60));
    }

    #[test]
    fn refunds_in_any_steps_take_back_exactly_the_shares_and_never_more() {
        // (1999 + 299 at these rates is [1699, 300, 239, 60]: rounding on the cumulative
        // amount would make a refund of 1 after 19 give back -1 of one share.)
        for (subtotal, fee) in [(1_999, 299), (12_345, 299), (1, 1), (10_000, 0)] {
            let shares = Shares::of(subtotal, fee, RATES);
            let total = shares.total();
            let mut patterns = vec![vec![total], vec![19, 1, (total - 20).max(1)], vec![1; 40]];
            patterns.push((0..total.min(2_000)).map(|i| 1 + i % 7).collect());
            for steps in patterns {
                let mut taken = Shares::from_parts([0; 4]);
                let mut refunded = 0;
                for now in steps {
                    let part = shares.refund_part(&taken, now);
                    assert!(part.parts().iter().all(|&p| p >= 0), "{part:?}");
                    assert_eq!(part.total(), now.min(total - refunded), "{part:?}");
                    refunded += part.total();
                    taken = taken.plus(&part);
                    for (t, s) in taken.parts().iter().zip(shares.parts()) {
                        assert!(*t <= s);
                    }
                }
                if refunded == total {
                    assert_eq!(taken, shares);
                }
            }
            // More than what was paid gives back no more than the shares.
            assert_eq!(shares.given_back(&[total * 2]), shares);
            assert_eq!(shares.given_back(&[total - 5, 5, 5]), shares);
        }
    }

    fn sum(txs: &[Vec<Entry>], account: LedgerAccount) -> i64 {
        txs.iter()
            .flatten()
            .filter(|e| e.account == account)
            .map(|e| e.amount.amount_minor)
            .sum()
    }

    #[test]
    fn an_order_paid_refunded_released_and_paid_out_leaves_nothing_pending() {
        let (store, courier) = (VendorId::new(), UserId::new());
        let parties = Parties {
            store,
            courier: Some(courier),
            currency: eur(),
        };
        let shares = Shares::of(12_345, 299, RATES);
        let first = shares.refund_part(&Shares::from_parts([0; 4]), 1_000);
        let left = release_left(&shares, &[1_000]);
        let second = shares.refund_part(&shares.given_back(&[1_000]), 500);
        let payable = LedgerAccount::StorePayable(store);
        let paid_out = Money::new(left.store - second.store, eur());
        let txs = vec![
            payment_entries(&shares, parties, Discount::default()),
            refund_entries(&first, parties, false, 0),
            release_entries(&left, parties),
            refund_entries(&second, parties, true, 0),
            payout_entries(payable, paid_out),
            payout_end_entries(payable, paid_out, true),
        ];
        for tx in &txs {
            check_balanced(tx).unwrap();
        }
        assert_eq!(sum(&txs, LedgerAccount::StorePending(store)), 0);
        assert_eq!(sum(&txs, LedgerAccount::CourierFeesHeld), 0);
        assert_eq!(sum(&txs, payable), 0);
        assert_eq!(sum(&txs, LedgerAccount::PayoutsInTransit), 0);
        assert_eq!(
            sum(&txs, LedgerAccount::CourierPayable(courier)),
            -(left.courier - second.courier)
        );
        // What stays with the provider is what the customer paid, less the refunds and the
        // payout.
        assert_eq!(
            sum(&txs, LedgerAccount::ProviderClearing),
            12_345 + 299 - 1_500 - paid_out.amount_minor
        );
        // A failed payout puts the money back.
        let failed = [
            payout_entries(payable, paid_out),
            payout_end_entries(payable, paid_out, false),
        ];
        assert_eq!(sum(&failed, payable), 0);
        assert_eq!(sum(&failed, LedgerAccount::PayoutsInTransit), 0);
    }

    #[test]
    fn refunds_of_a_discounted_payment_take_back_the_full_shares_in_the_end() {
        let (store, courier) = (VendorId::new(), UserId::new());
        let parties = Parties {
            store,
            courier: Some(courier),
            currency: eur(),
        };
        // 20.00 of goods and 2.99 delivery, 5.00 off paid by the platform: 17.99 paid.
        let shares = Shares::of(2_000, 299, RATES);
        let discount = Discount {
            platform: 500,
            store: 0,
        };
        let paid = shares.total() - 500;
        let refunds = [700, 1, paid - 701];
        let gross = gross_refunds(paid, shares.total(), &refunds);
        assert_eq!(gross.iter().sum::<i64>(), shares.total());
        assert!(gross.iter().zip(refunds).all(|(g, r)| *g >= r));
        let mut txs = vec![payment_entries(&shares, parties, discount)];
        let mut taken = Shares::from_parts([0; 4]);
        for (g, r) in gross.iter().zip(refunds) {
            let part = shares.refund_part(&taken, *g);
            taken = taken.plus(&part);
            txs.push(refund_entries(&part, parties, false, g - r));
        }
        for tx in &txs {
            check_balanced(tx).unwrap();
        }
        for account in [
            LedgerAccount::ProviderClearing,
            LedgerAccount::Discounts,
            LedgerAccount::StorePending(store),
            LedgerAccount::PlatformCommission,
            LedgerAccount::CourierFeesHeld,
            LedgerAccount::DeliveryFees,
        ] {
            assert_eq!(sum(&txs, account), 0, "{account}");
        }
        // The store's own discount shows on its statement and leaves its share smaller.
        let theirs = Shares::of(1_500, 299, RATES);
        let entries = payment_entries(
            &theirs,
            parties,
            Discount {
                platform: 0,
                store: 500,
            },
        );
        check_balanced(&entries).unwrap();
        assert_eq!(
            sum(&[entries], LedgerAccount::StorePending(store)),
            -theirs.store
        );
    }

    #[test]
    fn accounts_read_back_from_their_names() {
        let mut all = LedgerAccount::PLATFORM.to_vec();
        all.push(LedgerAccount::StorePending(VendorId::new()));
        all.push(LedgerAccount::StorePayable(VendorId::new()));
        all.push(LedgerAccount::CourierPayable(UserId::new()));
        for account in all {
            assert_eq!(account.to_string().parse::<LedgerAccount>(), Ok(account));
        }
        for bad in [
            "",
            "store_payable",
            "store_payable:xyz",
            "bank:1",
            "provider_clearing:",
        ] {
            assert!(bad.parse::<LedgerAccount>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unbalanced_entries_are_refused() {
        let money = |a| Money::new(a, eur());
        let debit = Entry {
            account: LedgerAccount::ProviderClearing,
            amount: money(100),
        };
        let credit = |a| Entry {
            account: LedgerAccount::PlatformCommission,
            amount: money(a),
        };
        assert_eq!(check_balanced(&[debit]), Err(Unbalanced::TooFew));
        assert_eq!(
            check_balanced(&[debit, credit(-99)]),
            Err(Unbalanced::NonZero {
                currency: "EUR",
                sum: 1
            })
        );
        assert_eq!(
            check_balanced(&[debit, credit(-100), credit(0)]),
            Err(Unbalanced::ZeroEntry)
        );
        assert_eq!(check_balanced(&[debit, credit(-100)]), Ok(()));
    }
}
