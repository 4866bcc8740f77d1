//! hexmarket's integration tests: one binary, one module per area.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod actors;
mod auth;
mod bus;
mod http;
mod notify;
mod ratelimit;
mod store_contract;
mod verification;
