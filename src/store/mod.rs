//! The storage contract every backend honours, and the backends themselves.
//!
//! hexmarket keeps every aggregate as a *row* addressed by a partition key and a clustering
//! key inside one [`Table`]. Rows in [`Mode::Versioned`] tables carry a version and change only
//! through compare-and-set ([`Store::insert`], [`Store::update`], [`Store::delete`]): the same
//! semantics as ScyllaDB's lightweight transactions (`IF NOT EXISTS`, `IF version = ?`), so two
//! activations of one actor on different nodes cannot clobber each other. Rows in
//! [`Mode::Append`] tables (location trails and other high-volume logs) are written with plain
//! [`Store::put`] and never conditionally: ScyllaDB forbids mixing the two on one row.
//!
//! Within a partition, rows are ordered by the bytes of their clustering key; keys built with
//! [`seq_key`] sort numerically. Typed repositories in the submodules turn rows into domain
//! values, so handlers and actors never see bytes and every backend gets them for free.

pub mod analytics;
pub mod audit;
pub mod auth_codes;
pub mod carts;
pub mod catalog;
pub mod coupons;
pub mod courier_journal;
pub mod couriers;
pub mod embedded;
pub mod indexed;
pub mod inventory;
pub mod journal;
pub mod ledger;
pub mod live;
pub mod mailboxes;
pub mod migrate;
pub mod moderation;
pub mod notifications;
pub mod orders;
pub mod reviews;
pub mod revocations;
pub mod scylla;
pub mod sessions;
pub mod settings;
pub mod sign_in;
pub mod support;
pub mod typed;
pub mod users;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Version of a row in a versioned table. The first write of a row produces version 1.
pub type Version = u64;

/// Largest number of rows one page of a scan may return.
pub const MAX_PAGE: usize = 1000;

/// Whether a table is written by compare-and-set or by plain appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rows change only through `insert`/`update`/`delete` with a version check.
    Versioned,
    /// Rows are written with `put` (upsert, no condition), typically with a time to live.
    Append,
}

/// Every table hexmarket stores. Adding an aggregate means adding a variant here, its CQL in
/// `schema/`, and (for the embedded store) nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Accounts, one row per user id.
    Users,
    /// Unique index: normalised email → user id.
    UserEmails,
    /// Refresh-token families and other session records, partitioned by user.
    Sessions,
    /// Carts, one row per cart id.
    Carts,
    /// Orders, one row per order id.
    Orders,
    /// Append-only event log of an order: partition = order id, clustering = sequence number.
    OrderEvents,
    /// Idempotency records for unsafe retries, expiring after their TTL.
    Idempotency,
    /// Courier location trail: partition = courier id and day, clustering = recorded time.
    CourierTrail,
    /// One-time codes and single-use tokens (SMS OTP, email verification, password reset),
    /// stored as keyed hashes: partition = user id, clustering = purpose.
    AuthCodes,
    /// Vendor stores, one row per vendor id.
    Vendors,
    /// Unique index: vendor user id → the one store they run.
    VendorOwners,
    /// The category tree, one row changed by compare-and-set.
    Categories,
    /// Products, one row per product id.
    Products,
    /// Stock and checkout holds, one row per product id.
    Inventory,
    /// Stock adjustment history: partition = product id, clustering = adjustment id.
    InventoryLog,
    /// Reviews: partition = target (`product:{id}`, `vendor:{id}`), clustering = review id.
    Reviews,
    /// Unique index: one review per order line (`{order}:{target}`) → review id.
    ReviewClaims,
    /// Rating count and sum per review target.
    Ratings,
    /// Admin-curated catalog settings (the featured list), one row per setting.
    CatalogSettings,
    /// Payments, one row per payment id (one per checkout).
    Payments,
    /// Payment provider events already applied, by event id (deduplication).
    PaymentEvents,
    /// Index: partition = customer id, clustering = order id.
    CustomerOrders,
    /// Index: partition = vendor id, clustering = order id.
    VendorOrders,
    /// Pending order deadlines (payment expiry): partition = time bucket, clustering = due time and order id.
    OrderTimers,
    /// Checkouts: the orders and payment of one purchase, one row per checkout id.
    Checkouts,
    /// Couriers: profile, online state, last position and active orders, one row per courier.
    Couriers,
    /// Orders waiting for a courier: partition `pending`, clustering = order id.
    Dispatches,
    /// Each vendor's order feed: partition = vendor id, clustering = feed sequence number; and
    /// partition `ref:{order}`, clustering = order sequence number, for deduplication.
    VendorFeed,
    /// Orders between paid and delivered (for live operations): partition `open`, clustering = order id.
    OpenOrders,
    /// Single-use WebSocket tickets: partition = SHA-256 of the ticket.
    WsTickets,
    /// Access-token revocation marks: partition = minute, clustering = time and user id;
    /// rows expire once every token they could refuse has expired.
    TokenRevocations,
    /// One note per order event in time order: partition = minute, clustering = time, order
    /// and sequence number. Read by the consumers of order events.
    OrderJournal,
    /// Each consumer's position in the order journal and its lease, one row per consumer.
    JournalCursors,
    /// Messages for external channels (email, SMS, push), one row per notification id.
    Notifications,
    /// Messages waiting for an attempt (partition `pending`) and given up on (partition
    /// `dead`), clustered by notification id.
    NotificationQueue,
    /// Each user's in-app feed: partition = user id, clustering = time and notification id.
    NotificationFeed,
    /// Webhook endpoints: partition `owner:{user}` (the endpoints), `vendor:{vendor}` and
    /// `platform` (references, for delivery), clustering = endpoint id.
    Webhooks,
    /// Ledger transactions, one row per key derived from the business event (the
    /// idempotency of booking).
    LedgerTransactions,
    /// Each account's statement: partition = account, clustering = ledger position and entry.
    LedgerEntries,
    /// Each account's balance, one row per account.
    LedgerBalances,
    /// The ledger's head (its position and the batch being applied), rates, payout
    /// destinations, releases waiting for their hold, deliveries held for review and payout
    /// runs: one partition each.
    LedgerState,
    /// Payouts (`id:{payout}`), with indexes per account, for all, and of the ones in flight.
    Payouts,
    /// Coupons with their redemptions, one row per code.
    Coupons,
    /// The audit trail: partition = month, clustering = time (newest first) and entry id.
    AuditLog,
    /// The platform's settings: the version in force (`current`) and every version kept
    /// (partition `history`, clustering = version number).
    PlatformSettings,
    /// Support tickets with their messages, one row per ticket (`id:{ticket}`).
    SupportTickets,
    /// Ticket lists: partition `author:{user}` (newest first) and `status:{status}` (the
    /// admins' queue, oldest first), each row pointing at its ticket.
    SupportIndex,
    /// Reported products and stores with their open reports, one row per item.
    ModerationItems,
    /// The moderation queue: partition `status:{open|decided}`, clustering = when the round of
    /// reports began and the item.
    ModerationQueue,
    /// Moderation decisions: partition `all` and `item:{item}`, newest first.
    ModerationDecisions,
    /// Analytics rollups (a store's or the platform's days, couriers' days, H3 cells' hours,
    /// months' top lists), each with the batch it was applied through.
    AnalyticsRollups,
    /// What analytics folded of each order, one row per generation and order.
    AnalyticsOrders,
    /// The analytics head: generation, journal positions and the batch being applied.
    AnalyticsState,
    /// What couriers did that no order log says: partition = minute, clustering = time,
    /// courier and event id.
    CourierJournal,
    /// Sign-in ceremonies between their two halves (an OpenID Connect redirect, a passkey
    /// challenge, a link waiting for its proof): one row each, under a digest of its id,
    /// taken once and gone after its time-to-live.
    SignInCeremonies,
    /// Who owns each external credential: `oidc:{provider}:{subject}` and
    /// `passkey:{credential id}`, one row each, pointing at the account.
    SignInCredentials,
}

impl Table {
    /// All tables, in a stable order. Append only: the embedded store tags its expiry index
    /// with a table's position here.
    pub const ALL: [Table; 56] = [
        Table::Users,
        Table::UserEmails,
        Table::Sessions,
        Table::Carts,
        Table::Orders,
        Table::OrderEvents,
        Table::Idempotency,
        Table::CourierTrail,
        Table::AuthCodes,
        Table::Vendors,
        Table::VendorOwners,
        Table::Categories,
        Table::Products,
        Table::Inventory,
        Table::InventoryLog,
        Table::Reviews,
        Table::ReviewClaims,
        Table::Ratings,
        Table::CatalogSettings,
        Table::Payments,
        Table::PaymentEvents,
        Table::CustomerOrders,
        Table::VendorOrders,
        Table::OrderTimers,
        Table::Checkouts,
        Table::Couriers,
        Table::Dispatches,
        Table::VendorFeed,
        Table::OpenOrders,
        Table::WsTickets,
        Table::TokenRevocations,
        Table::OrderJournal,
        Table::JournalCursors,
        Table::Notifications,
        Table::NotificationQueue,
        Table::NotificationFeed,
        Table::Webhooks,
        Table::LedgerTransactions,
        Table::LedgerEntries,
        Table::LedgerBalances,
        Table::LedgerState,
        Table::Payouts,
        Table::Coupons,
        Table::AuditLog,
        Table::PlatformSettings,
        Table::SupportTickets,
        Table::SupportIndex,
        Table::ModerationItems,
        Table::ModerationQueue,
        Table::ModerationDecisions,
        Table::AnalyticsRollups,
        Table::AnalyticsOrders,
        Table::AnalyticsState,
        Table::CourierJournal,
        Table::SignInCeremonies,
        Table::SignInCredentials,
    ];

    /// The table's name, used as the CQL table name and the embedded keyspace name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::UserEmails => "user_emails",
            Table::Sessions => "sessions",
            Table::Carts => "carts",
            Table::Orders => "orders",
            Table::OrderEvents => "order_events",
            Table::Idempotency => "idempotency",
            Table::CourierTrail => "courier_trail",
            Table::AuthCodes => "auth_codes",
            Table::Vendors => "vendors",
            Table::VendorOwners => "vendor_owners",
            Table::Categories => "categories",
            Table::Products => "products",
            Table::Inventory => "inventory",
            Table::InventoryLog => "inventory_log",
            Table::Reviews => "reviews",
            Table::ReviewClaims => "review_claims",
            Table::Ratings => "ratings",
            Table::CatalogSettings => "catalog_settings",
            Table::Payments => "payments",
            Table::PaymentEvents => "payment_events",
            Table::CustomerOrders => "customer_orders",
            Table::VendorOrders => "vendor_orders",
            Table::OrderTimers => "order_timers",
            Table::Checkouts => "checkouts",
            Table::Couriers => "couriers",
            Table::Dispatches => "dispatches",
            Table::VendorFeed => "vendor_feed",
            Table::OpenOrders => "open_orders",
            Table::WsTickets => "ws_tickets",
            Table::TokenRevocations => "token_revocations",
            Table::OrderJournal => "order_journal",
            Table::JournalCursors => "journal_cursors",
            Table::Notifications => "notifications",
            Table::NotificationQueue => "notification_queue",
            Table::NotificationFeed => "notification_feed",
            Table::Webhooks => "webhooks",
            Table::LedgerTransactions => "ledger_transactions",
            Table::LedgerEntries => "ledger_entries",
            Table::LedgerBalances => "ledger_balances",
            Table::LedgerState => "ledger_state",
            Table::Payouts => "payouts",
            Table::Coupons => "coupons",
            Table::AuditLog => "audit_log",
            Table::PlatformSettings => "platform_settings",
            Table::SupportTickets => "support_tickets",
            Table::SupportIndex => "support_index",
            Table::ModerationItems => "moderation_items",
            Table::ModerationQueue => "moderation_queue",
            Table::ModerationDecisions => "moderation_decisions",
            Table::AnalyticsRollups => "analytics_rollups",
            Table::AnalyticsOrders => "analytics_orders",
            Table::AnalyticsState => "analytics_state",
            Table::CourierJournal => "courier_journal",
            Table::SignInCeremonies => "sign_in_ceremonies",
            Table::SignInCredentials => "sign_in_credentials",
        }
    }

    pub fn mode(self) -> Mode {
        match self {
            Table::CourierTrail
            | Table::InventoryLog
            | Table::TokenRevocations
            | Table::OrderJournal
            | Table::LedgerEntries
            | Table::AuditLog
            | Table::CourierJournal => Mode::Append,
            _ => Mode::Versioned,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Address of one row: partition key plus clustering key (empty for single-row partitions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub partition: String,
    pub clustering: String,
}

impl Key {
    /// The key of a row that is alone in its partition.
    pub fn single(partition: impl Into<String>) -> Self {
        Key {
            partition: partition.into(),
            clustering: String::new(),
        }
    }

    pub fn new(partition: impl Into<String>, clustering: impl Into<String>) -> Self {
        Key {
            partition: partition.into(),
            clustering: clustering.into(),
        }
    }
}

/// A clustering key for a sequence number that sorts in numeric order.
pub fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Key,
    /// The row's version (always 1 for rows of append tables).
    pub version: Version,
    pub data: Bytes,
}

/// Outcome of a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The write was applied; the row now has this version.
    Applied(Version),
    /// The condition failed; this is the row as it currently is (`None`: it does not exist).
    Conflict(Option<Row>),
}

impl Cas {
    pub fn is_applied(&self) -> bool {
        matches!(self, Cas::Applied(_))
    }
}

/// Where a scan starts and how much it returns.
#[derive(Debug, Clone, Default)]
pub struct ScanRange {
    /// Return only rows whose clustering key is strictly greater than this.
    pub after: Option<String>,
    /// Return only rows whose clustering key is strictly smaller than this.
    pub before: Option<String>,
    /// At most this many rows (capped at [`MAX_PAGE`]).
    pub limit: usize,
}

impl ScanRange {
    pub fn first(limit: usize) -> Self {
        ScanRange {
            limit,
            ..ScanRange::default()
        }
    }

    pub fn after(after: impl Into<String>, limit: usize) -> Self {
        ScanRange {
            after: Some(after.into()),
            limit,
            ..ScanRange::default()
        }
    }
}

/// One page of a scan. `next` is the cursor for the following page, absent on the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<String>,
}

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the request; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time; the write may or may not have been applied.
    #[error("store timed out; the outcome is unknown")]
    Timeout,
    /// A row could not be decoded into its domain value.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: Table, reason: String },
    /// The caller broke the contract (for instance a conditional write on an append table).
    #[error("store misuse: {0}")]
    Misuse(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage contract. Every method is safe to call from async code: backends keep blocking
/// work off the executor. A successful write is durable when the call returns.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and `/ready`.
    fn backend(&self) -> &'static str;

    /// Reads one row; expired rows read as absent.
    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Row>>;

    /// Creates a row if it does not exist (`IF NOT EXISTS`). Versioned tables only.
    async fn insert(
        &self,
        table: Table,
        key: &Key,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas>;

    /// Replaces a row if its version is still `expected` (`IF version = ?`). Versioned tables only.
    async fn update(
        &self,
        table: Table,
        key: &Key,
        expected: Version,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas>;

    /// Deletes a row if its version is still `expected`. Versioned tables only.
    async fn delete(&self, table: Table, key: &Key, expected: Version) -> StoreResult<Cas>;

    /// Writes rows unconditionally, all durable when the call returns. Append tables only.
    async fn put(
        &self,
        table: Table,
        rows: Vec<(Key, Bytes)>,
        ttl: Option<Duration>,
    ) -> StoreResult<()>;

    /// Lists the rows of one partition in clustering-key order.
    async fn scan(&self, table: Table, partition: &str, range: ScanRange) -> StoreResult<Page>;

    /// Lists the rows of a whole table, a page at a time, in the backend's own stable order.
    /// `cursor` is the `next` of the previous page.
    async fn scan_table(
        &self,
        table: Table,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<Page>;

    /// Checks that the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The schema version every reachable node serves, for a backend whose schema is shared by
    /// a cluster; `None` for one whose schema lives in this process. Nodes that disagree (as
    /// they do for a moment after DDL) are [`StoreError::Unavailable`].
    async fn schema_version(&self) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

/// The store shared by the whole process.
pub type SharedStore = Arc<dyn Store>;

pub(crate) fn check_mode(table: Table, wanted: Mode) -> StoreResult<()> {
    if table.mode() == wanted {
        Ok(())
    } else {
        Err(StoreError::Misuse(format!(
            "table {table} is {:?}, not {wanted:?}",
            table.mode()
        )))
    }
}

pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// Encodes a domain value as row data.
pub fn encode<T: serde::Serialize>(table: Table, value: &T) -> StoreResult<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::Corrupt {
            table,
            reason: e.to_string(),
        })
}

/// Decodes row data into a domain value.
pub fn decode<T: serde::de::DeserializeOwned>(table: Table, data: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(data).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}
