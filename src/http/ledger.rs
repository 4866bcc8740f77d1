//! Money: ledger balances and statements (a store's and a courier's own, every account for
//! admins), the rates orders are shared by, deliveries held for review, payouts and their
//! destinations, payout runs and reconciliation.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit;
use super::client_addr::ClientAddr;
use super::notifications::page_size;
use crate::domain::identity::Role;
use crate::domain::ids::{OrderId, PayoutId, PayoutRunId, VendorId};
use crate::domain::ledger::{LedgerAccount, LedgerTx, Payout, Rates, StatementLine};
use crate::domain::settings::SettingsPatch;
use crate::error_code::ErrorCode;
use crate::ledger::reconcile::Reconciliation;
use crate::ledger::{AccountBalance, LedgerError, LedgerSummary};
use crate::store::StoreError;
use crate::store::ledger::{PayoutRun, PendingRelease};
use crate::web::extract::AuthUser;
use crate::web::problem::Problem;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ledger/accounts", web::get().to(list_accounts))
        .route("/ledger/accounts/{account}", web::get().to(get_account))
        .route(
            "/ledger/accounts/{account}/entries",
            web::get().to(list_entries),
        )
        .route("/payouts", web::get().to(list_payouts))
        .route("/payouts/destination", web::get().to(get_destination))
        .route("/payouts/destination", web::put().to(put_destination))
        .route("/payouts/{id}", web::get().to(get_payout))
        .route("/admin/ledger/summary", web::get().to(summary))
        .route(
            "/admin/ledger/transactions",
            web::get().to(list_transactions),
        )
        .route("/admin/ledger/rates", web::get().to(get_default_rates))
        .route("/admin/ledger/rates", web::put().to(put_default_rates))
        .route(
            "/admin/ledger/rates/stores/{id}",
            web::get().to(get_store_rates),
        )
        .route(
            "/admin/ledger/rates/stores/{id}",
            web::put().to(put_store_rates),
        )
        .route(
            "/admin/ledger/rates/stores/{id}",
            web::delete().to(delete_store_rates),
        )
        .route("/admin/ledger/reviews", web::get().to(list_reviews))
        .route(
            "/admin/ledger/reviews/{order_id}/release",
            web::post().to(release_reviewed),
        )
        .route(
            "/admin/ledger/reconciliation",
            web::get().to(reconciliation),
        )
        .route("/admin/payouts/runs", web::post().to(request_run))
        .route("/admin/payouts/runs/{id}", web::get().to(get_run));
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Store(e) => e.into(),
            LedgerError::Payment(e) => e.into(),
            LedgerError::Lost => ApiError::unavailable(ErrorCode::Contended, e),
        }
    }
}

pub(super) fn bad_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidCursor,
        "the cursor is not one this list handed out",
    )
}

/// A cursor handed out by a list: base64url, at most 512 characters.
pub(super) fn opaque_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(c)
            if c.is_empty()
                || c.len() > 512
                || !c.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                }) =>
        {
            Err(bad_cursor())
        }
        other => Ok(other),
    }
}

fn parse_account(raw: &str) -> Result<LedgerAccount, ApiError> {
    raw.parse()
        .map_err(|e: crate::domain::ledger::UnknownAccount| {
            ApiError::invalid_field("account", e.to_string())
        })
}

/// The accounts the caller may read: every one for an admin; a store's two for its owner; a
/// courier's own.
async fn own_accounts(state: &AppState, user: &AuthUser) -> Result<Vec<LedgerAccount>, ApiError> {
    let mut accounts = Vec::new();
    if let Some(store) = state.catalog.vendor_of(user.id).await? {
        accounts.push(LedgerAccount::StorePending(store.id));
        accounts.push(LedgerAccount::StorePayable(store.id));
    }
    if user.role == Role::Courier {
        accounts.push(LedgerAccount::CourierPayable(user.id));
    }
    Ok(accounts)
}

/// 404 unless the caller may read `account`.
async fn visible(
    state: &AppState,
    user: &AuthUser,
    account: LedgerAccount,
) -> Result<(), ApiError> {
    if user.is_admin() || own_accounts(state, user).await?.contains(&account) {
        Ok(())
    } else {
        Err(ApiError::not_found("no such account"))
    }
}

/// Paging of the accounts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Page size, 1–100 (default 50). Admins only: others get their few accounts at once.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,512}$")]
    pub cursor: Option<String>,
}

/// A page of accounts with their balances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountsPage {
    pub items: Vec<AccountBalance>,
    pub next_cursor: Option<String>,
}

/// The caller's ledger accounts and balances: a store owner's pending (not yet released)
/// and payable balances, a courier's payable balance; every account for admins.
#[utoipa::path(get, path = "/api/v1/ledger/accounts", tag = "ledger", params(AccountsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AccountsPage), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_accounts(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<AccountsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    let cursor = opaque_cursor(query.cursor)?;
    if user.is_admin() {
        let (items, next_cursor) = match state.ledger.balances(cursor, limit).await {
            Err(LedgerError::Store(StoreError::Misuse(_))) => return Err(bad_cursor()),
            other => other?,
        };
        return Ok(HttpResponse::Ok().json(AccountsPage { items, next_cursor }));
    }
    if cursor.is_some() {
        return Err(bad_cursor());
    }
    let mut items = Vec::new();
    for account in own_accounts(&state, &user).await? {
        items.push(state.ledger.balance(account).await?);
    }
    Ok(HttpResponse::Ok().json(AccountsPage {
        items,
        next_cursor: None,
    }))
}

/// One account's balance (the caller's own, or any for admins; 404 otherwise).
#[utoipa::path(get, path = "/api/v1/ledger/accounts/{account}", tag = "ledger",
    params(("account" = String, Path, pattern = r"^(provider_clearing|platform_commission|delivery_fees|courier_fees_held|unserved_payments|payouts_in_transit|discounts|(store_pending|store_payable|courier_payable):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
        example = "store_payable:0193b0c4-5a7e-7d2a-9b1c-2f3e4d5a6b7c")),
    security(("bearer" = [])),
    responses((status = 200, body = AccountBalance), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_account(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = parse_account(&path.into_inner())?;
    visible(&state, &user, account).await?;
    Ok(HttpResponse::Ok().json(state.ledger.balance(account).await?))
}

/// Paging of a statement.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Lines after this ledger position (the previous page's `next_after`; default: from
    /// the start).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
}

/// A page of an account's statement, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntriesPage {
    pub items: Vec<StatementLine>,
    /// Pass as `after` for the next page; none on the last.
    pub next_after: Option<u64>,
}

/// An account's statement: every entry booked on it, oldest first, each with its
/// transaction's key, kind and order or payout.
#[utoipa::path(get, path = "/api/v1/ledger/accounts/{account}/entries", tag = "ledger",
    params(("account" = String, Path, pattern = r"^(provider_clearing|platform_commission|delivery_fees|courier_fees_held|unserved_payments|payouts_in_transit|discounts|(store_pending|store_payable|courier_payable):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"),
        EntriesQuery),
    security(("bearer" = [])),
    responses((status = 200, body = EntriesPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn list_entries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<EntriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = parse_account(&path.into_inner())?;
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    visible(&state, &user, account).await?;
    let (items, more) = state
        .ledger
        .statement(account, query.after.unwrap_or(0), limit)
        .await?;
    let next_after = if more {
        items.last().map(|l| l.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(EntriesPage { items, next_after }))
}

/// The ledger checked: every balance summed per currency (zero when it balances), and the
/// platform's own accounts. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/summary", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = LedgerSummary), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn summary(
    state: web::Data<AppState>,
    admin: AuthUser,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    Ok(HttpResponse::Ok().json(state.ledger.summary().await?))
}

/// Paging of the transactions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransactionsQuery {
    /// Transactions after this ledger position (the previous page's `next_after`; default:
    /// from the first).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of transactions in ledger order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionsPage {
    pub items: Vec<LedgerTx>,
    /// Pass as `after` for the next page; none on the last.
    pub next_after: Option<u64>,
}

/// Every transaction of the ledger in the order it was booked, with its entries: for audits
/// and for checking from outside that each one balances. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/transactions", tag = "admin", params(TransactionsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = TransactionsPage), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_transactions(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<TransactionsQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let (items, more) = state
        .ledger
        .transactions(query.after.unwrap_or(0), limit)
        .await?;
    let next_after = if more {
        items.last().map(|t| t.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(TransactionsPage { items, next_after }))
}

fn checked(rates: Rates) -> Result<Rates, ApiError> {
    rates.check().map_err(|field| {
        ApiError::invalid_field(field, "must be between 0 and 10000 basis points")
    })?;
    Ok(rates)
}

/// The platform's default rates: for stores without their own, frozen on each order at
/// checkout. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/rates", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Rates), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn get_default_rates(
    state: web::Data<AppState>,
    admin: AuthUser,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    Ok(HttpResponse::Ok().json(state.ledger.rates().default_rates()))
}

/// Sets the platform's default rates (needs a recent step-up): the `commission_bps` and
/// `courier_fee_bps` of the platform settings (`PATCH /admin/settings` changes them too).
/// Orders placed from now on (within a second on every node) are shared by them; placed
/// orders keep theirs.
#[utoipa::path(put, path = "/api/v1/admin/ledger/rates", tag = "admin", request_body = Rates,
    security(("bearer" = [])),
    responses((status = 200, body = Rates), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn put_default_rates(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    body: web::Json<Rates>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let rates = checked(body.into_inner())?;
    let patch = SettingsPatch {
        commission_bps: Some(rates.commission_bps),
        courier_fee_bps: Some(rates.courier_fee_bps),
        ..SettingsPatch::default()
    };
    let (before, after) = state.settings.change(&patch, admin.id).await?;
    state
        .audit
        .record(
            audit::entry(&admin, from, "settings.change", "settings")
                .before(&before)
                .after(&after),
        )
        .await?;
    Ok(HttpResponse::Ok().json(rates))
}

/// A store's rates, as its orders are placed now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreRates {
    /// The rates its orders are placed at now.
    pub rates: Rates,
    /// Whether they are the store's own (else the platform's default).
    pub own: bool,
}

/// A store's rates (its own, or the default it follows). Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/rates/stores/{id}", tag = "admin",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = StoreRates), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_store_rates(
    state: web::Data<AppState>,
    admin: AuthUser,
    path: web::Path<VendorId>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let store = known_store(&state, path.into_inner()).await?;
    let own = state.ledger.rates().store_rates(store).await?;
    let rates = match own {
        Some(r) => r,
        None => state.ledger.rates().default_rates(),
    };
    Ok(HttpResponse::Ok().json(StoreRates {
        rates,
        own: own.is_some(),
    }))
}

async fn known_store(state: &AppState, store: VendorId) -> Result<VendorId, ApiError> {
    state
        .catalog
        .repo
        .vendor(store)
        .await?
        .map(|_| store)
        .ok_or_else(|| ApiError::not_found("no such store"))
}

/// Gives a store its own rates (needs a recent step-up).
#[utoipa::path(put, path = "/api/v1/admin/ledger/rates/stores/{id}", tag = "admin", request_body = Rates,
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = StoreRates), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_store_rates(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<VendorId>,
    body: web::Json<Rates>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let rates = checked(body.into_inner())?;
    let store = known_store(&state, path.into_inner()).await?;
    let before = state.ledger.rates().store_rates(store).await?;
    state.ledger.rates().set(store, Some(rates)).await?;
    state
        .audit
        .record(
            audit::entry(&admin, from, "rates.set", format!("store:{store}"))
                .before(before)
                .after(rates),
        )
        .await?;
    Ok(HttpResponse::Ok().json(StoreRates { rates, own: true }))
}

/// Takes a store's own rates away: it follows the default again (needs a recent step-up).
#[utoipa::path(delete, path = "/api/v1/admin/ledger/rates/stores/{id}", tag = "admin",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn delete_store_rates(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<VendorId>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let store = known_store(&state, path.into_inner()).await?;
    let before = state.ledger.rates().store_rates(store).await?;
    state.ledger.rates().set(store, None).await?;
    if before.is_some() {
        state
            .audit
            .record(
                audit::entry(&admin, from, "rates.remove", format!("store:{store}")).before(before),
            )
            .await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Paging of the deliveries held for review.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReviewsQuery {
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// Orders after this one (the last of the previous page).
    #[param(format = Uuid)]
    pub after: Option<uuid::Uuid>,
}

/// Deliveries held for review.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewsPage {
    pub items: Vec<PendingRelease>,
}

/// Deliveries whose money is held for an admin's review: handed over with the right code but
/// not inside the drop-off geofence. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/reviews", tag = "admin", params(ReviewsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ReviewsPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn list_reviews(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<ReviewsQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    let (items, _) = state
        .ledger
        .held_for_review(query.after.map(OrderId::from), limit)
        .await?;
    Ok(HttpResponse::Ok().json(ReviewsPage { items }))
}

/// Releases a delivery held for review: its store's and courier's shares become payable now
/// (needs a recent step-up). 404 when no delivery of that order is held.
#[utoipa::path(post, path = "/api/v1/admin/ledger/reviews/{order_id}/release", tag = "admin",
    params(("order_id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 202), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn release_reviewed(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<OrderId>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let order = path.into_inner();
    if state.ledger.release_reviewed(order).await? {
        state
            .audit
            .record(audit::entry(
                &admin,
                from,
                "payout.release",
                format!("order:{order}"),
            ))
            .await?;
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::not_found(
            "no delivery of that order is held for review",
        ))
    }
}

/// The period reconciled.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PeriodQuery {
    /// Start (inclusive), RFC 3339.
    pub from: DateTime<Utc>,
    /// End (exclusive), RFC 3339; after `from`, at most 366 days later.
    pub to: DateTime<Utc>,
}

/// Compares the ledger with the payment provider's records (payments captured and refunded,
/// payouts transferred) for payments and payouts created in a period, and lists every
/// difference. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/ledger/reconciliation", tag = "admin", params(PeriodQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Reconciliation), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn reconciliation(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<PeriodQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let PeriodQuery { from, to } = query.into_inner();
    if to <= from || to - from > chrono::Duration::days(366) {
        return Err(ApiError::invalid_field(
            "to",
            "must be after `from`, at most 366 days later",
        ));
    }
    Ok(HttpResponse::Ok().json(state.ledger.reconcile(from, to).await?))
}

/// Paging of payouts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PayoutsQuery {
    /// One payable account's payouts (admins: any; others: their own). Default: a store
    /// owner's or a courier's own; every payout for admins.
    #[param(
        pattern = r"^(store_payable|courier_payable):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub account: Option<String>,
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{20}\.[0-9a-f-]{36}$")]
    pub cursor: Option<String>,
}

/// A page of payouts, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayoutsPage {
    pub items: Vec<Payout>,
    pub next_cursor: Option<String>,
}

fn payout_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(c)
            if !(c.len() == 57
                && c.as_bytes()[20] == b'.'
                && c[..20].bytes().all(|b| b.is_ascii_digit())
                && uuid::Uuid::parse_str(&c[21..]).is_ok()) =>
        {
            Err(bad_cursor())
        }
        other => Ok(other),
    }
}

/// Payout history, newest first: a store owner's and a courier's own; any account's, or all,
/// for admins.
#[utoipa::path(get, path = "/api/v1/payouts", tag = "ledger", params(PayoutsQuery), security(("bearer" = [])),
    responses((status = 200, body = PayoutsPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn list_payouts(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<PayoutsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    let cursor = payout_cursor(query.cursor)?;
    let account = match query.account {
        Some(raw) => {
            let account = parse_account(&raw)?;
            if !account.is_payable() {
                return Err(ApiError::invalid_field(
                    "account",
                    "payouts are made from store_payable and courier_payable accounts",
                ));
            }
            visible(&state, &user, account).await?;
            Some(account)
        }
        None if user.is_admin() => None,
        None => {
            let own: Vec<_> = own_accounts(&state, &user)
                .await?
                .into_iter()
                .filter(|a| a.is_payable())
                .collect();
            match own.first() {
                Some(a) => Some(*a),
                None => {
                    return Ok(HttpResponse::Ok().json(PayoutsPage {
                        items: Vec::new(),
                        next_cursor: None,
                    }));
                }
            }
        }
    };
    let (items, next_cursor) = state.ledger.payouts(account, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(PayoutsPage { items, next_cursor }))
}

/// One payout (its store's owner, its courier, admins; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/payouts/{id}", tag = "ledger", params(("id" = String, Path, format = Uuid)),
    security(("bearer" = [])),
    responses((status = 200, body = Payout), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_payout(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<PayoutId>,
) -> Result<HttpResponse, ApiError> {
    let payout = state
        .ledger
        .payout(path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("no such payout"))?;
    visible(&state, &user, payout.account)
        .await
        .map_err(|_| ApiError::not_found("no such payout"))?;
    Ok(HttpResponse::Ok().json(payout))
}

/// Where a party's payouts go.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"destination": "acct_1Nv0FGQ9RKHgCVdK"}))]
pub struct DestinationBody {
    /// The party's connected account at the payment provider (Stripe `acct_…`; any
    /// reference for the simulated provider, whose `sim_refuse` refuses every transfer).
    #[schema(min_length = 3, max_length = 64, pattern = r"^[A-Za-z0-9_]{3,64}$")]
    pub destination: String,
    /// Admins only: the payable account this is for (default: the caller's own).
    #[serde(default)]
    #[schema(
        pattern = r"^(store_payable|courier_payable):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub account: Option<String>,
}

/// A payout destination as stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationView {
    pub account: LedgerAccount,
    pub destination: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The caller's payable account: a store owner's store, else a courier's own.
async fn own_payable(state: &AppState, user: &AuthUser) -> Result<LedgerAccount, ApiError> {
    own_accounts(state, user)
        .await?
        .into_iter()
        .find(|a| a.is_payable())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "only store owners and couriers receive payouts",
            )
        })
}

/// Where the caller's payouts go (a store owner's for their store, a courier's own).
#[utoipa::path(get, path = "/api/v1/payouts/destination", tag = "ledger", security(("bearer" = [])),
    responses((status = 200, body = DestinationView), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn get_destination(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let account = own_payable(&state, &user).await?;
    let found = state.ledger.destination(account).await?;
    Ok(HttpResponse::Ok().json(DestinationView {
        account,
        destination: found.as_ref().map(|d| d.destination.clone()),
        updated_at: found.map(|d| d.updated_at),
    }))
}

/// Sets where the caller's payouts go (needs a recent step-up: it redirects money). Admins
/// may set any payable account's with `account`.
#[utoipa::path(put, path = "/api/v1/payouts/destination", tag = "ledger", request_body = DestinationBody,
    security(("bearer" = [])),
    responses((status = 200, body = DestinationView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_destination(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    body: web::Json<DestinationBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let valid = (3..=64).contains(&body.destination.len())
        && body
            .destination
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(ApiError::invalid_field(
            "destination",
            "3 to 64 letters, digits or underscores",
        ));
    }
    let for_another = body.account.is_some();
    let account = match body.account {
        Some(raw) => {
            let account = parse_account(&raw)?;
            if !account.is_payable() {
                return Err(ApiError::invalid_field(
                    "account",
                    "payouts are made from store_payable and courier_payable accounts",
                ));
            }
            user.require_admin()?;
            account
        }
        None => own_payable(&state, &user).await?,
    };
    user.require_step_up(state.identity.clock.now())?;
    let before = if for_another {
        state.ledger.destination(account).await?
    } else {
        None
    };
    let saved = state
        .ledger
        .set_destination(account, body.destination)
        .await?;
    if for_another {
        state
            .audit
            .record(
                audit::entry(
                    &user,
                    from,
                    "payout.destination",
                    format!("account:{account}"),
                )
                .before(before.map(|d| serde_json::json!({"destination": d.destination})))
                .after(serde_json::json!({"destination": saved.destination})),
            )
            .await?;
    }
    Ok(HttpResponse::Ok().json(DestinationView {
        account,
        destination: Some(saved.destination),
        updated_at: Some(saved.updated_at),
    }))
}

/// Starts a payout run now (needs a recent step-up): every positive payable balance is paid
/// out to its party through the payment provider. Answers at once; the run is made within
/// moments (see its status).
#[utoipa::path(post, path = "/api/v1/admin/payouts/runs", tag = "admin", security(("bearer" = [])),
    responses((status = 202, body = PayoutRun), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn request_run(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let run = state.ledger.request_run(Some(admin.id)).await?;
    state
        .audit
        .record(audit::entry(&admin, from, "payout.run", format!("run:{}", run.id)).after(&run))
        .await?;
    Ok(HttpResponse::Accepted().json(run))
}

/// A payout run: `requested` until it is made, then `done` with its payouts' count and total.
#[utoipa::path(get, path = "/api/v1/admin/payouts/runs/{id}", tag = "admin",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = PayoutRun), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get_run(
    state: web::Data<AppState>,
    admin: AuthUser,
    path: web::Path<PayoutRunId>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let run = state
        .ledger
        .run(path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("no such payout run"))?;
    Ok(HttpResponse::Ok().json(run))
}
