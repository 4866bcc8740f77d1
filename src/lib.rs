//! hexmarket: a real-time delivery marketplace backend.
//!
//! Requests enter through [`http`] and [`ws`], which share [`web`] (state, errors, the caller)
//! and call the services of [`catalog`], [`identity`], [`payments`], [`fulfilment`] and
//! [`notifications`]; those drive the entity actors of [`actors`] (carts, orders, couriers),
//! which persist through [`store`]. [`notifications`] consumes the order events from the
//! store's order journal, never from the order path. Live updates travel on [`bus`] under the topics of [`streams`]. [`domain`] holds
//! the validated value types and aggregates every layer shares. The README draws the layers.

pub mod actors;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod bus;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod error_code;
pub mod fulfilment;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod ledger;
pub mod mailbox_report;
pub mod media;
pub mod metrics;
pub mod moderation;
pub mod notifications;
pub mod notify;
pub mod payments;
pub mod ratelimit;
pub mod redis_link;
pub mod search;
pub mod secrets;
pub mod seed;
pub mod settings;
pub mod store;
pub mod store_contract;
pub mod streams;
pub mod support;
pub mod telemetry;
pub mod web;
pub mod ws;
