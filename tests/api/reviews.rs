//! Reviews, eligibility, ratings and moderation.
