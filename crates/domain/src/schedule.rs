//! Schedules: a record that starts a run of its command at each due time
//! (`--every 30s`, `--cron "*/5 * * * *"`). Each run is a record of its own
//! ([`crate::ProcessRecord::scheduled_from`]); the schedule itself has no
//! process. Due times are worked out here, from the schedule, the time it
//! was made (the anchor of `every`) and a time to count from: pure
//! arithmetic on the calendar, no clock.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ProcessId, Span, Timestamp};

/// When and how a schedule starts its runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// A run every span, counted from when the schedule was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Span>,
    /// A run at each time a standard five-field cron expression names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone the cron expression reads its hours in
    /// (`Europe/Paris`); UTC without one. Clients fill in their local zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// What a due time does while the previous run is still live.
    #[serde(default, skip_serializing_if = "Overlap::is_skip")]
    pub overlap: Overlap,
    /// Each run starts up to this long after its due time (the same delay
    /// for the same due time, wherever it is worked out), so that many
    /// schedules do not all start on the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Span>,
    /// The first run starts as the schedule is made, not at the first due time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_now: bool,
    /// After a time no daemon ran (a reboot), the last due time missed is
    /// run late, once; without it, missed due times are counted and skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
}

/// A schedule as a front end receives it: text, each option named as the
/// front end names it (`--every` on the command line, `every` in MCP and
/// in a project file), so that an error names what the user typed.
#[derive(Debug, Clone, Default)]
pub struct ScheduleAsked<'a> {
    /// `every`: a duration ("30s").
    pub every: Option<&'a str>,
    /// `cron`: five fields.
    pub cron: Option<&'a str>,
    /// `tz`: an IANA zone.
    pub tz: Option<&'a str>,
    /// `overlap`: skip, queue or allow.
    pub overlap: Option<&'a str>,
    /// `jitter`: a duration.
    pub jitter: Option<&'a str>,
    /// `run_now`.
    pub run_now: bool,
    /// `catch_up`.
    pub catch_up: bool,
}

impl ScheduleAsked<'_> {
    /// The schedule asked for, if any: `None` without `every` or `cron`.
    /// A cron expression without a zone reads its hours in the zone
    /// `local_zone` gives (the caller's machine's), asked for only then.
    ///
    /// # Errors
    /// What cannot work, named with `flag` before each option's name
    /// (`"--"` for the command line, `""` elsewhere).
    pub fn schedule(
        &self,
        local_zone: impl FnOnce() -> String,
        flag: &str,
    ) -> Result<Option<Schedule>, String> {
        if self.every.is_none() && self.cron.is_none() {
            let companions = self.tz.is_some()
                || self.overlap.is_some()
                || self.jitter.is_some()
                || self.run_now
                || self.catch_up;
            if companions {
                let name = |n: &str| {
                    format!(
                        "{flag}{}",
                        if flag.is_empty() {
                            n.to_owned()
                        } else {
                            n.replace('_', "-")
                        }
                    )
                };
                return Err(format!(
                    "{}, {}, {}, {} and {} need a schedule: {} or {}",
                    name("tz"),
                    name("overlap"),
                    name("jitter"),
                    name("run_now"),
                    name("catch_up"),
                    name("every"),
                    name("cron")
                ));
            }
            return Ok(None);
        }
        let duration = |text: Option<&str>, what: &str| {
            text.map(|t| t.parse::<Span>().map_err(|e| format!("{flag}{what}: {e}")))
                .transpose()
        };
        let schedule = Schedule {
            every: duration(self.every, "every")?,
            cron: self.cron.map(str::to_owned),
            tz: match (self.cron, self.tz) {
                (Some(_), None) => Some(local_zone()),
                (_, tz) => tz.map(str::to_owned),
            },
            overlap: self
                .overlap
                .map(str::parse)
                .transpose()
                .map_err(|e: ScheduleError| format!("{flag}overlap: {e}"))?
                .unwrap_or_default(),
            jitter: duration(self.jitter, "jitter")?,
            run_now: self.run_now,
            catch_up: self.catch_up,
        };
        schedule.validate().map_err(|e| e.to_string())?;
        Ok(Some(schedule))
    }
}

/// What a due time does while the previous run is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Nothing: the due time is skipped and counted.
    #[default]
    Skip,
    /// The run waits for the previous one to end, then starts.
    Queue,
    /// The run starts beside it.
    Allow,
}

impl Overlap {
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
    fn is_skip(&self) -> bool {
        *self == Overlap::Skip
    }
}

impl FromStr for Overlap {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Overlap::Skip),
            "queue" => Ok(Overlap::Queue),
            "allow" => Ok(Overlap::Allow),
            other => Err(ScheduleError::Overlap(other.to_owned())),
        }
    }
}

/// A schedule that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ScheduleError {
    /// Neither `every` nor `cron`, or both.
    #[error(
        "a schedule needs exactly one of every (--every 30s) and cron (--cron \"*/5 * * * *\")"
    )]
    NotOneCadence,
    /// `every` below the shortest period bpm runs.
    #[error("every {0} is too short: a schedule runs at most once a second")]
    TooOften(Span),
    /// The cron expression does not parse, or is not five fields.
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/Paris or UTC")]
    TimeZone(String),
    /// A time zone was given without a cron expression.
    #[error("a time zone (--tz) applies to a cron expression only")]
    ZoneWithoutCron,
    /// The overlap rule is not one bpm knows.
    #[error("unknown overlap {0:?}: expected skip, queue or allow")]
    Overlap(String),
    /// A jitter as long as the period would move a run past the next one.
    #[error("jitter {jitter} is not shorter than the period every {every}")]
    JitterTooLong {
        /// The jitter.
        jitter: Span,
        /// The period.
        every: Span,
    },
}

/// The shortest `every`.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// How far a cron expression's due times are followed to find the last
/// one missed before giving up (a minute's expression over about a week).
const MAX_CRON_STEPS: usize = 10_000;

impl Schedule {
    /// Checks the schedule can work.
    ///
    /// # Errors
    /// The first [`ScheduleError`] found.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match (&self.every, &self.cron) {
            (Some(every), None) => {
                if every.as_duration() < MIN_EVERY {
                    return Err(ScheduleError::TooOften(*every));
                }
                if self.tz.is_some() {
                    return Err(ScheduleError::ZoneWithoutCron);
                }
                if let Some(jitter) = self.jitter
                    && jitter >= *every
                {
                    return Err(ScheduleError::JitterTooLong {
                        jitter,
                        every: *every,
                    });
                }
            }
            (None, Some(expr)) => {
                parse_cron(expr)?;
                self.zone()?;
            }
            _ => return Err(ScheduleError::NotOneCadence),
        }
        Ok(())
    }

    fn zone(&self) -> Result<chrono_tz::Tz, ScheduleError> {
        match &self.tz {
            None => Ok(chrono_tz::UTC),
            Some(name) => name
                .parse()
                .map_err(|_| ScheduleError::TimeZone(name.clone())),
        }
    }

    /// The first due time strictly after `after`, for a schedule made at
    /// `anchor`. `None` when there is none (a cron expression for a date
    /// that never comes, or one past the year 9999).
    pub fn next_due(&self, anchor: Timestamp, after: Timestamp) -> Option<Timestamp> {
        if let Some(every) = self.every {
            let period = every.as_millis().max(1);
            let (a, t) = (anchor.as_millis(), after.as_millis());
            let steps = if t < a { 0 } else { (t - a) / period + 1 };
            return Some(Timestamp::from_millis(
                a.saturating_add(steps.saturating_mul(period)),
            ));
        }
        let cron = parse_cron(self.cron.as_deref()?).ok()?;
        let zone = self.zone().ok()?;
        let ms = i64::try_from(after.as_millis()).ok()?;
        let from = chrono::DateTime::from_timestamp_millis(ms)?.with_timezone(&zone);
        let next = cron.find_next_occurrence(&from, false).ok()?;
        u64::try_from(next.timestamp_millis())
            .ok()
            .map(Timestamp::from_millis)
    }

    /// The last due time at or before `now`, counting from the due time
    /// `from` (itself at or before `now`), and how many due times that is
    /// from `from` on (`from` counting one). `None` if `from` is after `now`.
    pub fn last_due(
        &self,
        anchor: Timestamp,
        from: Timestamp,
        now: Timestamp,
    ) -> Option<(Timestamp, u64)> {
        if from > now {
            return None;
        }
        if let Some(every) = self.every {
            let period = every.as_millis().max(1);
            let steps = (now.as_millis() - from.as_millis()) / period;
            let last = Timestamp::from_millis(from.as_millis() + steps * period);
            return Some((last, steps + 1));
        }
        let (mut last, mut count) = (from, 1);
        for _ in 0..MAX_CRON_STEPS {
            match self.next_due(anchor, last) {
                Some(next) if next <= now => {
                    last = next;
                    count += 1;
                }
                _ => break,
            }
        }
        Some((last, count))
    }

    /// When the run due at `due` starts: `due`, plus the jitter's share
    /// for this schedule and due time.
    pub fn start_of(&self, schedule: ProcessId, due: Timestamp) -> Timestamp {
        let Some(jitter) = self.jitter.map(Span::as_millis).filter(|j| *j > 0) else {
            return due;
        };
        let delay = mix(schedule, due) % jitter;
        Timestamp::from_millis(due.as_millis().saturating_add(delay))
    }

    /// A short text of the cadence, as tables show it: `every 30s`,
    /// `cron */5 * * * * (Europe/Paris)`.
    pub fn cadence(&self) -> String {
        match (&self.every, &self.cron) {
            (Some(every), _) => format!("every {every}"),
            (None, Some(expr)) => match &self.tz {
                Some(tz) => format!("cron {expr} ({tz})"),
                None => format!("cron {expr}"),
            },
            (None, None) => String::new(),
        }
    }
}

/// Whether `name` is an IANA time zone bpm knows (`Europe/Paris`, `UTC`).
pub fn known_time_zone(name: &str) -> bool {
    name.parse::<chrono_tz::Tz>().is_ok()
}

fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    let error = |reason: String| ScheduleError::Cron {
        expr: expr.to_owned(),
        reason,
    };
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(error(format!(
            "expected the five standard fields (minute hour day-of-month month day-of-week), found {fields}"
        )));
    }
    croner::Cron::new(expr)
        .parse()
        .map_err(|e| error(e.to_string()))
}

/// The id of the run of `schedule` due at `due`: the same wherever and
/// however often it is worked out, so a due time makes one record
/// however many nodes reach it (a store refuses a second record of an
/// id). A version-7 UUID: it sorts by its due time, as ids made by the
/// id generator sort by their creation.
pub fn run_id(schedule: ProcessId, due: Timestamp) -> ProcessId {
    let a = mix(schedule, due);
    let b = mix(schedule, Timestamp::from_millis(due.as_millis() ^ a));
    let mut tail = [0u8; 10];
    tail[..8].copy_from_slice(&a.to_le_bytes());
    tail[8..].copy_from_slice(&b.to_le_bytes()[..2]);
    ProcessId::from_uuid(
        uuid::Builder::from_unix_timestamp_millis(due.as_millis(), &tail).into_uuid(),
    )
}

/// A 64-bit mix (FNV-1a, then a finaliser) of a schedule's id and a due time.
fn mix(schedule: ProcessId, due: Timestamp) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule
        .as_uuid()
        .as_bytes()
        .iter()
        .chain(due.as_millis().to_le_bytes().iter())
    {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Where a schedule stands: kept on its record, so that it survives the
/// daemon and the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The next due time.
    pub next_due: Timestamp,
    /// Runs started.
    pub runs: u64,
    /// Due times skipped because the previous run was still live.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Due times missed while no daemon ran.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u64,
    /// The newest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ProcessId>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(s: &str) -> Schedule {
        Schedule {
            every: Some(s.parse().unwrap()),
            cron: None,
            tz: None,
            overlap: Overlap::Skip,
            jitter: None,
            run_now: false,
            catch_up: false,
        }
    }

    fn cron(expr: &str, tz: Option<&str>) -> Schedule {
        Schedule {
            every: None,
            cron: Some(expr.into()),
            tz: tz.map(str::to_owned),
            ..every("1s")
        }
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn every_counts_from_its_anchor() {
        let s = every("30s");
        assert_eq!(s.next_due(at(1_000), at(1_000)), Some(at(31_000)));
        assert_eq!(s.next_due(at(1_000), at(30_999)), Some(at(31_000)));
        assert_eq!(s.next_due(at(1_000), at(31_000)), Some(at(61_000)));
        assert_eq!(s.next_due(at(1_000), at(500)), Some(at(1_000)));
        assert_eq!(
            s.last_due(at(1_000), at(31_000), at(100_000)),
            Some((at(91_000), 3))
        );
    }

    #[test]
    fn cron_reads_hours_in_its_zone() {
        // 2026-11-26 00:00:00 UTC.
        let midnight = 1_795_651_200_000;
        let utc = cron("0 9 * * *", None);
        assert_eq!(
            utc.next_due(at(0), at(midnight)),
            Some(at(midnight + 9 * 3_600_000))
        );
        // Paris is UTC+1 in November: 09:00 there is 08:00 UTC.
        let paris = cron("0 9 * * *", Some("Europe/Paris"));
        assert_eq!(
            paris.next_due(at(0), at(midnight)),
            Some(at(midnight + 8 * 3_600_000))
        );
        let five = cron("*/5 * * * *", None);
        assert_eq!(
            five.next_due(at(0), at(midnight)),
            Some(at(midnight + 300_000))
        );
        assert_eq!(
            five.last_due(at(0), at(midnight + 300_000), at(midnight + 1_000_000)),
            Some((at(midnight + 900_000), 3))
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        assert!(matches!(
            cron("* * * *", None).validate(),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            cron("0 0 * * * *", None).validate(),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            cron("61 * * * *", None).validate(),
            Err(ScheduleError::Cron { .. })
        ));
        assert_eq!(
            cron("* * * * *", Some("Mars/Olympus")).validate(),
            Err(ScheduleError::TimeZone("Mars/Olympus".into()))
        );
        assert_eq!(
            every("500ms").validate(),
            Err(ScheduleError::TooOften("500ms".parse().unwrap()))
        );
        let both = Schedule {
            cron: Some("* * * * *".into()),
            ..every("1s")
        };
        assert_eq!(both.validate(), Err(ScheduleError::NotOneCadence));
        let jitter = Schedule {
            jitter: Some("5s".parse().unwrap()),
            ..every("5s")
        };
        assert!(matches!(
            jitter.validate(),
            Err(ScheduleError::JitterTooLong { .. })
        ));
        assert!(cron("*/5 * * * *", Some("Europe/Paris")).validate().is_ok());
    }

    #[test]
    fn a_due_time_has_one_run_id_and_one_start() {
        let s = Schedule {
            jitter: Some("10s".parse().unwrap()),
            ..every("1m")
        };
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(7));
        assert_eq!(run_id(id, at(60_000)), run_id(id, at(60_000)));
        assert_ne!(run_id(id, at(60_000)), run_id(id, at(120_000)));
        let other = ProcessId::from_uuid(uuid::Uuid::from_u128(8));
        assert_ne!(run_id(id, at(60_000)), run_id(other, at(60_000)));
        assert_eq!(run_id(id, at(60_000)).as_uuid().get_version_num(), 7);
        let start = s.start_of(id, at(60_000));
        assert_eq!(start, s.start_of(id, at(60_000)));
        assert!(start >= at(60_000) && start < at(70_000));
    }
}
