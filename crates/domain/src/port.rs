//! TCP ports handed out to processes instead of fought over: what a spec
//! asks for ([`PortAsk`]) and the rule that picks one ([`pick`]).
//!
//! A port is *held* by the live record it was given to, from its
//! submission until it ends; a restart keeps it. A port is handed out
//! only when it is free in the kernel's view (nothing listens there, which
//! the driver finds out just before submitting) and no other live record
//! of the node holds it (which the core knows).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The port a spec asks for: `--port auto`, `--port 3000-3099` or
/// `--port 3000`. Written as those words in JSON too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PortAsk {
    /// Any free port (the kernel's choice of an ephemeral port).
    Auto,
    /// A free port from `first` to `last`, both included, lowest first.
    Range {
        /// The lowest.
        first: u16,
        /// The highest.
        last: u16,
    },
    /// This port, or a refusal naming what holds it.
    Fixed(u16),
}

/// Why a port ask cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid port {0:?}: expected auto, a port from 1 to 65535 (3000) or a range of them (3000-3099)"
)]
pub struct PortAskError(pub String);

impl FromStr for PortAsk {
    type Err = PortAskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PortAskError(s.to_owned());
        let number = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(PortAsk::Auto);
        }
        match t.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (number(a).ok_or_else(bad)?, number(b).ok_or_else(bad)?);
                if first > last {
                    return Err(bad());
                }
                Ok(PortAsk::Range { first, last })
            }
            None => number(t).map(PortAsk::Fixed).ok_or_else(bad),
        }
    }
}

impl fmt::Display for PortAsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortAsk::Auto => f.write_str("auto"),
            PortAsk::Range { first, last } => write!(f, "{first}-{last}"),
            PortAsk::Fixed(p) => write!(f, "{p}"),
        }
    }
}

impl From<PortAsk> for String {
    fn from(ask: PortAsk) -> String {
        ask.to_string()
    }
}

impl TryFrom<String> for PortAsk {
    type Error = PortAskError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl PortAsk {
    /// Whether `port` answers this ask ([`PortAsk::Auto`] takes any).
    pub fn admits(&self, port: u16) -> bool {
        match *self {
            PortAsk::Auto => port > 0,
            PortAsk::Range { first, last } => (first..=last).contains(&port),
            PortAsk::Fixed(p) => p == port,
        }
    }
}

/// Why no port was handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRefused {
    /// The port asked for is held by a live record.
    #[error("port {port} is held by live process {holder}")]
    Held {
        /// The port.
        port: u16,
        /// The record that holds it (its id, and its name if it has one).
        holder: String,
    },
    /// Something outside bpm listens on the port asked for.
    #[error("port {0} is in use: something listens there")]
    InUse(u16),
    /// No port of the ask is free.
    #[error("no free port in {0}: every one is in use or held by a live process")]
    Exhausted(PortAsk),
}

/// Picks the port for `ask`: the first of `free` (the ports the kernel
/// showed free, in the order to try) that the ask admits and `held_by`
/// names no live record for.
///
/// # Errors
/// [`PortRefused::Held`] when a fixed port is held by a live record (its
/// name given by `held_by`), [`PortRefused::InUse`] when something else
/// listens there, and [`PortRefused::Exhausted`] when no port of the ask
/// is left.
pub fn pick(
    ask: PortAsk,
    free: &[u16],
    held_by: impl Fn(u16) -> Option<String>,
) -> Result<u16, PortRefused> {
    if let PortAsk::Fixed(port) = ask {
        if let Some(holder) = held_by(port) {
            return Err(PortRefused::Held { port, holder });
        }
        return if free.contains(&port) {
            Ok(port)
        } else {
            Err(PortRefused::InUse(port))
        };
    }
    free.iter()
        .copied()
        .find(|p| ask.admits(*p) && held_by(*p).is_none())
        .ok_or(PortRefused::Exhausted(ask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_read_as_users_write_them() {
        assert_eq!("auto".parse(), Ok(PortAsk::Auto));
        assert_eq!("3000".parse(), Ok(PortAsk::Fixed(3000)));
        assert_eq!(
            "3000-3099".parse(),
            Ok(PortAsk::Range {
                first: 3000,
                last: 3099
            })
        );
        for bad in ["", "0", "65536", "3099-3000", "x", "1-", "-5"] {
            assert!(bad.parse::<PortAsk>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&PortAsk::Range { first: 1, last: 2 }).unwrap();
        assert_eq!(json, "\"1-2\"");
        assert_eq!(
            serde_json::from_str::<PortAsk>("\"auto\"").unwrap(),
            PortAsk::Auto
        );
    }

    #[test]
    fn a_port_held_or_in_use_is_never_handed_out() {
        let held = |p: u16| (p == 3000).then(|| "web".to_owned());
        let range = PortAsk::Range {
            first: 3000,
            last: 3002,
        };
        assert_eq!(pick(range, &[3000, 3001], held), Ok(3001));
        assert_eq!(
            pick(range, &[3000, 4000], held),
            Err(PortRefused::Exhausted(range))
        );
        assert!(matches!(
            pick(PortAsk::Fixed(3000), &[3000], held),
            Err(PortRefused::Held { port: 3000, .. })
        ));
        assert_eq!(
            pick(PortAsk::Fixed(3001), &[], held),
            Err(PortRefused::InUse(3001))
        );
        assert_eq!(pick(PortAsk::Auto, &[3000, 41000], held), Ok(41000));
    }
}
