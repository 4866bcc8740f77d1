//! Stock, adjustments and reservations.
