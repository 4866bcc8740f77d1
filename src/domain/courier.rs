//! Couriers: their profile, the GPS points they send and how those points are cleaned, and the
//! arithmetic of arrival (ETA, geofences, handoff codes).
//!
//! Everything here is pure: the caller passes the clock (`now`) and the last accepted point, so
//! the rules can be tested without actors or stores.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::geo::GeoPoint;
use super::ids::{OrderId, UserId, VendorId};

/// Most points one upload may carry; a phone that was offline longer sends several batches.
pub const MAX_BATCH: usize = 50;
/// Faster than any delivery vehicle in a city (≈ 250 km/h): a point implying more is a GPS jump.
pub const MAX_SPEED_MPS: f64 = 70.0;
/// How far ahead of the server clock a point may be stamped; phone clocks drift a little.
pub const FUTURE_TOLERANCE: Duration = Duration::seconds(30);
/// Within this distance of the pickup the courier counts as arrived (GPS in a street canyon is
/// often off by tens of metres, and the store door is not its map pin).
pub const ARRIVED_AT_PICKUP_M: f64 = 75.0;
/// Within this distance of the drop-off the customer is told the courier is arriving.
pub const ARRIVING_M: f64 = 300.0;
/// A handover within this distance of the drop-off (the fix's own accuracy, up to
/// [`DROP_OFF_SLACK_M`], added) is a verified delivery: its money is released after the hold.
pub const DROP_OFF_M: f64 = 100.0;
/// The most of a fix's accuracy radius a handover's distance is forgiven.
pub const DROP_OFF_SLACK_M: f64 = 50.0;

/// Whether a courier last seen at `at` hands over inside the drop-off geofence.
pub fn at_drop_off(at: Option<&GpsPoint>, dropoff: GeoPoint) -> bool {
    at.is_some_and(|p| {
        p.geo().distance_m(dropoff) <= DROP_OFF_M + p.accuracy_m.clamp(0.0, DROP_OFF_SLACK_M)
    })
}
/// Slowest speed an ETA assumes, ≈ 9 km/h (slow urban cycling). A courier who has been standing
/// still (at a light, at the counter) will move off again; dividing by their recent speed of
/// nearly zero would promise an arrival hours away.
pub const ETA_FLOOR_MPS: f64 = 2.5;

/// Points older than this, relative to the newest, say nothing about the current speed.
const TRACK_WINDOW: Duration = Duration::minutes(2);
/// Points a [`RecentTrack`] keeps; enough to smooth jitter, few enough to follow a change.
const TRACK_LEN: usize = 8;

/// How a courier gets around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Vehicle {
    Bicycle,
    Scooter,
    Car,
    OnFoot,
}

/// What a courier can carry, set by the courier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourierProfile {
    pub vehicle: Vehicle,
    /// Orders the courier carries at once, 1..=5.
    #[schema(minimum = 1, maximum = 5)]
    pub max_concurrent_orders: u8,
}

impl Default for CourierProfile {
    fn default() -> Self {
        CourierProfile {
            vehicle: Vehicle::Bicycle,
            max_concurrent_orders: 2,
        }
    }
}

impl CourierProfile {
    pub fn validate(&self) -> Result<(), String> {
        if (1..=5).contains(&self.max_concurrent_orders) {
            Ok(())
        } else {
            Err(format!(
                "max_concurrent_orders must be from 1 to 5, not {}",
                self.max_concurrent_orders
            ))
        }
    }
}

/// One GPS fix as the courier's phone reports it.
///
/// The fields are plain numbers because a batch is cleaned point by point: one bad fix drops
/// that fix, not the batch. Call [`GpsPoint::validate`] before using a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpsPoint {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lng: f64,
    /// Radius of the phone's 68 % confidence circle, in metres.
    pub accuracy_m: f64,
    /// Direction of travel in degrees clockwise from north, 0..360.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Speed over ground the phone measured, in metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    /// When the phone took the fix (not when it was sent: phones buffer while offline).
    pub recorded_at: DateTime<Utc>,
}

impl GpsPoint {
    pub fn validate(&self) -> Result<(), String> {
        check("lat", self.lat, -90.0, 90.0, true)?;
        check("lng", self.lng, -180.0, 180.0, true)?;
        check("accuracy_m", self.accuracy_m, 0.0, 10_000.0, true)?;
        if let Some(heading) = self.heading_deg {
            check("heading_deg", heading, 0.0, 360.0, false)?;
        }
        if let Some(speed) = self.speed_mps {
            check("speed_mps", speed, 0.0, 200.0, true)?;
        }
        Ok(())
    }

    /// The point's position. Meant for validated points; an invalid coordinate is clamped into
    /// range (NaN becomes 0) rather than producing a `GeoPoint` that breaks its invariant.
    pub fn geo(&self) -> GeoPoint {
        let clamp = |v: f64, bound: f64| {
            if v.is_nan() {
                0.0
            } else {
                v.clamp(-bound, bound)
            }
        };
        // Both coordinates are now finite and in range, which is all GeoPoint::new checks.
        GeoPoint {
            lat: clamp(self.lat, 90.0),
            lng: clamp(self.lng, 180.0),
        }
    }
}

/// `value` must be finite and within `min..=max` (or `min..max` when `inclusive_max` is false).
fn check(name: &str, value: f64, min: f64, max: f64, inclusive_max: bool) -> Result<(), String> {
    let below_max = if inclusive_max {
        value <= max
    } else {
        value < max
    };
    if value.is_finite() && value >= min && below_max {
        Ok(())
    } else {
        let to = if inclusive_max {
            "to"
        } else {
            "up to, not including,"
        };
        Err(format!(
            "{name} must be a number from {min} {to} {max}, not {value}"
        ))
    }
}

/// Why a GPS point was not accepted; counted per reason in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Recorded before the last accepted point.
    OutOfOrder,
    /// Recorded at the same instant as the last accepted point (a resent batch).
    Duplicate,
    /// Less accurate than the configured limit.
    Inaccurate,
    /// Reaching it from the last accepted point would take more than [`MAX_SPEED_MPS`].
    ImpossibleSpeed,
    /// Stamped more than [`FUTURE_TOLERANCE`] ahead of the server clock.
    Future,
}

impl DropReason {
    /// Every reason, so metrics can register each label up front.
    pub const ALL: [DropReason; 5] = [
        DropReason::OutOfOrder,
        DropReason::Duplicate,
        DropReason::Inaccurate,
        DropReason::ImpossibleSpeed,
        DropReason::Future,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::OutOfOrder => "out_of_order",
            DropReason::Duplicate => "duplicate",
            DropReason::Inaccurate => "inaccurate",
            DropReason::ImpossibleSpeed => "impossible_speed",
            DropReason::Future => "future",
        }
    }
}

/// Whether `point` may follow `last`, the courier's last accepted point. Validity of the
/// numbers themselves is [`GpsPoint::validate`]'s job.
pub fn clean(
    last: Option<&GpsPoint>,
    point: &GpsPoint,
    now: DateTime<Utc>,
    max_accuracy_m: f64,
) -> Result<(), DropReason> {
    if point.recorded_at > now + FUTURE_TOLERANCE {
        return Err(DropReason::Future);
    }
    if point.accuracy_m > max_accuracy_m {
        return Err(DropReason::Inaccurate);
    }
    let Some(last) = last else {
        return Ok(());
    };
    if point.recorded_at == last.recorded_at {
        return Err(DropReason::Duplicate);
    }
    if point.recorded_at < last.recorded_at {
        return Err(DropReason::OutOfOrder);
    }
    let elapsed_s = seconds_between(last.recorded_at, point.recorded_at);
    if last.geo().distance_m(point.geo()) / elapsed_s > MAX_SPEED_MPS {
        return Err(DropReason::ImpossibleSpeed);
    }
    Ok(())
}

/// The outcome of cleaning a batch: the accepted points in time order, and why the others went.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cleaned {
    pub accepted: Vec<GpsPoint>,
    pub dropped: Vec<DropReason>,
}

/// Cleans a batch against `last`, the courier's last accepted point before it.
///
/// The batch is first sorted by `recorded_at` (stably), since a phone that was offline uploads
/// its buffer in whatever order it kept it; each point is then judged against the latest point
/// accepted so far, so one GPS jump does not drag every later point with it.
pub fn clean_batch(
    last: Option<&GpsPoint>,
    mut points: Vec<GpsPoint>,
    now: DateTime<Utc>,
    max_accuracy_m: f64,
) -> Cleaned {
    points.sort_by_key(|p| p.recorded_at);
    let mut cleaned = Cleaned {
        accepted: Vec::with_capacity(points.len()),
        dropped: Vec::new(),
    };
    for point in points {
        let previous = cleaned.accepted.last().or(last);
        match clean(previous, &point, now, max_accuracy_m) {
            Ok(()) => cleaned.accepted.push(point),
            Err(reason) => cleaned.dropped.push(reason),
        }
    }
    cleaned
}

/// The last few accepted points of one courier (at most 8, none older than two minutes before
/// the newest), enough to tell how fast they are moving now.
#[derive(Debug, Clone, Default)]
pub struct RecentTrack {
    points: VecDeque<GpsPoint>,
}

impl RecentTrack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an accepted point. A point not newer than the last one is ignored: the track only
    /// moves forward, whatever order callers deliver in.
    pub fn push(&mut self, p: &GpsPoint) {
        if self
            .last()
            .is_some_and(|last| p.recorded_at <= last.recorded_at)
        {
            return;
        }
        self.points.push_back(p.clone());
        let oldest_kept = p.recorded_at - TRACK_WINDOW;
        while self.points.len() > TRACK_LEN
            || self
                .points
                .front()
                .is_some_and(|q| q.recorded_at < oldest_kept)
        {
            self.points.pop_front();
        }
    }

    pub fn last(&self) -> Option<&GpsPoint> {
        self.points.back()
    }

    /// The recent speed in metres per second, or `None` when there is nothing to go on.
    ///
    /// The phone's own speeds (Doppler-based, better than differencing fixes) are averaged when
    /// any point reports one; otherwise the straight-line distance from the oldest to the
    /// newest point over the time between them, which jitter around a stationary courier
    /// cannot inflate the way summing every hop would.
    pub fn speed_mps(&self) -> Option<f64> {
        let reported: Vec<f64> = self.points.iter().filter_map(|p| p.speed_mps).collect();
        if !reported.is_empty() {
            return Some(reported.iter().sum::<f64>() / reported.len() as f64);
        }
        let (first, last) = (self.points.front()?, self.points.back()?);
        let elapsed_s = seconds_between(first.recorded_at, last.recorded_at);
        (elapsed_s > 0.0).then(|| first.geo().distance_m(last.geo()) / elapsed_s)
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let span = to - from;
    // Microseconds: phones stamp points finer than a millisecond apart.
    match span.num_microseconds() {
        Some(micros) => micros as f64 / 1_000_000.0,
        None => span.num_milliseconds() as f64 / 1000.0,
    }
}

/// Seconds to cover `remaining_m` at the recent speed, never slower than [`ETA_FLOOR_MPS`].
/// Rounded up (an ETA that runs out early annoys more than one that runs out late) and
/// saturating; 0 when there is no distance left or it is not a finite number.
pub fn eta_seconds(remaining_m: f64, recent_speed_mps: Option<f64>) -> u32 {
    if !remaining_m.is_finite() || remaining_m <= 0.0 {
        return 0;
    }
    let speed = recent_speed_mps
        .filter(|s| s.is_finite())
        .map_or(ETA_FLOOR_MPS, |s| s.max(ETA_FLOOR_MPS));
    // `as` saturates at u32::MAX; the quotient is finite and positive.
    (remaining_m / speed).ceil() as u32
}

/// A four-digit code the customer reads out at the door; leading zeros are part of it.
pub fn new_handoff_code() -> String {
    use rand::Rng as _;
    // rand::rng() is a CSPRNG (ChaCha, reseeded from the OS): the code must not be guessable
    // from earlier ones.
    format!("{:04}", rand::rng().random_range(0..10_000u32))
}

/// Whether the code given at the door is the expected one, in time independent of where they
/// differ. The length is not secret (always four digits), so a length mismatch returns early.
pub fn handoff_codes_match(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A delivery a courier has taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveDelivery {
    pub order_id: OrderId,
    pub vendor_id: VendorId,
    pub pickup: GeoPoint,
    pub dropoff: GeoPoint,
    #[serde(default)]
    pub picked_up: bool,
    #[serde(default)]
    pub arrived_at_pickup: bool,
    #[serde(default)]
    pub arriving: bool,
    /// Wrong handoff codes tried so far.
    #[serde(default)]
    pub wrong_codes: u8,
}

/// A courier as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourierRecord {
    pub courier_id: UserId,
    #[serde(default)]
    pub profile: CourierProfile,
    #[serde(default)]
    pub online: bool,
    #[serde(default)]
    pub position: Option<GpsPoint>,
    #[serde(default)]
    pub active: Vec<ActiveDelivery>,
    pub updated_at: DateTime<Utc>,
}

impl CourierRecord {
    pub fn new(courier_id: UserId, now: DateTime<Utc>) -> Self {
        CourierRecord {
            courier_id,
            profile: CourierProfile::default(),
            online: false,
            position: None,
            active: Vec::new(),
            updated_at: now,
        }
    }

    /// Deliveries in hand, as the load the dispatcher weighs.
    pub fn load(&self) -> u8 {
        u8::try_from(self.active.len()).unwrap_or(u8::MAX)
    }

    /// Whether the courier can take one more delivery.
    pub fn has_room(&self) -> bool {
        self.load() < self.profile.max_concurrent_orders
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A point `secs` after t0, `north_m` metres north of a spot in Berlin.
    fn at(secs: i64, north_m: f64) -> GpsPoint {
        GpsPoint {
            lat: 52.52 + north_m / 111_195.0,
            lng: 13.405,
            accuracy_m: 10.0,
            heading_deg: None,
            speed_mps: None,
            recorded_at: t0() + Duration::seconds(secs),
        }
    }

    #[test]
    fn profile_defaults_to_a_bicycle_with_two_orders_and_bounds_the_load() {
        let profile = CourierProfile::default();
        assert_eq!(profile.vehicle, Vehicle::Bicycle);
        assert_eq!(profile.max_concurrent_orders, 2);
        assert!(profile.validate().is_ok());
        for bad in [0, 6] {
            let p = CourierProfile {
                max_concurrent_orders: bad,
                ..profile.clone()
            };
            assert!(p.validate().is_err());
        }
    }

    #[test]
    fn profile_json_is_snake_case_and_strict() {
        let p: CourierProfile =
            serde_json::from_str(r#"{"vehicle":"on_foot","max_concurrent_orders":1}"#).unwrap();
        assert_eq!(p.vehicle, Vehicle::OnFoot);
        assert!(
            serde_json::from_str::<CourierProfile>(
                r#"{"vehicle":"car","max_concurrent_orders":1,"x":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn gps_point_json_omits_missing_heading_and_speed_and_rejects_unknown_fields() {
        let json = serde_json::to_value(at(0, 0.0)).unwrap();
        assert!(json.get("heading_deg").is_none());
        assert!(json.get("speed_mps").is_none());
        let back: GpsPoint = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, at(0, 0.0));
        let mut extra = json;
        extra["altitude"] = 3.into();
        assert!(serde_json::from_value::<GpsPoint>(extra).is_err());
    }

    #[test]
    fn validate_checks_every_range() {
        assert!(at(0, 0.0).validate().is_ok());
        let edits: [fn(&mut GpsPoint); 9] = [
            |p| p.lat = 90.5,
            |p| p.lat = f64::NAN,
            |p| p.lng = -181.0,
            |p| p.accuracy_m = -1.0,
            |p| p.accuracy_m = 10_001.0,
            |p| p.heading_deg = Some(360.0),
            |p| p.heading_deg = Some(f64::INFINITY),
            |p| p.speed_mps = Some(-0.1),
            |p| p.speed_mps = Some(200.5),
        ];
        for edit in edits {
            let mut p = at(0, 0.0);
            edit(&mut p);
            assert!(p.validate().is_err(), "{p:?}");
        }
        let mut edge = at(0, 0.0);
        edge.heading_deg = Some(359.9);
        edge.speed_mps = Some(0.0);
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn geo_never_builds_an_invalid_point() {
        let mut p = at(0, 0.0);
        p.lat = f64::NAN;
        p.lng = 500.0;
        let g = p.geo();
        assert_eq!((g.lat, g.lng), (0.0, 180.0));
    }

    #[test]
    fn clean_accepts_a_plausible_next_point() {
        assert_eq!(clean(None, &at(0, 0.0), t0(), 50.0), Ok(()));
        assert_eq!(clean(Some(&at(0, 0.0)), &at(10, 100.0), t0(), 50.0), Ok(()));
    }

    #[test]
    fn clean_drops_points_from_the_future() {
        assert_eq!(clean(None, &at(30, 0.0), t0(), 50.0), Ok(()));
        assert_eq!(
            clean(None, &at(31, 0.0), t0(), 50.0),
            Err(DropReason::Future)
        );
    }

    #[test]
    fn clean_drops_inaccurate_points() {
        let mut p = at(0, 0.0);
        p.accuracy_m = 50.1;
        assert_eq!(clean(None, &p, t0(), 50.0), Err(DropReason::Inaccurate));
    }

    #[test]
    fn clean_drops_duplicates_and_points_older_than_the_last() {
        let last = at(10, 0.0);
        assert_eq!(
            clean(Some(&last), &at(10, 5.0), t0(), 50.0),
            Err(DropReason::Duplicate)
        );
        assert_eq!(
            clean(Some(&last), &at(9, 5.0), t0(), 50.0),
            Err(DropReason::OutOfOrder)
        );
    }

    #[test]
    fn clean_drops_jumps_faster_than_any_vehicle() {
        let last = at(0, 0.0);
        assert_eq!(clean(Some(&last), &at(10, 690.0), t0(), 50.0), Ok(()));
        assert_eq!(
            clean(Some(&last), &at(10, 710.0), t0(), 50.0),
            Err(DropReason::ImpossibleSpeed)
        );
    }

    #[test]
    fn drop_reasons_have_stable_snake_case_names() {
        let names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "out_of_order",
                "duplicate",
                "inaccurate",
                "impossible_speed",
                "future"
            ]
        );
        for r in DropReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn clean_batch_sorts_by_time_then_judges_against_the_last_accepted() {
        let last = at(0, 0.0);
        // Shuffled; the t=4 point jumps 5 km, the second t=5 point repeats the first.
        let batch = vec![
            at(5, 50.0),
            at(4, 5_000.0),
            at(2, 20.0),
            at(5, 60.0),
            at(-1, 0.0),
        ];
        let cleaned = clean_batch(Some(&last), batch, t0(), 50.0);
        let times: Vec<_> = cleaned
            .accepted
            .iter()
            .map(|p| (p.recorded_at - t0()).num_seconds())
            .collect();
        assert_eq!(times, [2, 5]);
        // The first of the two t=5 points wins: the sort is stable.
        assert_eq!(cleaned.accepted[1], at(5, 50.0));
        assert_eq!(
            cleaned.dropped,
            [
                DropReason::OutOfOrder,
                DropReason::ImpossibleSpeed,
                DropReason::Duplicate
            ]
        );
    }

    #[test]
    fn clean_batch_without_history_accepts_the_first_good_point() {
        let cleaned = clean_batch(None, vec![at(3, 10.0), at(1, 0.0)], t0(), 50.0);
        assert_eq!(cleaned.accepted, [at(1, 0.0), at(3, 10.0)]);
        assert!(cleaned.dropped.is_empty());
    }

    #[test]
    fn recent_track_speed_is_distance_over_time_without_reported_speeds() {
        let mut track = RecentTrack::new();
        assert_eq!(track.speed_mps(), None);
        track.push(&at(0, 0.0));
        assert_eq!(track.speed_mps(), None);
        track.push(&at(10, 40.0));
        track.push(&at(20, 100.0));
        let speed = track.speed_mps().unwrap();
        assert!((speed - 5.0).abs() < 0.01, "{speed}");
        assert_eq!(track.last(), Some(&at(20, 100.0)));
    }

    #[test]
    fn recent_track_prefers_reported_speeds() {
        let mut track = RecentTrack::new();
        let mut a = at(0, 0.0);
        a.speed_mps = Some(4.0);
        let mut b = at(10, 1_000.0);
        b.speed_mps = Some(6.0);
        track.push(&a);
        track.push(&b);
        track.push(&at(20, 2_000.0));
        assert_eq!(track.speed_mps(), Some(5.0));
    }

    #[test]
    fn recent_track_forgets_old_points_and_ignores_stale_pushes() {
        let mut track = RecentTrack::new();
        track.push(&at(0, 0.0));
        track.push(&at(200, 0.0));
        // The first point is over two minutes older than the second.
        assert_eq!(track.speed_mps(), None);
        track.push(&at(100, 500.0));
        assert_eq!(track.last(), Some(&at(200, 0.0)));
        for s in 201..230 {
            track.push(&at(s, 0.0));
        }
        assert_eq!(track.points.len(), TRACK_LEN);
    }

    #[test]
    fn eta_rounds_up_and_never_assumes_crawling() {
        assert_eq!(eta_seconds(100.0, Some(10.0)), 10);
        assert_eq!(eta_seconds(101.0, Some(10.0)), 11);
        assert_eq!(eta_seconds(100.0, Some(0.0)), 40);
        assert_eq!(eta_seconds(100.0, None), 40);
        assert_eq!(eta_seconds(100.0, Some(f64::NAN)), 40);
        assert_eq!(eta_seconds(0.0, Some(5.0)), 0);
        assert_eq!(eta_seconds(-3.0, Some(5.0)), 0);
        assert_eq!(eta_seconds(f64::NAN, Some(5.0)), 0);
        assert_eq!(eta_seconds(1e300, Some(5.0)), u32::MAX);
    }

    #[test]
    fn handoff_codes_are_four_digits_and_compare_exactly() {
        for _ in 0..200 {
            let code = new_handoff_code();
            assert_eq!(code.len(), 4);
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert!(handoff_codes_match(&code, &code));
        }
        assert!(handoff_codes_match("0042", "0042"));
        assert!(!handoff_codes_match("0042", "0043"));
        assert!(!handoff_codes_match("0042", "042"));
        assert!(!handoff_codes_match("0042", ""));
    }
}
