//! The index of online couriers by H3 cell.
//!
//! Every courier actor writes its position here on each GPS ping (thousands a second across
//! actor threads) and the dispatcher reads it to find who is near an order, so it lives in
//! memory behind one `RwLock`: writes are a couple of hash-map operations, and a ping that stays
//! in its cell (most of them, at resolution 9's ≈ 175 m edges) only refreshes the courier's
//! place in that cell's list.
//!
//! Cell lists carry each courier's position as a point of the unit sphere, so a query measures
//! the couriers of the cells it walks with a few multiplications, in memory laid out cell by
//! cell, and looks up the full entry (load, hold, exact distance) only of those who could still
//! make its list.
//!
//! The index also records offer holds: while the dispatcher waits for a courier to answer one
//! offer, [`CourierIndex::nearest`] does not return that courier for another order.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
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
    /// no empty lists, no stale ids, each member's `unit` that of its entry's point.
    cells: HashMap<CellIndex, Vec<Member>>,
}

/// A courier as their cell lists them.
#[derive(Debug, Clone, Copy)]
struct Member {
    courier: UserId,
    /// The courier's point on the unit sphere ([`unit_vector`]).
    unit: [f64; 3],
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
        self.upsert_in(courier, point, point.cell(), load, max_load);
    }

    /// [`CourierIndex::upsert`] for a caller that has the point's cell already; `cell` must be
    /// `point.cell()`.
    pub fn upsert_in(
        &self,
        courier: UserId,
        point: GeoPoint,
        cell: CellIndex,
        load: u8,
        max_load: u8,
    ) {
        debug_assert_eq!(cell, point.cell());
        let member = Member {
            courier,
            unit: unit_vector(point),
        };
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
                    state.cells.entry(cell).or_default().push(member);
                } else if let Some(listed) = state
                    .cells
                    .get_mut(&cell)
                    .and_then(|members| members.iter_mut().find(|m| m.courier == courier))
                {
                    listed.unit = member.unit;
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot {
                    entry,
                    held_until: None,
                });
                state.cells.entry(cell).or_default().push(member);
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
    /// cells near `from`. Within those cells, a courier whose straight-line distance through
    /// the Earth (a lower bound of the great-circle one, from the cell list alone) is beyond
    /// the radius or the current list's worst score is passed over unread.
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
        let edge_m = recent_local_edge_m(origin);
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
        let here = unit_vector(from);
        // Squared chord beyond which a courier cannot make the list: the radius's, then that
        // of the list's worst score once the list is full.
        let mut reach_2 = chord_2_beyond(radius_m);
        let state = self.state.read();
        // The best `limit` so far, the worst on top.
        let mut kept: BinaryHeap<Ranked> = BinaryHeap::new();
        let mut seen = 0;
        for k in 0..=last_ring {
            let worst = match kept.peek() {
                Some(worst) if kept.len() >= limit => worst.score,
                _ => f64::INFINITY,
            };
            if ring_min_distance_m(k, edge_m) > worst || seen == state.couriers.len() {
                break;
            }
            for cell in rings.ring(k) {
                let Some(members) = state.cells.get(&cell) else {
                    continue;
                };
                seen += members.len();
                for member in members {
                    if chord_2(here, member.unit) > reach_2 {
                        continue;
                    }
                    let Some(slot) = state.couriers.get(&member.courier) else {
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
                    let ranked = Ranked {
                        score: distance_m + f64::from(entry.load) * LOAD_PENALTY_M,
                        candidate: Candidate {
                            courier: entry.courier,
                            distance_m,
                            load: entry.load,
                        },
                    };
                    if kept.len() < limit {
                        kept.push(ranked);
                    } else if let Some(mut worst) = kept.peek_mut() {
                        if ranked < *worst {
                            *worst = ranked;
                        } else {
                            continue;
                        }
                    }
                    if kept.len() >= limit
                        && let Some(worst) = kept.peek()
                    {
                        // A score is at least the distance, so no one further than the worst
                        // score can beat it.
                        reach_2 = reach_2.min(chord_2_beyond(worst.score.min(radius_m)));
                    }
                }
            }
        }
        drop(state);
        kept.into_sorted_vec()
            .into_iter()
            .map(|ranked| ranked.candidate)
            .collect()
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
                for member in ids {
                    let Some(slot) = state.couriers.get(&member.courier) else {
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
fn detach(cells: &mut HashMap<CellIndex, Vec<Member>>, cell: CellIndex, courier: UserId) {
    if let Entry::Occupied(mut list) = cells.entry(cell) {
        let members = list.get_mut();
        if let Some(at) = members.iter().position(|m| m.courier == courier) {
            members.swap_remove(at);
        }
        if members.is_empty() {
            list.remove();
        }
    }
}

/// A candidate and its score, ordered best first: by score, then by courier id.
#[derive(Debug)]
struct Ranked {
    score: f64,
    candidate: Candidate,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.candidate.courier.cmp(&other.candidate.courier))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The radius of the sphere [`GeoPoint::distance_m`] measures on (its haversine's GRS 80
/// mean radius).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// `point` on the unit sphere. The chord between two such points is 2·sin(d / 2R) for a
/// great-circle distance d: it grows with d, so it orders and bounds couriers as d does,
/// anywhere on Earth, for the price of a few multiplications.
fn unit_vector(point: GeoPoint) -> [f64; 3] {
    let (sin_lat, cos_lat) = point.lat.to_radians().sin_cos();
    let (sin_lng, cos_lng) = point.lng.to_radians().sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

/// The squared chord between two points of the unit sphere.
fn chord_2(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (x, y, z) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    x * x + y * y + z * z
}

/// A squared chord that every point within `distance_m` (great-circle) lies inside of, with
/// room for rounding: a relative millionth and an absolute 10⁻¹² (6 µm on Earth), far above
/// the float error of a chord or a haversine distance.
fn chord_2_beyond(distance_m: f64) -> f64 {
    let chord = 2.0
        * (distance_m / (2.0 * EARTH_RADIUS_M))
            .min(std::f64::consts::FRAC_PI_2)
            .sin();
    let chord = chord * (1.0 + 1e-6) + 1e-12;
    chord * chord
}

/// The edge length of hexagons around `origin`, from its area. Cell sizes vary by about two
/// over the globe, so the average edge of the resolution would be wrong by up to ±40 %; they
/// vary little across the few kilometres one query spans.
fn local_edge_m(origin: CellIndex) -> f64 {
    // A regular hexagon of edge e has area 3√3/2·e².
    (2.0 * origin.area_m2() / (3.0 * 3.0_f64.sqrt())).sqrt()
}

/// [`local_edge_m`], remembered per thread for the last few thousand origins: a cell's area
/// costs its boundary and a few dozen trigonometric calls (a fifth of a query), and a city's
/// orders come from its few thousand cells (fewer still: pickup points) again and again.
fn recent_local_edge_m(origin: CellIndex) -> f64 {
    const SLOTS: usize = 4_096;
    thread_local! {
        // (cell, its edge); 0 is no cell's index, so it marks an empty slot.
        static EDGES: RefCell<Vec<(u64, f64)>> = RefCell::new(vec![(0, 0.0); SLOTS]);
    }
    let bits = u64::from(origin);
    let slot = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize % SLOTS;
    EDGES.with_borrow_mut(|edges| match edges.get_mut(slot) {
        Some((cell, edge_m)) if *cell == bits => *edge_m,
        Some((cell, edge_m)) => {
            *edge_m = local_edge_m(origin);
            *cell = bits;
            *edge_m
        }
        None => local_edge_m(origin),
    })
}

/// A lower bound on the distance from any point of the origin cell to any point of a cell `k`
/// rings out.
///
/// On a regular grid the centres of ring k lie on a hexagon of apothem 1.5·k·edge around the
/// origin's centre, and every point of a cell is within one edge of its centre, which gives
/// (1.5·k − 2)·edge. H3 hexagons are not regular (they shear and shrink away from icosahedron
/// face centres, and the pentagons bend the rings). Measured between cell boundaries, over
/// 3,000 random cells of the globe and the cells around the twelve pentagons, for k up to 30,
/// the true distance stays above 0.8 of that figure at k = 2 and above 0.87 from k = 3 on. The
/// bound takes 0.7 of it: too low only costs work, too high would miss couriers
/// (`ring_bound_holds_between_cell_boundaries` checks a sample).
fn ring_min_distance_m(k: u32, edge_m: f64) -> f64 {
    ((1.5 * f64::from(k) - 2.0) * edge_m * 0.7).max(0.0)
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

    /// Every courier's cell list holds exactly the couriers whose entries name that cell, at
    /// their entries' points.
    fn assert_consistent(index: &CourierIndex) {
        let state = index.state.read();
        let listed: usize = state.cells.values().map(Vec::len).sum();
        assert_eq!(listed, state.couriers.len());
        for (cell, members) in &state.cells {
            assert!(!members.is_empty());
            for member in members {
                let entry = state.couriers[&member.courier].entry;
                assert_eq!(entry.cell, *cell);
                assert_eq!(member.unit, unit_vector(entry.point));
            }
        }
    }

    /// Sorts best first and keeps the best `limit`.
    fn rank(kept: &mut Vec<(f64, Candidate)>, limit: usize) {
        kept.sort_unstable_by(|(a, x), (b, y)| a.total_cmp(b).then(x.courier.cmp(&y.courier)));
        kept.truncate(limit);
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
    fn chords_measure_the_sphere_of_the_haversine_distance() {
        let pairs = [
            (north(0.0), north(1.0)),
            (north(0.0), point(52.55, 13.45)),
            (point(48.8566, 2.3522), point(51.5074, -0.1278)),
            (point(-33.87, 151.21), point(-33.86, -179.99)),
        ];
        for (a, b) in pairs {
            let chord = chord_2(unit_vector(a), unit_vector(b)).sqrt();
            let arc_m = 2.0 * EARTH_RADIUS_M * (chord / 2.0).asin();
            let d = a.distance_m(b);
            assert!((arc_m - d).abs() <= d * 1e-9, "{a:?} {b:?}: {arc_m} vs {d}");
            assert!(chord_2(unit_vector(a), unit_vector(b)) <= chord_2_beyond(d));
        }
    }

    /// Points every `spacing` metres or less along `cell`'s boundary, on the unit sphere, and
    /// that spacing.
    fn boundary_points(cell: CellIndex, per_edge: usize) -> (Vec<[f64; 3]>, f64) {
        let corners: Vec<[f64; 3]> = cell
            .boundary()
            .iter()
            .map(|ll| unit_vector(point(ll.lat(), ll.lng())))
            .collect();
        let mut points = Vec::new();
        let mut spacing: f64 = 0.0;
        for (i, a) in corners.iter().enumerate() {
            let b = corners[(i + 1) % corners.len()];
            let side_m = 2.0 * EARTH_RADIUS_M * (chord_2(*a, b).sqrt() / 2.0).asin();
            spacing = spacing.max(side_m / per_edge as f64);
            for step in 0..per_edge {
                let t = step as f64 / per_edge as f64;
                let p = [0, 1, 2].map(|axis| a[axis] + (b[axis] - a[axis]) * t);
                let norm = chord_2(p, [0.0; 3]).sqrt();
                points.push(p.map(|x| x / norm));
            }
        }
        (points, spacing)
    }

    #[test]
    fn recent_edges_are_the_edges() {
        let mut rng = StdRng::seed_from_u64(13);
        for _ in 0..3 {
            // Twice over more cells than the memory holds, so slots are reused.
            for _ in 0..5_000 {
                let cell = point(
                    rng.random_range(-80.0..80.0),
                    rng.random_range(-180.0..180.0),
                )
                .cell();
                assert_eq!(recent_local_edge_m(cell), local_edge_m(cell));
                assert_eq!(recent_local_edge_m(cell), local_edge_m(cell));
            }
        }
    }

    #[test]
    fn ring_bound_holds_between_cell_boundaries() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut origins: Vec<CellIndex> = (0..40)
            .map(|_| {
                let lat = rng.random_range(-1.0_f64..1.0).asin().to_degrees();
                point(lat, rng.random_range(-180.0..180.0)).cell()
            })
            .collect();
        for pentagon in Resolution::Nine.pentagons() {
            origins.extend(pentagon.grid_disk::<Vec<_>>(1));
        }
        origins.push(north(0.0).cell());
        for origin in origins {
            let edge_m = local_edge_m(origin);
            let (here, here_spacing) = boundary_points(origin, 16);
            for (cell, k) in origin.grid_disk_distances::<Vec<_>>(3) {
                if k < 2 {
                    continue;
                }
                let (there, there_spacing) = boundary_points(cell, 16);
                let closest_2 = here
                    .iter()
                    .flat_map(|a| there.iter().map(|b| chord_2(*a, *b)))
                    .fold(f64::INFINITY, f64::min);
                // The true closest points lie within half a spacing of sampled ones.
                let closest_m = 2.0 * EARTH_RADIUS_M * (closest_2.sqrt() / 2.0).asin()
                    - (here_spacing + there_spacing) / 2.0;
                assert!(
                    closest_m >= ring_min_distance_m(k, edge_m),
                    "{origin} to {cell} (k = {k}): {closest_m} m"
                );
            }
        }
    }

    #[test]
    fn nearest_is_exact_among_couriers_on_one_spot() {
        let index = CourierIndex::new();
        let mut rng = StdRng::seed_from_u64(5);
        // Couriers on one spot and within millimetres of it; ties go by id.
        for i in 0..40 {
            let nudge = if i % 2 == 0 {
                0.0
            } else {
                rng.random_range(0.0..0.005)
            };
            index.upsert(UserId::new(), north(100.0 + nudge), (i % 3) as u8, 3);
        }
        for limit in [1, 3, 7, 40] {
            for from in [north(0.0), north(100.0), north(100.002)] {
                assert_eq!(
                    index.nearest(from, 1_000.0, limit, &none),
                    brute_force(&index, from, 1_000.0, limit, &none)
                );
            }
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
