//! The catalog: vendors and their stores, the category tree, products.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::geo::{GeoPoint, MAX_RADIUS_KM};
use super::ids::{CategoryId, ProductId, UserId, VendorId};
use super::money::Money;

/// Bounds on what a vendor or product may carry.
pub const MAX_NAME: usize = 120;
pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 5_000;
pub const MAX_ADDRESS: usize = 300;
pub const MAX_ATTRIBUTES: usize = 30;
pub const MAX_ATTRIBUTE_KEY: usize = 40;
pub const MAX_ATTRIBUTE_VALUE: usize = 200;
pub const MAX_IMAGES: usize = 10;
pub const MAX_OPENING_SLOTS: usize = 28;
pub const MAX_CATEGORY_DEPTH: usize = 5;
pub const MAX_CATEGORIES: usize = 2_000;

/// Checks a required single-line text: trimmed, 1..=max characters, no control characters.
pub fn check_line(field: &str, raw: &str, max: usize) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    check_text(field, value, max)
}

/// Checks a free text: at most `max` characters, no control characters but newlines and tabs.
pub fn check_text(field: &str, raw: &str, max: usize) -> Result<String, String> {
    if raw.chars().count() > max {
        return Err(format!("{field} may be at most {max} characters"));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(raw.to_owned())
}

/// Whether a store takes orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VendorStatus {
    /// Open for business (subject to opening hours).
    Active,
    /// Temporarily not taking orders; products stay listed to the vendor only.
    Paused,
    /// Closed for good by the vendor.
    Closed,
    /// Suspended by an admin; only an admin can lift it.
    Suspended,
}

/// A day of the week.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    fn from_chrono(day: chrono::Weekday) -> Self {
        match day {
            chrono::Weekday::Mon => Weekday::Mon,
            chrono::Weekday::Tue => Weekday::Tue,
            chrono::Weekday::Wed => Weekday::Wed,
            chrono::Weekday::Thu => Weekday::Thu,
            chrono::Weekday::Fri => Weekday::Fri,
            chrono::Weekday::Sat => Weekday::Sat,
            chrono::Weekday::Sun => Weekday::Sun,
        }
    }
}

/// One opening window on one day, in the store's local time: `opens` < `closes`, both
/// `"HH:MM"`; `closes` may be `"24:00"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpeningSlot {
    pub day: Weekday,
    #[schema(example = "09:00")]
    pub opens: String,
    #[schema(example = "21:30")]
    pub closes: String,
}

/// When a store is open: weekly windows in local time, and the local offset from UTC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpeningHours {
    /// Local time minus UTC, in minutes (-720..=840).
    #[serde(default)]
    pub utc_offset_minutes: i16,
    /// Windows; no windows means open around the clock.
    #[serde(default)]
    pub slots: Vec<OpeningSlot>,
}

fn minutes_of(raw: &str) -> Option<u16> {
    let (h, m) = raw.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl OpeningHours {
    pub fn validate(&self) -> Result<(), String> {
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return Err("utc_offset_minutes must be from -720 to 840".to_owned());
        }
        if self.slots.len() > MAX_OPENING_SLOTS {
            return Err(format!("at most {MAX_OPENING_SLOTS} opening slots"));
        }
        for slot in &self.slots {
            match (minutes_of(&slot.opens), minutes_of(&slot.closes)) {
                (Some(open), Some(close)) if open < close && open < 24 * 60 => {}
                _ => {
                    return Err(format!(
                        "opening slot {}–{} must be two HH:MM times, opening before closing",
                        slot.opens, slot.closes
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the store is open at `now`.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        if self.slots.is_empty() {
            return true;
        }
        let local = now + chrono::Duration::minutes(i64::from(self.utc_offset_minutes));
        let day = Weekday::from_chrono(local.weekday());
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.slots.iter().any(|slot| {
            slot.day == day
                && matches!(
                    (minutes_of(&slot.opens), minutes_of(&slot.closes)),
                    (Some(open), Some(close)) if open <= minute && minute < close
                )
        })
    }
}

/// A delivery radius in kilometres: more than 0, at most [`MAX_RADIUS_KM`].
pub fn check_delivery_radius(km: f64) -> Result<f64, String> {
    if km.is_finite() && km > 0.0 && km <= MAX_RADIUS_KM {
        Ok(km)
    } else {
        Err(format!(
            "delivery_radius_km must be more than 0 and at most {MAX_RADIUS_KM}"
        ))
    }
}

/// A vendor's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vendor {
    #[schema(value_type = String, format = Uuid)]
    pub id: VendorId,
    /// The vendor user who runs the store.
    #[schema(value_type = String, format = Uuid)]
    pub owner: UserId,
    pub name: String,
    pub description: String,
    pub pickup_address: String,
    pub location: GeoPoint,
    /// H3 cell (resolution 9) of the pickup location, as a hex string.
    #[schema(example = "891f1d48177ffff")]
    pub cell: String,
    pub opening_hours: OpeningHours,
    pub delivery_radius_km: f64,
    pub status: VendorStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Vendor {
    /// Whether others can see the store's products and order from it.
    pub fn is_active(&self) -> bool {
        self.status == VendorStatus::Active
    }
}

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Category {
    #[schema(value_type = String, format = Uuid)]
    pub id: CategoryId,
    pub name: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent: Option<CategoryId>,
}

/// Why a change to the category tree was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    #[error("no such category")]
    NotFound,
    #[error("no such parent category")]
    ParentNotFound,
    #[error("a category cannot be moved under itself or one of its descendants")]
    Cycle,
    #[error("categories may be at most {MAX_CATEGORY_DEPTH} levels deep")]
    TooDeep,
    #[error("a sibling category already has this name")]
    DuplicateName,
    #[error("the category still has subcategories")]
    HasChildren,
    #[error("there may be at most {MAX_CATEGORIES} categories")]
    TooMany,
    #[error("{0}")]
    Invalid(String),
}

/// The whole category tree, stored as one row and changed by compare-and-set, so a move can
/// check for cycles against the tree it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryTree {
    pub categories: Vec<Category>,
}

impl CategoryTree {
    pub fn get(&self, id: CategoryId) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// `id` and its ancestors, root first.
    pub fn path(&self, id: CategoryId) -> Vec<CategoryId> {
        let mut path = Vec::new();
        let mut at = Some(id);
        while let Some(current) = at {
            if path.contains(&current) || path.len() > MAX_CATEGORIES {
                break;
            }
            path.push(current);
            at = self.get(current).and_then(|c| c.parent);
        }
        path.reverse();
        path
    }

    /// `id` and every category below it.
    pub fn subtree(&self, id: CategoryId) -> Vec<CategoryId> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let at = out[i];
            out.extend(
                self.categories
                    .iter()
                    .filter(|c| c.parent == Some(at))
                    .map(|c| c.id),
            );
            i += 1;
        }
        out
    }

    fn depth_below(&self, id: CategoryId) -> usize {
        self.categories
            .iter()
            .filter(|c| c.parent == Some(id))
            .map(|c| 1 + self.depth_below(c.id))
            .max()
            .unwrap_or(0)
    }

    fn check_sibling_name(
        &self,
        parent: Option<CategoryId>,
        name: &str,
        except: Option<CategoryId>,
    ) -> Result<(), CategoryError> {
        let clash = self.categories.iter().any(|c| {
            c.parent == parent && Some(c.id) != except && c.name.eq_ignore_ascii_case(name)
        });
        if clash {
            Err(CategoryError::DuplicateName)
        } else {
            Ok(())
        }
    }

    pub fn create(
        &mut self,
        id: CategoryId,
        name: &str,
        parent: Option<CategoryId>,
    ) -> Result<&Category, CategoryError> {
        let name = check_line("name", name, MAX_NAME).map_err(CategoryError::Invalid)?;
        if self.categories.len() >= MAX_CATEGORIES {
            return Err(CategoryError::TooMany);
        }
        if let Some(p) = parent {
            if self.get(p).is_none() {
                return Err(CategoryError::ParentNotFound);
            }
            if self.path(p).len() >= MAX_CATEGORY_DEPTH {
                return Err(CategoryError::TooDeep);
            }
        }
        self.check_sibling_name(parent, &name, None)?;
        self.categories.push(Category { id, name, parent });
        Ok(&self.categories[self.categories.len() - 1])
    }

    pub fn rename(&mut self, id: CategoryId, name: &str) -> Result<(), CategoryError> {
        let name = check_line("name", name, MAX_NAME).map_err(CategoryError::Invalid)?;
        let parent = self.get(id).ok_or(CategoryError::NotFound)?.parent;
        self.check_sibling_name(parent, &name, Some(id))?;
        if let Some(c) = self.categories.iter_mut().find(|c| c.id == id) {
            c.name = name;
        }
        Ok(())
    }

    /// Moves `id` under `parent` (`None`: to the top level).
    pub fn move_to(
        &mut self,
        id: CategoryId,
        parent: Option<CategoryId>,
    ) -> Result<(), CategoryError> {
        let current = self.get(id).ok_or(CategoryError::NotFound)?.clone();
        if let Some(p) = parent {
            if self.get(p).is_none() {
                return Err(CategoryError::ParentNotFound);
            }
            if self.path(p).contains(&id) {
                return Err(CategoryError::Cycle);
            }
            if self.path(p).len() + 1 + self.depth_below(id) > MAX_CATEGORY_DEPTH {
                return Err(CategoryError::TooDeep);
            }
        }
        self.check_sibling_name(parent, &current.name, Some(id))?;
        if let Some(c) = self.categories.iter_mut().find(|c| c.id == id) {
            c.parent = parent;
        }
        Ok(())
    }

    /// Removes a category without subcategories (the caller checks it holds no products).
    pub fn remove(&mut self, id: CategoryId) -> Result<(), CategoryError> {
        self.get(id).ok_or(CategoryError::NotFound)?;
        if self.categories.iter().any(|c| c.parent == Some(id)) {
            return Err(CategoryError::HasChildren);
        }
        self.categories.retain(|c| c.id != id);
        Ok(())
    }
}

/// Who may see a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Being prepared; only its vendor sees it.
    Draft,
    /// Listed for everyone (while the vendor is active).
    Published,
    /// Taken off the shelf; only its vendor (and admins) see it.
    Hidden,
}

/// A product image: the re-encoded original and its thumbnail, by storage key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageRef {
    /// Storage key of the re-encoded image (served under `/media/{key}`).
    pub key: String,
    /// Storage key of the thumbnail.
    pub thumbnail_key: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
}

/// Bounded string attributes (`"size": "large"`).
pub type Attributes = BTreeMap<String, String>;

/// Checks an attribute map: at most [`MAX_ATTRIBUTES`] entries, keys of lowercase letters,
/// digits, `_` and `-`, bounded values.
pub fn check_attributes(attributes: &Attributes) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    for (key, value) in attributes {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_ATTRIBUTE_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !key_ok {
            return Err(format!(
                "attribute name {key:?} must be 1–{MAX_ATTRIBUTE_KEY} characters of a-z, 0-9, _ and -"
            ));
        }
        check_line(&format!("attributes.{key}"), value, MAX_ATTRIBUTE_VALUE)?;
    }
    Ok(())
}

/// A product in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    #[schema(value_type = String, format = Uuid)]
    pub id: ProductId,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub title: String,
    pub description: String,
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    pub price: Money,
    pub attributes: Attributes,
    pub visibility: Visibility,
    pub images: Vec<ImageRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Taken down by a moderator: listed to nobody but its store and admins whatever
    /// `visibility` says, until an admin restores it.
    #[serde(default)]
    pub hidden: bool,
}

impl Product {
    /// Whether everyone may see and buy it, given whether its store is active.
    pub fn is_listed(&self, vendor_active: bool) -> bool {
        self.visibility == Visibility::Published && !self.hidden && vendor_active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_moves_refuse_cycles_and_depth() {
        let mut tree = CategoryTree::default();
        let (a, b, c) = (CategoryId::new(), CategoryId::new(), CategoryId::new());
        assert!(tree.create(a, "Food", None).is_ok());
        assert!(tree.create(b, "Pizza", Some(a)).is_ok());
        assert!(tree.create(c, "Vegan", Some(b)).is_ok());
        assert_eq!(tree.move_to(a, Some(c)), Err(CategoryError::Cycle));
        assert_eq!(tree.move_to(a, Some(a)), Err(CategoryError::Cycle));
        assert_eq!(tree.path(c), vec![a, b, c]);
        assert_eq!(tree.subtree(a).len(), 3);
        assert_eq!(tree.remove(b), Err(CategoryError::HasChildren));
        assert_eq!(
            tree.create(CategoryId::new(), "pizza", Some(a)).map(|_| ()),
            Err(CategoryError::DuplicateName)
        );
        let mut parent = c;
        for i in 0..2 {
            let next = CategoryId::new();
            assert!(
                tree.create(next, &format!("level {i}"), Some(parent))
                    .is_ok()
            );
            parent = next;
        }
        assert_eq!(
            tree.create(CategoryId::new(), "too deep", Some(parent))
                .map(|_| ()),
            Err(CategoryError::TooDeep)
        );
        assert!(tree.move_to(c, None).is_ok());
    }

    #[test]
    fn opening_hours_validate_and_answer() {
        let hours = OpeningHours {
            utc_offset_minutes: 60,
            slots: vec![OpeningSlot {
                day: Weekday::Mon,
                opens: "09:00".into(),
                closes: "24:00".into(),
            }],
        };
        assert!(hours.validate().is_ok());
        // Monday 2026-11-23 08:30 UTC is 09:30 local.
        let at = DateTime::parse_from_rfc3339("2026-11-23T08:30:00Z").map(|t| t.to_utc());
        assert!(at.is_ok_and(|t| hours.is_open_at(t)));
        let bad = OpeningHours {
            utc_offset_minutes: 0,
            slots: vec![OpeningSlot {
                day: Weekday::Mon,
                opens: "10:00".into(),
                closes: "09:00".into(),
            }],
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn attributes_are_bounded() {
        let mut attrs = Attributes::new();
        attrs.insert("size".into(), "large".into());
        assert!(check_attributes(&attrs).is_ok());
        attrs.insert("Bad Key".into(), "x".into());
        assert!(check_attributes(&attrs).is_err());
    }
}
