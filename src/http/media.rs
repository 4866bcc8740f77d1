//! Image uploads for products and serving stored media.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}

/// Routes outside `/api/v1` (`/media/{key}`).
pub fn configure_public(_cfg: &mut web::ServiceConfig) {}
