//! Time as the domain sees it: instants handed in by the caller, never read from a clock.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in milliseconds since the Unix epoch (UTC).
///
/// The domain never reads the time itself: every transition receives `now` from
/// the caller (in production the clock port, in tests a manual clock), which is
/// what makes the rules deterministic. Serialized as RFC 3339 (`2026-11-22T07:55:40.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// An instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `d`, saturating at the far future.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

// Howard Hinnant's civil-from-days algorithm: the proleptic Gregorian calendar
// without a date crate, so the domain stays dependency-light.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: how every timestamp of years 0 to 9999 is written.
const TEXT_LEN: usize = 24;

impl Timestamp {
    /// The text of a timestamp of years 0 to 9999, written without the
    /// formatting machinery (records carry several, and are written often).
    fn text(self) -> Option<[u8; TEXT_LEN]> {
        let days = i64::try_from(self.0 / 1000 / 86_400).ok()?;
        let (y, mo, d) = civil_from_days(days);
        let y = u64::try_from(y).ok().filter(|y| *y <= 9999)?;
        let rem = (self.0 / 1000) % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
                n /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, u64::from(mo));
        put(8, 2, u64::from(d));
        put(11, 2, rem / 3600);
        put(14, 2, (rem / 60) % 60);
        put(17, 2, rem % 60);
        put(20, 3, self.0 % 1000);
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => self.write_any_year(f),
        }
    }
}

impl Timestamp {
    /// The general form, for any year.
    fn write_any_year(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
        let rem = secs % 86_400;
        let (y, mo, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// The text was not an RFC 3339 UTC timestamp of the form `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected YYYY-MM-DDTHH:MM:SS[.mmm]Z")]
pub struct TimestampError(String);

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimestampError(s.to_owned());
        let body = s.strip_suffix('Z').ok_or_else(err)?;
        let (date, time) = body.split_once('T').ok_or_else(err)?;
        let mut date_parts = date.splitn(3, '-');
        let num = |it: &mut std::str::SplitN<'_, char>| -> Result<u32, TimestampError> {
            it.next().and_then(|p| p.parse().ok()).ok_or_else(err)
        };
        let (y, mo, d) = (
            num(&mut date_parts)?,
            num(&mut date_parts)?,
            num(&mut date_parts)?,
        );
        let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
        let mut time_parts = hms.splitn(3, ':');
        let (h, mi, sec) = (
            num(&mut time_parts)?,
            num(&mut time_parts)?,
            num(&mut time_parts)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return Err(err());
        }
        if y < 1970
            || frac.is_empty()
            || frac.len() > 9
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let ms: u64 = format!("{frac:0<3}")[..3].parse().map_err(|_| err())?;
        let days = u64::try_from(days_from_civil(i64::from(y), mo, d)).map_err(|_| err())?;
        let secs = days * 86_400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(sec);
        Ok(Timestamp(secs * 1000 + ms))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => {
                s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
            }
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated, non-negative length of time, written as `250ms`, `5s`, `1.5s`,
/// `2m`, `1h30m` or `1d`; a bare number means seconds.
///
/// ```
/// use bpm_domain::Span;
/// let s: Span = "1m30s".parse().unwrap();
/// assert_eq!(s.as_duration().as_secs(), 90);
/// assert!("ten seconds".parse::<Span>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(Duration);

/// The longest span bpm accepts: 365 days. Longer values are almost always a unit mistake.
pub const MAX_SPAN: Duration = Duration::from_hours(8760);

/// A duration could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpanError {
    /// The text is not a number followed by a unit (`ms`, `s`, `m`, `h`, `d`).
    #[error("invalid duration {0:?}: expected e.g. 250ms, 5s, 1.5s, 2m, 1h30m")]
    Syntax(String),
    /// The duration exceeds [`MAX_SPAN`].
    #[error("duration {0:?} is longer than the 365 days bpm accepts")]
    TooLong(String),
}

impl Span {
    /// A span of `d`; errors if longer than [`MAX_SPAN`].
    ///
    /// # Errors
    /// [`SpanError::TooLong`] if `d` exceeds [`MAX_SPAN`].
    pub fn new(d: Duration) -> Result<Self, SpanError> {
        if d > MAX_SPAN {
            return Err(SpanError::TooLong(format!("{}ms", d.as_millis())));
        }
        Ok(Span(d))
    }

    /// No time at all.
    pub const ZERO: Span = Span(Duration::ZERO);

    /// Whether it is no time at all.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// A span of whole milliseconds, clamped to [`MAX_SPAN`].
    pub fn from_millis(ms: u64) -> Self {
        Span(Duration::from_millis(ms).min(MAX_SPAN))
    }

    /// A span of whole seconds, clamped to [`MAX_SPAN`].
    pub fn from_secs(secs: u64) -> Self {
        Span(Duration::from_secs(secs).min(MAX_SPAN))
    }

    /// The span as a standard duration.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || SpanError::Syntax(s.to_owned());
        let text = s.trim();
        if text.is_empty() {
            return Err(syntax());
        }
        // Exact decimal arithmetic in nanoseconds: "6702670469ms" must not become
        // 6702670.469000001 s through a float.
        let mut total_ns: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..num_len];
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale_ns: u128 = match &rest[..unit_len] {
                // A bare number means seconds, and only alone.
                "" if num_len == text.len() => 1_000_000_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                _ => return Err(syntax()),
            };
            rest = &rest[unit_len..];
            let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && frac.is_empty() || frac.contains('.') || whole.len() > 20 {
                return Err(syntax());
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| syntax())?
            };
            let frac_digits = &frac[..frac.len().min(18)];
            let frac_value: u128 = if frac_digits.is_empty() {
                0
            } else {
                frac_digits.parse().map_err(|_| syntax())?
            };
            let frac_ns =
                frac_value * scale_ns / 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(0));
            total_ns = total_ns
                .saturating_add(whole.saturating_mul(scale_ns))
                .saturating_add(frac_ns);
        }
        if total_ns > MAX_SPAN.as_nanos() {
            return Err(SpanError::TooLong(s.to_owned()));
        }
        let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| syntax())?;
        let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| syntax())?;
        Ok(Span(Duration::new(secs, nanos)))
    }
}

fn span_from_secs_f64(secs: f64, original: &str) -> Result<Span, SpanError> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(SpanError::Syntax(original.to_owned()));
    }
    if secs > MAX_SPAN.as_secs_f64() {
        return Err(SpanError::TooLong(original.to_owned()));
    }
    Ok(Span(Duration::from_secs_f64(secs)))
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    /// Seconds as a number, or text such as `"1.5s"` or `"2m"`. One visitor
    /// takes either: every record holds several spans, and trying a number
    /// first, then text, built and dropped an error for each.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl serde::de::Visitor<'_> for Either {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds as a number, or text such as \"1.5s\" or \"2m\"")
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Span, E> {
                span_from_secs_f64(n, &n.to_string()).map_err(E::custom)
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Span, E> {
                self.visit_f64(n as f64)
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Span, E> {
                self.visit_f64(n as f64)
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Span, E> {
                t.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Either)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_span_over_the_limit_is_refused_by_value() {
        assert_eq!(
            Span::new(Duration::from_secs(90))
                .expect("short")
                .to_string(),
            "90s"
        );
        let e = Span::new(MAX_SPAN + Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, SpanError::TooLong(_)), "{e}");
        assert_eq!(
            Span::new(Duration::from_hours(2))
                .expect("two hours")
                .to_string(),
            "2h"
        );
    }

    #[test]
    fn a_span_given_as_seconds_must_be_finite_and_in_range() {
        assert_eq!(
            serde_json::from_str::<Span>("1.5")
                .expect("seconds")
                .as_millis(),
            1500
        );
        for bad in ["-1", "1e30"] {
            assert!(serde_json::from_str::<Span>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Span>("90").expect("whole seconds"),
            Span::from_secs(90)
        );
        let e = serde_json::from_str::<Span>("true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a duration"), "{e}");
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        let t = Timestamp::from_millis(1_795_334_140_123);
        assert_eq!(t.to_string(), "2026-11-22T07:55:40.123Z");
        assert_eq!("2026-11-22T07:55:40.123Z".parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            "2026-11-22T07:55:40Z".parse::<Timestamp>().unwrap(),
            Timestamp::from_millis(1_795_334_140_000)
        );
    }

    #[test]
    fn bad_timestamps_are_refused_with_the_text() {
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T25:00:00Z",
            "x",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn spans_parse_units_and_compounds() {
        let cases = [
            ("250ms", 250),
            ("5s", 5000),
            ("1.5s", 1500),
            ("2m", 120_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("7", 7000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(text.parse::<Span>().unwrap().as_millis(), ms, "{text}");
        }
        for bad in ["", "5 parsecs", "-1s", "s", "1x", "ms5", "400d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad} parsed");
        }
        assert!(matches!("400d".parse::<Span>(), Err(SpanError::TooLong(_))));
    }

    #[test]
    fn spans_deserialize_from_numbers_and_text() {
        let s: Span = serde_json::from_str("2.5").unwrap();
        assert_eq!(s.as_millis(), 2500);
        let s: Span = serde_json::from_str("\"1m\"").unwrap();
        assert_eq!(s.as_millis(), 60_000);
        assert!(serde_json::from_str::<Span>("\"soon\"").is_err());
        assert_eq!(
            serde_json::to_string(&Span::from_millis(1500)).unwrap(),
            "\"1500ms\""
        );
    }

    proptest! {
        #[test]
        fn timestamp_display_round_trips(ms in 0u64..4_102_444_800_000) {
            let t = Timestamp::from_millis(ms);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn the_quick_text_is_the_general_form(ms in 0u64..400_000_000_000_000) {
            struct General(Timestamp);
            impl fmt::Display for General {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    self.0.write_any_year(f)
                }
            }
            let t = Timestamp::from_millis(ms);
            let general = General(t).to_string();
            prop_assert_eq!(t.to_string(), general.clone());
            prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{general}\""));
            prop_assert_eq!(t.text().is_some(), ms < 253_402_300_800_000, "years 0 to 9999 only");
        }

        #[test]
        fn span_display_round_trips(ms in 0u64..365 * 86_400_000) {
            let s = Span::from_millis(ms);
            prop_assert_eq!(s.to_string().parse::<Span>().unwrap(), s);
        }
    }
}

/// How long from `now` until `text`, a start time: an RFC 3339 time
/// (`2026-11-30T14:30:00+01:00`), or `HH:MM` (or `HH:MM:SS`) today in
/// `zone` (an IANA name; UTC when none).
///
/// # Errors
/// A time that does not parse, a zone that is not known, or a time that
/// has passed, each saying what is accepted.
pub fn until_time(text: &str, now: Timestamp, zone: Option<&str>) -> Result<Span, String> {
    use chrono::TimeZone as _;
    let now_utc = i64::try_from(now.as_millis())
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .ok_or_else(|| "the time now is out of range".to_owned())?;
    let at = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&chrono::Utc)
    } else {
        let clock = chrono::NaiveTime::parse_from_str(text, "%H:%M")
            .or_else(|_| chrono::NaiveTime::parse_from_str(text, "%H:%M:%S"))
            .map_err(|_| {
                format!(
                    "{text:?}: expected HH:MM (today) or an RFC 3339 time such as 2026-11-30T14:30:00+01:00"
                )
            })?;
        let tz: chrono_tz::Tz = match zone {
            Some(z) => z.parse().map_err(|_| {
                format!("{z:?} is not a time zone (an IANA name such as Europe/Paris)")
            })?,
            None => chrono_tz::UTC,
        };
        let today = now_utc.with_timezone(&tz).date_naive();
        tz.from_local_datetime(&today.and_time(clock))
            .earliest()
            .ok_or_else(|| {
                format!("{text:?} does not occur today in {tz} (a clock change skips it)")
            })?
            .with_timezone(&chrono::Utc)
    };
    let wait = at.signed_duration_since(now_utc);
    if wait < chrono::TimeDelta::zero() {
        return Err(format!(
            "{text:?} has passed (it is {}): give a later time, or a date and time for another day",
            now_utc.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    let wait = wait
        .to_std()
        .map_err(|_| format!("{text:?}: too far away"))?;
    Span::new(wait).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod until_tests {
    use super::*;

    /// 2026-11-29T10:00:00Z.
    const NOW: Timestamp = Timestamp::from_millis(1_795_946_400_000);

    #[test]
    fn a_start_time_is_a_wait_from_now() {
        assert_eq!(until_time("10:30", NOW, None), Ok(Span::from_secs(1_800)));
        // 10:00 in UTC is 11:00 in Paris in November.
        assert_eq!(
            until_time("11:30", NOW, Some("Europe/Paris")),
            Ok(Span::from_secs(1_800))
        );
        assert_eq!(
            until_time("2026-11-29T12:00:00+01:00", NOW, None),
            Ok(Span::from_secs(3_600))
        );
    }

    #[test]
    fn a_past_or_unreadable_time_is_refused_saying_what_to_give() {
        let past = until_time("09:00", NOW, None).unwrap_err();
        assert!(
            past.contains("has passed") && past.contains("another day"),
            "{past}"
        );
        let bad = until_time("half past ten", NOW, None).unwrap_err();
        assert!(bad.contains("expected HH:MM"), "{bad}");
        let zone = until_time("10:30", NOW, Some("Mars/Olympus")).unwrap_err();
        assert!(zone.contains("not a time zone"), "{zone}");
    }
}
