//! Vendors, categories and products over HTTP; featured and popular caches.
