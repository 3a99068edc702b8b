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

    /// Whether `text` could be this id as a person types it: its start,
    /// with or without its dashes, or at least its last four hex digits (as
    /// [`short`](Self::short) shows them). Case does not matter.
    pub fn fits(&self, text: &str) -> bool {
        let mut hyphenated = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut simple = [0u8; uuid::fmt::Simple::LENGTH];
        let full = self.0.hyphenated().encode_lower(&mut hyphenated).as_bytes();
        let digits = self.0.simple().encode_lower(&mut simple).as_bytes();
        let t = text.as_bytes();
        let begins = |s: &[u8]| s.len() >= t.len() && s[..t.len()].eq_ignore_ascii_case(t);
        !t.is_empty()
            && (begins(full)
                || begins(digits)
                || (t.len() >= 4
                    && t.len() <= digits.len()
                    && digits[digits.len() - t.len()..].eq_ignore_ascii_case(t)))
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
    fn an_id_fits_its_start_and_its_last_digits_in_any_case() {
        let id: ProcessId = "0190f3a2-7b1c-7def-8abc-0123456789ab".parse().expect("id");
        for fits in [
            "0190",
            "0190F3A2-7B",
            "0190f3a27b1c",
            "6789ab",
            "89AB",
            &id.short(),
        ] {
            assert!(id.fits(fits), "{fits}");
        }
        for not in [
            "",
            "9ab",
            "f3a2",
            "0190f3a2-7b1c-7def-8abc-0123456789ab0",
            "web",
        ] {
            assert!(!id.fits(not), "{not}");
        }
    }

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
