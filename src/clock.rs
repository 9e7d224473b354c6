//! Time: the [`Clock`] the library reads "now" from (the system's, or a [`ManualClock`] that
//! tests and the Site Recovery simulator set and advance), and times and durations at the
//! edges (CLI, JSON, file formats) through [`jiff`].
//!
//! Inside the library a time is milliseconds since 1970-01-01 UTC (`u64`, as the journal's
//! records carry it) or a [`jiff::Timestamp`]; a duration is milliseconds. Text is parsed only
//! here: [`parse_time`] takes RFC 3339 (`2026-11-22T06:00:00Z`, any offset, or none for UTC)
//! and refuses dates that do not exist (`2026-02-31`, `2025-02-29`); [`parse_duration`] takes
//! `90s`, `15m`, `6h`, `15d`, `1h30m` (days are 24 hours).

use crate::error::{Error, Result};
use jiff::{Span, SpanTotal, Timestamp, Unit};
use std::sync::Mutex;

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// The current time in milliseconds since the Unix epoch (0 before it).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.now().as_millisecond()).unwrap_or(0)
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: for tests and simulated time.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// A clock standing at `ms` milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// The time is past what a timestamp holds (year 9999).
    pub fn at_ms(ms: u64) -> Result<Self> {
        Ok(ManualClock::new(timestamp(ms)?))
    }

    /// Sets the time (it may go back: the caller decides).
    pub fn set(&self, t: Timestamp) {
        *crate::sync::lock(&self.now) = t;
    }

    /// Moves the clock on by `ms` milliseconds; returns the new time.
    ///
    /// # Errors
    /// The new time is past what a timestamp holds.
    pub fn advance_ms(&self, ms: u64) -> Result<Timestamp> {
        let mut g = crate::sync::lock(&self.now);
        let by = i64::try_from(ms)
            .ok()
            .and_then(|ms| jiff::SignedDuration::from_millis(ms).into());
        let next = by
            .and_then(|d: jiff::SignedDuration| g.checked_add(d).ok())
            .ok_or_else(|| {
                Error::argument(format!(
                    "advancing the clock by {} from {}: past year 9999",
                    format_duration(ms),
                    *g
                ))
            })?;
        *g = next;
        Ok(next)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *crate::sync::lock(&self.now)
    }
}

/// The timestamp `ms` milliseconds after the Unix epoch.
///
/// # Errors
/// Past year 9999.
pub fn timestamp(ms: u64) -> Result<Timestamp> {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .ok_or_else(|| Error::argument(format!("{ms} ms since 1970: past year 9999")))
}

/// Parses an RFC 3339 time (`2026-11-22T06:00:00Z`, `2026-11-22T07:00:00+01:00`, a space for
/// the `T`, fractions to the millisecond; without an offset it is UTC) into milliseconds since
/// the Unix epoch.
///
/// # Errors
/// Not such a time; a date that does not exist (`2026-02-31`); before 1970; finer than a
/// millisecond.
pub fn parse_time(s: &str) -> Result<u64> {
    let t = s.trim();
    let ts = t.parse::<Timestamp>().or_else(|e| {
        // No offset: a civil time, read as UTC.
        match t.parse::<jiff::civil::DateTime>() {
            Ok(dt) => jiff::tz::TimeZone::UTC.to_timestamp(dt),
            Err(_) => Err(e),
        }
    });
    let ts = ts.map_err(|e| {
        Error::argument(format!(
            "time {s:?}: expected an RFC 3339 time such as 2026-11-22T06:00:00Z: {e}"
        ))
    })?;
    if ts.subsec_nanosecond() % 1_000_000 != 0 {
        return Err(Error::argument(format!(
            "time {s:?}: times are kept to the millisecond; give at most 3 fractional digits"
        )));
    }
    u64::try_from(ts.as_millisecond())
        .map_err(|_| Error::argument(format!("time {s:?}: before 1970-01-01T00:00:00Z")))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-22T06:00:00Z`, with
/// `.mmm` when not a whole second).
pub fn format_time(ms: u64) -> String {
    match timestamp(ms) {
        Ok(ts) if ms.is_multiple_of(1000) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        // A time from a damaged file, past year 9999: shown as it is.
        Err(_) => format!("{ms} ms after 1970-01-01T00:00:00Z"),
    }
}

/// Parses a duration such as `90s`, `5m`, `6h`, `15d`, `1h30m` (or `1 hour 30 minutes`,
/// ISO 8601 `PT6H`) into milliseconds; days are 24 hours.
///
/// # Errors
/// Not a duration (a number without a unit, say), negative, units above days (weeks, months:
/// their length varies), or finer than a millisecond.
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = |why: String| {
        Error::argument(format!(
            "duration {s:?}: expected a duration such as 90m, 6h or 15d: {why}"
        ))
    };
    let span: Span = s.trim().parse().map_err(|e| bad(format!("{e}")))?;
    if span.is_negative() {
        return Err(bad("it is negative".into()));
    }
    if span.get_weeks() != 0 || span.get_months() != 0 || span.get_years() != 0 {
        return Err(bad(
            "weeks, months and years vary in length: give days".into()
        ));
    }
    let ms = span
        .total(SpanTotal::from(Unit::Millisecond).days_are_24_hours())
        .map_err(|e| bad(format!("{e}")))?;
    if ms.fract() != 0.0 {
        return Err(bad("finer than a millisecond".into()));
    }
    if !(0.0..=u64::MAX as f64).contains(&ms) {
        return Err(bad("too long".into()));
    }
    Ok(ms as u64)
}

/// Formats milliseconds as a short duration (`1h30m`, `5m`, `42s`, `0s`).
pub fn format_duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (v, u) in [(d, 'd'), (h, 'h'), (m, 'm'), (sec, 's')] {
        if v > 0 {
            out.push_str(&format!("{v}{u}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2000-01-01T00:00:00Z").unwrap(), 946_684_800_000);
        assert_eq!(
            parse_time("2026-11-22T06:30:15.5Z").unwrap(),
            1_795_329_015_500
        );
        for ms in [0, 946_684_800_000, 1_795_329_015_500, 4_102_444_800_123] {
            assert_eq!(
                parse_time(&format_time(ms)).unwrap(),
                ms,
                "{}",
                format_time(ms)
            );
        }
        assert_eq!(format_time(1_795_329_015_500), "2026-11-22T06:30:15.500Z");
        assert_eq!(format_time(946_684_800_000), "2000-01-01T00:00:00Z");
        assert!(format_time(u64::MAX).contains("ms after 1970"));
    }

    #[test]
    fn invalid_dates_are_refused_with_a_clear_error() {
        for s in [
            "2026-02-31T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:01Z",
            "2026-01-01T12:60:00Z",
            "yesterday",
            "",
        ] {
            let e = parse_time(s).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            assert!(
                e.to_string().contains("expected an RFC 3339 time"),
                "{s}: {e}"
            );
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
        assert!(
            parse_time("1969-12-31T23:59:59Z")
                .unwrap_err()
                .to_string()
                .contains("before 1970")
        );
        assert!(
            parse_time("2026-01-01T00:00:00.0001Z")
                .unwrap_err()
                .to_string()
                .contains("millisecond")
        );
    }

    #[test]
    fn leap_years() {
        // 2024 and 2000 are leap years; 2100 and 1900 are not.
        let feb29 = parse_time("2024-02-29T00:00:00Z").unwrap();
        assert_eq!(
            parse_time("2024-03-01T00:00:00Z").unwrap() - feb29,
            86_400_000
        );
        assert!(parse_time("2000-02-29T12:00:00Z").is_ok());
        assert!(parse_time("2100-02-29T12:00:00Z").is_err());
        assert_eq!(
            parse_time("2024-12-31T00:00:00Z").unwrap()
                - parse_time("2024-01-01T00:00:00Z").unwrap(),
            365 * 86_400_000
        );
    }

    #[test]
    fn offsets_and_zones() {
        let utc = parse_time("2026-11-22T06:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-22T07:00:00+01:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-21T22:00:00-08:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22T11:30:00+05:30").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22T06:00:00+00:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22 06:00:00Z").unwrap(), utc);
        // No offset: UTC.
        assert_eq!(parse_time("2026-11-22T06:00:00").unwrap(), utc);
        // An offset that crosses the date line into a leap day.
        assert_eq!(
            parse_time("2024-02-29T01:00:00+02:00").unwrap(),
            parse_time("2024-02-28T23:00:00Z").unwrap()
        );
        // Out-of-range offsets are refused.
        assert!(parse_time("2026-11-22T06:00:00+26:00").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("6h").unwrap(), 6 * 3_600_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("15m").unwrap(), 900_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("15d").unwrap(), 15 * 86_400_000);
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("PT6H").unwrap(), 6 * 3_600_000);
        for bad in ["5", "h", "", "-1h", "2w", "1mo", "1y", "1.0000001s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("expected a duration"), "{bad}: {e}");
        }
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn clocks() {
        let c = ManualClock::at_ms(1_000).unwrap();
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(2 * 3_600_000).unwrap();
        assert_eq!(c.now_ms(), 1_000 + 2 * 3_600_000);
        c.set(Timestamp::UNIX_EPOCH);
        assert_eq!(c.now_ms(), 0);
        assert!(c.advance_ms(u64::MAX).is_err());
        assert_eq!(c.now_ms(), 0, "a failed advance changes nothing");
        let dyn_clock: &dyn Clock = &SystemClock;
        assert!(dyn_clock.now_ms() > 1_700_000_000_000);
    }
}
