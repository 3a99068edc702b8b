//! The control protocol, version 2: newline-delimited JSON over a Unix socket.
//!
//! 1. The client sends `{"protocol":2,"software":"bpm 0.1.0"}`; the daemon
//!    answers with its own, or with an error of kind `version_mismatch` and
//!    closes the connection.
//! 2. Each request is `{"id":N,"method":"start","params":{...}}`; each answer
//!    is `{"id":N,"ok":{...}}` or `{"id":N,"error":{"kind":...,"message":...}}`.
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
//! answered with `too_large` and the connection is closed. A line that is not
//! a request is answered with `bad_request` (id 0 when none could be read).
//! The client refuses to send a line over the limit, naming it.
//!
//! The daemon holds at most 1,024 connections; the next one gets a `busy`
//! error in place of the hello. It closes a connection that has not said
//! hello within 10 s, and one that has said nothing for 10 minutes while it
//! has no request under way and no subscription (see
//! [`ConnectionLimits`](super::ConnectionLimits)); a client that finds its
//! connection closed before it sends can send on a new one.

use bpm_domain::{
    Event, Limits, ListFilter, Percent, ProcessId, ProcessRecord, ProcessSpec, Span, StateName,
    Timestamp,
};
use bpm_ports::{ManagerError, OutputChunk, OutputQuery, ResourceUsage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;
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
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Reply {
    Record(Box<ProcessRecord>),
    Started(Vec<Started>),
    Records(Vec<ProcessRecord>),
    Completion {
        record: Box<ProcessRecord>,
        no_op: bool,
    },
    Output(OutputChunk),
    Status(Box<DaemonStatus>),
    Events(Vec<Event>),
    Usage(Vec<ResourceUsage>),
    Done,
}

/// One spec's outcome in a `start_many` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Started {
    Record(Box<ProcessRecord>),
    Id(ProcessId),
    Error(WireError),
}

/// A failed call, as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// `not_found`, `invalid_spec`, `invalid_transition`, `refused`,
    /// `wait_timeout`, `store`, `output`, `spawner`, `shut_down`,
    /// `bad_request`, `too_large`, `version_mismatch`, `forbidden`.
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
    /// The record concerned, for `not_found` and `wait_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ProcessId>,
    /// Its state, for `wait_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateName>,
}

impl WireError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        WireError {
            kind: kind.to_owned(),
            message: message.into(),
            id: None,
            state: None,
        }
    }
}

impl From<&ManagerError> for WireError {
    fn from(e: &ManagerError) -> Self {
        let message = e.to_string();
        let kind = match e {
            ManagerError::NotFound(id) => {
                return WireError {
                    id: Some(*id),
                    ..WireError::new("not_found", message)
                };
            }
            ManagerError::WaitTimeout { id, state } => {
                return WireError {
                    id: Some(*id),
                    state: Some(*state),
                    ..WireError::new("wait_timeout", message)
                };
            }
            ManagerError::InvalidSpec(_) => "invalid_spec",
            ManagerError::InvalidTransition(_) => "invalid_transition",
            ManagerError::Refused(_) => "refused",
            ManagerError::Store(_) => "store",
            ManagerError::Output(_) => "output",
            ManagerError::Spawner(_) => "spawner",
            ManagerError::ShutDown => "shut_down",
            ManagerError::TooLarge { .. } => "too_large",
            ManagerError::Remote { kind, .. } => kind.as_str(),
            _ => "internal",
        };
        WireError::new(kind, message)
    }
}

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> Self {
        match (e.kind.as_str(), e.id, e.state) {
            ("not_found", Some(id), _) => ManagerError::NotFound(id),
            ("wait_timeout", Some(id), Some(state)) => ManagerError::WaitTimeout { id, state },
            ("shut_down", ..) => ManagerError::ShutDown,
            _ => ManagerError::Remote {
                kind: e.kind,
                message: e.message,
            },
        }
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
            serde_json::from_str(r#"{"id":5,"error":{"kind":"refused","message":"no"}}"#)
                .expect("error");
        assert_eq!(
            failed,
            ServerLine::Answer {
                id: 5,
                ok: None,
                error: Some(WireError::new("refused", "no"))
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
}
