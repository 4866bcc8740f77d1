//! The platform's settings that administrators change while it runs: money rates, the
//! delivery fee table, dispatch, payment and GPS limits, support targets. Every change is a
//! new version, checked field by field before it is kept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::UserId;
use crate::domain::ledger::{Rates, WHOLE_BPS};
use crate::domain::money::{Currency, Money};

/// The delivery fee by distance: a base fee covering the first stretch, then a rate per
/// started kilometre, capped. In euro cents, scaled to each currency by its minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFees {
    /// The fee up to `included_m`, in cents (0 to 100,000).
    #[schema(example = 199, minimum = 0, maximum = 100000)]
    pub base_cents: i64,
    /// The distance the base fee covers, in metres (0 to 100,000).
    #[schema(example = 2000, maximum = 100000)]
    pub included_m: u32,
    /// Added per started kilometre beyond it, in cents (0 to 100,000).
    #[schema(example = 50, minimum = 0, maximum = 100000)]
    pub per_km_cents: i64,
    /// The most any delivery costs, in cents (at least `base_cents`, at most 1,000,000).
    #[schema(example = 1499, minimum = 0, maximum = 1000000)]
    pub cap_cents: i64,
}

impl Default for DeliveryFees {
    fn default() -> Self {
        DeliveryFees {
            base_cents: 199,
            included_m: 2_000,
            per_km_cents: 50,
            cap_cents: 1_499,
        }
    }
}

impl DeliveryFees {
    /// The fee of a delivery over `distance_m` in `currency`.
    pub fn fee(&self, distance_m: f64, currency: Currency) -> Money {
        let included = f64::from(self.included_m);
        let extra_km = if distance_m.is_finite() && distance_m > included {
            ((distance_m - included) / 1_000.0).ceil() as i64
        } else {
            0
        };
        let cents = self
            .base_cents
            .saturating_add(extra_km.saturating_mul(self.per_km_cents))
            .min(self.cap_cents);
        // Cents are 2 digits; JPY has 0, KWD 3.
        let amount = match currency.minor_digits() {
            0 => (cents + 50) / 100,
            3 => cents.saturating_mul(10),
            _ => cents,
        };
        Money::new(amount, currency)
    }
}

/// The settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlatformSettings {
    /// The platform's commission on the goods, in basis points, for stores without their own
    /// rate; frozen on each order at checkout.
    #[schema(maximum = 10000, example = 1500)]
    pub commission_bps: u32,
    /// The courier's part of the delivery fee, in basis points.
    #[schema(maximum = 10000, example = 8000)]
    pub courier_fee_bps: u32,
    pub delivery_fees: DeliveryFees,
    /// How far from a store the dispatcher looks for couriers, in kilometres.
    #[schema(example = 8.0)]
    pub dispatch_radius_km: f64,
    /// How long a courier has to answer a delivery offer.
    #[schema(example = 20)]
    pub offer_timeout_secs: u64,
    /// How long a new order waits for its payment (and its stock is held).
    #[schema(example = 900)]
    pub payment_timeout_secs: u64,
    /// GPS points less accurate than this are dropped, in metres.
    #[schema(example = 100.0)]
    pub gps_max_accuracy_m: f64,
    /// How long after a verified delivery its money becomes payable.
    #[schema(example = 86400)]
    pub payout_hold_secs: u64,
    /// A support ticket waiting on an administrator longer than this is overdue.
    #[schema(example = 14400)]
    pub support_overdue_secs: u64,
}

impl PlatformSettings {
    pub fn rates(&self) -> Rates {
        Rates {
            commission_bps: self.commission_bps,
            courier_fee_bps: self.courier_fee_bps,
        }
    }

    pub fn offer_timeout(&self) -> Duration {
        Duration::from_secs(self.offer_timeout_secs)
    }

    pub fn payment_timeout(&self) -> Duration {
        Duration::from_secs(self.payment_timeout_secs)
    }

    pub fn payout_hold(&self) -> Duration {
        Duration::from_secs(self.payout_hold_secs)
    }

    pub fn support_overdue(&self) -> Duration {
        Duration::from_secs(self.support_overdue_secs)
    }

    /// These settings with `patch` applied, each field it changes checked; the first field
    /// out of its range is named. Fields it leaves alone are not judged: the environment may
    /// have given the first version values outside what the API takes (tests' short timeouts).
    pub fn patched(&self, patch: &SettingsPatch) -> Result<PlatformSettings, SettingRefused> {
        let mut next = *self;
        macro_rules! take {
            ($field:ident) => {
                if let Some(value) = patch.$field {
                    next.$field = value;
                }
            };
        }
        take!(commission_bps);
        take!(courier_fee_bps);
        take!(delivery_fees);
        take!(dispatch_radius_km);
        take!(offer_timeout_secs);
        take!(payment_timeout_secs);
        take!(gps_max_accuracy_m);
        take!(payout_hold_secs);
        take!(support_overdue_secs);
        next.check_where(|field| patch.names(field))?;
        Ok(next)
    }

    /// Refuses settings with a field out of its range.
    pub fn check(&self) -> Result<(), SettingRefused> {
        self.check_where(|_| true)
    }

    /// Checks the fields `judged` names (by their top-level name).
    fn check_where(&self, judged: impl Fn(&str) -> bool) -> Result<(), SettingRefused> {
        let refuse =
            |field: &'static str, reason: &'static str| Err(SettingRefused { field, reason });
        const DAY: u64 = 24 * 3600;
        let fees = &self.delivery_fees;
        if judged("commission_bps") && self.commission_bps > WHOLE_BPS {
            return refuse("commission_bps", "must be between 0 and 10000 basis points");
        }
        if judged("courier_fee_bps") && self.courier_fee_bps > WHOLE_BPS {
            return refuse(
                "courier_fee_bps",
                "must be between 0 and 10000 basis points",
            );
        }
        if judged("delivery_fees") {
            if !(0..=100_000).contains(&fees.base_cents) {
                return refuse("delivery_fees.base_cents", "must be between 0 and 100000");
            }
            if fees.included_m > 100_000 {
                return refuse("delivery_fees.included_m", "must be between 0 and 100000");
            }
            if !(0..=100_000).contains(&fees.per_km_cents) {
                return refuse("delivery_fees.per_km_cents", "must be between 0 and 100000");
            }
            if fees.cap_cents < fees.base_cents || fees.cap_cents > 1_000_000 {
                return refuse(
                    "delivery_fees.cap_cents",
                    "must be at least base_cents and at most 1000000",
                );
            }
        }
        if judged("dispatch_radius_km")
            && !(self.dispatch_radius_km.is_finite()
                && (0.5..=50.0).contains(&self.dispatch_radius_km))
        {
            return refuse("dispatch_radius_km", "must be between 0.5 and 50");
        }
        if judged("offer_timeout_secs") && !(5..=600).contains(&self.offer_timeout_secs) {
            return refuse("offer_timeout_secs", "must be between 5 and 600");
        }
        if judged("payment_timeout_secs") && !(60..=DAY).contains(&self.payment_timeout_secs) {
            return refuse("payment_timeout_secs", "must be between 60 and 86400");
        }
        if judged("gps_max_accuracy_m")
            && !(self.gps_max_accuracy_m.is_finite()
                && (5.0..=1_000.0).contains(&self.gps_max_accuracy_m))
        {
            return refuse("gps_max_accuracy_m", "must be between 5 and 1000");
        }
        if judged("payout_hold_secs") && self.payout_hold_secs > 90 * DAY {
            return refuse("payout_hold_secs", "must be between 0 and 7776000");
        }
        if judged("support_overdue_secs") && !(60..=30 * DAY).contains(&self.support_overdue_secs) {
            return refuse("support_overdue_secs", "must be between 60 and 2592000");
        }
        Ok(())
    }
}

/// A change of some settings; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"commission_bps": 1200, "offer_timeout_secs": 30}))]
pub struct SettingsPatch {
    #[schema(maximum = 10000)]
    pub commission_bps: Option<u32>,
    #[schema(maximum = 10000)]
    pub courier_fee_bps: Option<u32>,
    pub delivery_fees: Option<DeliveryFees>,
    #[schema(minimum = 0.5, maximum = 50.0)]
    pub dispatch_radius_km: Option<f64>,
    #[schema(minimum = 5, maximum = 600)]
    pub offer_timeout_secs: Option<u64>,
    #[schema(minimum = 60, maximum = 86400)]
    pub payment_timeout_secs: Option<u64>,
    #[schema(minimum = 5.0, maximum = 1000.0)]
    pub gps_max_accuracy_m: Option<f64>,
    #[schema(maximum = 7776000)]
    pub payout_hold_secs: Option<u64>,
    #[schema(minimum = 60, maximum = 2592000)]
    pub support_overdue_secs: Option<u64>,
    /// The version this change was made against: when given and no longer current, the change
    /// is refused (409) instead of overwriting another administrator's.
    #[schema(minimum = 1)]
    pub version: Option<u64>,
}

impl SettingsPatch {
    /// Whether the patch changes the field of that top-level name.
    fn names(&self, field: &str) -> bool {
        match field {
            "commission_bps" => self.commission_bps.is_some(),
            "courier_fee_bps" => self.courier_fee_bps.is_some(),
            "delivery_fees" => self.delivery_fees.is_some(),
            "dispatch_radius_km" => self.dispatch_radius_km.is_some(),
            "offer_timeout_secs" => self.offer_timeout_secs.is_some(),
            "payment_timeout_secs" => self.payment_timeout_secs.is_some(),
            "gps_max_accuracy_m" => self.gps_max_accuracy_m.is_some(),
            "payout_hold_secs" => self.payout_hold_secs.is_some(),
            "support_overdue_secs" => self.support_overdue_secs.is_some(),
            _ => false,
        }
    }
}

/// A field out of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct SettingRefused {
    pub field: &'static str,
    pub reason: &'static str,
}

/// One version of the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingsVersion {
    /// 1 for the settings taken from the environment at the platform's first start, then one
    /// more per change.
    pub version: u64,
    pub settings: PlatformSettings,
    pub changed_at: DateTime<Utc>,
    /// The administrator who made the change (none for the first version).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub changed_by: Option<UserId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PlatformSettings {
        PlatformSettings {
            commission_bps: 1_500,
            courier_fee_bps: 8_000,
            delivery_fees: DeliveryFees::default(),
            dispatch_radius_km: 8.0,
            offer_timeout_secs: 20,
            payment_timeout_secs: 900,
            gps_max_accuracy_m: 100.0,
            payout_hold_secs: 86_400,
            support_overdue_secs: 14_400,
        }
    }

    #[test]
    fn the_default_fee_table_charges_as_before() {
        let fees = DeliveryFees::default();
        let eur = |m: f64| fees.fee(m, Currency::EUR).amount_minor;
        assert_eq!(eur(500.0), 199);
        assert_eq!(eur(2_000.0), 199);
        assert_eq!(eur(2_001.0), 249);
        assert_eq!(eur(5_500.0), 399);
        assert_eq!(eur(500_000.0), 1_499);
        assert_eq!(eur(f64::NAN), 199);
        let jpy: Currency = "JPY".parse().unwrap_or(Currency::EUR);
        assert_eq!(fees.fee(500.0, jpy).amount_minor, 2);
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_names_the_field_it_refuses() {
        let base = defaults();
        let patch = SettingsPatch {
            offer_timeout_secs: Some(45),
            ..SettingsPatch::default()
        };
        let next = base.patched(&patch).unwrap_or(base);
        assert_eq!(next.offer_timeout_secs, 45);
        assert_eq!(next.commission_bps, base.commission_bps);

        let refused = |patch: SettingsPatch| base.patched(&patch).err().map(|e| e.field);
        assert_eq!(
            refused(SettingsPatch {
                commission_bps: Some(10_001),
                ..SettingsPatch::default()
            }),
            Some("commission_bps")
        );
        assert_eq!(
            refused(SettingsPatch {
                dispatch_radius_km: Some(f64::NAN),
                ..SettingsPatch::default()
            }),
            Some("dispatch_radius_km")
        );
        assert_eq!(
            refused(SettingsPatch {
                delivery_fees: Some(DeliveryFees {
                    cap_cents: 100,
                    ..DeliveryFees::default()
                }),
                ..SettingsPatch::default()
            }),
            Some("delivery_fees.cap_cents")
        );
        assert!(base.check().is_ok());

        // A field the environment set outside the API's ranges does not block other changes.
        let short = PlatformSettings {
            payment_timeout_secs: 4,
            ..base
        };
        let rates = SettingsPatch {
            commission_bps: Some(1_000),
            ..SettingsPatch::default()
        };
        assert_eq!(short.patched(&rates).map(|s| s.commission_bps), Ok(1_000));
        assert!(short.check().is_err());
    }
}
