//! Vendors and their stores: create, edit, show, list near a place.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
