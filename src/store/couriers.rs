//! Couriers in the store: one versioned row per courier (profile, online state, last known
//! position, deliveries in hand) and the location trail.
//!
//! The trail is an append table partitioned by courier and UTC day (`{courier}:{YYYYMMDD}`),
//! clustered by the point's time in microseconds, and written with the retention as time to
//! live, so old days expire whole. Points are written in batches: the trail drainer
//! ([`crate::actors::trail`]) gathers many couriers' messages into one `put`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::catalog::id_key;
use super::typed::{Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreResult, Table, Version, encode};
use crate::domain::courier::{CourierRecord, GpsPoint};
use crate::domain::ids::UserId;

/// Couriers and their trails.
#[derive(Clone)]
pub struct CourierRepo {
    rows: Rows<CourierRecord>,
    store: SharedStore,
    retention: Duration,
}

impl CourierRepo {
    pub fn new(store: SharedStore, retention: Duration) -> Self {
        CourierRepo {
            rows: Rows::new(store.clone(), Table::Couriers),
            store,
            retention,
        }
    }

    pub async fn load(&self, id: UserId) -> StoreResult<Option<Versioned<CourierRecord>>> {
        self.rows.get(&id_key(id)).await
    }

    /// Writes the row if it is still at `version` (0: not stored yet); `Err(())` when another
    /// writer got there first.
    pub async fn save(
        &self,
        version: Version,
        record: &CourierRecord,
    ) -> StoreResult<Result<Version, ()>> {
        let key = id_key(record.courier_id);
        let outcome = if version == 0 {
            self.rows.insert(&key, record).await?
        } else {
            self.rows.update(&key, version, record).await?
        };
        Ok(outcome.map_err(|_| ()))
    }

    /// Appends several couriers' points in one write; durable when this returns.
    pub async fn append_trails<'a>(
        &self,
        trails: impl IntoIterator<Item = (UserId, &'a [GpsPoint])>,
    ) -> StoreResult<()> {
        let mut rows = Vec::new();
        for (courier, points) in trails {
            for p in points {
                rows.push((
                    trail_key(courier, p.recorded_at),
                    encode(Table::CourierTrail, p)?,
                ));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.store
            .put(Table::CourierTrail, rows, Some(self.retention))
            .await
    }

    /// The courier's trail on one UTC day, from `after` (exclusive), oldest first.
    pub async fn trail(
        &self,
        courier: UserId,
        day: chrono::NaiveDate,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> StoreResult<Vec<GpsPoint>> {
        let partition = day_partition(courier, day);
        let range = match after {
            Some(at) => ScanRange::after(micros_key(at), limit),
            None => ScanRange::first(limit),
        };
        let page = self
            .store
            .scan(Table::CourierTrail, &partition, range)
            .await?;
        page.rows
            .iter()
            .map(|row| super::decode(Table::CourierTrail, &row.data))
            .collect()
    }
}

fn micros_key(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_micros().max(0))
}

fn trail_key(courier: UserId, at: DateTime<Utc>) -> Key {
    Key::new(day_partition(courier, at.date_naive()), micros_key(at))
}

/// `{courier}:{YYYYMMDD}`. Built from the date's numbers: the trail drainer makes one for every
/// point it writes, and a `strftime` pattern is parsed again on each use. Years outside
/// 0..=9999 (never a valid fix) take the pattern, which writes them as chrono always has.
fn day_partition(courier: UserId, day: chrono::NaiveDate) -> String {
    use chrono::Datelike as _;
    if (0..=9999).contains(&day.year()) {
        format!(
            "{courier}:{:04}{:02}{:02}",
            day.year(),
            day.month(),
            day.day()
        )
    } else {
        format!("{courier}:{}", day.format("%Y%m%d"))
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn day_partitions_are_the_strftime_ones() {
        let courier = UserId::new();
        let days = [
            (2026, 12, 7),
            (2027, 1, 1),
            (2024, 2, 29),
            (5, 3, 9),
            (999, 10, 31),
            (9999, 12, 31),
            (10_000, 1, 1),
            (-1, 6, 15),
        ];
        for (y, m, d) in days {
            let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(
                day_partition(courier, day),
                format!("{courier}:{}", day.format("%Y%m%d")),
                "{day}"
            );
        }
    }
}
