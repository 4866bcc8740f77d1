//! Places on Earth: validated coordinates, their H3 cells and great-circle distances.

use geo::{Distance as _, Haversine, Point};
use h3o::{CellIndex, LatLng, Resolution};
use serde::{Deserialize, Serialize};

/// Resolution of the cell stored with every place (≈ 174 m edges).
pub const PLACE_RESOLUTION: Resolution = Resolution::Nine;

/// Largest radius any "near me" query may ask for.
pub const MAX_RADIUS_KM: f64 = 50.0;

/// A validated WGS 84 position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "RawPoint")]
pub struct GeoPoint {
    /// Latitude in degrees, -90..=90.
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    lat: f64,
    lng: f64,
}

impl TryFrom<RawPoint> for GeoPoint {
    type Error = String;

    fn try_from(raw: RawPoint) -> Result<Self, Self::Error> {
        GeoPoint::new(raw.lat, raw.lng)
    }
}

impl GeoPoint {
    pub fn new(lat: f64, lng: f64) -> Result<Self, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "latitude must be a number from -90 to 90, not {lat}"
            ));
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(format!(
                "longitude must be a number from -180 to 180, not {lng}"
            ));
        }
        Ok(GeoPoint { lat, lng })
    }

    /// Parses `"lat,lng"` as used in query strings.
    pub fn parse_pair(raw: &str) -> Result<Self, String> {
        let (lat, lng) = raw
            .split_once(',')
            .ok_or_else(|| "expected \"lat,lng\"".to_owned())?;
        let lat: f64 = lat
            .trim()
            .parse()
            .map_err(|_| format!("{lat:?} is not a latitude"))?;
        let lng: f64 = lng
            .trim()
            .parse()
            .map_err(|_| format!("{lng:?} is not a longitude"))?;
        GeoPoint::new(lat, lng)
    }

    /// The H3 cell containing this point at `resolution`.
    pub fn cell_at(self, resolution: Resolution) -> CellIndex {
        // Coordinates are validated finite and in range, which is all LatLng checks.
        match LatLng::new(self.lat, self.lng) {
            Ok(ll) => ll.to_cell(resolution),
            Err(_) => unreachable!("GeoPoint holds only valid coordinates"),
        }
    }

    /// The point's cell at [`PLACE_RESOLUTION`].
    pub fn cell(self) -> CellIndex {
        self.cell_at(PLACE_RESOLUTION)
    }

    /// Great-circle distance in metres.
    pub fn distance_m(self, other: GeoPoint) -> f64 {
        Haversine.distance(
            Point::new(self.lng, self.lat),
            Point::new(other.lng, other.lat),
        )
    }
}

/// A radius for "near me" queries: positive, finite, at most [`MAX_RADIUS_KM`].
pub fn parse_radius_km(raw: f64) -> Result<f64, String> {
    if raw.is_finite() && raw > 0.0 && raw <= MAX_RADIUS_KM {
        Ok(raw)
    } else {
        Err(format!(
            "radius_km must be more than 0 and at most {MAX_RADIUS_KM}"
        ))
    }
}

/// Metres per degree of latitude, and of longitude at the equator.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// The `(dlat, dlng)` in degrees of a move of `metres` towards `bearing_deg` (0° north, 90°
/// east) from latitude `lat`, on a locally flat earth: within metres of the great-circle answer
/// over a city. For synthetic positions (the demo city, simulated couriers), not measurements.
pub fn flat_offset(lat: f64, metres: f64, bearing_deg: f64) -> (f64, f64) {
    let bearing = bearing_deg.to_radians();
    let dlat = metres * bearing.cos() / METRES_PER_DEGREE;
    let dlng = metres * bearing.sin() / (METRES_PER_DEGREE * lat.to_radians().cos());
    (dlat, dlng)
}

/// The `(lat, lng)` of the disc of `radius_m` around `center` picked by two uniform draws in
/// [0, 1): the distance's (square-rooted, so points spread evenly over the area), then the
/// bearing's. Not validated: a disc reaching past a pole leaves the valid range.
pub fn disc_point(center: GeoPoint, radius_m: f64, u_distance: f64, u_bearing: f64) -> (f64, f64) {
    let (dlat, dlng) = flat_offset(center.lat, radius_m * u_distance.sqrt(), u_bearing * 360.0);
    (center.lat + dlat, center.lng + dlng)
}

/// Every cell at `resolution` that may hold a point within `radius_m` of `center`: the
/// centre's cell and enough rings around it to cover the circle.
pub fn covering_cells(center: GeoPoint, radius_m: f64, resolution: Resolution) -> Vec<CellIndex> {
    let origin = center.cell_at(resolution);
    // Neighbouring centres are about √3·edge apart and a point is at most about one edge from
    // its centre; cells vary in size over the globe, so step one (average) edge per ring and
    // add a ring, which over-covers rather than misses.
    let edge = resolution.edge_length_m();
    let k = ((radius_m + edge) / edge).ceil() as u32 + 1;
    origin.grid_disk::<Vec<_>>(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_nan() {
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(0.0, -180.5).is_err());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::parse_pair("48.85,2.35").is_ok());
        assert!(GeoPoint::parse_pair("48.85;2.35").is_err());
        assert!(GeoPoint::parse_pair("NaN,2").is_err());
    }

    #[test]
    fn distance_is_haversine() {
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
        let london = GeoPoint::new(51.5074, -0.1278).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
        let d = paris.distance_m(london);
        assert!((340_000.0..350_000.0).contains(&d), "{d}");
    }

    #[test]
    fn disc_points_stay_within_the_radius() {
        let center = GeoPoint::new(52.52, 13.405).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
        for (u, v) in [
            (0.0, 0.3),
            (0.25, 0.0),
            (1.0, 0.25),
            (0.999, 0.6),
            (0.5, 0.875),
        ] {
            let (lat, lng) = disc_point(center, 8_000.0, u, v);
            let d = center.distance_m(GeoPoint { lat, lng });
            assert!((d - 8_000.0 * f64::sqrt(u)).abs() < 30.0, "{u} {v}: {d}");
        }
    }

    #[test]
    fn covering_cells_contain_every_point_in_the_radius() {
        let center = GeoPoint::new(52.52, 13.405).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
        let cells = covering_cells(center, 5_000.0, Resolution::Seven);
        for i in 0..72 {
            let bearing = f64::from(i) * 5.0_f64.to_radians();
            // About 4.9 km away in every direction.
            let p = GeoPoint::new(
                center.lat + 0.044 * bearing.cos(),
                center.lng + 0.072 * bearing.sin(),
            )
            .unwrap_or(center);
            if center.distance_m(p) <= 5_000.0 {
                assert!(cells.contains(&p.cell_at(Resolution::Seven)));
            }
        }
    }
}
