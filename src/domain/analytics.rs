//! Analytics rollups: the pure arithmetic of folding order and courier events into rollup
//! cells, merging cells, and reading figures (rates, averages, medians) out of them.
//!
//! A *cell* is one rollup row's value: a store's or the platform's day (per currency), a
//! courier's day, an H3 cell's hour, a month's product, store or courier totals. Folding an
//! event never reads other cells: it adds *deltas* to the cells it touches, and deltas merge
//! by addition (or set union), so the same events folded in any grouping and any order (one
//! batch, many batches, a rebuild) give the same cells. The only state an event needs from
//! before is its order's [`OrderFacts`] (when it was paid, accepted, picked up; its money
//! shares and refunds so far), kept per order.
//!
//! Durations are kept as histograms of whole seconds ([`Durations`]), capped at
//! [`DURATION_CAP_S`]: medians read from them are exact and the same however they were
//! merged.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::coupon::FundedBy;
use crate::domain::ids::{OrderId, UserId, VendorId};
use crate::domain::ledger::{Rates, Shares, gross_refunds};
use crate::domain::order::{OrderEvent, OrderEventKind, OrderRecord};

/// Longest duration a histogram tells apart (a day); longer ones count as this.
pub const DURATION_CAP_S: u32 = 86_400;

/// A histogram of durations in whole seconds: (seconds, count) pairs in ascending order of
/// seconds, no count zero. Stored as a JSON object from seconds to count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations(Vec<(u32, u64)>);

impl Durations {
    /// Adds the time from `from` to `to` (negative counts as zero).
    pub fn add_between(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        self.add_seconds((to - from).num_seconds());
    }

    pub fn add_seconds(&mut self, seconds: i64) {
        let s = seconds.clamp(0, i64::from(DURATION_CAP_S)) as u32;
        match self.0.binary_search_by_key(&s, |(at, _)| *at) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => self.0.insert(i, (s, 1)),
        }
    }

    pub fn merge(&mut self, other: &Durations) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let (a, b) = (&self.0, &other.0);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
            match x.0.cmp(&y.0) {
                Ordering::Less => {
                    merged.push(x);
                    i += 1;
                }
                Ordering::Greater => {
                    merged.push(y);
                    j += 1;
                }
                Ordering::Equal => {
                    merged.push((x.0, x.1 + y.1));
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.0 = merged;
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The lower median: the ⌊(n−1)/2⌋-th smallest duration.
    pub fn median(&self) -> Option<u32> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let mut rank = (n - 1) / 2;
        for (s, count) in &self.0 {
            if rank < *count {
                return Some(*s);
            }
            rank -= count;
        }
        None
    }

    /// The mean, rounded down to whole seconds.
    pub fn mean(&self) -> Option<u64> {
        let n = self.count();
        let sum: u64 = self.0.iter().map(|(s, c)| u64::from(*s) * c).sum();
        (n > 0).then(|| sum / n)
    }
}

impl Serialize for Durations {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(s, n)| (s, n)))
    }
}

impl<'de> Deserialize<'de> for Durations {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u32, u64>::deserialize(deserializer)?;
        Ok(Durations(map.into_iter().filter(|(_, n)| *n > 0).collect()))
    }
}

/// Sums many histograms at once: a count per second of the cap and the seconds touched, so a
/// year of day rows adds up in one pass instead of a tree insertion per second per row.
pub struct DurationSum {
    counts: Vec<u64>,
    touched: Vec<u32>,
}

impl Default for DurationSum {
    fn default() -> Self {
        DurationSum {
            counts: vec![0; DURATION_CAP_S as usize + 1],
            touched: Vec::new(),
        }
    }
}

impl DurationSum {
    pub fn add(&mut self, durations: &Durations) {
        for &(s, n) in &durations.0 {
            let s = s.min(DURATION_CAP_S);
            let count = &mut self.counts[s as usize];
            if *count == 0 {
                self.touched.push(s);
            }
            *count += n;
        }
    }

    /// What was added, as one histogram; the sum is empty again.
    pub fn take(&mut self) -> Durations {
        self.touched.sort_unstable();
        let counts = &mut self.counts;
        Durations(
            self.touched
                .drain(..)
                .map(|s| (s, std::mem::take(&mut counts[s as usize])))
                .collect(),
        )
    }
}

/// A store's (or the platform's) sales of one day in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sales {
    /// Orders paid.
    #[serde(default)]
    pub orders: u64,
    /// Goods of the orders paid, before discounts.
    #[serde(default)]
    pub goods: i64,
    /// Coupon discounts on them (whoever funds them).
    #[serde(default)]
    pub discounts: i64,
    /// Delivery fees of the orders paid.
    #[serde(default)]
    pub delivery_fees: i64,
    /// Money given back (refunds made that day).
    #[serde(default)]
    pub refunds: i64,
    /// Refunds made.
    #[serde(default)]
    pub refund_count: u64,
    /// The platform's commission on the goods, less what refunds gave back of it.
    #[serde(default)]
    pub commission: i64,
    /// The platform's part of the delivery fees, less what refunds gave back of it.
    #[serde(default)]
    pub delivery_kept: i64,
    /// The stores' share of the goods, less what refunds gave back of it.
    #[serde(default)]
    pub store_share: i64,
    /// Paid orders the store rejected.
    #[serde(default)]
    pub rejected: u64,
    /// Paid orders cancelled (by the customer or an admin).
    #[serde(default)]
    pub cancelled: u64,
    /// Preparation times (accepted → ready) of orders made ready that day.
    #[serde(default)]
    pub preparation: Durations,
}

impl Sales {
    pub fn merge(&mut self, o: &Sales) {
        self.merge_counts(o);
        self.preparation.merge(&o.preparation);
    }

    /// Adds `o`'s counts and money, not its preparation times.
    pub fn merge_counts(&mut self, o: &Sales) {
        self.orders += o.orders;
        self.goods += o.goods;
        self.discounts += o.discounts;
        self.delivery_fees += o.delivery_fees;
        self.refunds += o.refunds;
        self.refund_count += o.refund_count;
        self.commission += o.commission;
        self.delivery_kept += o.delivery_kept;
        self.store_share += o.store_share;
        self.rejected += o.rejected;
        self.cancelled += o.cancelled;
    }

    /// Goods plus delivery fees of the orders paid.
    pub fn gmv(&self) -> i64 {
        self.goods + self.delivery_fees
    }

    /// What customers paid, less what was given back.
    pub fn net(&self) -> i64 {
        self.gmv() - self.discounts - self.refunds
    }

    /// The platform's revenue: commission plus the delivery fees it keeps, refunds deducted.
    pub fn revenue(&self) -> i64 {
        self.commission + self.delivery_kept
    }

    /// Average paid order (goods and fee, less discount), rounded down.
    pub fn average_order(&self) -> Option<i64> {
        (self.orders > 0).then(|| (self.gmv() - self.discounts) / self.orders as i64)
    }
}

/// One day's sales per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DaySales(pub BTreeMap<String, Sales>);

impl DaySales {
    fn of(currency: &str, sales: Sales) -> Self {
        DaySales(BTreeMap::from([(currency.to_owned(), sales)]))
    }

    pub fn merge(&mut self, o: &DaySales) {
        for (c, s) in &o.0 {
            self.0.entry(c.clone()).or_default().merge(s);
        }
    }
}

/// A courier's work of one day (or month).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourierWork {
    #[serde(default)]
    pub offers: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub declined: u64,
    /// Offers left unanswered until they ran out.
    #[serde(default)]
    pub expired: u64,
    #[serde(default)]
    pub deliveries: u64,
    /// Deliveries made within the ETA given at pickup.
    #[serde(default)]
    pub on_time: u64,
    /// Deliveries made after it.
    #[serde(default)]
    pub late: u64,
    /// Assignment (the accepted offer) → pickup.
    #[serde(default)]
    pub accept_to_pickup: Durations,
    /// Pickup → handover.
    #[serde(default)]
    pub pickup_to_delivery: Durations,
}

impl CourierWork {
    pub fn merge(&mut self, o: &CourierWork) {
        self.offers += o.offers;
        self.accepted += o.accepted;
        self.declined += o.declined;
        self.expired += o.expired;
        self.deliveries += o.deliveries;
        self.on_time += o.on_time;
        self.late += o.late;
        self.accept_to_pickup.merge(&o.accept_to_pickup);
        self.pickup_to_delivery.merge(&o.pickup_to_delivery);
    }

    /// The counts alone (for the month lists of every courier).
    pub fn counts(&self) -> CourierWork {
        CourierWork {
            accept_to_pickup: Durations::default(),
            pickup_to_delivery: Durations::default(),
            ..self.clone()
        }
    }
}

/// Supply and demand in one H3 cell during one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellHour {
    /// Couriers seen online in the cell.
    #[serde(default)]
    pub couriers: BTreeSet<UserId>,
    /// Orders paid whose pickup is in the cell.
    #[serde(default)]
    pub paid_orders: u64,
    /// Orders that waited for a courier during the hour (pickup in the cell).
    #[serde(default)]
    pub waiting_orders: u64,
    /// Seconds they waited within the hour.
    #[serde(default)]
    pub waiting_s: u64,
}

impl CellHour {
    pub fn merge(&mut self, o: &CellHour) {
        self.couriers.extend(o.couriers.iter().copied());
        self.paid_orders += o.paid_orders;
        self.waiting_orders += o.waiting_orders;
        self.waiting_s += o.waiting_s;
    }
}

/// A product's sales in a month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSales {
    pub title: String,
    pub currency: String,
    #[serde(default)]
    pub store: Option<VendorId>,
    pub units: u64,
    pub sales: i64,
}

/// A store's sales in a month (for the platform's top stores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSales {
    pub currency: String,
    pub orders: u64,
    pub gmv: i64,
}

/// One rollup row's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Sales(DaySales),
    Courier(CourierWork),
    Hour(CellHour),
    /// Products by `{product}/{currency}`.
    Products(BTreeMap<String, ProductSales>),
    /// Stores by `{store}/{currency}`.
    Stores(BTreeMap<String, StoreSales>),
    /// Couriers' counts by courier.
    Couriers(BTreeMap<UserId, CourierWork>),
}

impl Cell {
    /// Adds `o` to this cell; cells of different kinds never share a row.
    pub fn merge(&mut self, o: &Cell) {
        match (self, o) {
            (Cell::Sales(a), Cell::Sales(b)) => a.merge(b),
            (Cell::Courier(a), Cell::Courier(b)) => a.merge(b),
            (Cell::Hour(a), Cell::Hour(b)) => a.merge(b),
            (Cell::Products(a), Cell::Products(b)) => {
                for (k, p) in b {
                    let e = a.entry(k.clone()).or_insert_with(|| ProductSales {
                        units: 0,
                        sales: 0,
                        ..p.clone()
                    });
                    e.units += p.units;
                    e.sales += p.sales;
                }
            }
            (Cell::Stores(a), Cell::Stores(b)) => {
                for (k, s) in b {
                    let e = a.entry(k.clone()).or_insert_with(|| StoreSales {
                        currency: s.currency.clone(),
                        ..StoreSales::default()
                    });
                    e.orders += s.orders;
                    e.gmv += s.gmv;
                }
            }
            (Cell::Couriers(a), Cell::Couriers(b)) => {
                for (k, w) in b {
                    a.entry(*k).or_default().merge(w);
                }
            }
            (me, other) => {
                tracing::error!(
                    ?other,
                    "analytics cells of different kinds merged; kept the first"
                );
                let _ = me;
            }
        }
    }
}

/// Which rollup row a delta goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellId {
    StoreDay(VendorId, NaiveDate),
    PlatformDay(NaiveDate),
    CourierDay(UserId, NaiveDate),
    /// Resolution (7 or 8), cell, day and hour (0–23).
    Hour(u8, String, NaiveDate, u32),
    /// A store's products in the month starting on the date.
    StoreProducts(VendorId, NaiveDate),
    PlatformProducts(NaiveDate),
    PlatformStores(NaiveDate),
    PlatformCouriers(NaiveDate),
}

/// Deltas of a batch of events, merged per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas(pub BTreeMap<CellId, Cell>);

impl Deltas {
    pub fn add(&mut self, id: CellId, cell: Cell) {
        match self.0.get_mut(&id) {
            Some(there) => there.merge(&cell),
            None => {
                self.0.insert(id, cell);
            }
        }
    }

    pub fn merge(&mut self, other: Deltas) {
        for (id, cell) in other.0 {
            self.add(id, cell);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The first day of the month of `day`.
pub fn month_of(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// An order as analytics knows it: what its events so far said, and its money.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// The last event of the order's log folded (0: none).
    #[serde(default)]
    pub applied: u64,
    /// None until the order's row was read.
    #[serde(default)]
    pub order: Option<OrderMoney>,
    #[serde(default)]
    pub paid_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub accepted_at: Option<DateTime<Utc>>,
    /// When a courier's acceptance was recorded on the order.
    #[serde(default)]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub courier: Option<UserId>,
    #[serde(default)]
    pub picked_up_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Whether the order's wait for a courier was counted.
    #[serde(default)]
    pub wait_counted: bool,
    /// The ETA (seconds from pickup to handover) the courier was given at pickup.
    #[serde(default)]
    pub eta_s: Option<u32>,
    /// Whether the delivery was judged on time or late.
    #[serde(default)]
    pub judged: bool,
    /// Refunds so far, oldest first.
    #[serde(default)]
    pub refunds: Vec<i64>,
}

/// What analytics takes from an order's row once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMoney {
    pub store: VendorId,
    pub currency: String,
    /// The pickup's H3 cell at resolution 8 (hex).
    pub cell8: Option<String>,
    pub goods: i64,
    pub discount: i64,
    pub delivery_fee: i64,
    /// What the customer paid.
    pub paid: i64,
    pub shares: Shares,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product: String,
    pub title: String,
    pub units: u64,
    pub amount: i64,
}

impl OrderMoney {
    /// The money of `record` (none for an order without totals), its shares by the rates
    /// frozen on it (`default` for orders from before rates were frozen), exactly as the
    /// ledger shares them.
    pub fn of(record: &OrderRecord, cell8: Option<String>, default: Rates) -> Option<OrderMoney> {
        let totals = record.totals?;
        let rates = record.rates.unwrap_or(default);
        let subtotal = totals.subtotal.amount_minor;
        let (platform_discount, store_discount) = match &record.discount {
            Some(d) if d.funded_by == FundedBy::Platform => (d.amount.amount_minor, 0),
            Some(d) => (0, d.amount.amount_minor),
            None => (0, 0),
        };
        let shares = Shares::of(
            subtotal - store_discount,
            totals.delivery_fee.amount_minor,
            rates,
        );
        Some(OrderMoney {
            store: record.order.vendor_id,
            currency: totals.total.currency.code().to_owned(),
            cell8,
            goods: subtotal,
            discount: platform_discount + store_discount,
            delivery_fee: totals.delivery_fee.amount_minor,
            paid: shares.total() - platform_discount,
            shares,
            lines: record
                .order
                .lines
                .iter()
                .map(|l| Line {
                    product: l.product_id.as_uuid().to_string(),
                    title: l.title.clone(),
                    units: u64::from(l.quantity),
                    amount: l.unit_price.amount_minor * i64::from(l.quantity),
                })
                .collect(),
        })
    }
}

fn day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The resolution-7 parent of a resolution-8 cell (hex), if it parses.
pub fn parent7(cell8: &str) -> Option<String> {
    let cell: h3o::CellIndex = cell8.parse().ok()?;
    cell.parent(h3o::Resolution::Seven).map(|c| c.to_string())
}

fn add_hour(deltas: &mut Deltas, cell8: &str, at: DateTime<Utc>, hour: CellHour) {
    if let Some(cell7) = parent7(cell8) {
        deltas.add(
            CellId::Hour(7, cell7, day(at), at.hour()),
            Cell::Hour(hour.clone()),
        );
    }
    deltas.add(
        CellId::Hour(8, cell8.to_owned(), day(at), at.hour()),
        Cell::Hour(hour),
    );
}

fn add_sales(deltas: &mut Deltas, money: &OrderMoney, at: DateTime<Utc>, sales: Sales) {
    let cell = Cell::Sales(DaySales::of(&money.currency, sales));
    deltas.add(CellId::StoreDay(money.store, day(at)), cell.clone());
    deltas.add(CellId::PlatformDay(day(at)), cell);
}

fn add_courier(deltas: &mut Deltas, courier: UserId, at: DateTime<Utc>, work: CourierWork) {
    deltas.add(
        CellId::PlatformCouriers(month_of(day(at))),
        Cell::Couriers(BTreeMap::from([(courier, work.counts())])),
    );
    deltas.add(CellId::CourierDay(courier, day(at)), Cell::Courier(work));
}

/// Counts the wait for a courier (from acceptance to `end`) into every hour it spans.
fn count_wait(facts: &mut OrderFacts, end: DateTime<Utc>, deltas: &mut Deltas) {
    let (Some(start), Some(cell8)) = (
        facts.accepted_at,
        facts.order.as_ref().and_then(|m| m.cell8.clone()),
    ) else {
        return;
    };
    if facts.wait_counted || end < start {
        return;
    }
    facts.wait_counted = true;
    let mut from = start;
    loop {
        let hour_start = from
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(from);
        let hour_end = hour_start + Duration::hours(1);
        let until = end.min(hour_end);
        add_hour(
            deltas,
            &cell8,
            from,
            CellHour {
                waiting_orders: 1,
                waiting_s: (until - from).num_seconds().max(0) as u64,
                ..CellHour::default()
            },
        );
        if end <= hour_end {
            return;
        }
        from = hour_end;
    }
}

fn judge(facts: &mut OrderFacts, deltas: &mut Deltas) {
    let (Some(eta), Some(picked), Some(delivered), Some(courier)) = (
        facts.eta_s,
        facts.picked_up_at,
        facts.delivered_at,
        facts.courier,
    ) else {
        return;
    };
    if facts.judged {
        return;
    }
    facts.judged = true;
    let on_time = (delivered - picked).num_seconds() <= i64::from(eta);
    add_courier(
        deltas,
        courier,
        delivered,
        CourierWork {
            on_time: u64::from(on_time),
            late: u64::from(!on_time),
            ..CourierWork::default()
        },
    );
}

/// Folds one event of an order into its facts and the deltas. Events must come in the
/// order's sequence; one at or below `facts.applied` is passed over (folded before).
pub fn fold_order_event(facts: &mut OrderFacts, event: &OrderEvent, deltas: &mut Deltas) {
    if event.seq <= facts.applied {
        return;
    }
    facts.applied = event.seq;
    let at = event.at;
    let Some(money) = facts.order.clone() else {
        return;
    };
    match &event.kind {
        OrderEventKind::Paid if facts.paid_at.is_none() => {
            facts.paid_at = Some(at);
            add_sales(
                deltas,
                &money,
                at,
                Sales {
                    orders: 1,
                    goods: money.goods,
                    discounts: money.discount,
                    delivery_fees: money.delivery_fee,
                    commission: money.shares.commission,
                    delivery_kept: money.shares.delivery,
                    store_share: money.shares.store,
                    ..Sales::default()
                },
            );
            let month = month_of(day(at));
            let mut products = BTreeMap::new();
            for line in &money.lines {
                let e = products
                    .entry(format!("{}/{}", line.product, money.currency))
                    .or_insert_with(|| ProductSales {
                        title: line.title.clone(),
                        currency: money.currency.clone(),
                        store: Some(money.store),
                        units: 0,
                        sales: 0,
                    });
                e.units += line.units;
                e.sales += line.amount;
            }
            deltas.add(
                CellId::StoreProducts(money.store, month),
                Cell::Products(products.clone()),
            );
            deltas.add(CellId::PlatformProducts(month), Cell::Products(products));
            deltas.add(
                CellId::PlatformStores(month),
                Cell::Stores(BTreeMap::from([(
                    format!("{}/{}", money.store.as_uuid(), money.currency),
                    StoreSales {
                        currency: money.currency.clone(),
                        orders: 1,
                        gmv: money.goods + money.delivery_fee,
                    },
                )])),
            );
            if let Some(cell8) = &money.cell8 {
                add_hour(
                    deltas,
                    cell8,
                    at,
                    CellHour {
                        paid_orders: 1,
                        ..CellHour::default()
                    },
                );
            }
        }
        OrderEventKind::Refunded { amount, .. } => {
            let shares = money.shares;
            let mut amounts = facts.refunds.clone();
            amounts.push(amount.amount_minor);
            let mut gross = gross_refunds(money.paid, shares.total(), &amounts);
            let now = gross.pop().unwrap_or_default();
            let part = shares.refund_part(&shares.given_back(&gross), now);
            facts.refunds = amounts;
            add_sales(
                deltas,
                &money,
                at,
                Sales {
                    refunds: amount.amount_minor,
                    refund_count: 1,
                    commission: -part.commission,
                    delivery_kept: -part.delivery,
                    store_share: -part.store,
                    ..Sales::default()
                },
            );
        }
        OrderEventKind::Accepted => facts.accepted_at = Some(at),
        OrderEventKind::Rejected { .. } | OrderEventKind::Cancelled { .. } => {
            count_wait(facts, at, deltas);
            if facts.paid_at.is_some() {
                let rejected = matches!(event.kind, OrderEventKind::Rejected { .. });
                add_sales(
                    deltas,
                    &money,
                    at,
                    Sales {
                        rejected: u64::from(rejected),
                        cancelled: u64::from(!rejected),
                        ..Sales::default()
                    },
                );
            }
        }
        OrderEventKind::Ready => {
            if let Some(accepted) = facts.accepted_at {
                let mut preparation = Durations::default();
                preparation.add_between(accepted, at);
                add_sales(
                    deltas,
                    &money,
                    at,
                    Sales {
                        preparation,
                        ..Sales::default()
                    },
                );
            }
        }
        OrderEventKind::CourierAssigned { courier } => {
            count_wait(facts, at, deltas);
            facts.courier = Some(*courier);
            facts.assigned_at = Some(at);
        }
        OrderEventKind::PickedUp => {
            facts.picked_up_at = Some(at);
            if let (Some(courier), Some(assigned)) = (facts.courier, facts.assigned_at) {
                let mut accept_to_pickup = Durations::default();
                accept_to_pickup.add_between(assigned, at);
                add_courier(
                    deltas,
                    courier,
                    at,
                    CourierWork {
                        accept_to_pickup,
                        ..CourierWork::default()
                    },
                );
            }
        }
        OrderEventKind::Delivered { .. } => {
            count_wait(facts, at, deltas);
            facts.delivered_at = Some(at);
            if let Some(courier) = facts.courier {
                let mut pickup_to_delivery = Durations::default();
                if let Some(picked) = facts.picked_up_at {
                    pickup_to_delivery.add_between(picked, at);
                }
                add_courier(
                    deltas,
                    courier,
                    at,
                    CourierWork {
                        deliveries: 1,
                        pickup_to_delivery,
                        ..CourierWork::default()
                    },
                );
            }
            judge(facts, deltas);
        }
        OrderEventKind::Expired => count_wait(facts, at, deltas),
        _ => {}
    }
}

/// Something a courier did that the order's log does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CourierEventKind {
    /// An order was offered to the courier.
    Offered {
        order: OrderId,
    },
    Accepted {
        order: OrderId,
    },
    Declined {
        order: OrderId,
    },
    /// The offer ran out unanswered.
    Expired {
        order: OrderId,
    },
    /// The courier was online in this resolution-8 cell (noted the first time in an hour).
    Seen {
        cell: String,
    },
    /// The courier picked the order up and was given this ETA to the drop-off.
    PickedUp {
        order: OrderId,
        eta_s: u32,
    },
}

/// One entry of the courier journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourierEvent {
    pub id: uuid::Uuid,
    pub courier: UserId,
    /// When it happened (the node's clock).
    pub at: DateTime<Utc>,
    /// Milliseconds since the epoch by the writer's wall clock (the journal's order).
    pub at_ms: i64,
    pub kind: CourierEventKind,
}

impl CourierEvent {
    /// The order whose facts the event changes.
    pub fn order(&self) -> Option<OrderId> {
        match self.kind {
            CourierEventKind::PickedUp { order, .. } => Some(order),
            _ => None,
        }
    }
}

/// Folds one courier event; a pickup's ETA goes to its order's facts.
pub fn fold_courier_event(
    event: &CourierEvent,
    facts: Option<&mut OrderFacts>,
    deltas: &mut Deltas,
) {
    let work = |offers, accepted, declined, expired| CourierWork {
        offers,
        accepted,
        declined,
        expired,
        ..CourierWork::default()
    };
    match &event.kind {
        CourierEventKind::Offered { .. } => {
            add_courier(deltas, event.courier, event.at, work(1, 0, 0, 0))
        }
        CourierEventKind::Accepted { .. } => {
            add_courier(deltas, event.courier, event.at, work(0, 1, 0, 0))
        }
        CourierEventKind::Declined { .. } => {
            add_courier(deltas, event.courier, event.at, work(0, 0, 1, 0))
        }
        CourierEventKind::Expired { .. } => {
            add_courier(deltas, event.courier, event.at, work(0, 0, 0, 1))
        }
        CourierEventKind::Seen { cell } => add_hour(
            deltas,
            cell,
            event.at,
            CellHour {
                couriers: BTreeSet::from([event.courier]),
                ..CellHour::default()
            },
        ),
        CourierEventKind::PickedUp { eta_s, .. } => {
            if let Some(facts) = facts
                && facts.eta_s.is_none()
            {
                facts.eta_s = Some(*eta_s);
                judge(facts, deltas);
            }
        }
    }
}

/// How figures are grouped in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    #[default]
    Day,
    /// ISO weeks, starting on Monday.
    Week,
    Month,
}

impl Granularity {
    /// The first day of the period `day` falls in.
    pub fn period_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Granularity::Day => day,
            Granularity::Week => {
                day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()))
            }
            Granularity::Month => month_of(day),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Money};
    use crate::domain::order::OrderStatus;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, h, m, s).unwrap()
    }

    fn event(seq: u64, at: DateTime<Utc>, kind: OrderEventKind) -> OrderEvent {
        OrderEvent {
            seq,
            at,
            kind,
            status_after: OrderStatus::Paid,
        }
    }

    fn money() -> OrderMoney {
        let cell8 = crate::domain::geo::GeoPoint::new(52.52, 13.405)
            .unwrap()
            .cell_at(h3o::Resolution::Eight)
            .to_string();
        OrderMoney {
            store: VendorId::new(),
            currency: "EUR".into(),
            cell8: Some(cell8),
            goods: 2000,
            discount: 0,
            delivery_fee: 300,
            paid: 2300,
            shares: Shares::of(
                2000,
                300,
                Rates {
                    commission_bps: 1500,
                    courier_fee_bps: 8000,
                },
            ),
            lines: vec![Line {
                product: "p".into(),
                title: "Pizza".into(),
                units: 2,
                amount: 2000,
            }],
        }
    }

    #[test]
    fn a_sum_of_histograms_is_their_merge_and_leaves_the_sum_empty() {
        let parts: Vec<Durations> = (0..40u32)
            .map(|i| {
                let mut d = Durations::default();
                for k in 0..(i % 7) {
                    d.add_seconds(i64::from((i * 37 + k * 11) % 900));
                }
                d.add_seconds(200_000); // beyond the cap
                d
            })
            .collect();
        let mut merged = Durations::default();
        let mut sum = DurationSum::default();
        for part in &parts {
            merged.merge(part);
            sum.add(part);
        }
        let summed = sum.take();
        assert_eq!(summed, merged);
        assert_eq!(summed.median(), merged.median());
        assert_eq!(summed.mean(), merged.mean());
        assert_eq!(sum.take(), Durations::default());
        sum.add(&parts[3]);
        assert_eq!(sum.take(), parts[3]);
    }

    #[test]
    fn medians_are_exact_and_independent_of_how_histograms_were_merged() {
        let mut a = Durations::default();
        let mut b = Durations::default();
        for s in [5, 1, 9] {
            a.add_seconds(s);
        }
        for s in [7, 3, 100_000] {
            b.add_seconds(s);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        // 1 3 5 7 9 86400: the lower median is the third.
        assert_eq!(ab.median(), Some(5));
        assert_eq!(ab.count(), 6);
        assert_eq!(a.median(), Some(5));
        assert_eq!(a.mean(), Some(5));
        assert_eq!(Durations::default().median(), None);
    }

    #[test]
    fn histograms_are_stored_as_an_object_of_seconds_and_merge_shared_seconds() {
        let mut a = Durations::default();
        for s in [30, 5, 30] {
            a.add_seconds(s);
        }
        let mut b = Durations::default();
        for s in [30, 2, 40] {
            b.add_seconds(s);
        }
        a.merge(&b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"2":1,"5":1,"30":3,"40":1}"#);
        assert_eq!(serde_json::from_str::<Durations>(&json).unwrap(), a);
        // Rows written before carry the same object; a zero count reads as absent.
        let old: Durations = serde_json::from_str(r#"{"40":1,"2":1,"30":3,"5":1,"7":0}"#).unwrap();
        assert_eq!(old, a);
        assert_eq!(a.median(), Some(30));
    }

    #[test]
    fn an_order_folds_into_sales_products_waits_and_courier_times_once() {
        let courier = UserId::new();
        let m = money();
        let mut facts = OrderFacts {
            order: Some(m.clone()),
            ..OrderFacts::default()
        };
        let mut deltas = Deltas::default();
        let events = [
            event(2, t(10, 0, 0), OrderEventKind::Paid),
            event(3, t(10, 1, 0), OrderEventKind::Accepted),
            event(4, t(10, 11, 0), OrderEventKind::Ready),
            event(5, t(11, 1, 0), OrderEventKind::CourierAssigned { courier }),
            event(6, t(11, 5, 0), OrderEventKind::PickedUp),
            event(
                7,
                t(11, 20, 0),
                OrderEventKind::Delivered { at_drop_off: true },
            ),
        ];
        for e in &events {
            fold_order_event(&mut facts, e, &mut deltas);
        }
        // Folding again changes nothing.
        let before = deltas.clone();
        for e in &events {
            fold_order_event(&mut facts, e, &mut deltas);
        }
        assert_eq!(deltas, before);
        let store = m.store;
        let Some(Cell::Sales(day)) = deltas
            .0
            .get(&CellId::StoreDay(store, t(0, 0, 0).date_naive()))
        else {
            panic!("no store day")
        };
        let eur = &day.0["EUR"];
        assert_eq!((eur.orders, eur.goods, eur.delivery_fees), (1, 2000, 300));
        assert_eq!(eur.revenue(), 300 + 60);
        assert_eq!(eur.preparation.median(), Some(600));
        assert_eq!(eur.average_order(), Some(2300));
        // Waited 10:01 → 11:01: 59 minutes in the 10 o'clock hour, one in the 11 o'clock.
        let cell8 = m.cell8.clone().unwrap();
        let hour =
            |h| match deltas
                .0
                .get(&CellId::Hour(8, cell8.clone(), t(0, 0, 0).date_naive(), h))
            {
                Some(Cell::Hour(c)) => c.clone(),
                _ => CellHour::default(),
            };
        assert_eq!((hour(10).paid_orders, hour(10).waiting_s), (1, 59 * 60));
        assert_eq!((hour(11).waiting_orders, hour(11).waiting_s), (1, 60));
        // The ETA arrives after the delivery: judged then, once.
        let pickup = CourierEvent {
            id: uuid::Uuid::now_v7(),
            courier,
            at: t(11, 5, 0),
            at_ms: 0,
            kind: CourierEventKind::PickedUp {
                order: OrderId::new(),
                eta_s: 900,
            },
        };
        fold_courier_event(&pickup, Some(&mut facts), &mut deltas);
        fold_courier_event(&pickup, Some(&mut facts), &mut deltas);
        let Some(Cell::Courier(work)) = deltas
            .0
            .get(&CellId::CourierDay(courier, t(0, 0, 0).date_naive()))
        else {
            panic!("no courier day")
        };
        assert_eq!((work.deliveries, work.on_time, work.late), (1, 1, 0));
        assert_eq!(work.accept_to_pickup.median(), Some(240));
        assert_eq!(work.pickup_to_delivery.median(), Some(900));
    }

    #[test]
    fn a_refund_takes_back_its_part_of_the_commission_like_the_ledger() {
        let mut facts = OrderFacts {
            order: Some(money()),
            ..OrderFacts::default()
        };
        let mut deltas = Deltas::default();
        fold_order_event(
            &mut facts,
            &event(2, t(9, 0, 0), OrderEventKind::Paid),
            &mut deltas,
        );
        let refund = |seq, amount| {
            event(
                seq,
                t(12, 0, 0),
                OrderEventKind::Refunded {
                    amount: Money::new(amount, Currency::EUR),
                    lines: vec![],
                    reference: None,
                },
            )
        };
        fold_order_event(&mut facts, &refund(3, 1150), &mut deltas);
        fold_order_event(&mut facts, &refund(4, 1150), &mut deltas);
        let Some(Cell::Sales(day)) = deltas.0.get(&CellId::PlatformDay(t(0, 0, 0).date_naive()))
        else {
            panic!("no platform day")
        };
        let eur = &day.0["EUR"];
        // Refunded whole: nothing kept.
        assert_eq!((eur.refunds, eur.revenue(), eur.store_share), (2300, 0, 0));
        assert_eq!(eur.net(), 0);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        assert_eq!(
            Granularity::Week.period_of(d),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
        );
        assert_eq!(
            Granularity::Month.period_of(d),
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
        );
    }
}
