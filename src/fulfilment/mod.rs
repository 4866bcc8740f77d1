//! Fulfilment: the services that move an order from placed to delivered, above the actors
//! they drive. HTTP handlers and WebSocket sessions call these; they never open the order
//! tables themselves.

pub mod checkout;
pub mod dispatcher;
pub mod orders;
pub mod settlement;

/// The fulfilment services, as handlers and sessions reach them.
#[derive(Clone)]
pub struct Fulfilment {
    pub checkout: checkout::Checkout,
    pub orders: orders::Orders,
}
