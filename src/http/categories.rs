//! The category tree: public listing with product counts, admin changes.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
