//! Products: the owning vendor's changes, public reads, search, featured and popular.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
