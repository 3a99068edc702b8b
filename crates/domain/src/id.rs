//! Process identity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity of one process record: a UUID, version 7 when bpm generates it,
/// so that ids sort by creation time.
///
/// The domain never generates ids (that needs a clock and randomness); the
/// id-generator port does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(Uuid);

impl ProcessId {
    /// Wraps a UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        ProcessId(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The last eight hex digits, as shown in tables. A v7 id begins with its
    /// creation time, so ids made together share their first digits; the last
    /// ones are random.
    pub fn short(&self) -> String {
        let s = self.0.simple().to_string();
        s[s.len() - 8..].to_owned()
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid process id {0:?}: expected a UUID")]
pub struct ProcessIdError(String);

impl FromStr for ProcessId {
    type Err = ProcessIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(ProcessId)
            .map_err(|_| ProcessIdError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_id_is_its_uuid() {
        let uuid = Uuid::from_u128(7);
        assert_eq!(ProcessId::from_uuid(uuid).as_uuid(), &uuid);
    }
    use super::*;

    #[test]
    fn parses_and_displays_hyphenated() {
        let text = "0190f5b2-7c1e-7a3b-9c4d-1234567890ab";
        let id: ProcessId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(id.short(), "567890ab");
        let err = "nope".parse::<ProcessId>().unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
    }
}
