//! The index of online couriers by H3 cell.
//!
//! Every courier actor writes its position here on each GPS ping (thousands a second across
//! actor threads) and the dispatcher reads it to find who is near an order, so it lives in
//! memory behind one `RwLock`: writes are a couple of hash-map operations, and a ping that stays
//! in its cell (most of them, at resolution 9's ≈ 175 m edges) leaves the cell map alone.
//!
//! The index also records offer holds: while the dispatcher waits for a courier to answer one
//! offer, [`CourierIndex::nearest`] does not return that courier for another order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use h3o::{CellIndex, Resolution};
use parking_lot::RwLock;

use crate::domain::geo::{GeoPoint, MAX_RADIUS_KM};
use crate::domain::ids::UserId;

/// What one active order costs a courier in the ranking, in metres of extra distance: a free
/// courier 1.5 km away beats one 1 km away who is already carrying an order, since the second
/// order waits for the first drop-off.
pub const LOAD_PENALTY_M: f64 = 1_000.0;

/// Where an online courier is and how much they carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CourierEntry {
    pub courier: UserId,
    pub point: GeoPoint,
    /// `point`'s cell at resolution 9, kept so a move can find the cell it left.
    pub cell: CellIndex,
    /// Orders the courier carries now.
    pub load: u8,
    /// Orders the courier is willing to carry at once.
    pub max_load: u8,
}

impl CourierEntry {
    /// Whether the courier can take one more order.
    pub fn available(&self) -> bool {
        self.load < self.max_load
    }
}

/// A courier [`CourierIndex::nearest`] found for an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub courier: UserId,
    /// Great-circle distance from the order's pickup point.
    pub distance_m: f64,
    pub load: u8,
}

/// Couriers in one cell, for the operations map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellCount {
    pub cell: CellIndex,
    /// Couriers who can take another order.
    pub available: u32,
    /// Couriers at their maximum load.
    pub busy: u32,
}

/// A shared handle to the index; clones see the same couriers.
#[derive(Debug, Clone, Default)]
pub struct CourierIndex {
    state: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    couriers: HashMap<UserId, Slot>,
    /// Resolution-9 cell → the couriers in it. Holds exactly the cells of `couriers`' entries:
    /// no empty lists, no stale ids.
    cells: HashMap<CellIndex, Vec<UserId>>,
}

#[derive(Debug)]
struct Slot {
    entry: CourierEntry,
    /// The courier has an offer pending until then.
    held_until: Option<Instant>,
}

impl Slot {
    fn held(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|until| until > now)
    }
}

impl CourierIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a courier's position and load, adding the courier if they were not online.
    pub fn upsert(&self, courier: UserId, point: GeoPoint, load: u8, max_load: u8) {
        // The cell is computed before taking the lock, to keep the write section short.
        let cell = point.cell();
        let entry = CourierEntry {
            courier,
            point,
            cell,
            load,
            max_load,
        };
        let mut guard = self.state.write();
        let state = &mut *guard;
        match state.couriers.entry(courier) {
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                let left = slot.entry.cell;
                slot.entry = entry;
                if left != cell {
                    detach(&mut state.cells, left, courier);
                    state.cells.entry(cell).or_default().push(courier);
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot {
                    entry,
                    held_until: None,
                });
                state.cells.entry(cell).or_default().push(courier);
            }
        }
    }

    /// Updates a courier's load (an order picked up or delivered); nothing if they are offline.
    pub fn set_load(&self, courier: UserId, load: u8, max_load: u8) {
        if let Some(slot) = self.state.write().couriers.get_mut(&courier) {
            slot.entry.load = load;
            slot.entry.max_load = max_load;
        }
    }

    /// Takes a courier offline, with any hold on them.
    pub fn remove(&self, courier: UserId) {
        let mut guard = self.state.write();
        let state = &mut *guard;
        if let Some(slot) = state.couriers.remove(&courier) {
            detach(&mut state.cells, slot.entry.cell, courier);
        }
    }

    pub fn get(&self, courier: UserId) -> Option<CourierEntry> {
        self.state
            .read()
            .couriers
            .get(&courier)
            .map(|slot| slot.entry)
    }

    /// Couriers online.
    pub fn len(&self) -> usize {
        self.state.read().couriers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.read().couriers.is_empty()
    }

    /// Reserves a courier for one offer until `until`, so no other order is offered to them
    /// meanwhile. False if they already hold an unexpired offer, or are not online (an offer
    /// to an offline courier would only time out). An expired hold needs no release.
    pub fn hold(&self, courier: UserId, until: Instant) -> bool {
        let now = Instant::now();
        let mut state = self.state.write();
        match state.couriers.get_mut(&courier) {
            Some(slot) if !slot.held(now) => {
                slot.held_until = Some(until);
                true
            }
            _ => false,
        }
    }

    /// Ends a courier's hold (they answered the offer, or it was withdrawn).
    pub fn release(&self, courier: UserId) {
        if let Some(slot) = self.state.write().couriers.get_mut(&courier) {
            slot.held_until = None;
        }
    }

    /// Up to `limit` couriers within `radius_m` of `from` who can take an order now: available,
    /// not held, and not `exclude`d (say, couriers who already declined this order). Best
    /// first by distance plus [`LOAD_PENALTY_M`] per carried order, ties by courier id.
    ///
    /// The radius is capped at [`MAX_RADIUS_KM`]. `exclude` runs under the index's read lock,
    /// so it must not call back into the index.
    ///
    /// Walks H3 rings outwards from `from`'s cell and stops as soon as no courier further out
    /// could make the list: the answer equals a scan of every courier, at the cost of the
    /// cells near `from`.
    pub fn nearest(
        &self,
        from: GeoPoint,
        radius_m: f64,
        limit: usize,
        exclude: &dyn Fn(UserId) -> bool,
    ) -> Vec<Candidate> {
        if limit == 0 || radius_m.is_nan() || radius_m < 0.0 {
            return Vec::new();
        }
        let radius_m = radius_m.min(MAX_RADIUS_KM * 1_000.0);
        let origin = from.cell();
        let edge_m = local_edge_m(origin);
        let mut last_ring = 0;
        while ring_min_distance_m(last_ring + 1, edge_m) <= radius_m {
            last_ring += 1;
        }
        let mut rings = Rings {
            origin,
            last: last_ring,
            safe: None,
        };

        let now = Instant::now();
        let state = self.state.read();
        let mut kept: Vec<(f64, Candidate)> = Vec::new();
        let mut seen = 0;
        for k in 0..=last_ring {
            let full = kept.len() >= limit;
            // `kept` is sorted and cut to `limit` whenever full, so its last score is the worst.
            let worst = kept.last().map_or(f64::INFINITY, |(score, _)| *score);
            if (full && ring_min_distance_m(k, edge_m) > worst) || seen == state.couriers.len() {
                break;
            }
            for cell in rings.ring(k) {
                let Some(ids) = state.cells.get(&cell) else {
                    continue;
                };
                seen += ids.len();
                for id in ids {
                    let Some(slot) = state.couriers.get(id) else {
                        continue;
                    };
                    let entry = &slot.entry;
                    if !entry.available() || slot.held(now) {
                        continue;
                    }
                    let distance_m = from.distance_m(entry.point);
                    if distance_m > radius_m || exclude(entry.courier) {
                        continue;
                    }
                    let score = distance_m + f64::from(entry.load) * LOAD_PENALTY_M;
                    kept.push((
                        score,
                        Candidate {
                            courier: entry.courier,
                            distance_m,
                            load: entry.load,
                        },
                    ));
                }
            }
            if kept.len() >= limit {
                rank(&mut kept, limit);
            }
        }
        drop(state);
        rank(&mut kept, limit);
        kept.into_iter().map(|(_, candidate)| candidate).collect()
    }

    /// Available and busy couriers per cell at `res` (resolution 7 for the operations map),
    /// sorted by cell. Held couriers count as available: the hold is seconds long.
    pub fn per_cell(&self, res: Resolution) -> Vec<CellCount> {
        let mut counts: HashMap<CellIndex, CellCount> = HashMap::new();
        {
            let state = self.state.read();
            for (cell, ids) in &state.cells {
                // Parents of a resolution-9 cell exist for resolutions up to 9; finer views
                // need each courier's own point.
                let parent = cell.parent(res);
                for id in ids {
                    let Some(slot) = state.couriers.get(id) else {
                        continue;
                    };
                    let at = parent.unwrap_or_else(|| slot.entry.point.cell_at(res));
                    let count = counts.entry(at).or_insert(CellCount {
                        cell: at,
                        available: 0,
                        busy: 0,
                    });
                    if slot.entry.available() {
                        count.available += 1;
                    } else {
                        count.busy += 1;
                    }
                }
            }
        }
        let mut counts: Vec<CellCount> = counts.into_values().collect();
        counts.sort_unstable_by_key(|count| count.cell);
        counts
    }
}

/// Removes `courier` from `cell`'s list, and the list once empty.
fn detach(cells: &mut HashMap<CellIndex, Vec<UserId>>, cell: CellIndex, courier: UserId) {
    if let Entry::Occupied(mut list) = cells.entry(cell) {
        let ids = list.get_mut();
        if let Some(at) = ids.iter().position(|id| *id == courier) {
            ids.swap_remove(at);
        }
        if ids.is_empty() {
            list.remove();
        }
    }
}

/// Sorts best first and keeps the best `limit`.
fn rank(kept: &mut Vec<(f64, Candidate)>, limit: usize) {
    kept.sort_unstable_by(|(a, x), (b, y)| a.total_cmp(b).then(x.courier.cmp(&y.courier)));
    kept.truncate(limit);
}

/// The edge length of hexagons around `origin`, from its area. Cell sizes vary by about two
/// over the globe, so the average edge of the resolution would be wrong by up to ±40 %; they
/// vary little across the few kilometres one query spans.
fn local_edge_m(origin: CellIndex) -> f64 {
    // A regular hexagon of edge e has area 3√3/2·e².
    (2.0 * origin.area_m2() / (3.0 * 3.0_f64.sqrt())).sqrt()
}

/// A lower bound on the distance from any point of the origin cell to any point of a cell `k`
/// rings out.
///
/// On a regular grid the centres of ring k lie on a hexagon of apothem 1.5·k·edge around the
/// origin's centre, and every point of a cell is within one edge of its centre, which gives
/// (1.5·k − 2)·edge. H3 hexagons are not regular (they shear and shrink away from icosahedron
/// face centres, and the pentagons bend the rings); sampled over the globe the true distance
/// stays above 0.9 of that figure. The bound gives up one more ring and a fifth of the
/// distance: too low only costs a ring of extra work, too high would miss couriers.
fn ring_min_distance_m(k: u32, edge_m: f64) -> f64 {
    ((1.5 * f64::from(k) - 3.5) * edge_m * 0.8).max(0.0)
}

/// The rings around `origin` up to `last`, one at a time. Ring by ring is cheap except near
/// one of the twelve pentagons, where the fast algorithm fails; then the whole disk is built
/// once with the safe one and handed out by distance.
struct Rings {
    origin: CellIndex,
    last: u32,
    safe: Option<Vec<Vec<CellIndex>>>,
}

impl Rings {
    fn ring(&mut self, k: u32) -> Vec<CellIndex> {
        if self.safe.is_none() {
            if let Some(ring) = self.origin.grid_ring_fast(k).collect::<Option<Vec<_>>>() {
                return ring;
            }
            let mut by_distance = vec![Vec::new(); self.last as usize + 1];
            for (cell, distance) in self.origin.grid_disk_distances_safe(self.last) {
                if let Some(ring) = by_distance.get_mut(distance as usize) {
                    ring.push(cell);
                }
            }
            self.safe = Some(by_distance);
        }
        // Each ring is asked for once, so it can be moved out.
        self.safe
            .as_mut()
            .and_then(|rings| rings.get_mut(k as usize))
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use h3o::LatLng;
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    fn point(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    /// A point `north_m` metres north of Alexanderplatz.
    fn north(north_m: f64) -> GeoPoint {
        point(52.52 + north_m / 111_195.0, 13.405)
    }

    fn none(_: UserId) -> bool {
        false
    }

    fn ids(candidates: &[Candidate]) -> Vec<UserId> {
        candidates.iter().map(|c| c.courier).collect()
    }

    /// Every courier's cell list holds exactly the couriers whose entries name that cell.
    fn assert_consistent(index: &CourierIndex) {
        let state = index.state.read();
        let listed: usize = state.cells.values().map(Vec::len).sum();
        assert_eq!(listed, state.couriers.len());
        for (cell, ids) in &state.cells {
            assert!(!ids.is_empty());
            for id in ids {
                assert_eq!(state.couriers[id].entry.cell, *cell);
            }
        }
    }

    /// What `nearest` must return, by looking at every courier.
    fn brute_force(
        index: &CourierIndex,
        from: GeoPoint,
        radius_m: f64,
        limit: usize,
        exclude: &dyn Fn(UserId) -> bool,
    ) -> Vec<Candidate> {
        let now = Instant::now();
        let state = index.state.read();
        let mut all: Vec<(f64, Candidate)> = state
            .couriers
            .values()
            .filter(|slot| slot.entry.available() && !slot.held(now))
            .filter(|slot| !exclude(slot.entry.courier))
            .map(|slot| {
                let distance_m = from.distance_m(slot.entry.point);
                let candidate = Candidate {
                    courier: slot.entry.courier,
                    distance_m,
                    load: slot.entry.load,
                };
                (
                    distance_m + f64::from(slot.entry.load) * LOAD_PENALTY_M,
                    candidate,
                )
            })
            .filter(|(_, c)| c.distance_m <= radius_m)
            .collect();
        rank(&mut all, limit);
        all.into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn nearest_returns_the_closer_courier_first() {
        let index = CourierIndex::new();
        let (near, far) = (UserId::new(), UserId::new());
        index.upsert(far, north(800.0), 0, 2);
        index.upsert(near, north(300.0), 0, 2);
        let found = index.nearest(north(0.0), 5_000.0, 10, &none);
        assert_eq!(ids(&found), [near, far]);
        assert!((found[0].distance_m - 300.0).abs() < 1.0);
    }

    #[test]
    fn nearest_respects_the_radius_and_the_limit() {
        let index = CourierIndex::new();
        let (a, b, c) = (UserId::new(), UserId::new(), UserId::new());
        index.upsert(a, north(100.0), 0, 2);
        index.upsert(b, north(900.0), 0, 2);
        index.upsert(c, north(3_000.0), 0, 2);
        assert_eq!(ids(&index.nearest(north(0.0), 1_000.0, 10, &none)), [a, b]);
        assert_eq!(ids(&index.nearest(north(0.0), 1_000.0, 1, &none)), [a]);
        assert!(index.nearest(north(0.0), 50.0, 10, &none).is_empty());
        assert!(index.nearest(north(0.0), 1_000.0, 0, &none).is_empty());
        assert!(index.nearest(north(0.0), f64::NAN, 10, &none).is_empty());
    }

    #[test]
    fn nearest_skips_full_held_and_excluded_couriers() {
        let index = CourierIndex::new();
        let (full, held, excluded, free) =
            (UserId::new(), UserId::new(), UserId::new(), UserId::new());
        index.upsert(full, north(10.0), 2, 2);
        index.upsert(held, north(20.0), 0, 2);
        index.upsert(excluded, north(30.0), 0, 2);
        index.upsert(free, north(40.0), 1, 2);
        assert!(index.hold(held, Instant::now() + Duration::from_secs(30)));
        let found = index.nearest(north(0.0), 1_000.0, 10, &|id| id == excluded);
        assert_eq!(ids(&found), [free]);
        assert_eq!(found[0].load, 1);
    }

    #[test]
    fn holds_are_exclusive_until_released_or_expired() {
        let index = CourierIndex::new();
        let courier = UserId::new();
        assert!(!index.hold(courier, Instant::now() + Duration::from_secs(30)));
        index.upsert(courier, north(0.0), 0, 1);
        assert!(index.hold(courier, Instant::now() + Duration::from_secs(30)));
        assert!(!index.hold(courier, Instant::now() + Duration::from_secs(30)));
        index.release(courier);
        assert_eq!(index.nearest(north(0.0), 100.0, 1, &none).len(), 1);
        assert!(index.hold(courier, Instant::now()));
        // That hold expired as it was made.
        assert!(index.hold(courier, Instant::now() + Duration::from_secs(30)));
    }

    #[test]
    fn load_penalty_puts_a_free_courier_ahead_of_a_closer_busy_one() {
        let index = CourierIndex::new();
        let (busy, free) = (UserId::new(), UserId::new());
        index.upsert(busy, north(200.0), 1, 3);
        index.upsert(free, north(900.0), 0, 3);
        assert_eq!(
            ids(&index.nearest(north(0.0), 2_000.0, 2, &none)),
            [free, busy]
        );
        index.set_load(busy, 0, 3);
        assert_eq!(
            ids(&index.nearest(north(0.0), 2_000.0, 2, &none)),
            [busy, free]
        );
        // Absent couriers are ignored.
        index.set_load(UserId::new(), 0, 3);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn upsert_moves_a_courier_between_cells_without_leaving_stale_ids() {
        let index = CourierIndex::new();
        let courier = UserId::new();
        index.upsert(courier, north(0.0), 0, 2);
        let first = index.get(courier).unwrap().cell;
        index.upsert(courier, north(5.0), 1, 2);
        assert_eq!(index.get(courier).unwrap().cell, first);
        assert_eq!(index.get(courier).unwrap().load, 1);
        index.upsert(courier, north(2_000.0), 1, 2);
        let moved = index.get(courier).unwrap();
        assert_ne!(moved.cell, first);
        assert_eq!(moved.cell, north(2_000.0).cell());
        assert_consistent(&index);
        assert!(!index.state.read().cells.contains_key(&first));
        assert!(index.nearest(north(0.0), 500.0, 5, &none).is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn remove_cleans_up_the_courier_and_the_cell() {
        let index = CourierIndex::new();
        let (a, b) = (UserId::new(), UserId::new());
        index.upsert(a, north(0.0), 0, 2);
        index.upsert(b, north(1.0), 0, 2);
        index.remove(a);
        assert_consistent(&index);
        assert_eq!(index.get(a), None);
        assert_eq!(index.len(), 1);
        index.remove(b);
        index.remove(b);
        assert!(index.is_empty());
        assert!(index.state.read().cells.is_empty());
    }

    #[test]
    fn per_cell_counts_available_and_busy_couriers_at_the_parent_resolution() {
        let index = CourierIndex::new();
        index.upsert(UserId::new(), north(0.0), 0, 2);
        index.upsert(UserId::new(), north(300.0), 2, 2);
        index.upsert(UserId::new(), point(48.8566, 2.3522), 1, 2);
        let counts = index.per_cell(Resolution::Seven);
        let berlin = north(0.0).cell_at(Resolution::Seven);
        let paris = point(48.8566, 2.3522).cell_at(Resolution::Seven);
        let mut expected = vec![
            CellCount {
                cell: berlin,
                available: 1,
                busy: 1,
            },
            CellCount {
                cell: paris,
                available: 1,
                busy: 0,
            },
        ];
        expected.sort_unstable_by_key(|c| c.cell);
        // Both Berlin points share a resolution-7 cell (≈ 1.4 km edges) unless they straddle
        // a border; the test points were picked so they do not.
        assert_eq!(north(300.0).cell_at(Resolution::Seven), berlin);
        assert_eq!(counts, expected);
        let fine = index.per_cell(Resolution::Eleven);
        assert_eq!(fine.iter().map(|c| c.available + c.busy).sum::<u32>(), 3);
    }

    #[test]
    fn nearest_matches_a_scan_of_ten_thousand_couriers_around_berlin() {
        let mut rng = StdRng::seed_from_u64(7);
        let index = CourierIndex::new();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let courier = UserId::new();
            let at = point(
                52.52 + rng.random_range(-0.15..0.15),
                13.405 + rng.random_range(-0.25..0.25),
            );
            let max_load = rng.random_range(1..=3);
            index.upsert(courier, at, rng.random_range(0..=max_load), max_load);
            all.push(courier);
        }
        // Move some, take some offline, hold some, to exercise every path.
        for (i, courier) in all.iter().enumerate() {
            match i % 10 {
                0 => index.upsert(
                    *courier,
                    point(52.5 + rng.random_range(0.0..0.05), 13.4),
                    0,
                    2,
                ),
                1 => index.remove(*courier),
                2 => {
                    index.hold(*courier, Instant::now() + Duration::from_secs(600));
                }
                _ => {}
            }
        }
        assert_consistent(&index);
        let excluded: HashSet<UserId> = all.iter().step_by(7).copied().collect();
        let exclude = |id: UserId| excluded.contains(&id);
        for query in 0..40 {
            let from = point(
                52.52 + rng.random_range(-0.2..0.2),
                13.405 + rng.random_range(-0.3..0.3),
            );
            let radius_m = [300.0, 1_000.0, 3_000.0, 10_000.0][query % 4];
            let limit = [1, 5, 20, 200][query / 4 % 4];
            assert_eq!(
                index.nearest(from, radius_m, limit, &exclude),
                brute_force(&index, from, radius_m, limit, &exclude),
                "from {from:?}, radius {radius_m}, limit {limit}"
            );
        }
    }

    #[test]
    fn nearest_is_exact_next_to_a_pentagon() {
        let pentagon = Resolution::Nine.pentagons().next().unwrap();
        let center = LatLng::from(pentagon);
        let from = point(center.lat(), center.lng());
        let mut rng = StdRng::seed_from_u64(11);
        let index = CourierIndex::new();
        for _ in 0..2_000 {
            let at = point(
                center.lat() + rng.random_range(-0.03..0.03),
                center.lng() + rng.random_range(-0.03..0.03),
            );
            index.upsert(UserId::new(), at, rng.random_range(0..2), 2);
        }
        for (radius_m, limit) in [(500.0, 3), (2_000.0, 10), (5_000.0, 2_000)] {
            let found = index.nearest(from, radius_m, limit, &none);
            assert!(!found.is_empty());
            assert_eq!(found, brute_force(&index, from, radius_m, limit, &none));
        }
    }
}
