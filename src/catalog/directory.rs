//! The vendor directory: every store's location and status in memory, indexed by H3 cell, so
//! "near me" finds candidate stores by expanding rings of cells and ranks them by great-circle
//! distance without touching the store.
//!
//! It is loaded from the store at start and kept current by the node that changes a vendor
//! and, on every other node, by the `catalog.vendors` bus topic (each message names a vendor
//! to re-read). Vendors are few (thousands), so the whole directory is small.

use std::collections::HashMap;
use std::sync::Arc;

use h3o::{CellIndex, Resolution};
use parking_lot::RwLock;

use crate::domain::catalog::Vendor;
use crate::domain::geo::{GeoPoint, covering_cells};
use crate::domain::ids::VendorId;

use super::CatalogError;

/// A page of stores, with their distance when asked near a place.
#[derive(Debug)]
pub struct VendorPage {
    pub items: Vec<(Vendor, Option<f64>)>,
    pub next_cursor: Option<String>,
}

/// Resolution of the directory's cells (≈ 1.2 km edges): a 50 km radius is a few thousand
/// cells, a 1 km radius a handful.
pub const DIRECTORY_RESOLUTION: Resolution = Resolution::Seven;

/// Bus topic on which nodes announce vendor changes (the payload is the vendor id).
pub const VENDOR_TOPIC: &str = "catalog.vendors";

/// A store found near a place.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearby {
    pub vendor: Vendor,
    pub distance_m: f64,
}

#[derive(Default)]
struct State {
    by_id: HashMap<VendorId, Vendor>,
    by_cell: HashMap<CellIndex, Vec<VendorId>>,
}

impl State {
    fn unlink(&mut self, id: VendorId) {
        if let Some(old) = self.by_id.remove(&id) {
            let cell = old.location.cell_at(DIRECTORY_RESOLUTION);
            if let Some(ids) = self.by_cell.get_mut(&cell) {
                ids.retain(|v| *v != id);
                if ids.is_empty() {
                    self.by_cell.remove(&cell);
                }
            }
        }
    }
}

/// Every vendor of the platform, by id and by cell.
#[derive(Clone, Default)]
pub struct VendorDirectory {
    state: Arc<RwLock<State>>,
}

impl VendorDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a vendor.
    pub fn upsert(&self, vendor: Vendor) {
        let mut state = self.state.write();
        state.unlink(vendor.id);
        let cell = vendor.location.cell_at(DIRECTORY_RESOLUTION);
        state.by_cell.entry(cell).or_default().push(vendor.id);
        state.by_id.insert(vendor.id, vendor);
    }

    pub fn remove(&self, id: VendorId) {
        self.state.write().unlink(id);
    }

    pub fn get(&self, id: VendorId) -> Option<Vendor> {
        self.state.read().by_id.get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.state.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vendors within `radius_m` of `center` that pass `keep`, nearest first (ties by id).
    pub fn near(
        &self,
        center: GeoPoint,
        radius_m: f64,
        keep: impl Fn(&Vendor) -> bool,
    ) -> Vec<Nearby> {
        let mut found = Vec::new();
        self.each_within(center, radius_m, keep, |vendor, distance_m| {
            found.push(Nearby {
                vendor: vendor.clone(),
                distance_m,
            });
        });
        found.sort_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then(a.vendor.id.cmp(&b.vendor.id))
        });
        found
    }

    /// The ids of the vendors within `radius_m` of `center` that pass `keep`, in no particular
    /// order (what a search filters on, without copying the vendors or sorting them).
    pub fn near_ids(
        &self,
        center: GeoPoint,
        radius_m: f64,
        keep: impl Fn(&Vendor) -> bool,
    ) -> Vec<VendorId> {
        let mut found = Vec::new();
        self.each_within(center, radius_m, keep, |vendor, _| found.push(vendor.id));
        found
    }

    /// Calls `visit` with each vendor within `radius_m` of `center` that passes `keep`, and its
    /// distance in metres.
    fn each_within(
        &self,
        center: GeoPoint,
        radius_m: f64,
        keep: impl Fn(&Vendor) -> bool,
        mut visit: impl FnMut(&Vendor, f64),
    ) {
        let cells = covering_cells(center, radius_m, DIRECTORY_RESOLUTION);
        let state = self.state.read();
        let vendors = cells
            .iter()
            .filter_map(|cell| state.by_cell.get(cell))
            .flatten()
            .filter_map(|id| state.by_id.get(id));
        for vendor in vendors.filter(|v| keep(v)) {
            let distance_m = center.distance_m(vendor.location);
            if distance_m <= radius_m {
                visit(vendor, distance_m);
            }
        }
    }

    /// A page of active stores within `radius_m` of `center`, nearest first, with their
    /// distances, after `cursor` (the distance in millimetres and id of the last store of the
    /// previous page, which the answer's cursor names for the next one).
    pub fn active_near_page(
        &self,
        center: GeoPoint,
        radius_m: f64,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<VendorPage, CatalogError> {
        let after = cursor
            .map(|c| {
                let (mm, id) = c.split_once('_').ok_or(CatalogError::InvalidCursor)?;
                let mm: u64 = mm.parse().map_err(|_| CatalogError::InvalidCursor)?;
                let id: VendorId = id.parse().map_err(|_| CatalogError::InvalidCursor)?;
                Ok::<_, CatalogError>((mm, id))
            })
            .transpose()?;
        let key = |n: &Nearby| ((n.distance_m * 1000.0) as u64, n.vendor.id);
        let rest: Vec<Nearby> = self
            .near(center, radius_m, Vendor::is_active)
            .into_iter()
            .filter(|n| after.is_none_or(|after| key(n) > after))
            .collect();
        let more = rest.len() > limit;
        let page: Vec<Nearby> = rest.into_iter().take(limit).collect();
        let next = match page.last() {
            Some(last) if more => Some(format!("{}_{}", key(last).0, last.vendor.id)),
            _ => None,
        };
        Ok(VendorPage {
            items: page
                .into_iter()
                .map(|n| (n.vendor, Some(n.distance_m)))
                .collect(),
            next_cursor: next,
        })
    }

    /// A page of active stores by id, after the store `cursor` names.
    pub fn active_page(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<VendorPage, CatalogError> {
        let after: Option<VendorId> = cursor
            .map(|c| c.parse().map_err(|_| CatalogError::InvalidCursor))
            .transpose()?;
        let rest: Vec<Vendor> = self
            .all(Vendor::is_active)
            .into_iter()
            .filter(|v| after.is_none_or(|a| v.id > a))
            .collect();
        let more = rest.len() > limit;
        let page: Vec<Vendor> = rest.into_iter().take(limit).collect();
        let next = match page.last() {
            Some(last) if more => Some(last.id.to_string()),
            _ => None,
        };
        Ok(VendorPage {
            items: page.into_iter().map(|v| (v, None)).collect(),
            next_cursor: next,
        })
    }

    /// Every vendor passing `keep`, ordered by id.
    pub fn all(&self, keep: impl Fn(&Vendor) -> bool) -> Vec<Vendor> {
        let state = self.state.read();
        let mut all: Vec<Vendor> = state.by_id.values().filter(|v| keep(v)).cloned().collect();
        all.sort_by_key(|v| v.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::catalog::{OpeningHours, VendorStatus};
    use crate::domain::ids::UserId;

    fn vendor_at(lat: f64, lng: f64) -> Vendor {
        let location = GeoPoint::new(lat, lng).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
        Vendor {
            id: VendorId::new(),
            owner: UserId::new(),
            name: "v".into(),
            description: String::new(),
            pickup_address: String::new(),
            location,
            cell: location.cell().to_string(),
            opening_hours: OpeningHours::default(),
            delivery_radius_km: 5.0,
            status: VendorStatus::Active,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn near_ranks_by_distance_within_the_radius() {
        let directory = VendorDirectory::new();
        let close = vendor_at(52.521, 13.405);
        let middle = vendor_at(52.54, 13.405);
        let far = vendor_at(52.70, 13.405);
        for v in [&far, &close, &middle] {
            directory.upsert(v.clone());
        }
        let center = GeoPoint {
            lat: 52.52,
            lng: 13.405,
        };
        let found: Vec<VendorId> = directory
            .near(center, 5_000.0, |_| true)
            .into_iter()
            .map(|n| n.vendor.id)
            .collect();
        assert_eq!(found, vec![close.id, middle.id]);
        // Moving a vendor moves it in the index.
        let mut moved = far.clone();
        moved.location = GeoPoint {
            lat: 52.5201,
            lng: 13.405,
        };
        directory.upsert(moved);
        let found = directory.near(center, 5_000.0, |_| true);
        assert_eq!(found.first().map(|n| n.vendor.id), Some(far.id));
        assert_eq!(directory.len(), 3);
    }
}
