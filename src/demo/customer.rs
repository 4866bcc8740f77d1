//! The simulated customers: at a steady pace across the city one of them picks a store near
//! home (`GET /vendors?near=`), a product of it (`GET /products?vendor=`), puts it in the
//! cart, checks out to home with an `Idempotency-Key` and pays with the simulated provider.
//! The handoff codes of their orders go to the simulated couriers, as a customer would tell
//! them at the door. They also keep an eye on their open orders: one whose store never
//! accepts it (the store a person plays) is cancelled after a while, and when a person
//! carries one, its code is printed for them.

use std::sync::Arc;
use std::time::Duration;

use reqwest013::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{Api, CallError, Checkout, Order, ProductPage, Session, StorePage};
use super::city::{Pos, Shared, Stop, between};

/// Orders not accepted by their store within this are cancelled by their customer (only a
/// person's store leaves them waiting; the simulated ones accept within seconds).
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);
/// An order still open after this (a person's store accepted it and stopped there, say) no
/// longer counts against [`Customers::most_open`]: it would hold back the city for good.
const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often the customers look at their open orders.
const WATCH_EVERY: Duration = Duration::from_secs(5);
/// Stores considered near home, and how far.
const NEAR_STORES: usize = 3;
const NEAR_KM: f64 = 2.0;
/// Tries of a request the node may answer later (checkout, payment).
const TRIES: u32 = 6;

/// One simulated customer.
pub struct Customer {
    /// The `n` of `customer{n}@…`.
    pub number: usize,
    pub session: Session,
    pub home: Pos,
    /// A first order goes to the nearest simulated store (see [`Customers::choose_store`]).
    pub ordered: bool,
}

/// An order a simulated customer placed and that has not reached its end.
struct Open {
    order_id: String,
    customer: usize,
    placed: Instant,
    /// Its code was printed for the person carrying it.
    told: bool,
}

/// The simulated customers and their open orders.
pub struct Customers {
    api: Api,
    shared: Arc<Shared>,
    people: Vec<Customer>,
    open: Vec<Open>,
    every: Duration,
    /// No new order while this many are open: the couriers are behind.
    most_open: usize,
    placed: usize,
}

impl Customers {
    pub fn new(
        api: Api,
        shared: Arc<Shared>,
        people: Vec<Customer>,
        every: Duration,
        most_open: usize,
    ) -> Customers {
        Customers {
            api,
            shared,
            people,
            open: Vec::new(),
            every,
            most_open: most_open.max(1),
            placed: 0,
        }
    }

    /// Orders at the set pace and watches the open orders until `stop`.
    pub async fn run(mut self, mut stop: Stop) {
        if self.people.is_empty() {
            return;
        }
        let mut next_order = Instant::now();
        let mut next_watch = Instant::now() + WATCH_EVERY;
        loop {
            let wake = next_order.min(next_watch);
            tokio::select! {
                () = stop.stopped() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= next_order {
                // Steady on average, never in lockstep.
                next_order = now + self.every.mul_f64(between(0.75, 1.25));
                if self.open.len() >= self.most_open {
                    tracing::debug!(
                        open = self.open.len(),
                        "couriers are behind: no order this turn"
                    );
                } else {
                    self.place_next().await;
                }
            }
            if Instant::now() >= next_watch {
                self.watch().await;
                next_watch = Instant::now() + WATCH_EVERY;
            }
        }
    }

    /// The next customer orders: each in turn for the first round (customer1 first), then
    /// whoever it happens to be.
    async fn place_next(&mut self) {
        let index = if self.placed < self.people.len() {
            self.placed
        } else {
            rand::random_range(0..self.people.len())
        };
        self.placed += 1;
        let number = self.people[index].number;
        match self.place(index).await {
            Ok(orders) => {
                self.people[index].ordered = true;
                for order_id in orders {
                    Shared::bump(&self.shared.orders_placed);
                    self.open.push(Open {
                        order_id,
                        customer: index,
                        placed: Instant::now(),
                        told: false,
                    });
                }
                self.shared
                    .orders_open
                    .store(self.open.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(customer = number, error = %e, "order not placed; another customer tries next turn")
            }
        }
    }

    /// One order of customer `index`, paid; its order ids.
    async fn place(&mut self, index: usize) -> Result<Vec<String>, CallError> {
        let (store, product) = self.choose_store(index).await?;
        let Customer {
            number,
            session,
            home,
            ..
        } = &mut self.people[index];
        // What an earlier attempt may have left in the cart goes first.
        let _: Value = session
            .call(Method::DELETE, "/api/v1/cart", None, None)
            .await?;
        let quantity = if product.1 >= 2 && rand::random_bool(0.3) {
            2
        } else {
            1
        };
        let _: Value = session
            .post(
                "/api/v1/cart/items",
                &json!({"product_id": product.0, "quantity": quantity}),
            )
            .await?;
        // The door: home, give or take the house number.
        let door = home.random_within(0.0, 15.0);
        let body = json!({
            "delivery_address": {
                "text": format!("Demo Allee {}, Berlin", 10 + *number),
                "lat": door.lat,
                "lng": door.lng,
            },
            "payment_method": "simulated",
        });
        // One key for every try: a retry after a timeout finds the first checkout.
        let key = uuid::Uuid::new_v4().to_string();
        let checkout: Checkout = session
            .call_patiently(
                Method::POST,
                "/api/v1/checkout",
                Some(&body),
                Some(&key),
                TRIES,
            )
            .await?;
        let pay = format!("/api/v1/payments/{}/simulate", checkout.payment.id);
        let outcome = json!({"outcome": "succeed"});
        let _: Value = session
            .call_patiently(Method::POST, &pay, Some(&outcome), None, TRIES)
            .await?;
        let mut orders = Vec::with_capacity(checkout.orders.len());
        for order in checkout.orders {
            // The code is the customer's to read (and to tell the courier at the door).
            match session
                .get::<Order>(&format!("/api/v1/orders/{}", order.id))
                .await
            {
                Ok(Order {
                    handoff_code: Some(code),
                    ..
                }) => self.shared.tell_code(&order.id, &code),
                Ok(_) => {
                    tracing::warn!(customer = *number, order_id = %order.id, "order without a handoff code")
                }
                Err(e) => {
                    tracing::warn!(customer = *number, order_id = %order.id, error = %e, "handoff code not read")
                }
            }
            tracing::debug!(customer = *number, order_id = %order.id, store = %store, "order placed");
            orders.push(order.id);
        }
        Ok(orders)
    }

    /// A store near the customer's home that delivers there, and a product of it in stock
    /// (id, units available). A customer's first order goes to the nearest store a simulated
    /// vendor runs, so the first deliveries of a demo are short and sure; later ones to one
    /// of the few stores nearest home (the nearer, the likelier), the one a person plays
    /// included. Short rides keep the couriers up with the customers.
    async fn choose_store(&mut self, index: usize) -> Result<(String, (String, u32)), CallError> {
        let customer = &self.people[index];
        let home = customer.home;
        let page: StorePage = self
            .api
            .get(&format!(
                "/api/v1/vendors?near={:.6},{:.6}&radius_km={NEAR_KM}&limit={NEAR_STORES}",
                home.lat, home.lng
            ))
            .await?;
        let mut stores: Vec<_> = page
            .items
            .into_iter()
            .filter(|s| home.distance_m(s.location.into()) <= s.delivery_radius_km * 1_000.0 * 0.95)
            .collect();
        if customer.ordered {
            // Nearest first, shuffled a little: the nearest leads about three times in four.
            let mut keyed: Vec<_> = stores
                .into_iter()
                .enumerate()
                .map(|(rank, s)| (rank as f64 + between(0.0, 3.0), s))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            stores = keyed.into_iter().map(|(_, s)| s).collect();
        } else {
            stores.retain(|s| self.shared.is_simulated_store(&s.id));
        }
        // A store with nothing in stock is skipped for the next one.
        for store in stores {
            let products: ProductPage = self
                .api
                .get(&format!(
                    "/api/v1/products?vendor={}&in_stock=true&limit=20",
                    store.id
                ))
                .await?;
            let stocked: Vec<_> = products
                .items
                .into_iter()
                .filter(|p| p.available > 0)
                .collect();
            if stocked.is_empty() {
                continue;
            }
            let product = &stocked[rand::random_range(0..stocked.len())];
            tracing::debug!(customer = customer.number, store = %store.name, product = %product.title, "chose");
            return Ok((store.id, (product.id.clone(), product.available)));
        }
        Err(CallError::Refused {
            status: 404,
            code: "no_store".into(),
            detail: format!(
                "no store with stock delivers to customer{}",
                customer.number
            ),
        })
    }

    /// Looks at every open order: ended ones are forgotten; one a person carries gets its
    /// code printed; one its store left unaccepted too long is cancelled.
    async fn watch(&mut self) {
        let mut still_open = Vec::with_capacity(self.open.len());
        for mut open in std::mem::take(&mut self.open) {
            if open.placed.elapsed() > FORGET_AFTER {
                tracing::info!(order_id = %open.order_id, "an order open for half an hour is no longer watched");
                continue;
            }
            let customer = &mut self.people[open.customer];
            let path = format!("/api/v1/orders/{}", open.order_id);
            let order = match customer.session.get::<Order>(&path).await {
                Ok(order) => order,
                Err(e) if e.code() == Some("not_found") => {
                    self.shared.forget_code(&open.order_id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(customer = customer.number, order_id = %open.order_id, error = %e, "order not read");
                    still_open.push(open);
                    continue;
                }
            };
            if order.is_closed() {
                self.shared.forget_code(&open.order_id);
                continue;
            }
            if let Some(courier) = &order.courier_id
                && !open.told
                && !self.shared.is_simulated_courier(courier)
                && let Some(code) = &order.handoff_code
            {
                open.told = true;
                println!(
                    "[demo] a courier who is not simulated (courier0?) carries order {} of \
                     customer{}@{}: its handoff code is {code}",
                    order.id,
                    customer.number,
                    crate::seed::DEMO_DOMAIN
                );
            }
            if order.status == "paid" && open.placed.elapsed() > GIVE_UP_AFTER {
                let cancel = format!("/api/v1/orders/{}/cancel", order.id);
                match customer.session.post::<Value>(&cancel, &json!({})).await {
                    Ok(_) => {
                        println!(
                            "[demo] customer{} cancelled order {}: its store did not accept it \
                             within {} s",
                            customer.number,
                            order.id,
                            GIVE_UP_AFTER.as_secs()
                        );
                        self.shared.forget_code(&order.id);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(customer = customer.number, order_id = %order.id, error = %e, "order not cancelled")
                    }
                }
            }
            still_open.push(open);
        }
        self.open = still_open;
        self.shared
            .orders_open
            .store(self.open.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
