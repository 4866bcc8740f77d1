//! Reviews of products and vendors, reports, and admin moderation.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
