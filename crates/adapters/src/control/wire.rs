//! The control protocol, version 3: newline-delimited JSON over a Unix socket.
//!
//! 1. The client sends `{"protocol":3,"software":"bpm 0.1.0"}`; the daemon
//!    answers with its own, or with an error of kind `connection` naming both
//!    versions, and closes the connection.
//! 2. Each request is `{"id":N,"method":"start","params":{...}}`; each answer
//!    is `{"id":N,"ok":{...}}` or `{"id":N,"error":{"kind":...,"detail":...,"message":...}}`:
//!    the [`ManagerError`] the daemon's manager returned, as its kind and data
//!    (version 3; version 2 sent a kind and a message only), and its text.
//!    Answers may come out of order (a `wait` can take long); ids match them.
//!    `start_many` (`{"specs":[...]}`) starts several processes in one step
//!    (their records are written together) and answers `{"started":[...]}`,
//!    one `{"record":{...}}` or `{"error":{...}}` per spec, in order. Two
//!    optional parameters keep a large batch small on the wire: `env`, a
//!    map of variables every spec gets under its own `env` (a spec's own
//!    value of a variable wins), and `brief: true`, which answers
//!    `{"id":...}` in place of each `{"record":{...}}`. (Version 2 added
//!    them; version 1 clients are refused at the handshake, since a daemon
//!    that ignored `env` would start processes without their variables.)
//!    `wait_many` (`{"ids":[...],"timeout_ms":N}`) answers `"done"` once
//!    every one of the records has finished.
//!    `usage` answers `{"usage":[...]}`: what the trees of running records
//!    use (a daemon before it answers `bad_request`).
//! 3. After `{"id":N,"method":"subscribe"}`, the daemon also sends
//!    `{"event":{...}}` lines for every event, until the connection closes.
//!
//! A request line may hold at most [`MAX_REQUEST_BYTES`]; a longer one is
//! answered with `bad_request` and the connection is closed. A line that is not
//! a request is answered with `bad_request` (id 0 when none could be read).
//! The client refuses to send a line over the limit, naming it.
//!
//! The daemon holds at most 1,024 connections; the next one gets a
//! `connection` error saying so in place of the hello. It closes a connection that has not said
//! hello within 10 s, and one that has said nothing for 10 minutes while it
//! has no request under way and no subscription (see
//! [`ConnectionLimits`](super::ConnectionLimits)); a client that finds its
//! connection closed before it sends can send on a new one.

use bpm_domain::{
    Event, Limits, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec, Span, Timestamp,
};
use bpm_ports::{ManagerError, OutputChunk, OutputQuery, ResourceUsage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// The longest request line the daemon reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The first line each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version.
    pub protocol: u32,
    /// The software and its version.
    pub software: String,
}

/// A call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Request {
    Start {
        spec: ProcessSpec,
    },
    StartMany {
        specs: Vec<ProcessSpec>,
        /// Variables every spec gets under its own.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "bpm_domain::env_serde::option"
        )]
        env: Option<Arc<bpm_domain::Environment>>,
        /// Answer ids, not records.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        brief: bool,
    },
    Track {
        spec: ProcessSpec,
    },
    Get {
        id: ProcessId,
    },
    List {
        filter: ListFilter,
    },
    Progress {
        id: ProcessId,
        percent: Percent,
        message: Option<String>,
    },
    Complete {
        id: ProcessId,
        result: Option<serde_json::Value>,
    },
    Fail {
        id: ProcessId,
        error: String,
    },
    Stop {
        id: ProcessId,
        force: bool,
        grace: Option<Span>,
    },
    StopLevel {
        level: usize,
        force: bool,
        grace: Option<Span>,
    },
    Pause {
        id: ProcessId,
    },
    Resume {
        id: ProcessId,
    },
    Restart {
        id: ProcessId,
    },
    Wait {
        id: ProcessId,
        timeout_ms: Option<u64>,
    },
    WaitMany {
        ids: Vec<ProcessId>,
        timeout_ms: Option<u64>,
    },
    ReadOutput {
        id: ProcessId,
        query: OutputQuery,
    },
    SendInput {
        id: ProcessId,
        data: Vec<u8>,
    },
    Remove {
        id: ProcessId,
    },
    Subscribe,
    RecentEvents,
    Status,
    /// What running process trees use (`resource_usage`).
    Usage,
    /// Whether a fencing token is current (`check_fence`).
    CheckFence {
        id: ProcessId,
        token: u64,
    },
    /// A process holds a session (`hold_session`).
    HoldSession {
        session: bpm_domain::SessionId,
        holder: u32,
    },
    Shutdown {
        kill_all: bool,
    },
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the client; echoed in the answer.
    pub id: u64,
    /// The call.
    #[serde(flatten)]
    pub request: Request,
}

/// What the daemon says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its process id.
    pub pid: u32,
    /// Its software version.
    pub version: String,
    /// The store it uses (`fs`, `memory`, or the Redis URL without credentials).
    pub store: String,
    /// Its node.
    pub node: String,
    /// Its state directory.
    pub home: String,
    /// The keeper it talks to: its pid, bpm version and keeper protocol
    /// (absent from daemons before this field).
    #[serde(default)]
    pub keeper: Option<String>,
    /// Records per state.
    pub counts: std::collections::BTreeMap<String, usize>,
    /// When the daemon started (absent from daemons before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Its supervision limits, for showing slots in use (absent from daemons
    /// before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// What went wrong that its operator must know (a damaged journal at
    /// start, a keeper that died), newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Its place in a cluster: its node's epoch and lease (absent with a
    /// store of its own, and from daemons before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Reply {
    Record(ProcessRecord),
    Started(Vec<Started>),
    Records(Vec<ProcessRecord>),
    Completion {
        record: ProcessRecord,
        no_op: bool,
    },
    Output(OutputChunk),
    Status(Box<DaemonStatus>),
    Events(Vec<Event>),
    Usage(Vec<ResourceUsage>),
    /// A fencing token's check: why it is stale, or `None`.
    Fence {
        stale: Option<String>,
    },
    Done,
}

/// One spec's outcome in a `start_many` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Started {
    Record(ProcessRecord),
    Id(ProcessId),
    Error(WireError),
}

/// A failed call, as the wire carries it: the typed error, flattened
/// (`"kind"`, and `"detail"` where the variant has data), and its text for
/// people (`"message"`). A client reads back the very [`ManagerError`] the
/// daemon's manager returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireError {
    /// The error.
    #[serde(flatten)]
    pub error: ManagerError,
    /// What went wrong, for people.
    pub message: String,
}

impl From<ManagerError> for WireError {
    fn from(error: ManagerError) -> Self {
        WireError {
            message: error.to_string(),
            error,
        }
    }
}

impl From<&ManagerError> for WireError {
    fn from(error: &ManagerError) -> Self {
        WireError::from(error.clone())
    }
}

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> Self {
        e.error
    }
}

impl<'de> Deserialize<'de> for WireError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An error this build does not know (a daemon of another version, or
        // not bpm) still reads: as a broken protocol, with the peer's words.
        #[derive(Deserialize)]
        struct Fields {
            kind: String,
            #[serde(default)]
            detail: Option<serde_json::Value>,
            #[serde(default)]
            message: String,
        }
        let f = Fields::deserialize(d)?;
        let mut typed = serde_json::Map::new();
        typed.insert("kind".into(), serde_json::Value::String(f.kind.clone()));
        if let Some(detail) = f.detail {
            typed.insert("detail".into(), detail);
        }
        let error = serde_json::from_value(serde_json::Value::Object(typed)).unwrap_or_else(|_| {
            ManagerError::Connection(format!(
                "the daemon answered an error this client does not know ({}): {}",
                f.kind, f.message
            ))
        });
        Ok(WireError {
            error,
            message: f.message,
        })
    }
}

/// One line from the daemon after the hello.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerLine {
    /// The answer to call `id`.
    Answer {
        /// The call's id.
        id: u64,
        /// Success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Reply>,
        /// Failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WireError>,
    },
    /// An event, after a subscribe.
    Event {
        /// The event.
        event: Box<Event>,
    },
}

impl<'de> Deserialize<'de> for ServerLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read as a plain struct, field by field as the line streams in:
        // `untagged` would first copy the whole line into an intermediate
        // tree (for a list of 10,000 records, hundreds of megabytes).
        #[derive(Deserialize)]
        struct Fields {
            id: Option<u64>,
            ok: Option<Reply>,
            error: Option<WireError>,
            event: Option<Box<Event>>,
        }
        let f = Fields::deserialize(d)?;
        match (f.id, f.event) {
            (Some(id), None) => Ok(ServerLine::Answer {
                id,
                ok: f.ok,
                error: f.error,
            }),
            (None, Some(event)) => Ok(ServerLine::Event { event }),
            _ => Err(serde::de::Error::custom(
                "a line from the daemon is either an answer (with an id) or an event",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_the_daemon_read_as_answers_or_events() {
        let answer: ServerLine = serde_json::from_str(r#"{"id":4,"ok":"done"}"#).expect("answer");
        assert_eq!(
            answer,
            ServerLine::Answer {
                id: 4,
                ok: Some(Reply::Done),
                error: None
            }
        );
        let failed: ServerLine =
            serde_json::from_str(r#"{"id":5,"error":{"kind":"shut_down","message":"gone"}}"#)
                .expect("error");
        assert_eq!(
            failed,
            ServerLine::Answer {
                id: 5,
                ok: None,
                error: Some(WireError {
                    error: ManagerError::ShutDown,
                    message: "gone".into()
                })
            }
        );
        // What the daemon writes reads back the same.
        for line in [answer, failed] {
            let text = serde_json::to_string(&line).expect("JSON");
            assert_eq!(
                serde_json::from_str::<ServerLine>(&text).expect("again"),
                line
            );
        }
        for bad in [r#"{"ok":"done"}"#, "{}", r#"{"id":"x"}"#] {
            let e = serde_json::from_str::<ServerLine>(bad).expect_err(bad);
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        let e = serde_json::from_str::<ServerLine>("{}").expect_err("neither");
        assert!(
            e.to_string().contains("an answer (with an id) or an event"),
            "{e}"
        );
    }

    #[test]
    fn every_error_crosses_the_wire_as_the_variant_it_is() {
        use bpm_domain::{
            CoreError, InvalidTransition, OsText, SpecError, StateName, TransitionKind,
        };
        use bpm_ports::{OutputError, SpawnError, StoreError};
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(7));
        let errors = [
            ManagerError::NotFound(id),
            ManagerError::InvalidSpec(SpecError::EmptyArgv),
            ManagerError::InvalidSpec(SpecError::NotForTracked("an environment".into())),
            ManagerError::InvalidSpec(SpecError::InvalidPattern {
                pattern: "(".into(),
                reason: "unclosed group".into(),
            }),
            ManagerError::InvalidTransition(InvalidTransition {
                from: StateName::Pending,
                attempted: TransitionKind::Pause,
                tracked: false,
            }),
            ManagerError::Refused(CoreError::ParentNotLive {
                parent: id,
                state: StateName::Stopping,
            }),
            ManagerError::Refused(CoreError::InvalidSpec(SpecError::ZeroTimeout)),
            ManagerError::WaitTimeout {
                id,
                state: StateName::Running,
            },
            ManagerError::Store(StoreError::Conflict {
                id,
                expected: 3,
                actual: 4,
            }),
            ManagerError::Output(OutputError::Unavailable("redis: refused".into())),
            ManagerError::Spawner(SpawnError::ProgramNotFound(OsText::from("nope"))),
            ManagerError::ShutDown,
            ManagerError::BadRequest("malformed request".into()),
            ManagerError::TooLarge {
                bytes: 10,
                limit: 5,
            },
            ManagerError::Connection("busy".into()),
        ];
        for error in errors {
            let text = serde_json::to_string(&WireError::from(&error)).expect("JSON");
            let back: WireError = serde_json::from_str(&text).expect(&text);
            assert_eq!(back.error, error, "{text}");
            assert_eq!(back.message, error.to_string(), "{text}");
        }
        // A daemon of another version, refusing the hello with a kind this
        // build has no variant for: the client still says what it said.
        let old = r#"{"kind":"version_mismatch","message":"protocol mismatch: 2 and 3"}"#;
        let back: WireError = serde_json::from_str(old).expect("old");
        assert!(
            matches!(&back.error, ManagerError::Connection(m) if m.contains("version_mismatch") && m.contains("protocol mismatch: 2 and 3")),
            "{back:?}"
        );
    }
}
