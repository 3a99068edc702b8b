//! The control protocol, version 3: newline-delimited JSON over a Unix socket.
//!
//! 1. The client sends `{"protocol":3,"software":"bpm 0.1.0"}`; the daemon
//!    answers with its own, or with an error of kind `connection` naming both
//!    versions, and closes the connection.
//! 2. Each request is `{"id":N,"method":"start","params":{...}}`; each answer
//!    is `{"id":N,"ok":{...}}` or `{"id":N,"error":{"kind":...,"detail":...,"message":...}}`:
//!    the [`ManagerError`](bpm_ports::ManagerError) the daemon's manager returned, as its kind and data
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

use bpm_domain::Event;
pub use bpm_ports::{Call, DaemonStatus, Reply, Started, WireError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 3;
pub use bpm_ports::MAX_REQUEST_BYTES;

/// The first line each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version.
    pub protocol: u32,
    /// The software and its version.
    pub software: String,
}

/// What a client asks: a [`Call`] of the manager, applied by
/// [`bpm_ports::apply`], or one of the daemon's own requests. Both are
/// `{"method":...,"params":...}` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Request {
    /// One of the daemon's own.
    Daemon(DaemonRequest),
    /// A call of the manager.
    Manager(Call),
}

/// The requests a daemon answers itself, not its manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum DaemonRequest {
    /// Events from now on, as `{"event":{...}}` lines.
    Subscribe,
    /// The daemon's own status ([`Reply::Status`]).
    Status,
    /// Stops the daemon; with `kill_all`, its processes first.
    Shutdown {
        /// Stop every process first.
        kill_all: bool,
    },
}

impl From<DaemonRequest> for Request {
    fn from(request: DaemonRequest) -> Self {
        Request::Daemon(request)
    }
}

impl From<Call> for Request {
    fn from(call: Call) -> Self {
        Request::Manager(call)
    }
}

impl Request {
    /// The request `method` names, with `params` (raw JSON) read as that
    /// method's. The error names what is wrong: an unknown method, or the
    /// field its parameters lack.
    fn read(method: &str, params: Option<&RawValue>) -> Result<Self, serde_json::Error> {
        // The parameters are read once, straight into their method's
        // fields: no tree of the whole line is built first.
        let method_json = serde_json::to_string(method)?;
        let text = match params {
            Some(p) => format!(r#"{{"method":{method_json},"params":{}}}"#, p.get()),
            None => format!(r#"{{"method":{method_json}}}"#),
        };
        if matches!(method, "subscribe" | "status" | "shutdown") {
            return serde_json::from_str::<DaemonRequest>(&text).map(Request::Daemon);
        }
        serde_json::from_str::<Call>(&text)
            .map(Request::Manager)
            .map_err(|e| {
                if e.to_string().starts_with("unknown variant") {
                    serde::de::Error::custom(format!(
                        "unknown method `{method}`: a request is a call of the manager (`start`, `stop`, `wait`, ...) or one of the daemon's own (`subscribe`, `status`, `shutdown`)"
                    ))
                } else {
                    e
                }
            })
    }
}

/// A request with its id: one line from the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestLine {
    /// Chosen by the client; echoed in the answer.
    pub id: u64,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

impl<'de> Deserialize<'de> for RequestLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            id: u64,
            #[serde(borrow)]
            method: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            params: Option<&'a RawValue>,
        }
        let f = Fields::deserialize(d)?;
        let request = Request::read(&f.method, f.params).map_err(serde::de::Error::custom)?;
        Ok(RequestLine { id: f.id, request })
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
    use bpm_domain::ProcessId;
    use bpm_ports::ManagerError;

    #[test]
    fn requests_keep_their_wire_form_and_bad_ones_say_what_is_wrong() {
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(9));
        let lines = [
            (
                RequestLine {
                    id: 1,
                    request: Call::Stop {
                        id,
                        force: true,
                        grace: None,
                    }
                    .into(),
                },
                format!(
                    r#"{{"id":1,"method":"stop","params":{{"id":"{id}","force":true,"grace":null}}}}"#
                ),
            ),
            (
                RequestLine {
                    id: 2,
                    request: Call::RecentEvents.into(),
                },
                r#"{"id":2,"method":"recent_events"}"#.to_string(),
            ),
            (
                RequestLine {
                    id: 3,
                    request: DaemonRequest::Subscribe.into(),
                },
                r#"{"id":3,"method":"subscribe"}"#.to_string(),
            ),
            (
                RequestLine {
                    id: 4,
                    request: DaemonRequest::Shutdown { kill_all: false }.into(),
                },
                r#"{"id":4,"method":"shutdown","params":{"kill_all":false}}"#.to_string(),
            ),
        ];
        for (line, text) in lines {
            assert_eq!(serde_json::to_string(&line).expect("JSON"), text);
            let back: RequestLine = serde_json::from_str(&text).expect(&text);
            assert_eq!(back, line);
        }
        for (bad, says) in [
            (r#"{"id":5,"method":"launch"}"#, "unknown method `launch`"),
            (
                r#"{"id":5,"method":"launch"}"#,
                "`subscribe`, `status`, `shutdown`",
            ),
            (
                r#"{"id":6,"method":"get","params":{"idx":1}}"#,
                "missing field `id`",
            ),
            (
                r#"{"id":7,"method":"shutdown","params":{}}"#,
                "missing field `kill_all`",
            ),
            (r#"{"id":8}"#, "missing field `method`"),
            (r#"{"method":"status"}"#, "missing field `id`"),
            ("not json", "expected ident"),
        ] {
            let e = serde_json::from_str::<RequestLine>(bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        // A method spelled with an escape reads as the same method.
        let escaped: RequestLine =
            serde_json::from_str(r#"{"id":9,"method":"st\u0061tus"}"#).expect("escaped");
        assert_eq!(escaped.request, DaemonRequest::Status.into());
    }

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
