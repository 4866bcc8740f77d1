//! Money as integer minor units of an ISO 4217 currency. Never floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest price of one unit of anything hexmarket sells: one million major units. Anything
/// above is a typo (or an attack on totals), not a product.
pub const MAX_UNIT_PRICE_MAJOR: i64 = 1_000_000;

/// Active ISO 4217 codes hexmarket accepts, with their number of minor-unit digits.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency code hexmarket accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(&'static str);

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl Currency {
    pub const EUR: Currency = Currency("EUR");
    pub const USD: Currency = Currency("USD");

    pub fn code(self) -> &'static str {
        self.0
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn minor_digits(self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map_or(2, |(_, d)| *d)
    }

    /// Minor units in one major unit.
    pub fn minor_per_major(self) -> i64 {
        10_i64.pow(self.minor_digits())
    }
}

impl FromStr for Currency {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == raw)
            .map(|(c, _)| Currency(c))
            .ok_or_else(|| format!("{raw:?} is not an ISO 4217 currency hexmarket accepts"))
    }
}

impl TryFrom<String> for Currency {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ISO 4217 currency code, one hexmarket accepts"))
            .enum_values(Some(CURRENCIES.iter().map(|(code, _)| *code)))
            .examples([serde_json::json!("EUR")])
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

/// An amount of money: integer minor units (cents) of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Amount in minor units (for EUR: cents).
    pub amount_minor: i64,
    pub currency: Currency,
}

/// `12.50 EUR`, `-3.00 EUR`, `500 JPY`: major units with the currency's minor digits, then
/// the code.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.currency.minor_digits() as usize;
        let per = self.currency.minor_per_major();
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        let per = per.unsigned_abs().max(1);
        if digits == 0 {
            write!(f, "{sign}{abs} {}", self.currency)
        } else {
            write!(
                f,
                "{sign}{}.{:0digits$} {}",
                abs / per,
                abs % per,
                self.currency
            )
        }
    }
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Money {
            amount_minor,
            currency,
        }
    }

    /// A unit price: more than zero and at most [`MAX_UNIT_PRICE_MAJOR`] major units.
    pub fn unit_price(amount_minor: i64, currency: Currency) -> Result<Self, String> {
        let max = MAX_UNIT_PRICE_MAJOR * currency.minor_per_major();
        if amount_minor <= 0 {
            Err("a price must be more than zero".to_owned())
        } else if amount_minor > max {
            Err(format!(
                "a price may be at most {MAX_UNIT_PRICE_MAJOR} {currency} ({max} minor units)"
            ))
        } else {
            Ok(Money::new(amount_minor, currency))
        }
    }

    /// `self × n`, or `None` on overflow.
    pub fn times(self, n: u32) -> Option<Money> {
        self.amount_minor
            .checked_mul(i64::from(n))
            .map(|amount_minor| Money::new(amount_minor, self.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_parse_and_know_their_digits() {
        assert_eq!("EUR".parse::<Currency>().map(Currency::minor_digits), Ok(2));
        assert_eq!("JPY".parse::<Currency>().map(Currency::minor_digits), Ok(0));
        assert!("eur".parse::<Currency>().is_err());
        assert!("XXX".parse::<Currency>().is_err());
    }

    #[test]
    fn unit_prices_are_positive_and_bounded() {
        assert!(Money::unit_price(0, Currency::EUR).is_err());
        assert!(Money::unit_price(-5, Currency::EUR).is_err());
        assert!(Money::unit_price(100_000_000, Currency::EUR).is_ok());
        assert!(Money::unit_price(100_000_001, Currency::EUR).is_err());
        let jpy: Currency = "JPY".parse().unwrap_or(Currency::EUR);
        assert!(Money::unit_price(1_000_001, jpy).is_err());
    }
}
