//! Fulfilment: the services that move an order from placed to delivered, above the actors
//! they drive.

pub mod dispatcher;
