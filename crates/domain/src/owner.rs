//! Lifetime tied to owners: a record with owners lives only while at least
//! one of them lives; when the last is gone for the record's grace, it is
//! stopped ([`crate::StopCause::OwnerGone`]).
//!
//! An owner is a process (`pid:PID`, known by its pid and its start time,
//! so that a recycled pid is never taken for it) or a session
//! (`session:NAME`), which lives while a process holds it: `bpm mcp` holds
//! its client's session, and a client that comes back under the same name
//! takes its processes back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// How long a record outlives its last owner unless `--owner-grace` says
/// otherwise.
pub const DEFAULT_OWNER_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// One process, known by its pid and its start time (in clock ticks since
/// boot, as `/proc/PID/stat` gives it; 0 when not known yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessRef {
    /// Its pid.
    pub pid: u32,
    /// When it started: what tells it from a later process given its pid.
    pub start: u64,
}

/// An owner of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Owner {
    /// A process.
    Process(ProcessRef),
    /// A session, alive while a process holds it.
    Session(SessionId),
}

/// Why an owner cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid owner {0:?}: expected pid:PID or session:NAME")]
pub struct OwnerError(pub String);

impl FromStr for Owner {
    type Err = OwnerError;

    /// `pid:PID` (its start time 0, to be found out), `pid:PID@START` as
    /// records keep it, or `session:NAME`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OwnerError(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "pid" => {
                let (pid, start) = match rest.split_once('@') {
                    Some((p, st)) => (p, st.parse().map_err(|_| bad())?),
                    None => (rest, 0),
                };
                let pid = pid.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
                Ok(Owner::Process(ProcessRef { pid, start }))
            }
            "session" => SessionId::new(rest).map(Owner::Session).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl Owner {
    /// How records keep it: `pid:PID@START` or `session:NAME`.
    fn kept(&self) -> String {
        match self {
            Owner::Process(p) => format!("pid:{}@{}", p.pid, p.start),
            Owner::Session(s) => format!("session:{s}"),
        }
    }
}

impl fmt::Display for Owner {
    /// As users write it: `pid:PID` or `session:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Process(p) => write!(f, "pid:{}", p.pid),
            Owner::Session(s) => write!(f, "session:{s}"),
        }
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.kept()
    }
}

impl TryFrom<String> for Owner {
    type Error = OwnerError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_read_as_users_write_them_and_keep_their_start() {
        assert_eq!(
            "pid:42".parse(),
            Ok(Owner::Process(ProcessRef { pid: 42, start: 0 }))
        );
        let kept = Owner::Process(ProcessRef { pid: 42, start: 7 });
        let json = serde_json::to_string(&kept).unwrap();
        assert_eq!(json, "\"pid:42@7\"");
        assert_eq!(serde_json::from_str::<Owner>(&json).unwrap(), kept);
        assert_eq!(kept.to_string(), "pid:42");
        assert_eq!(
            "session:agent-1".parse::<Owner>().unwrap().to_string(),
            "session:agent-1"
        );
        for bad in [
            "",
            "pid:",
            "pid:0",
            "pid:x",
            "session:",
            "session:a b",
            "42",
            "user:1",
        ] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }
}
