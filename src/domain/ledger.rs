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

    /// What of these shares `refunded` (of their total) takes back, proportionally: each
    /// share's part rounded down, and what rounding leaves given to the shares with the
    /// largest remainders (the first of equal ones). Computed on the cumulative amount, so
    /// refunds that add up to the whole take back exactly every share:
    /// `reversal(earlier + now) - reversal(earlier)` is the part of the refund `now`.
    pub fn reversal(&self, refunded: i64) -> Shares {
        let total = self.total();
        if total <= 0 || refunded <= 0 {
            return Shares::from_parts([0; 4]);
        }
        let refunded = i128::from(refunded.min(total));
        let total = i128::from(total);
        let parts = self.parts();
        let mut taken = [0i64; 4];
        let mut remainders = [(0i128, 0usize); 4];
        for (i, &share) in parts.iter().enumerate() {
            let exact = i128::from(share) * refunded;
            taken[i] = (exact / total) as i64;
            remainders[i] = (exact % total, i);
        }
        let mut left = refunded as i64 - taken.iter().sum::<i64>();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter() {
            if left == 0 {
                break;
            }
            if taken[i] < parts[i] {
                taken[i] += 1;
                left -= 1;
            }
        }
        Shares::from_parts(taken)
    }

    /// The part of a refund of `now`, after `earlier` was refunded already.
    pub fn refund_part(&self, earlier: i64, now: i64) -> Shares {
        let before = self.reversal(earlier).parts();
        let after = self.reversal(earlier.saturating_add(now)).parts();
        Shares::from_parts(std::array::from_fn(|i| after[i] - before[i]))
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
        let shares = Shares::of(12_345, 299, RATES);
        let total = shares.total();
        for steps in [
            vec![total],
            vec![1, 2, 3, total - 6],
            vec![4_000, 4_000, 4_644],
        ] {
            let mut earlier = 0;
            let mut back = [0i64; 4];
            for now in steps {
                let part = shares.refund_part(earlier, now);
                assert_eq!(part.total(), now, "{part:?}");
                for (i, p) in part.parts().iter().enumerate() {
                    assert!(*p >= 0);
                    back[i] += p;
                }
                earlier += now;
            }
            assert_eq!(back, shares.parts());
        }
        // More than what was paid takes back no more than the shares.
        assert_eq!(shares.reversal(total * 2), shares);
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
