//! Stock of one product and the holds checkouts place on it.
//!
//! The invariant: `stock ≥ units held by live holds` after every write, so
//! `available = stock − live holds` is never negative and a committed hold always finds its
//! units. Holds expire by time alone: an expired hold simply stops counting, so stock comes
//! back even if nobody ever releases it (a crashed checkout, an unpaid order). A committed
//! hold is kept for a while after it expires so that a repeated commit is recognised rather
//! than applied twice, and a restock happens once: [`COMMITTED_RETENTION`], and at most the
//! [`SOLD_REMEMBERED`] newest of a product, so a product that sells fast neither grows its row
//! without bound nor runs out of room for the holds of checkouts in progress.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most units of one product a vendor may have in stock.
pub const MAX_STOCK: u32 = 1_000_000;
/// Adjustments kept inside the inventory row (older ones live only in the history table).
pub const RECENT_ADJUSTMENTS: usize = 20;
/// Days of per-day sales kept for "popular".
pub const SALES_DAYS: usize = 14;
/// How long a committed hold is remembered after its expiry, to make commits idempotent.
pub const COMMITTED_RETENTION: chrono::Duration = chrono::Duration::hours(48);
/// Most holds one product may have at once (each is a checkout in progress).
pub const MAX_HOLDS: usize = 20_000;
/// Most committed holds one product remembers: beyond this many the oldest are forgotten
/// before their [`COMMITTED_RETENTION`] ends (a restock of those finds nothing sold).
pub const SOLD_REMEMBERED: usize = 2_000;
/// Longest reason a vendor may give for an adjustment, in characters.
pub const MAX_REASON: usize = 200;

/// Checks the reason of an adjustment: one line of 1..=[`MAX_REASON`] characters, trimmed.
pub fn check_reason(raw: &str) -> Result<String, String> {
    super::catalog::check_line("reason", raw, MAX_REASON)
}

/// Units a checkout holds on a product until it is paid or the hold expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub quantity: u32,
    pub expires_at: DateTime<Utc>,
    /// Whether the units were sold (taken out of `stock`).
    #[serde(default)]
    pub committed: bool,
    /// Whether sold units were put back on sale (the order was cancelled or rejected after
    /// it was paid). Remembered like a committed hold, so a repeated restock adds nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restocked: bool,
}

impl Hold {
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.committed && self.expires_at > now
    }
}

/// How a row keeps its holds: one array `[reservation, quantity, expiry seconds, expiry
/// nanoseconds, flags]` per hold (flags: 1 committed, 2 restocked). A product that sells keeps
/// hundreds of holds, and every checkout of it reads and writes all of them: without field
/// names and with the expiry as numbers, a hold is half the bytes and many times cheaper to
/// read than as an object with an RFC 3339 time. Rows written with holds as objects by
/// reservation (the earlier form) are read as well: telling the two apart needs a
/// self-describing format (`deserialize_any`), which the JSON rows are.
mod hold_list {
    use std::collections::BTreeMap;
    use std::fmt;

    use chrono::DateTime;
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::Hold;

    const COMMITTED: u8 = 1;
    const RESTOCKED: u8 = 2;

    /// One hold as it is written.
    type Entry<'a> = (&'a str, u32, i64, u32, u8);

    pub fn serialize<S: Serializer>(
        holds: &BTreeMap<String, Hold>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(holds.len()))?;
        for (reservation, hold) in holds {
            let flags = if hold.committed { COMMITTED } else { 0 }
                | if hold.restocked { RESTOCKED } else { 0 };
            let entry: Entry<'_> = (
                reservation,
                hold.quantity,
                hold.expires_at.timestamp(),
                hold.expires_at.timestamp_subsec_nanos(),
                flags,
            );
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Hold>, D::Error> {
        deserializer.deserialize_any(Holds)
    }

    struct Holds;

    impl<'de> Visitor<'de> for Holds {
        type Value = BTreeMap<String, Hold>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of holds")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut holds = BTreeMap::new();
            while let Some((reservation, quantity, secs, nanos, flags)) =
                seq.next_element::<(String, u32, i64, u32, u8)>()?
            {
                let expires_at = DateTime::from_timestamp(secs, nanos)
                    .ok_or_else(|| A::Error::custom("a hold's expiry is out of range"))?;
                holds.insert(
                    reservation,
                    Hold {
                        quantity,
                        expires_at,
                        committed: flags & COMMITTED != 0,
                        restocked: flags & RESTOCKED != 0,
                    },
                );
            }
            Ok(holds)
        }

        /// The earlier form: holds as objects by reservation.
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            BTreeMap::deserialize(MapAccessDeserializer::new(map))
        }
    }
}

/// How a vendor changes stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockChange {
    /// Sets the stock to this many units.
    Set(u32),
    /// Adds (or, negative, removes) this many units.
    Delta(i64),
}

/// One recorded change of stock, with who made it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Adjustment {
    /// Time-ordered id of the adjustment (also its key in the history table).
    pub id: String,
    pub at: DateTime<Utc>,
    pub change: StockChange,
    pub stock_before: u32,
    pub stock_after: u32,
    pub reason: String,
    /// User id of whoever made it.
    pub by: String,
}

/// The stock row of one product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Units on hand and not yet sold.
    pub stock: u32,
    /// Holds by reservation id (a checkout or order id).
    #[serde(default, with = "hold_list")]
    pub holds: BTreeMap<String, Hold>,
    /// Units sold over the product's life.
    #[serde(default)]
    pub sold_total: u64,
    /// Units sold per UTC day (`YYYY-MM-DD`), the last [`SALES_DAYS`] days.
    #[serde(default)]
    pub sales_by_day: BTreeMap<String, u32>,
    /// The last [`RECENT_ADJUSTMENTS`] adjustments, newest last.
    #[serde(default)]
    pub recent_adjustments: Vec<Adjustment>,
}

/// Why units could not be held or sold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("only {available} available")]
    Short { available: u32 },
    #[error("no hold under this reservation")]
    NoHold,
    #[error("stock cannot go below the {held} units held by checkouts in progress")]
    BelowHeld { held: u32 },
    #[error("stock must stay between 0 and {MAX_STOCK}")]
    OutOfRange,
    #[error("too many checkouts in progress for this product")]
    TooManyHolds,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The units were sold now.
    Now,
    /// They had been sold by an earlier commit of the same reservation.
    Already,
}

/// What a restock did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restocked {
    /// The sold units are on sale again.
    Now,
    /// An earlier restock of the same reservation put them back.
    Already,
    /// Nothing was sold under this reservation (or it is no longer remembered).
    NothingSold,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The hold was dropped; its units are available again.
    Now,
    /// There was no live hold (never placed, already released, or expired).
    NothingHeld,
    /// The units were already sold; releasing does not unsell them.
    AlreadyCommitted,
}

impl Inventory {
    /// Units held by live (uncommitted, unexpired) holds.
    pub fn held(&self, now: DateTime<Utc>) -> u32 {
        self.holds
            .values()
            .filter(|h| h.is_live(now))
            .map(|h| h.quantity)
            .fold(0u32, u32::saturating_add)
    }

    /// Units a new checkout could hold now.
    pub fn available(&self, now: DateTime<Utc>) -> u32 {
        self.stock.saturating_sub(self.held(now))
    }

    /// Drops expired holds and committed holds past their retention.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.holds.retain(|_, h| {
            if h.committed {
                // A time too far out to add the retention to is kept: it is not past.
                h.expires_at
                    .checked_add_signed(COMMITTED_RETENTION)
                    .is_none_or(|until| until > now)
            } else {
                h.expires_at > now
            }
        });
        let sold = self.holds.values().filter(|h| h.committed).count();
        let excess = sold.saturating_sub(SOLD_REMEMBERED);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(DateTime<Utc>, &str)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.committed)
            .map(|(reservation, h)| (h.expires_at, reservation.as_str()))
            .collect();
        // The `excess` oldest end up in front, in no particular order: no sort needed.
        by_age.select_nth_unstable(excess - 1);
        let forgotten: Vec<String> = by_age[..excess]
            .iter()
            .map(|(_, reservation)| (*reservation).to_owned())
            .collect();
        for reservation in forgotten {
            self.holds.remove(&reservation);
        }
    }

    /// Holds of checkouts in progress (after [`Inventory::prune`], every uncommitted hold).
    fn in_progress(&self) -> usize {
        self.holds.values().filter(|h| !h.committed).count()
    }

    /// Holds `quantity` units for `reservation` until `expires_at`. Placing the same hold again
    /// is a no-op (and may change its quantity if the units are there).
    pub fn reserve(
        &mut self,
        reservation: &str,
        quantity: u32,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), InventoryError> {
        self.prune(now);
        let already = match self.holds.get(reservation) {
            // A restocked hold sold nothing any more: the reservation may take units again.
            Some(h) if h.committed && !h.restocked => return Ok(()),
            Some(h) if h.is_live(now) => h.quantity,
            _ => 0,
        };
        let available = self.available(now).saturating_add(already);
        if quantity > available {
            return Err(InventoryError::Short { available });
        }
        if already == 0 && self.in_progress() >= MAX_HOLDS {
            return Err(InventoryError::TooManyHolds);
        }
        self.holds.insert(
            reservation.to_owned(),
            Hold {
                quantity,
                expires_at,
                committed: false,
                restocked: false,
            },
        );
        Ok(())
    }

    /// Sells the units of `reservation`. A hold that expired but is still remembered is sold if
    /// its units are still available.
    pub fn commit(
        &mut self,
        reservation: &str,
        now: DateTime<Utc>,
    ) -> Result<Committed, InventoryError> {
        let hold = self
            .holds
            .get(reservation)
            .cloned()
            .ok_or(InventoryError::NoHold)?;
        if hold.restocked {
            return Err(InventoryError::NoHold);
        }
        if hold.committed {
            return Ok(Committed::Already);
        }
        if !hold.is_live(now) {
            let available = self.available(now);
            if hold.quantity > available {
                return Err(InventoryError::Short { available });
            }
        }
        self.stock = self.stock.saturating_sub(hold.quantity);
        self.sold_total = self.sold_total.saturating_add(u64::from(hold.quantity));
        let day = now.format("%Y-%m-%d").to_string();
        let sold = self.sales_by_day.entry(day).or_default();
        *sold = sold.saturating_add(hold.quantity);
        while self.sales_by_day.len() > SALES_DAYS {
            self.sales_by_day.pop_first();
        }
        if let Some(h) = self.holds.get_mut(reservation) {
            h.committed = true;
            // Remember it at least as long as the retention from now.
            h.expires_at = h.expires_at.max(now);
        }
        self.prune(now);
        Ok(Committed::Now)
    }

    /// Gives the units of `reservation` back.
    pub fn release(&mut self, reservation: &str, now: DateTime<Utc>) -> Released {
        let outcome = match self.holds.get(reservation) {
            Some(h) if h.committed => Released::AlreadyCommitted,
            Some(h) if h.is_live(now) => {
                self.holds.remove(reservation);
                Released::Now
            }
            Some(_) => {
                self.holds.remove(reservation);
                Released::NothingHeld
            }
            None => Released::NothingHeld,
        };
        self.prune(now);
        outcome
    }

    /// Puts the units sold under `reservation` back on sale, once: the hold is marked and
    /// remembered for [`COMMITTED_RETENTION`] from now, so a repeated restock adds nothing.
    /// Stock that would pass [`MAX_STOCK`] stops there.
    pub fn restock(&mut self, reservation: &str, now: DateTime<Utc>) -> Restocked {
        let outcome = match self.holds.get_mut(reservation) {
            Some(h) if h.restocked => Restocked::Already,
            Some(h) if h.committed => {
                h.restocked = true;
                h.expires_at = now;
                let quantity = h.quantity;
                self.stock = self.stock.saturating_add(quantity).min(MAX_STOCK);
                self.sold_total = self.sold_total.saturating_sub(u64::from(quantity));
                Restocked::Now
            }
            _ => Restocked::NothingSold,
        };
        self.prune(now);
        outcome
    }

    /// Units sold in the `days` days up to and including `now`'s day.
    pub fn sold_recently(&self, now: DateTime<Utc>, days: i64) -> u32 {
        let from = chrono::Duration::try_days(days.saturating_sub(1))
            .and_then(|span| now.checked_sub_signed(span))
            .map(|from| from.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        self.sales_by_day
            .range(from..)
            .map(|(_, n)| *n)
            .fold(0u32, u32::saturating_add)
    }

    /// Applies a vendor's stock change, refusing to go below what checkouts hold.
    pub fn adjust(
        &mut self,
        id: String,
        change: StockChange,
        reason: String,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Adjustment, InventoryError> {
        self.prune(now);
        let target = match change {
            StockChange::Set(n) => i64::from(n),
            StockChange::Delta(d) => i64::from(self.stock).saturating_add(d),
        };
        if !(0..=i64::from(MAX_STOCK)).contains(&target) {
            return Err(InventoryError::OutOfRange);
        }
        let target = target as u32;
        let held = self.held(now);
        if target < held {
            return Err(InventoryError::BelowHeld { held });
        }
        let adjustment = Adjustment {
            id,
            at: now,
            change,
            stock_before: self.stock,
            stock_after: target,
            reason,
            by,
        };
        self.stock = target;
        self.recent_adjustments.push(adjustment.clone());
        if self.recent_adjustments.len() > RECENT_ADJUSTMENTS {
            let excess = self.recent_adjustments.len() - RECENT_ADJUSTMENTS;
            self.recent_adjustments.drain(..excess);
        }
        Ok(adjustment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn stocked(n: u32) -> Inventory {
        let mut inv = Inventory::default();
        assert!(
            inv.adjust(
                "a".into(),
                StockChange::Set(n),
                "initial".into(),
                "v".into(),
                t(0)
            )
            .is_ok()
        );
        inv
    }

    #[test]
    fn holds_count_until_they_expire() {
        let mut inv = stocked(5);
        assert_eq!(inv.reserve("c1", 3, t(60), t(0)), Ok(()));
        assert_eq!(inv.available(t(1)), 2);
        assert_eq!(
            inv.reserve("c2", 3, t(60), t(1)),
            Err(InventoryError::Short { available: 2 })
        );
        assert_eq!(inv.available(t(61)), 5);
        assert_eq!(inv.reserve("c2", 5, t(120), t(61)), Ok(()));
        assert_eq!(inv.available(t(62)), 0);
    }

    #[test]
    fn reserving_twice_is_one_hold() {
        let mut inv = stocked(5);
        assert_eq!(inv.reserve("c1", 3, t(60), t(0)), Ok(()));
        assert_eq!(inv.reserve("c1", 3, t(60), t(1)), Ok(()));
        assert_eq!(inv.available(t(2)), 2);
        assert_eq!(inv.reserve("c1", 5, t(60), t(2)), Ok(()));
        assert_eq!(inv.available(t(2)), 0);
    }

    #[test]
    fn commit_sells_once_and_release_returns() {
        let mut inv = stocked(5);
        assert!(inv.reserve("c1", 2, t(60), t(0)).is_ok());
        assert!(inv.reserve("c2", 2, t(60), t(0)).is_ok());
        assert_eq!(inv.commit("c1", t(10)), Ok(Committed::Now));
        assert_eq!(inv.commit("c1", t(11)), Ok(Committed::Already));
        assert_eq!(inv.stock, 3);
        assert_eq!(inv.sold_total, 2);
        assert_eq!(inv.release("c1", t(12)), Released::AlreadyCommitted);
        assert_eq!(inv.release("c2", t(12)), Released::Now);
        assert_eq!(inv.available(t(13)), 3);
        assert_eq!(inv.commit("c2", t(14)), Err(InventoryError::NoHold));
        assert_eq!(inv.sold_recently(t(14), 1), 2);
    }

    #[test]
    fn late_commit_needs_the_units_still_free() {
        let mut inv = stocked(2);
        assert!(inv.reserve("c1", 2, t(60), t(0)).is_ok());
        inv.holds.insert(
            "c2".into(),
            Hold {
                quantity: 2,
                expires_at: t(200),
                committed: false,
                restocked: false,
            },
        );
        // c1 expired at 60 and c2 now holds both units.
        assert_eq!(
            inv.commit("c1", t(61)),
            Err(InventoryError::Short { available: 0 })
        );
    }

    #[test]
    fn restock_puts_sold_units_back_once_and_the_reservation_may_buy_again() {
        let mut inv = stocked(5);
        assert!(inv.reserve("o1", 2, t(60), t(0)).is_ok());
        assert_eq!(inv.restock("o1", t(1)), Restocked::NothingSold);
        assert_eq!(inv.commit("o1", t(2)), Ok(Committed::Now));
        assert_eq!((inv.stock, inv.sold_total), (3, 2));
        assert_eq!(inv.restock("o1", t(3)), Restocked::Now);
        assert_eq!(inv.restock("o1", t(4)), Restocked::Already);
        assert_eq!((inv.stock, inv.sold_total, inv.available(t(4))), (5, 0, 5));
        // A restocked reservation sells nothing on a replayed commit, but may hold again.
        assert_eq!(inv.commit("o1", t(5)), Err(InventoryError::NoHold));
        assert_eq!(inv.release("o1", t(5)), Released::AlreadyCommitted);
        assert!(inv.reserve("o1", 1, t(60), t(6)).is_ok());
        assert_eq!(inv.commit("o1", t(7)), Ok(Committed::Now));
        assert_eq!((inv.stock, inv.sold_total), (4, 1));
    }

    #[test]
    fn stock_never_goes_below_holds() {
        let mut inv = stocked(5);
        assert!(inv.reserve("c1", 4, t(60), t(0)).is_ok());
        let set = inv.adjust(
            "b".into(),
            StockChange::Set(3),
            "count".into(),
            "v".into(),
            t(1),
        );
        assert_eq!(set, Err(InventoryError::BelowHeld { held: 4 }));
        let delta = inv.adjust(
            "c".into(),
            StockChange::Delta(-10),
            "x".into(),
            "v".into(),
            t(1),
        );
        assert_eq!(delta, Err(InventoryError::OutOfRange));
        assert!(
            inv.adjust(
                "d".into(),
                StockChange::Delta(3),
                "delivery".into(),
                "v".into(),
                t(1)
            )
            .is_ok()
        );
        assert_eq!(inv.stock, 8);
        assert_eq!(inv.recent_adjustments.len(), 2);
    }
    #[test]
    fn expired_holds_are_dropped_and_committed_ones_remembered_for_a_while() {
        let mut inv = stocked(5);
        assert!(inv.reserve("c1", 1, t(60), t(0)).is_ok());
        assert!(inv.reserve("c2", 1, t(60), t(0)).is_ok());
        assert_eq!(inv.commit("c2", t(10)), Ok(Committed::Now));
        inv.prune(t(61));
        assert!(!inv.holds.contains_key("c1"));
        assert!(inv.holds.contains_key("c2"));
        let retention = COMMITTED_RETENTION.num_seconds();
        inv.prune(t(60 + retention + 1));
        assert!(inv.holds.is_empty());
    }

    /// A hold of one unit, written straight into a row.
    fn one_unit(expires_at: DateTime<Utc>, committed: bool) -> Hold {
        Hold {
            quantity: 1,
            expires_at,
            committed,
            restocked: false,
        }
    }

    /// `inv` as if `n` checkouts had each sold one unit over the last `n` seconds before `t(0)`
    /// (`order-0` the oldest), the holds written straight into the row.
    fn sold_before(inv: &mut Inventory, n: usize) {
        for i in 0..n {
            let at = t(i as i64 - n as i64);
            inv.holds.insert(format!("order-{i}"), one_unit(at, true));
        }
        inv.stock -= n as u32;
        inv.sold_total += n as u64;
    }

    #[test]
    fn a_product_that_sells_fast_keeps_selling_and_remembers_only_its_newest_sales() {
        let mut inv = stocked(MAX_STOCK);
        let earlier = MAX_HOLDS + 500;
        sold_before(&mut inv, earlier);
        // Sales within the retention no longer count as checkouts in progress.
        assert_eq!(inv.reserve("next", 1, t(900), t(0)), Ok(()));
        assert_eq!(inv.holds.len(), SOLD_REMEMBERED + 1);
        assert_eq!(inv.commit("next", t(1)), Ok(Committed::Now));
        assert_eq!(inv.holds.len(), SOLD_REMEMBERED);
        // Exactly the newest: `next` and the 1,999 sales before it.
        let kept = |i: usize| inv.holds.contains_key(&format!("order-{i}"));
        assert!(kept(earlier - SOLD_REMEMBERED + 1) && !kept(earlier - SOLD_REMEMBERED));
        assert_eq!(inv.sold_total, earlier as u64 + 1);
        assert_eq!(inv.available(t(2)), MAX_STOCK - earlier as u32 - 1);
        // The newest sales are still recognised: a repeated commit sells nothing more, a
        // restock puts the units back once.
        assert_eq!(inv.commit("next", t(2)), Ok(Committed::Already));
        let recent = format!("order-{}", earlier - 1);
        assert_eq!(inv.commit(&recent, t(2)), Ok(Committed::Already));
        assert_eq!(inv.restock(&recent, t(2)), Restocked::Now);
        assert_eq!(inv.restock(&recent, t(2)), Restocked::Already);
        // The oldest are forgotten before their retention ends.
        assert_eq!(inv.restock("order-0", t(2)), Restocked::NothingSold);
        assert_eq!(inv.stock, MAX_STOCK - earlier as u32);
    }

    #[test]
    fn checkouts_in_progress_are_capped() {
        let mut inv = stocked(MAX_STOCK);
        let until = t(900);
        for i in 0..MAX_HOLDS {
            inv.holds.insert(format!("c{i}"), one_unit(until, false));
        }
        assert_eq!(
            inv.reserve("one more", 1, until, t(1)),
            Err(InventoryError::TooManyHolds)
        );
        // Placing an existing hold again is not a new checkout.
        assert_eq!(inv.reserve("c0", 2, until, t(1)), Ok(()));
        // A checkout that completes makes room.
        assert_eq!(inv.commit("c1", t(2)), Ok(Committed::Now));
        assert_eq!(inv.reserve("one more", 1, until, t(3)), Ok(()));
    }

    #[test]
    fn holds_far_in_the_future_do_not_break_pruning() {
        let mut inv = stocked(5);
        assert!(inv.reserve("c1", 2, DateTime::<Utc>::MAX_UTC, t(0)).is_ok());
        assert_eq!(inv.commit("c1", t(1)), Ok(Committed::Now));
        inv.prune(t(2));
        assert_eq!(inv.commit("c1", t(3)), Ok(Committed::Already));
        assert_eq!(inv.sold_recently(t(3), i64::MAX), 2);
        assert_eq!(inv.sold_recently(t(3), 0), 0);
    }

    #[test]
    fn holds_are_written_as_lists_and_read_back_exactly() {
        let mut inv = stocked(9);
        let precise = t(60) + chrono::Duration::nanoseconds(123_456_789);
        assert!(inv.reserve("live", 2, precise, t(0)).is_ok());
        assert!(
            inv.reserve("far", 1, DateTime::<Utc>::MAX_UTC, t(0))
                .is_ok()
        );
        assert!(inv.reserve("sold", 3, t(60), t(0)).is_ok());
        assert_eq!(inv.commit("sold", t(1)), Ok(Committed::Now));
        assert!(inv.reserve("back", 1, t(60), t(0)).is_ok());
        assert_eq!(inv.commit("back", t(1)), Ok(Committed::Now));
        assert_eq!(inv.restock("back", t(2)), Restocked::Now);

        let written = serde_json::to_value(&inv).unwrap_or_default();
        assert_eq!(
            written["holds"][2],
            serde_json::json!(["live", 2, 1_800_000_060, 123_456_789, 0])
        );
        assert_eq!(written["holds"][3][4], serde_json::json!(1));
        assert_eq!(written["holds"][0][4], serde_json::json!(3));
        let read: Inventory = serde_json::from_value(written).unwrap_or_default();
        assert_eq!(read, inv);
    }

    #[test]
    fn rows_with_holds_as_objects_are_still_read() {
        let row = serde_json::json!({
            "stock": 4,
            "holds": {
                "c1": {"quantity": 2, "expires_at": "2027-01-15T08:00:00.5Z", "committed": false},
                "c2": {"quantity": 1, "expires_at": "2027-01-15T08:00:00Z", "committed": true,
                       "restocked": true},
            },
        });
        let read: Inventory = serde_json::from_value(row).unwrap_or_default();
        assert_eq!(read.stock, 4);
        assert_eq!(read.holds.len(), 2);
        let c1 = &read.holds["c1"];
        assert_eq!((c1.quantity, c1.committed, c1.restocked), (2, false, false));
        assert_eq!(c1.expires_at.timestamp_subsec_millis(), 500);
        assert!(read.holds["c2"].committed && read.holds["c2"].restocked);
        let again: Inventory =
            serde_json::from_value(serde_json::to_value(&read).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(again, read);
    }

    #[test]
    fn a_hold_with_an_expiry_out_of_range_is_refused() {
        let row = serde_json::json!({"stock": 1, "holds": [["c1", 1, i64::MAX, 0, 0]]});
        assert!(serde_json::from_value::<Inventory>(row).is_err());
        let row = serde_json::json!({"stock": 1, "holds": [["c1", 1]]});
        assert!(serde_json::from_value::<Inventory>(row).is_err());
    }

    #[test]
    fn releasing_an_expired_hold_gives_nothing_back_twice() {
        let mut inv = stocked(3);
        assert!(inv.reserve("c1", 3, t(60), t(0)).is_ok());
        assert_eq!(inv.release("c1", t(61)), Released::NothingHeld);
        assert_eq!(inv.release("c1", t(62)), Released::NothingHeld);
        assert_eq!(inv.available(t(62)), 3);
        assert_eq!(inv.commit("c1", t(63)), Err(InventoryError::NoHold));
    }

    #[test]
    fn only_the_latest_adjustments_stay_in_the_row() {
        let mut inv = Inventory::default();
        for i in 0..(RECENT_ADJUSTMENTS + 5) {
            let change = StockChange::Delta(1);
            assert!(
                inv.adjust(format!("{i:03}"), change, "x".into(), "v".into(), t(0))
                    .is_ok()
            );
        }
        assert_eq!(inv.recent_adjustments.len(), RECENT_ADJUSTMENTS);
        assert_eq!(inv.recent_adjustments[0].id, "005");
        assert_eq!(inv.stock, 25);
        let over = inv.adjust(
            "z".into(),
            StockChange::Set(MAX_STOCK + 1),
            "x".into(),
            "v".into(),
            t(0),
        );
        assert_eq!(over, Err(InventoryError::OutOfRange));
    }

    #[test]
    fn reasons_are_one_trimmed_line_of_at_most_200_characters() {
        assert_eq!(check_reason("  delivery "), Ok("delivery".to_owned()));
        assert!(check_reason("   ").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON)).is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert!(check_reason("two\u{0007}").is_err());
    }
}
