//! What dispatch works on, below the actors: the durable queue of orders waiting for a courier
//! ([`queue`]), the H3 index of available couriers ([`index`]) and the latest courier position
//! of each tracked order ([`board`]). The loop that moves orders through the queue, offering
//! them to couriers, is [`crate::fulfilment::dispatcher`], above the actors it drives.

pub mod board;
pub mod index;
pub mod queue;
