//! Validated names: once one of these exists, it is known to be well formed.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

/// A name, label or other text value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NameError {
    /// What kind of value it was ("process name", "label key", ...).
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it was refused.
    pub why: &'static str,
}

/// How much of a refused value its message quotes: a value of 10,000
/// characters is named by its start and its length.
const QUOTED: usize = 64;

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NameError { what, value, why } = self;
        let length = value.chars().count();
        if length <= QUOTED {
            return write!(f, "invalid {what} {value:?}: {why}");
        }
        let start: String = value.chars().take(QUOTED).collect();
        write!(
            f,
            "invalid {what} {start:?}... ({length} characters in all): {why}"
        )
    }
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
    allowed_text: &'static str,
) -> Result<(), NameError> {
    let fail = |why| {
        Err(NameError {
            what,
            value: value.to_owned(),
            why,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.chars().count() > max {
        return fail(match max {
            63 => "it is longer than 63 characters",
            128 => "it is longer than 128 characters",
            _ => "it is longer than 1024 characters",
        });
    }
    if !value.chars().all(allowed) {
        return fail(allowed_text);
    }
    if value.trim() != value {
        return fail("it starts or ends with white space");
    }
    Ok(())
}

fn identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@')
}

fn printable(c: char) -> bool {
    !c.is_control()
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:literal, $allowed:expr, $allowed_text:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        // Shared, not copied, by every clone: a record's versions, events and
        // the store's copy hold one text.
        pub struct $ty(Arc<str>);

        impl $ty {
            #[doc = concat!("Validates `value` as a ", $what, ".")]
            ///
            /// # Errors
            /// [`NameError`] naming the value and the rule it breaks.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check($what, &value, $max, $allowed, $allowed_text)?;
                Ok($ty(Arc::from(value)))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the two hold one shared text (not only equal ones).
            pub fn shares_text(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $ty::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// A human name for a process: 1 to 128 printable characters.
    ProcessName, "process name", 128, printable, "it contains a control character"
);
validated_name!(
    /// A session: the agent conversation or terminal that owns a set of processes.
    SessionId, "session", 128, identifier_char,
    "only letters, digits and - _ . : / @ are allowed"
);
validated_name!(
    /// A node: one machine or daemon that runs processes. Records carry it from creation.
    NodeId, "node", 128, identifier_char,
    "only letters, digits and - _ . : / @ are allowed"
);
validated_name!(
    /// A concurrency group: processes in one group share the group's limit.
    GroupName, "group", 128, identifier_char,
    "only letters, digits and - _ . : / @ are allowed"
);
validated_name!(
    /// A label key: 1 to 63 characters of letters, digits and - _ . : / @.
    LabelKey, "label key", 63, identifier_char,
    "only letters, digits and - _ . : / @ are allowed"
);
validated_name!(
    /// A label value: 1 to 1024 printable characters.
    LabelValue, "label value", 1024, printable, "it contains a control character"
);

impl NodeId {
    /// The node name used when none is configured.
    pub fn local() -> Self {
        NodeId(Arc::from("local"))
    }

    /// The placement "any node": a record placed so waits, unplaced, until
    /// a node claims it ([`crate::cluster::placement`]). No daemon may take this name.
    pub fn any() -> Self {
        NodeId(Arc::from(Self::ANY))
    }

    /// The text of [`NodeId::any`].
    pub const ANY: &'static str = "any";

    /// Whether this is the placement "any node" rather than a node's name.
    pub fn is_any(&self) -> bool {
        &*self.0 == Self::ANY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_refused_value_is_quoted_by_its_start_and_length() {
        let long = "w".repeat(10_000);
        let text = ProcessName::new(long).expect_err("too long").to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.contains(&format!("\"{}\"...", "w".repeat(64)))
                && text.contains("10000 characters in all")
                && text.contains("longer than"),
            "{text}"
        );
        let short = ProcessName::new("").expect_err("empty").to_string();
        assert_eq!(short, "invalid process name \"\": it is empty");
    }

    #[test]
    fn names_accept_well_formed_values() {
        assert_eq!(
            ProcessName::new("dev server: web").unwrap().as_str(),
            "dev server: web"
        );
        assert!(ProcessName::new("测试 ✓").is_ok());
        assert!(SessionId::new("agent-7/conv@host").is_ok());
        assert!(LabelKey::new("app.kubernetes.io/name").is_ok());
    }

    #[test]
    fn names_refuse_with_a_reason() {
        let e = ProcessName::new("").unwrap_err();
        assert_eq!(e.to_string(), "invalid process name \"\": it is empty");
        let e = SessionId::new("has space").unwrap_err();
        assert!(e.to_string().contains("only letters"), "{e}");
        let e = LabelKey::new("k".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("63"), "{e}");
        let e = ProcessName::new("a\nb").unwrap_err();
        assert!(e.to_string().contains("control"), "{e}");
        let e = ProcessName::new(" padded").unwrap_err();
        assert!(e.to_string().contains("white space"), "{e}");
        assert!(LabelValue::new("v".repeat(1025)).is_err());
        assert!(ProcessName::new("n".repeat(129)).is_err());
    }

    #[test]
    fn names_display_and_parse() {
        let g: GroupName = "builds".parse().unwrap();
        assert_eq!(g.to_string(), "builds");
        assert_eq!(g.as_ref(), "builds");
        assert_eq!(NodeId::local().as_str(), "local");
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"builds\"");
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<GroupName>("\"builds\"").is_ok());
        let err = serde_json::from_str::<GroupName>("\"bad group\"").unwrap_err();
        assert!(err.to_string().contains("invalid group"), "{err}");
    }
}
