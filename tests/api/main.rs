//! hexmarket's integration tests: one binary, one module per area.

// Tests fail loudly: unwrapping is how they assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixtures;
mod helpers;

mod actors;
mod admin_cli;
mod admin_ops;
mod analytics;
mod architecture;
mod auth;
mod bus;
mod catalog;
mod checkout;
mod checkout_crashes;
mod flash_sale;
mod http;
mod inventory;
mod late_payments;
mod ledger;
mod live;
mod login_limits;
mod mailboxes;
mod media;
mod mfa;
mod moderation;
mod notifications;
mod notify;
mod openapi;
mod orders;
mod passkeys;
mod payments;
mod problems;
mod ratelimit;
mod reviews;
mod revocation;
mod search;
mod settlement;
mod store_contract;
mod support;
mod trail_crash;
mod verification;
mod webapp;
mod ws_client;
