//! Stock of a product: read, set or adjust, and the adjustment history.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
