//! Points in time. The core never reads a clock: every function that needs "now" takes it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in microseconds since the Unix epoch.
///
/// Serialized as an RFC 3339 string (`2026-11-24T16:18:30.123456Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The last second of year 9999: "not until something else happens" (a workflow task waiting
    /// for its parents). Still a valid RFC 3339 time.
    pub const NEVER: Timestamp = Timestamp(253_402_300_799_000_000);

    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Converts a `SystemTime` the caller read from its clock.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(micros))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Any time the wire can carry (years 0000 to 9999) prints as RFC 3339; only a value
        // beyond them, which no request can give, prints as raw microseconds.
        match self.rfc3339() {
            Some(text) => f.write_str(text.as_str()),
            None => write!(f, "@{}us", self.0),
        }
    }
}

/// A timestamp's RFC 3339 form, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, in a buffer of its own: every
/// event line and API answer carries a few, and chrono's formatter (a `String` per call, then
/// `fmt` machinery per field) was half of what appending an event cost the store's writer.
pub(crate) struct Rfc3339([u8; 27]);

impl Rfc3339 {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

impl Timestamp {
    /// The RFC 3339 form, for years 0000 to 9999 (`None` beyond them).
    pub(crate) fn rfc3339(self) -> Option<Rfc3339> {
        const MICROS_PER_DAY: i64 = 86_400_000_000;
        let (days, micros) = (self.0.div_euclid(MICROS_PER_DAY), self.0.rem_euclid(MICROS_PER_DAY));
        let (year, month, day) = civil_from_days(days);
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let seconds = (micros / 1_000_000) as u32;
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, seconds / 3600);
        put(14, 2, seconds / 60 % 60);
        put(17, 2, seconds % 60);
        put(20, 6, (micros % 1_000_000) as u32);
        Some(Rfc3339(b))
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01: (year, month 1-12, day 1-31).
///
/// Counted in 400-year eras, which repeat exactly (146,097 days), with each year taken from
/// March, so that February's leap day falls at a year's end. chrono's calendar had been a third
/// of what writing a timestamp cost, and a stream writes a few per event.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365, from March
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339_weak(s).map(Timestamp::from_system_time)
    }
}

impl Timestamp {
    /// Reads a strict RFC 3339 time, with any offset (`2026-01-02T03:04:05.5+01:00`): the wire
    /// format, as the OpenAPI document's `date-time` says. (`FromStr` is looser, for people.)
    pub fn from_rfc3339(s: &str) -> Option<Timestamp> {
        let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        Some(Timestamp(t.timestamp_micros()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(text) => s.serialize_str(text.as_str()),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::from_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp like 2026-01-02T03:04:05Z"))
    }
}

/// Serde helpers for durations carried as whole milliseconds.
pub mod duration_ms {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::from_micros(1_764_000_000_123_456);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2025-11-24T16:00:00.123456Z\"");
        let back: Timestamp = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn never_is_printable_and_parses_back() {
        let s = Timestamp::NEVER.to_string();
        assert_eq!(s, "9999-12-31T23:59:59.000000Z");
        assert_eq!(s.parse::<Timestamp>().unwrap(), Timestamp::NEVER);
    }

    proptest::proptest! {
        /// The digits written by hand are chrono's own RFC 3339 form, for every time the wire
        /// can carry, and beyond it the raw form.
        #[test]
        fn prints_as_chrono_formats_it(micros in -62_167_219_200_000_000i64..=253_402_300_799_999_999) {
            let t = Timestamp::from_micros(micros);
            let chrono = chrono::DateTime::from_timestamp_micros(micros).unwrap();
            let expected = chrono.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            proptest::prop_assert_eq!(t.to_string(), expected.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{expected}\""));
        }
    }

    #[test]
    fn the_calendars_edges_print_as_chrono_formats_them() {
        // Leap days of a century year that is one (2000) and of one that is not (1900), the first
        // and last day the wire carries, the epoch and the day before it.
        for day in [
            "2000-02-29",
            "2000-03-01",
            "1900-02-28",
            "1900-03-01",
            "0000-01-01",
            "0000-02-29",
            "9999-12-31",
            "1970-01-01",
            "1969-12-31",
            "2024-12-31",
            "2100-03-01",
        ] {
            let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
            for time in [chrono::NaiveTime::MIN, chrono::NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap()] {
                let at = date.and_time(time).and_utc();
                let t = Timestamp::from_micros(at.timestamp_micros());
                assert_eq!(t.to_string(), at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            }
        }
    }

    #[test]
    fn beyond_year_9999_or_before_year_0_prints_raw() {
        assert_eq!(Timestamp::from_micros(253_402_300_800_000_000).to_string(), "@253402300800000000us");
        assert_eq!(Timestamp::from_micros(-62_167_219_200_000_001).to_string(), "@-62167219200000001us");
        assert_eq!(Timestamp::from_micros(i64::MAX).to_string(), format!("@{}us", i64::MAX));
    }

    #[test]
    fn duration_since_saturates_at_zero() {
        let a = Timestamp::from_millis(10);
        let b = Timestamp::from_millis(20);
        assert_eq!(b.duration_since(a), Duration::from_millis(10));
        assert_eq!(a.duration_since(b), Duration::ZERO);
    }
}
