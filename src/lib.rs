//! hexmarket: a real-time delivery marketplace backend.
//!
//! Requests enter through [`http`] and [`ws`], which talk to entity actors in [`actors`]
//! (carts, orders, couriers), which persist through [`store`]. Live updates travel on [`bus`].
//! [`domain`] holds the validated value types every layer shares.

pub mod actors;
pub mod app;
pub mod bus;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod error_code;
pub mod fulfilment;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod mailbox_report;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod payments;
pub mod ratelimit;
pub mod redis_link;
pub mod search;
pub mod secrets;
pub mod seed;
pub mod store;
pub mod store_contract;
pub mod streams;
pub mod telemetry;
pub mod web;
pub mod ws;
