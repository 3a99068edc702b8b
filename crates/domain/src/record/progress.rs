//! A record's progress: a percentage, a message, and the time it
//! estimates the work ends.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A percentage from 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Percent(u8);

/// A progress value outside 0..=100.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid progress {0}: it must be a whole number from 0 to 100")]
pub struct PercentError(pub String);

impl Percent {
    /// Validates `value`.
    ///
    /// # Errors
    /// [`PercentError`] if `value` exceeds 100.
    pub fn new(value: u8) -> Result<Self, PercentError> {
        if value > 100 {
            return Err(PercentError(value.to_string()));
        }
        Ok(Percent(value))
    }

    /// Validates any number, as it may come from JSON or a command line.
    ///
    /// # Errors
    /// [`PercentError`] unless `value` is a whole number from 0 to 100.
    pub fn from_f64(value: f64) -> Result<Self, PercentError> {
        if value.fract() != 0.0 || !(0.0..=100.0).contains(&value) {
            return Err(PercentError(value.to_string()));
        }
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Percent(value as u8))
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Percent::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Reported progress, with an estimate of when the work ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far along, 0 to 100.
    pub percent: Percent,
    /// What it is doing.
    pub message: Option<String>,
    /// When this was reported.
    pub updated_at: Timestamp,
    /// The expected end, extrapolated from progress so far.
    pub eta: Option<Timestamp>,
}

/// The longest progress message kept; longer ones are cut.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// Derives the expected end from the progress made since `started_at`:
/// if `percent` took `elapsed`, the rest takes `elapsed * (100 - percent) / percent`.
pub fn estimate_eta(started_at: Timestamp, percent: Percent, now: Timestamp) -> Option<Timestamp> {
    let p = u64::from(percent.get());
    if p == 0 {
        return None;
    }
    if p == 100 {
        return Some(now);
    }
    let elapsed = now.as_millis().saturating_sub(started_at.as_millis());
    let remaining = elapsed.saturating_mul(100 - p) / p;
    Some(Timestamp::from_millis(
        now.as_millis().saturating_add(remaining),
    ))
}
