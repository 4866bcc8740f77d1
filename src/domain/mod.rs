//! Validated value types shared by every layer. A value of these types that exists is valid:
//! parsing happens once, at the edge.

pub mod account;
pub mod analytics;
pub mod audit;
pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod coupon;
pub mod courier;
pub mod dispatch;
pub mod geo;
pub mod identity;
pub mod ids;
pub mod inventory;
pub mod ledger;
pub mod moderation;
pub mod money;
pub mod notification;
pub mod order;
pub mod review;
pub mod second_factor;
pub mod settings;
pub mod support;
pub mod webhook;
