//! What a scenario measured: named figures, printed for people and written as JSON.

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// One scenario's figures, in the order they were added.
pub struct Report {
    scenario: &'static str,
    fields: Vec<(String, Value, String)>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Report {
            scenario,
            fields: Vec::new(),
        }
    }

    /// A figure: its JSON key and value, and how a person reads it.
    pub fn add(&mut self, key: &str, value: impl Into<Value>, human: impl Into<String>) {
        self.fields
            .push((key.to_owned(), value.into(), human.into()));
    }

    /// A count, shown as is.
    pub fn count(&mut self, key: &str, value: u64) {
        self.add(key, value, value.to_string());
    }

    /// Latency percentiles of a histogram recorded in microseconds.
    pub fn latency(&mut self, key: &str, histogram: &Histogram<u64>) {
        let summary = LatencySummary::of(histogram);
        self.add(key, summary.json(), summary.human());
    }

    /// The server's counters over a window (`server_key`), its CPU cost per unit of work done
    /// (`per_key`, "CPU-µs per {what}") and its resident memory at the end (`rss_kib`).
    pub fn server_cost(
        &mut self,
        server_key: &str,
        (before, after): (super::probe::Sample, super::probe::Sample),
        seconds: f64,
        (per_key, what, units): (&str, &str, u64),
    ) {
        let per_unit = (units > 0).then(|| (after.cpu_s - before.cpu_s) * 1e6 / units as f64);
        self.add(
            server_key,
            super::probe::delta_json(before, after, seconds),
            super::probe::delta_human(before, after, seconds),
        );
        self.add(
            per_key,
            per_unit,
            match per_unit {
                Some(us) => format!("{us:.1} CPU-µs per {what}"),
                None => format!("no {what}"),
            },
        );
        self.add(
            "rss_kib",
            after.rss_kib,
            format!("{} MiB resident at the end", after.rss_kib / 1024),
        );
    }

    pub fn text(&self) -> String {
        let width = self
            .fields
            .iter()
            .map(|(k, _, _)| k.len())
            .max()
            .unwrap_or(0);
        let mut out = format!("== loadgen {}\n", self.scenario);
        for (key, _, human) in &self.fields {
            out.push_str(&format!("  {key:<width$}  {human}\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        let mut map = Map::new();
        map.insert("scenario".into(), Value::from(self.scenario));
        for (key, value, _) in &self.fields {
            map.insert(key.clone(), value.clone());
        }
        Value::Object(map)
    }
}

/// Percentiles of a latency histogram (microseconds).
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
        })
    }

    fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {} p90 {} p99 {} max {} ({} samples)",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.count
        )
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1_000.0)
}

/// A histogram of microseconds from 1 µs to 10 minutes at 3 significant digits.
#[allow(clippy::expect_used)]
pub fn latency_histogram() -> Histogram<u64> {
    // Infallible: the bounds are constants within what `new_with_bounds` accepts
    // (1 <= low, 2 * low <= high, sigfig <= 5).
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records microseconds, clamped into the histogram's range.
pub fn record_us(h: &mut Histogram<u64>, us: i64) {
    h.saturating_record(us.max(1) as u64);
}

/// Merges histograms made by [`latency_histogram`] (same bounds, so it cannot fail; values
/// were clamped into range when recorded).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// How late a location frame arrived (µs since its `recorded_at`), if it was recorded inside
/// the measuring window `[start, end)`; frames from before or after the window are not counted.
pub fn delay_in_window(
    frame: &Value,
    received: DateTime<Utc>,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Option<i64> {
    let (start, end) = window?;
    let recorded = frame["recorded_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))?;
    (recorded >= start && recorded < end)
        .then(|| (received - recorded).num_microseconds().unwrap_or(i64::MAX))
}

/// A scenario's measured window, on the monotonic clock (for timers) and on the wall clock
/// (for comparing with the server's `recorded_at`).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
    pub start_wall: DateTime<Utc>,
    pub end_wall: DateTime<Utc>,
}

impl Window {
    /// A window of `duration` opening half a second from now, so every task has heard of it
    /// before it starts.
    pub fn opening_soon(duration: std::time::Duration) -> anyhow::Result<Self> {
        let lead = std::time::Duration::from_millis(500);
        let start = Instant::now() + lead;
        let start_wall = Utc::now() + chrono::Duration::from_std(lead)?;
        Ok(Window {
            start,
            end: start + duration,
            start_wall,
            end_wall: start_wall + chrono::Duration::from_std(duration)?,
        })
    }
}
