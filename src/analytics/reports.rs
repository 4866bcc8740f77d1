//! The reports: rollup rows of a range read and grouped by period, with the figures derived
//! from them (rates, averages, medians). Each report renders as JSON or CSV.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Days, Months, NaiveDate, Utc};
use serde::Serialize;

use super::{Analytics, AnalyticsError};
use crate::domain::analytics::{
    Cell, CellHour, CourierWork, DurationSum, Granularity, ProductSales, Sales, StoreSales,
    month_of,
};
use crate::domain::ids::{UserId, VendorId};
use crate::store::analytics::{Series, day_key, month_key};

/// A range of whole days, `to` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DayRange {
    fn after(&self) -> Option<String> {
        self.from.pred_opt().map(day_key)
    }

    fn before(&self) -> Option<String> {
        Some(day_key(self.to))
    }

    /// The months overlapping the range: from the first day of `from`'s month to the first
    /// month starting on or after `to`.
    pub fn months(&self) -> DayRange {
        let from = month_of(self.from);
        let mut to = month_of(self.to);
        if to < self.to {
            to = to.checked_add_months(Months::new(1)).unwrap_or(to);
        }
        DayRange { from, to }
    }

    fn month_after(&self) -> Option<String> {
        self.from
            .checked_sub_months(Months::new(1))
            .map(month_key)
            .or(Some(String::new()))
    }

    fn month_before(&self) -> Option<String> {
        Some(month_key(self.to))
    }
}

/// Sums two amounts of each key over month lists, without copying keys (a platform month
/// lists every product): each key with its sums and its first entry (for its title and
/// currency).
fn sum_by_key<'a, V: 'a>(
    lists: impl Iterator<Item = &'a BTreeMap<String, V>>,
    amounts: impl Fn(&V) -> (u64, i64),
) -> Vec<(&'a str, (u64, i64, &'a V))> {
    let mut sums: HashMap<&str, (u64, i64, &V)> = HashMap::new();
    for list in lists {
        for (key, v) in list {
            let (a, b) = amounts(v);
            let e = sums.entry(key.as_str()).or_insert((0, 0, v));
            e.0 += a;
            e.1 += b;
        }
    }
    sums.into_iter().collect()
}

/// Keeps the `limit` smallest items by `rank`, in order (without sorting the rest).
fn best_first<T, K: Ord>(items: &mut Vec<T>, limit: usize, rank: impl Fn(&T) -> K) {
    if limit == 0 {
        items.clear();
        return;
    }
    if items.len() > limit {
        items.select_nth_unstable_by(limit - 1, |a, b| rank(a).cmp(&rank(b)));
        items.truncate(limit);
    }
    items.sort_unstable_by_key(&rank);
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// One period's sales in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SalesRow {
    /// First day of the period.
    pub period: NaiveDate,
    pub currency: String,
    /// Orders paid.
    pub orders: u64,
    /// Goods of the orders paid, before discounts (minor units).
    pub gross_sales: i64,
    /// Coupon discounts on those orders.
    pub discounts: i64,
    /// Delivery fees of those orders.
    pub delivery_fees: i64,
    /// Gross merchandise value: goods plus delivery fees of the orders paid.
    pub gmv: i64,
    /// Money given back by refunds made in the period.
    pub refunds: i64,
    pub refund_count: u64,
    /// GMV less discounts and refunds.
    pub net_sales: i64,
    /// (GMV − discounts) / orders, rounded down; none without orders.
    pub average_order_value: Option<i64>,
    /// The platform's commission on the goods, less the part refunds gave back.
    pub commission: i64,
    /// The part of the delivery fees the platform keeps (after the courier's share), less
    /// the part refunds gave back.
    pub delivery_fees_kept: i64,
    /// Platform revenue: commission plus delivery fees kept.
    pub revenue: i64,
    /// The stores' share of the goods, less the part refunds gave back.
    pub store_share: i64,
    /// Paid orders rejected by the store in the period.
    pub rejected: u64,
    /// Paid orders cancelled in the period.
    pub cancelled: u64,
    /// rejected / orders (4 decimals); none without orders.
    pub rejection_rate: Option<f64>,
    /// cancelled / orders (4 decimals); none without orders.
    pub cancellation_rate: Option<f64>,
    /// Orders made ready in the period.
    pub prepared: u64,
    /// Median preparation time (accepted → ready), seconds (the lower median).
    pub preparation_median_s: Option<u32>,
    /// Mean preparation time, seconds, rounded down.
    pub preparation_mean_s: Option<u64>,
}

impl SalesRow {
    fn of(period: NaiveDate, currency: String, s: &Sales) -> SalesRow {
        SalesRow {
            period,
            currency,
            orders: s.orders,
            gross_sales: s.goods,
            discounts: s.discounts,
            delivery_fees: s.delivery_fees,
            gmv: s.gmv(),
            refunds: s.refunds,
            refund_count: s.refund_count,
            net_sales: s.net(),
            average_order_value: s.average_order(),
            commission: s.commission,
            delivery_fees_kept: s.delivery_kept,
            revenue: s.revenue(),
            store_share: s.store_share,
            rejected: s.rejected,
            cancelled: s.cancelled,
            rejection_rate: rate(s.rejected, s.orders),
            cancellation_rate: rate(s.cancelled, s.orders),
            prepared: s.preparation.count(),
            preparation_median_s: s.preparation.median(),
            preparation_mean_s: s.preparation.mean(),
        }
    }
}

/// Sales per period and currency (periods without any activity are left out), and the
/// whole range's totals per currency.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SalesReport {
    /// `store:{id}` or `platform`.
    pub scope: String,
    pub from: NaiveDate,
    /// Excluded.
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub rows: Vec<SalesRow>,
    /// The range as one period (its `period` is `from`).
    pub totals: Vec<SalesRow>,
}

/// A product's sales in the months of a range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopProduct {
    pub product_id: String,
    pub title: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub store_id: Option<VendorId>,
    pub currency: String,
    pub units: u64,
    /// Goods sold, minor units (before discounts and refunds).
    pub sales: i64,
}

/// The best-selling products of the months a range overlaps, by units then sales.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopProducts {
    pub scope: String,
    /// First day of the first month.
    pub from: NaiveDate,
    /// First day of the month after the last.
    pub to: NaiveDate,
    pub items: Vec<TopProduct>,
}

/// A store's sales in the months of a range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopStore {
    #[schema(value_type = String, format = Uuid)]
    pub store_id: String,
    pub currency: String,
    pub orders: u64,
    pub gmv: i64,
}

/// The stores with the most GMV in the months a range overlaps.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopStores {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub items: Vec<TopStore>,
}

/// A courier's work in one period.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CourierRow {
    pub period: NaiveDate,
    pub offers: u64,
    pub accepted: u64,
    pub declined: u64,
    /// Offers that ran out unanswered.
    pub expired: u64,
    /// accepted / offers (4 decimals).
    pub acceptance_rate: Option<f64>,
    pub deliveries: u64,
    /// Deliveries handed over within the ETA given at pickup.
    pub on_time: u64,
    pub late: u64,
    /// on_time / (on_time + late) (4 decimals).
    pub on_time_rate: Option<f64>,
    /// Median seconds from the courier's acceptance (recorded on the order) to pickup.
    pub accept_to_pickup_median_s: Option<u32>,
    /// Median seconds from pickup to handover.
    pub pickup_to_delivery_median_s: Option<u32>,
}

impl CourierRow {
    fn of(period: NaiveDate, w: &CourierWork) -> CourierRow {
        CourierRow {
            period,
            offers: w.offers,
            accepted: w.accepted,
            declined: w.declined,
            expired: w.expired,
            acceptance_rate: rate(w.accepted, w.offers),
            deliveries: w.deliveries,
            on_time: w.on_time,
            late: w.late,
            on_time_rate: rate(w.on_time, w.on_time + w.late),
            accept_to_pickup_median_s: w.accept_to_pickup.median(),
            pickup_to_delivery_median_s: w.pickup_to_delivery.median(),
        }
    }
}

/// One courier's performance per period, and over the whole range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CourierReport {
    #[schema(value_type = String, format = Uuid)]
    pub courier_id: UserId,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub rows: Vec<CourierRow>,
    pub total: CourierRow,
}

/// A courier's counts in the months of a range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CourierSummary {
    #[schema(value_type = String, format = Uuid)]
    pub courier_id: UserId,
    pub offers: u64,
    pub accepted: u64,
    pub declined: u64,
    pub expired: u64,
    pub acceptance_rate: Option<f64>,
    pub deliveries: u64,
    pub on_time: u64,
    pub late: u64,
    pub on_time_rate: Option<f64>,
}

/// Every courier's counts in the months a range overlaps, most deliveries first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CourierList {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub items: Vec<CourierSummary>,
}

/// Supply and demand in one H3 cell during one hour.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SupplyDemandRow {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// The H3 cell (hex).
    pub cell: String,
    /// Distinct couriers seen online in the cell during the hour.
    pub couriers_online: u64,
    /// Orders paid whose store is in the cell.
    pub orders_paid: u64,
    /// Orders (store in the cell) that waited for a courier during the hour.
    pub orders_waiting: u64,
    /// Seconds those orders waited within the hour.
    pub waiting_s: u64,
}

/// Supply and demand per cell and hour.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SupplyDemand {
    pub resolution: u8,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub rows: Vec<SupplyDemandRow>,
}

/// Moves the preparation times summed for `period` onto its rows (adding to what an earlier
/// stretch of the same period put there, should its days not have been read together).
fn settle_times(
    periods: &mut BTreeMap<(NaiveDate, String), Sales>,
    period: NaiveDate,
    sums: &mut BTreeMap<String, DurationSum>,
) {
    for (currency, sum) in sums.iter_mut() {
        let times = sum.take();
        if let Some(row) = periods.get_mut(&(period, currency.clone())) {
            row.preparation.merge(&times);
        }
    }
}

/// A report that renders as CSV.
pub trait Csv {
    fn csv(&self) -> String;
}

fn field(out: &mut String, value: impl std::fmt::Display) {
    let text = value.to_string();
    if text.contains([',', '"', '\n', '\r']) {
        let _ = write!(out, "\"{}\"", text.replace('"', "\"\""));
    } else {
        out.push_str(&text);
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn lines(header: &str, rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = String::from(header);
    out.push_str("\r\n");
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, value);
        }
        out.push_str("\r\n");
    }
    out
}

impl Csv for SalesReport {
    fn csv(&self) -> String {
        lines(
            "period,currency,orders,gross_sales,discounts,delivery_fees,gmv,refunds,refund_count,net_sales,average_order_value,commission,delivery_fees_kept,revenue,store_share,rejected,cancelled,rejection_rate,cancellation_rate,prepared,preparation_median_s,preparation_mean_s",
            self.rows.iter().map(|r| {
                vec![
                    r.period.to_string(),
                    r.currency.clone(),
                    r.orders.to_string(),
                    r.gross_sales.to_string(),
                    r.discounts.to_string(),
                    r.delivery_fees.to_string(),
                    r.gmv.to_string(),
                    r.refunds.to_string(),
                    r.refund_count.to_string(),
                    r.net_sales.to_string(),
                    opt(&r.average_order_value),
                    r.commission.to_string(),
                    r.delivery_fees_kept.to_string(),
                    r.revenue.to_string(),
                    r.store_share.to_string(),
                    r.rejected.to_string(),
                    r.cancelled.to_string(),
                    opt(&r.rejection_rate),
                    opt(&r.cancellation_rate),
                    r.prepared.to_string(),
                    opt(&r.preparation_median_s),
                    opt(&r.preparation_mean_s),
                ]
            }),
        )
    }
}

impl Csv for TopProducts {
    fn csv(&self) -> String {
        lines(
            "product_id,title,store_id,currency,units,sales",
            self.items.iter().map(|p| {
                vec![
                    p.product_id.clone(),
                    p.title.clone(),
                    opt(&p.store_id.map(|s| s.as_uuid())),
                    p.currency.clone(),
                    p.units.to_string(),
                    p.sales.to_string(),
                ]
            }),
        )
    }
}

impl Csv for TopStores {
    fn csv(&self) -> String {
        lines(
            "store_id,currency,orders,gmv",
            self.items.iter().map(|s| {
                vec![
                    s.store_id.clone(),
                    s.currency.clone(),
                    s.orders.to_string(),
                    s.gmv.to_string(),
                ]
            }),
        )
    }
}

fn courier_fields(r: &CourierRow) -> Vec<String> {
    vec![
        r.period.to_string(),
        r.offers.to_string(),
        r.accepted.to_string(),
        r.declined.to_string(),
        r.expired.to_string(),
        opt(&r.acceptance_rate),
        r.deliveries.to_string(),
        r.on_time.to_string(),
        r.late.to_string(),
        opt(&r.on_time_rate),
        opt(&r.accept_to_pickup_median_s),
        opt(&r.pickup_to_delivery_median_s),
    ]
}

impl Csv for CourierReport {
    fn csv(&self) -> String {
        lines(
            "period,offers,accepted,declined,expired,acceptance_rate,deliveries,on_time,late,on_time_rate,accept_to_pickup_median_s,pickup_to_delivery_median_s",
            self.rows.iter().map(courier_fields),
        )
    }
}

impl Csv for CourierList {
    fn csv(&self) -> String {
        lines(
            "courier_id,offers,accepted,declined,expired,acceptance_rate,deliveries,on_time,late,on_time_rate",
            self.items.iter().map(|c| {
                vec![
                    c.courier_id.as_uuid().to_string(),
                    c.offers.to_string(),
                    c.accepted.to_string(),
                    c.declined.to_string(),
                    c.expired.to_string(),
                    opt(&c.acceptance_rate),
                    c.deliveries.to_string(),
                    c.on_time.to_string(),
                    c.late.to_string(),
                    opt(&c.on_time_rate),
                ]
            }),
        )
    }
}

impl Csv for SupplyDemand {
    fn csv(&self) -> String {
        lines(
            "hour,cell,couriers_online,orders_paid,orders_waiting,waiting_s",
            self.rows.iter().map(|r| {
                vec![
                    r.hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.cell.clone(),
                    r.couriers_online.to_string(),
                    r.orders_paid.to_string(),
                    r.orders_waiting.to_string(),
                    r.waiting_s.to_string(),
                ]
            }),
        )
    }
}

fn parse_day(key: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()
}

fn parse_month(key: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d").ok()
}

/// Which sales series a report reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesScope {
    Store(VendorId),
    Platform,
}

impl SalesScope {
    fn name(self) -> String {
        match self {
            SalesScope::Store(s) => format!("store:{}", s.as_uuid()),
            SalesScope::Platform => "platform".to_owned(),
        }
    }
}

impl Analytics {
    /// Sales per period of `range` for a store or the whole platform.
    pub async fn sales(
        &self,
        scope: SalesScope,
        range: DayRange,
        granularity: Granularity,
    ) -> Result<SalesReport, AnalyticsError> {
        let generation = self.generation().await?;
        let series = match scope {
            SalesScope::Store(s) => Series::StoreDays(s),
            SalesScope::Platform => Series::PlatformDays,
        };
        let rows = self
            .inner
            .repo
            .range(generation, &series, range.after(), range.before())
            .await?;
        let mut periods: BTreeMap<(NaiveDate, String), Sales> = BTreeMap::new();
        let mut totals: BTreeMap<String, Sales> = BTreeMap::new();
        // Preparation times are summed apart, per currency, for the period being read (rows
        // come in day order, so a period's days are read together) and for the whole range.
        let mut period_times: BTreeMap<String, DurationSum> = BTreeMap::new();
        let mut total_times: BTreeMap<String, DurationSum> = BTreeMap::new();
        let mut current = None;
        for (key, cell) in &rows {
            let (Some(day), Cell::Sales(sales)) = (parse_day(key), cell.as_ref()) else {
                continue;
            };
            let period = granularity.period_of(day);
            if current != Some(period) {
                if let Some(done) = current {
                    settle_times(&mut periods, done, &mut period_times);
                }
                current = Some(period);
            }
            for (currency, s) in &sales.0 {
                periods
                    .entry((period, currency.clone()))
                    .or_default()
                    .merge_counts(s);
                totals.entry(currency.clone()).or_default().merge_counts(s);
                period_times
                    .entry(currency.clone())
                    .or_default()
                    .add(&s.preparation);
                total_times
                    .entry(currency.clone())
                    .or_default()
                    .add(&s.preparation);
            }
        }
        if let Some(done) = current {
            settle_times(&mut periods, done, &mut period_times);
        }
        for (currency, sum) in &mut total_times {
            if let Some(total) = totals.get_mut(currency) {
                total.preparation = sum.take();
            }
        }
        Ok(SalesReport {
            scope: scope.name(),
            from: range.from,
            to: range.to,
            granularity,
            rows: periods
                .into_iter()
                .map(|((period, currency), s)| SalesRow::of(period, currency, &s))
                .collect(),
            totals: totals
                .into_iter()
                .map(|(currency, s)| SalesRow::of(range.from, currency, &s))
                .collect(),
        })
    }

    async fn month_cells(
        &self,
        series: Series,
        months: DayRange,
    ) -> Result<Vec<std::sync::Arc<Cell>>, AnalyticsError> {
        let generation = self.generation().await?;
        Ok(self
            .inner
            .repo
            .range(
                generation,
                &series,
                months.month_after(),
                months.month_before(),
            )
            .await?
            .into_iter()
            .filter(|(key, _)| parse_month(key).is_some())
            .map(|(_, cell)| cell)
            .collect())
    }

    /// The best-selling products (of a store, or of the platform) in the months `range`
    /// overlaps.
    pub async fn top_products(
        &self,
        scope: SalesScope,
        range: DayRange,
        limit: usize,
    ) -> Result<TopProducts, AnalyticsError> {
        let months = range.months();
        let series = match scope {
            SalesScope::Store(s) => Series::StoreProducts(s),
            SalesScope::Platform => Series::PlatformProducts,
        };
        let cells = self.month_cells(series, months).await?;
        let lists = cells.iter().filter_map(|c| match c.as_ref() {
            Cell::Products(month) => Some(month),
            _ => None,
        });
        let mut ranked = sum_by_key(lists, |p: &ProductSales| (p.units, p.sales));
        best_first(&mut ranked, limit, |(key, (units, sales, _))| {
            (Reverse((*units, *sales)), *key)
        });
        let items = ranked
            .into_iter()
            .map(|(key, (units, sales, p))| TopProduct {
                product_id: key.split('/').next().unwrap_or_default().to_owned(),
                title: p.title.clone(),
                store_id: p.store,
                currency: p.currency.clone(),
                units,
                sales,
            })
            .collect();
        Ok(TopProducts {
            scope: scope.name(),
            from: months.from,
            to: months.to,
            items,
        })
    }

    /// The stores with the most GMV in the months `range` overlaps.
    pub async fn top_stores(
        &self,
        range: DayRange,
        limit: usize,
    ) -> Result<TopStores, AnalyticsError> {
        let months = range.months();
        let cells = self.month_cells(Series::PlatformStores, months).await?;
        let lists = cells.iter().filter_map(|c| match c.as_ref() {
            Cell::Stores(month) => Some(month),
            _ => None,
        });
        let mut ranked = sum_by_key(lists, |s: &StoreSales| (s.orders, s.gmv));
        best_first(&mut ranked, limit, |(key, (orders, gmv, _))| {
            (Reverse((*gmv, *orders)), *key)
        });
        let items = ranked
            .into_iter()
            .map(|(key, (orders, gmv, s))| TopStore {
                store_id: key.split('/').next().unwrap_or_default().to_owned(),
                currency: s.currency.clone(),
                orders,
                gmv,
            })
            .collect();
        Ok(TopStores {
            from: months.from,
            to: months.to,
            items,
        })
    }

    /// One courier's performance per period of `range`.
    pub async fn courier(
        &self,
        courier: UserId,
        range: DayRange,
        granularity: Granularity,
    ) -> Result<CourierReport, AnalyticsError> {
        let generation = self.generation().await?;
        let rows = self
            .inner
            .repo
            .range(
                generation,
                &Series::CourierDays(courier),
                range.after(),
                range.before(),
            )
            .await?;
        let mut periods: BTreeMap<NaiveDate, CourierWork> = BTreeMap::new();
        let mut total = CourierWork::default();
        for (key, cell) in &rows {
            let (Some(day), Cell::Courier(work)) = (parse_day(key), cell.as_ref()) else {
                continue;
            };
            periods
                .entry(granularity.period_of(day))
                .or_default()
                .merge(work);
            total.merge(work);
        }
        Ok(CourierReport {
            courier_id: courier,
            from: range.from,
            to: range.to,
            granularity,
            rows: periods
                .iter()
                .map(|(period, w)| CourierRow::of(*period, w))
                .collect(),
            total: CourierRow::of(range.from, &total),
        })
    }

    /// Every courier's counts in the months `range` overlaps.
    pub async fn couriers(
        &self,
        range: DayRange,
        limit: usize,
    ) -> Result<CourierList, AnalyticsError> {
        let months = range.months();
        let mut couriers: BTreeMap<UserId, CourierWork> = BTreeMap::new();
        for cell in self.month_cells(Series::PlatformCouriers, months).await? {
            if let Cell::Couriers(month) = cell.as_ref() {
                for (id, w) in month {
                    couriers.entry(*id).or_default().merge(w);
                }
            }
        }
        let mut items: Vec<CourierSummary> = couriers
            .into_iter()
            .map(|(id, w)| CourierSummary {
                courier_id: id,
                offers: w.offers,
                accepted: w.accepted,
                declined: w.declined,
                expired: w.expired,
                acceptance_rate: rate(w.accepted, w.offers),
                deliveries: w.deliveries,
                on_time: w.on_time,
                late: w.late,
                on_time_rate: rate(w.on_time, w.on_time + w.late),
            })
            .collect();
        items.sort_by(|a, b| {
            b.deliveries
                .cmp(&a.deliveries)
                .then_with(|| a.courier_id.cmp(&b.courier_id))
        });
        items.truncate(limit);
        Ok(CourierList {
            from: months.from,
            to: months.to,
            items,
        })
    }

    /// Supply and demand per cell of `resolution` (7 or 8) and hour in `[from, to)` (whole
    /// hours).
    pub async fn supply_demand(
        &self,
        resolution: u8,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<SupplyDemand, AnalyticsError> {
        let generation = self.generation().await?;
        let mut rows = Vec::new();
        let mut day = from.date_naive();
        while day <= to.date_naive() {
            let cells = self
                .inner
                .repo
                .range(generation, &Series::Hours(resolution, day), None, None)
                .await?;
            for (key, cell) in cells {
                let (Some((hour, cell_name)), Cell::Hour(h)) = (key.split_once('/'), cell.as_ref())
                else {
                    continue;
                };
                let Some(at) = hour
                    .parse::<u32>()
                    .ok()
                    .and_then(|h| day.and_hms_opt(h, 0, 0))
                    .map(|t| t.and_utc())
                else {
                    continue;
                };
                if at < from || at >= to {
                    continue;
                }
                rows.push(row(at, cell_name, h));
            }
            day = match day.checked_add_days(Days::new(1)) {
                Some(next) => next,
                None => break,
            };
        }
        rows.sort_by(|a, b| (a.hour, &a.cell).cmp(&(b.hour, &b.cell)));
        Ok(SupplyDemand {
            resolution,
            from,
            to,
            rows,
        })
    }
}

fn row(hour: DateTime<Utc>, cell: &str, h: &CellHour) -> SupplyDemandRow {
    SupplyDemandRow {
        hour,
        cell: cell.to_owned(),
        couriers_online: h.couriers.len() as u64,
        orders_paid: h.paid_orders,
        orders_waiting: h.waiting_orders,
        waiting_s: h.waiting_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_keeps_the_smallest_ranks_in_order() {
        let mut items = vec![5, 3, 9, 1, 7, 3];
        best_first(&mut items, 3, |x| *x);
        assert_eq!(items, vec![1, 3, 3]);
        let mut items = vec![2, 1];
        best_first(&mut items, 10, |x| Reverse(*x));
        assert_eq!(items, vec![2, 1]);
        best_first(&mut items, 0, |x| *x);
        assert!(items.is_empty());
    }
}
