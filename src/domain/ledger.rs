//! Money as a double-entry ledger: accounts, balanced transactions, and how a paid order's
//! payment is shared between the store, the courier and the platform (and given back,
//! proportionally, when it is refunded).
//!
//! Amounts are signed integers in minor units: a debit is positive, a credit negative, and
//! the entries of a transaction sum to zero in every currency. The provider's clearing
//! account holds what customers paid and the provider still has. A paid order debits it and
//! credits the store's and the courier's payables and the platform's commission and
//! delivery-fee income; a refund does the reverse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ids::{UserId, VendorId};
use crate::domain::money::{Currency, Money};

/// Basis points: 1/100 of a percent. 10,000 is the whole.
pub const WHOLE_BPS: u32 = 10_000;

/// A ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum LedgerAccount {
    /// What customers paid that the payment provider holds for the platform.
    ProviderClearing,
    /// The platform's commission on goods.
    PlatformCommission,
    /// The platform's part of delivery fees.
    DeliveryFees,
    /// What the platform owes a store.
    StorePayable(VendorId),
    /// What the platform owes a courier.
    CourierPayable(UserId),
}

/// One side of a transaction: `amount` debited (positive) or credited (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The rates an order's money is shared by, frozen on the order at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// The platform's commission on the goods (the subtotal).
    pub commission_bps: u32,
    /// The courier's part of the delivery fee.
    pub courier_fee_bps: u32,
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

    /// The entries that book these shares of a payment received (`sign` 1), or take them
    /// back on a refund (`sign` -1). Zero shares are left out.
    pub fn entries(
        &self,
        store: VendorId,
        courier: Option<UserId>,
        currency: Currency,
        sign: i64,
    ) -> Vec<Entry> {
        let money = |amount: i64| Money::new(amount, currency);
        // Without a courier (none was assigned) the platform keeps the courier's part.
        let (courier_account, delivery) = match courier {
            Some(c) => (Some(LedgerAccount::CourierPayable(c)), self.delivery),
            None => (None, self.delivery + self.courier),
        };
        let mut entries = vec![Entry {
            account: LedgerAccount::ProviderClearing,
            amount: money(sign * self.total()),
        }];
        let credits = [
            (Some(LedgerAccount::StorePayable(store)), self.store),
            (Some(LedgerAccount::PlatformCommission), self.commission),
            (courier_account, self.courier),
            (Some(LedgerAccount::DeliveryFees), delivery),
        ];
        for (account, amount) in credits {
            if let Some(account) = account
                && amount != 0
            {
                entries.push(Entry {
                    account,
                    amount: money(-sign * amount),
                });
            }
        }
        entries.retain(|e| e.amount.amount_minor != 0);
        entries
    }
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

    #[test]
    fn booked_entries_balance_with_and_without_a_courier() {
        let (store, courier) = (VendorId::new(), UserId::new());
        let shares = Shares::of(12_345, 299, RATES);
        for courier in [Some(courier), None] {
            for sign in [1, -1] {
                let entries = shares.entries(store, courier, eur(), sign);
                check_balanced(&entries).unwrap();
                let clearing = entries
                    .iter()
                    .find(|e| e.account == LedgerAccount::ProviderClearing)
                    .unwrap();
                assert_eq!(clearing.amount.amount_minor, sign * (12_345 + 299));
            }
        }
        let without = shares.entries(store, None, eur(), 1);
        assert!(
            !without
                .iter()
                .any(|e| matches!(e.account, LedgerAccount::CourierPayable(_)))
        );
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
