//! The checkout service: turns a customer's cart into one order per store and one payment.
//!
//! Everything a checkout creates has an id derived from the customer and the key (the
//! checkout id, and each order's id from the checkout and the store), so a retry after a crash
//! finds what the first attempt wrote: holds are placed again under the same reservation ids
//! (a no-op), orders and the payment are created if missing and returned if present. Which
//! requests count as the same checkout (the `Idempotency-Key`) is the caller's to decide.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::actors::cart::{CartActor, ChangeCart, GetCart};
use crate::actors::order::{CreateOrder, OrderActor};
use crate::actors::{ActorError, Registry};
use crate::catalog::Catalog;
use crate::catalog::inventory::ReserveFailure;
use crate::catalog::products::VendorSummary;
use crate::domain::cart::{Cart, CartCommand};
use crate::domain::catalog::Product;
use crate::domain::checkout::{CheckoutRecord, DeliveryAddress, checkout_id_for, order_id_for};
use crate::domain::geo::GeoPoint;
use crate::domain::ids::{CartId, CheckoutId, OrderId, ProductId, UserId, VendorId};
use crate::domain::money::Money;
use crate::domain::order::{self, Order, OrderLine, OrderRecord, OrderStatus, OrderTotals};
use crate::ledger::Ledger;
use crate::ledger::coupons::CouponError;
use crate::payments::{Payment, PaymentError, Payments, ProviderName};
use crate::settings::SettingsView;
use crate::store::catalog::id_key;
use crate::store::typed::Rows;
use crate::store::{SharedStore, StoreError, Table};

/// Why a checkout was not placed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The platform takes another payment method (the one named).
    #[error("this platform takes `{}` payments", .0.as_str())]
    PaymentMethodUnavailable(ProviderName),
    #[error("the cart is empty")]
    CartEmpty,
    /// Products of the cart that are no longer listed.
    #[error("some products in the cart are no longer listed")]
    ProductsUnavailable(Vec<ProductId>),
    #[error("{store} delivers within {radius_km} km; the address is {distance_km:.1} km away")]
    OutsideDeliveryArea {
        store: String,
        radius_km: f64,
        distance_km: f64,
    },
    #[error("{0}")]
    MixedCurrencies(&'static str),
    #[error("the total is too large")]
    TotalTooLarge,
    /// The stock of some order could not be held.
    #[error(transparent)]
    Reserve(ReserveFailure),
    /// Another attempt with the same key got as far as the orders but not yet the payment.
    #[error("the checkout is still being placed; retry shortly")]
    InProgress,
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error(transparent)]
    Coupon(#[from] CouponError),
}

/// A placed checkout: its orders and its payment.
#[derive(Debug)]
pub struct Placed {
    pub checkout_id: CheckoutId,
    pub orders: Vec<OrderRecord>,
    pub payment: Payment,
}

/// The checkout service; cheap to clone.
#[derive(Clone)]
pub struct Checkout {
    carts: Registry<CartActor>,
    orders: Registry<OrderActor>,
    catalog: Catalog,
    payments: Payments,
    /// The rates each order's money is shared by, frozen on it here.
    ledger: Ledger,
    checkouts: Rows<CheckoutRecord>,
    /// The platform's live settings: the delivery fee table, and how long a checkout holds
    /// stock for its unpaid orders (their payment timeout).
    settings: SettingsView,
}

/// What [`Checkout`] is built from.
pub struct CheckoutParts {
    pub carts: Registry<CartActor>,
    pub orders: Registry<OrderActor>,
    pub catalog: Catalog,
    pub payments: Payments,
    pub ledger: Ledger,
    pub store: SharedStore,
    pub settings: SettingsView,
}

impl Checkout {
    pub fn new(parts: CheckoutParts) -> Self {
        Checkout {
            carts: parts.carts,
            orders: parts.orders,
            catalog: parts.catalog,
            payments: parts.payments,
            ledger: parts.ledger,
            checkouts: Rows::new(parts.store, Table::Checkouts),
            settings: parts.settings,
        }
    }

    /// Places the orders and the payment of one checkout (safe to run again for the same key).
    pub async fn place(
        &self,
        customer: UserId,
        key: &str,
        address: DeliveryAddress,
        point: GeoPoint,
        method: ProviderName,
        coupon: Option<&str>,
    ) -> Result<Placed, CheckoutError> {
        let state = self;
        if method != state.payments.default_provider() {
            return Err(CheckoutError::PaymentMethodUnavailable(
                state.payments.default_provider(),
            ));
        }
        let checkout_id = checkout_id_for(customer, key);
        let cart_id = CartId::from(customer.as_uuid());
        let cart = state.carts.send(cart_id, GetCart).await?;
        // A retry of a checkout that got as far as its payment only needs the answer (its first
        // attempt may have emptied the cart). One that stopped earlier runs again from the cart:
        // every step below finds what the first attempt already did.
        if let Some(existing) = state.checkouts.get(&id_key(checkout_id)).await?
            && state
                .payments
                .find_by_checkout(checkout_id)
                .await?
                .is_some()
        {
            let placed = state
                .finish(customer, checkout_id, existing.value.orders, None, method)
                .await?;
            // The first attempt may have stopped between its payment and emptying the cart:
            // a cart still holding exactly what this checkout bought is emptied now. (A key
            // older than its idempotency record may name a checkout long past, whose cart
            // holds a new purchase: that one is left alone.)
            let recent = chrono::Duration::from_std(crate::idempotency::RECORD_TTL)
                .ok()
                .and_then(|ttl| state.catalog.clock.now().checked_sub_signed(ttl))
                .is_none_or(|since| existing.value.created_at > since);
            if recent && holds_exactly(&cart, &placed.orders) {
                state.empty_cart(cart_id).await;
            }
            return Ok(placed);
        }
        if cart.lines.is_empty() {
            return Err(CheckoutError::CartEmpty);
        }

        // The catalog as it is now: every product listed, every store delivering here.
        let listed: Vec<Option<(Product, VendorSummary)>> = join_all(
            cart.lines
                .iter()
                .map(|l| async move { state.catalog.listed_product(l.product_id).await.ok() }),
        )
        .await;
        let mut unavailable = Vec::new();
        let mut groups: BTreeMap<VendorId, (VendorSummary, Vec<(Product, u32)>)> = BTreeMap::new();
        for (line, found) in cart.lines.iter().zip(listed) {
            match found {
                Some((product, store)) => groups
                    .entry(store.id)
                    .or_insert_with(|| (store, Vec::new()))
                    .1
                    .push((product, line.quantity.get())),
                None => unavailable.push(line.product_id),
            }
        }
        if !unavailable.is_empty() {
            return Err(CheckoutError::ProductsUnavailable(unavailable));
        }
        let now = state.catalog.clock.now();
        // One reading of the settings for the whole checkout: its fees, its orders' deadline
        // and its stock holds agree.
        let settings = state.settings.get();
        let expires_at = now
            + chrono::Duration::from_std(settings.payment_timeout())
                .unwrap_or(chrono::Duration::minutes(15));
        let mut records = Vec::with_capacity(groups.len());
        for (vendor_id, (store, items)) in &groups {
            let Some((first, _)) = items.first() else {
                continue;
            };
            let distance = store.location.distance_m(point);
            if distance > store.delivery_radius_km * 1000.0 {
                return Err(CheckoutError::OutsideDeliveryArea {
                    store: store.name.clone(),
                    radius_km: store.delivery_radius_km,
                    distance_km: distance / 1000.0,
                });
            }
            let currency = first.price.currency;
            let mut subtotal = 0i64;
            let mut lines = Vec::with_capacity(items.len());
            for (product, quantity) in items {
                if product.price.currency != currency {
                    return Err(CheckoutError::MixedCurrencies(
                        "one store's products must share a currency",
                    ));
                }
                let line_total = product
                    .price
                    .times(*quantity)
                    .ok_or(CheckoutError::TotalTooLarge)?;
                subtotal = subtotal
                    .checked_add(line_total.amount_minor)
                    .ok_or(CheckoutError::TotalTooLarge)?;
                lines.push(OrderLine {
                    product_id: product.id,
                    title: product.title.clone(),
                    quantity: *quantity,
                    unit_price: product.price,
                });
            }
            let fee = settings.delivery_fees.fee(distance, currency);
            let order_id = order_id_for(checkout_id, *vendor_id);
            records.push(OrderRecord {
                order: Order {
                    id: order_id,
                    checkout_id,
                    customer_id: customer,
                    vendor_id: *vendor_id,
                    status: OrderStatus::PendingPayment,
                    lines,
                    created_at: now,
                    updated_at: now,
                },
                delivery_address: Some(order::DeliveryAddress {
                    address: address.text.clone(),
                    location: point,
                    notes: None,
                }),
                totals: Some(OrderTotals {
                    subtotal: Money::new(subtotal, currency),
                    delivery_fee: fee,
                    total: Money::new(subtotal + fee.amount_minor, currency),
                }),
                seq: 0,
                expires_at: Some(expires_at),
                courier_id: None,
                handoff_code: None,
                arrived_at_pickup_at: None,
                arriving_at: None,
                // Named below, once the payment's id is claimed.
                payment_id: None,
                paid_at: None,
                rejection_reason: None,
                cancelled_by: None,
                refunded: None,
                refunds: Vec::new(),
                payment_returned: None,
                rates: Some(state.ledger.rates().for_store(*vendor_id).await?),
                discount: None,
            });
        }
        let currency = records
            .first()
            .and_then(|r| r.totals.map(|t| t.total.currency))
            .ok_or(CheckoutError::CartEmpty)?;
        if records
            .iter()
            .any(|r| r.totals.is_some_and(|t| t.total.currency != currency))
        {
            return Err(CheckoutError::MixedCurrencies(
                "a checkout is paid in one currency",
            ));
        }

        // A coupon discounts one order's goods; its redemption is held once the stock is.
        let mut coupon_hold = None;
        if let Some(code) = coupon {
            let subtotals: Vec<(VendorId, Money)> = records
                .iter()
                .filter_map(|r| Some((r.order.vendor_id, r.totals?.subtotal)))
                .collect();
            let quote = state
                .ledger
                .quote(code, customer, &subtotals, now, false)
                .await?;
            if let Some(record) = records
                .iter_mut()
                .find(|r| r.order.vendor_id == quote.vendor_id)
            {
                if let Some(totals) = record.totals.as_mut() {
                    totals.total = Money::new(
                        totals.total.amount_minor - quote.discount.amount_minor,
                        totals.total.currency,
                    );
                }
                record.discount = Some(quote.discount());
                coupon_hold = Some((quote.code, record.order.id));
            }
        }

        // The payment's id is claimed before the orders, so each order names the payment that
        // pays for it (the payment itself is opened at the provider once the orders exist).
        // The claim and the stock holds do not depend on each other: they share commits.
        let (claimed, held) = futures_util::future::join(
            state.payments.claim(checkout_id),
            state.hold_stock(&records, settings.payment_timeout()),
        )
        .await;
        let held = held?;
        let payment_id = match claimed {
            Ok(id) => id.to_string(),
            Err(e) => {
                state.release_holds(&held).await;
                return Err(e.into());
            }
        };
        for record in &mut records {
            record.payment_id = Some(payment_id.clone());
        }

        if let Some((code, order)) = &coupon_hold
            && let Err(refused) = state.ledger.hold_coupon(code, *order, customer).await
        {
            state.release_holds(&held).await;
            return Err(refused.into());
        }

        let order_ids: Vec<OrderId> = records.iter().map(|r| r.order.id).collect();
        let record = CheckoutRecord {
            id: checkout_id,
            customer,
            orders: order_ids.clone(),
            created_at: now,
        };
        let total: i64 = records
            .iter()
            .filter_map(|r| r.totals.map(|t| t.total.amount_minor))
            .sum();
        // The checkout row and the orders are written together: a retry that finds no payment
        // runs again from the cart whichever of them a crash left out. Another attempt may
        // have written the checkout row first; either way it names the same orders.
        let (written, created) = futures_util::future::join(
            state.checkouts.insert(&id_key(checkout_id), &record),
            join_all(
                records
                    .into_iter()
                    .map(|record| state.orders.send(record.order.id, CreateOrder(record))),
            ),
        )
        .await;
        let _ = written?;
        for order in created {
            order??;
        }
        state
            .finish(
                customer,
                checkout_id,
                order_ids,
                Some((Money::new(total, currency), cart_id)),
                method,
            )
            .await
    }

    /// Holds the stock of every order, all or nothing: the reservation of an order is its id.
    /// Answers what it held (per order, its products).
    async fn hold_stock(
        &self,
        records: &[OrderRecord],
        ttl: std::time::Duration,
    ) -> Result<Vec<(OrderId, Vec<ProductId>)>, CheckoutError> {
        let mut held: Vec<(OrderId, Vec<ProductId>)> = Vec::new();
        for record in records {
            let items: Vec<(ProductId, u32)> = record
                .order
                .lines
                .iter()
                .map(|l| (l.product_id, l.quantity))
                .collect();
            let reservation = record.order.id.to_string();
            match self
                .catalog
                .inventory
                .reserve(&reservation, &items, ttl)
                .await
            {
                Ok(()) => held.push((record.order.id, items.iter().map(|i| i.0).collect())),
                Err(failure) => {
                    self.release_holds(&held).await;
                    return Err(CheckoutError::Reserve(failure));
                }
            }
        }
        Ok(held)
    }

    /// Gives back the stock a checkout that stops short held (a hold not given back expires
    /// by itself).
    async fn release_holds(&self, held: &[(OrderId, Vec<ProductId>)]) {
        for (order, products) in held {
            if let Err(e) = self
                .catalog
                .inventory
                .release(&order.to_string(), products)
                .await
            {
                tracing::warn!(error = %e, order_id = %order, "hold not released; it expires by itself");
            }
        }
    }

    async fn empty_cart(&self, cart: CartId) {
        if let Err(e) = self.carts.send(cart, ChangeCart(CartCommand::Clear)).await {
            tracing::warn!(error = %e, "cart not emptied after checkout");
        }
    }

    /// Creates (or finds) the payment, empties the cart, and answers with the checkout.
    async fn finish(
        &self,
        customer: UserId,
        checkout_id: CheckoutId,
        order_ids: Vec<OrderId>,
        fresh: Option<(Money, CartId)>,
        method: ProviderName,
    ) -> Result<Placed, CheckoutError> {
        let state = self;
        let payment = match fresh {
            Some((total, _)) => {
                state
                    .payments
                    .create(checkout_id, customer, total, method)
                    .await?
            }
            None => state
                .payments
                .find_by_checkout(checkout_id)
                .await?
                .ok_or(CheckoutError::InProgress)?,
        };
        if let Some((_, cart)) = fresh {
            state.empty_cart(cart).await;
        }
        let mut orders = Vec::with_capacity(order_ids.len());
        for id in order_ids {
            if let Some(order) = state
                .orders
                .send(id, crate::actors::order::GetOrder)
                .await??
            {
                orders.push(order);
            }
        }
        Ok(Placed {
            checkout_id,
            orders,
            payment,
        })
    }
}

/// Whether `cart` holds exactly the products and quantities `orders` bought.
fn holds_exactly(cart: &Cart, orders: &[OrderRecord]) -> bool {
    let mut in_cart: BTreeMap<ProductId, u32> = BTreeMap::new();
    for line in &cart.lines {
        let units = in_cart.entry(line.product_id).or_default();
        *units = units.saturating_add(line.quantity.get());
    }
    let mut bought: BTreeMap<ProductId, u32> = BTreeMap::new();
    for line in orders.iter().flat_map(|o| &o.order.lines) {
        let units = bought.entry(line.product_id).or_default();
        *units = units.saturating_add(line.quantity);
    }
    !in_cart.is_empty() && in_cart == bought
}
