//! Entity actors and the runtime that keeps them: one actor per cart, order or courier,
//! activated on its first message with its state loaded from the store, passivated when idle,
//! re-activated from the store after a crash, and all persisted on graceful shutdown.

pub mod cart;
pub mod courier;
pub mod order;
pub mod registry;
pub mod trail;

pub use registry::{ActorError, ArbiterPool, Entity, Passivate, Registry, WeakRegistry};
