//! What the simulated people share: the map arithmetic of a city small enough to be flat, the
//! handoff codes of the orders simulated customers placed, who is simulated, the running
//! figures of the status line, and the signal that ends the simulation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::api::LatLng;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;

/// A point of the city.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pos {
    pub lat: f64,
    pub lng: f64,
}

impl From<LatLng> for Pos {
    fn from(p: LatLng) -> Self {
        Pos {
            lat: p.lat,
            lng: p.lng,
        }
    }
}

impl Pos {
    fn metres_per_degree_lng(self) -> f64 {
        METRES_PER_DEGREE * self.lat.to_radians().cos()
    }

    /// The point `north_m` metres north and `east_m` metres east of this one.
    pub fn offset(self, north_m: f64, east_m: f64) -> Pos {
        Pos {
            lat: self.lat + north_m / METRES_PER_DEGREE,
            lng: self.lng + east_m / self.metres_per_degree_lng(),
        }
    }

    /// Metres to `to`: (north, east).
    fn delta_m(self, to: Pos) -> (f64, f64) {
        (
            (to.lat - self.lat) * METRES_PER_DEGREE,
            (to.lng - self.lng) * self.metres_per_degree_lng(),
        )
    }

    /// Straight-line distance in metres (flat: the city is a few kilometres across).
    pub fn distance_m(self, to: Pos) -> f64 {
        let (north, east) = self.delta_m(to);
        north.hypot(east)
    }

    /// Distance along the streets of a grid: north–south, then east–west.
    pub fn street_distance_m(self, to: Pos) -> f64 {
        let (north, east) = self.delta_m(to);
        north.abs() + east.abs()
    }

    /// A point `distance_m` away in a random direction.
    pub fn random_at(self, distance_m: f64) -> Pos {
        let bearing = rand::random_range(0.0..std::f64::consts::TAU);
        self.offset(distance_m * bearing.cos(), distance_m * bearing.sin())
    }

    /// A point between `min_m` and `max_m` away in a random direction.
    pub fn random_within(self, min_m: f64, max_m: f64) -> Pos {
        self.random_at(between(min_m, max_m))
    }
}

/// A random number in `[low, high)` (`low` when the range is empty).
pub fn between(low: f64, high: f64) -> f64 {
    if high > low {
        rand::random_range(low..high)
    } else {
        low
    }
}

/// A random duration in `[low, high)` seconds.
pub fn seconds_between(low: f64, high: f64) -> Duration {
    Duration::from_secs_f64(between(low, high))
}

/// One step of a ride along the streets: the street grid is the city's north–south and
/// east–west lines, so a ride goes north or south until level with `to`, then east or west.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub to: Pos,
    /// Metres covered.
    pub moved_m: f64,
    /// Direction of travel in degrees from north (0, 90, 180 or 270), when it moved.
    pub heading_deg: Option<f64>,
    pub arrived: bool,
}

/// Moves from `from` towards `to` by at most `budget_m` metres along the streets.
pub fn ride(from: Pos, to: Pos, budget_m: f64) -> Step {
    const THERE_M: f64 = 0.5;
    let (north, _) = from.delta_m(to);
    let mut at = from;
    let mut left = budget_m.max(0.0);
    let mut heading = None;
    if north.abs() > THERE_M && left > 0.0 {
        let leg = north.abs().min(left);
        at = at.offset(leg * north.signum(), 0.0);
        left -= leg;
        heading = Some(if north > 0.0 { 0.0 } else { 180.0 });
    }
    let (north, east) = at.delta_m(to);
    if north.abs() <= THERE_M && east.abs() > THERE_M && left > 0.0 {
        let leg = east.abs().min(left);
        at = at.offset(0.0, leg * east.signum());
        left -= leg;
        heading = Some(if east > 0.0 { 90.0 } else { 270.0 });
    }
    let arrived = at.street_distance_m(to) <= 2.0 * THERE_M;
    Step {
        to: if arrived { to } else { at },
        moved_m: budget_m.max(0.0) - left,
        heading_deg: heading,
        arrived,
    }
}

/// The end of the simulation, watched by every simulated person.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop signal and its trigger.
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (trigger, stop) = watch::channel(false);
        (trigger, Stop(stop))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the simulation is to end (or its trigger is gone). Cancel-safe.
    pub async fn stopped(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sleeps for `pause`; true when the simulation ended meanwhile.
    pub async fn sleep(&mut self, pause: Duration) -> bool {
        tokio::select! {
            () = self.stopped() => true,
            () = tokio::time::sleep(pause) => self.is_stopped(),
        }
    }
}

/// What the simulated people know of each other, and the figures of the status line.
#[derive(Default)]
pub struct Shared {
    /// Handoff codes of open orders that simulated customers placed, by order id: what a
    /// customer would tell the courier at the door.
    codes: Mutex<HashMap<String, String>>,
    /// User ids of the simulated couriers.
    couriers: Mutex<HashSet<String>>,
    /// Ids of the stores that simulated vendors run.
    stores: Mutex<HashSet<String>>,
    pub orders_placed: AtomicU64,
    pub orders_delivered: AtomicU64,
    /// Orders of simulated customers not at their end yet.
    pub orders_open: AtomicU64,
    pub couriers_online: AtomicU64,
}

impl Shared {
    pub fn tell_code(&self, order: &str, code: &str) {
        self.codes.lock().insert(order.to_owned(), code.to_owned());
    }

    pub fn code_of(&self, order: &str) -> Option<String> {
        self.codes.lock().get(order).cloned()
    }

    pub fn forget_code(&self, order: &str) {
        self.codes.lock().remove(order);
    }

    pub fn add_courier(&self, user_id: &str) {
        self.couriers.lock().insert(user_id.to_owned());
    }

    pub fn is_simulated_courier(&self, user_id: &str) -> bool {
        self.couriers.lock().contains(user_id)
    }

    pub fn add_store(&self, store_id: &str) {
        self.stores.lock().insert(store_id.to_owned());
    }

    pub fn is_simulated_store(&self, store_id: &str) -> bool {
        self.stores.lock().contains(store_id)
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn drop_one(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALEX: Pos = Pos {
        lat: 52.5219,
        lng: 13.4132,
    };

    #[test]
    fn a_ride_goes_north_south_first_then_east_west_and_arrives() {
        let to = ALEX.offset(300.0, -400.0);
        let first = ride(ALEX, to, 100.0);
        assert_eq!(first.heading_deg, Some(0.0));
        assert!((first.moved_m - 100.0).abs() < 1e-6);
        assert!(!first.arrived);
        let turn = ride(first.to, to, 250.0);
        assert_eq!(turn.heading_deg, Some(270.0), "ends on the east–west leg");
        let mut at = turn.to;
        let mut steps = 0;
        loop {
            let step = ride(at, to, 8.0);
            at = step.to;
            steps += 1;
            if step.arrived {
                break;
            }
            assert!(steps < 100);
        }
        assert_eq!(at, to);
        assert!((ALEX.street_distance_m(to) - 700.0).abs() < 1.0);
    }

    #[test]
    fn a_ride_that_is_there_stands_still() {
        let step = ride(ALEX, ALEX, 8.0);
        assert!(step.arrived);
        assert_eq!(step.heading_deg, None);
        assert_eq!(step.moved_m, 0.0);
    }

    #[test]
    fn random_points_keep_their_distance() {
        for _ in 0..100 {
            let p = ALEX.random_within(120.0, 220.0);
            let d = ALEX.distance_m(p);
            assert!((119.0..=221.0).contains(&d), "{d}");
        }
    }
}
