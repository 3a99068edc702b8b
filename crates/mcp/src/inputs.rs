//! The tools' arguments, as agents send them. Every struct refuses unknown
//! fields, so a misspelt argument is named in the error instead of ignored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of work a process is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum KindArg {
    AgentSession,
    TestSuite,
    Build,
    Server,
    Analysis,
    Mcp,
    Custom,
}

/// Which output streams.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum StreamArg {
    Stdout,
    Stderr,
    #[default]
    Both,
}

/// What `wait_for_process` waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum UntilArg {
    /// The process has ended (any way).
    #[default]
    Exit,
    /// Its readiness check passed (`ready_pattern` or `ready_port`; at once without one).
    Ready,
    /// A line of its output matches `pattern`.
    Pattern,
    /// It has written nothing for `idle_secs`.
    Idle,
}

/// A state, for filtering.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum StateArg {
    Pending,
    Starting,
    Running,
    Paused,
    Stopping,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
    Lost,
    Unreachable,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangedArgs {
    /// Only the processes of this session.
    pub(super) session: Option<String>,
    /// At most this many changes (20 by default, at most 100); the rest
    /// wait for the next call.
    pub(super) limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IdArgs {
    /// The process: its id, a unique prefix, its 8-digit short form, or its unique name.
    pub(super) process_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListArgs {
    /// Only processes in this state (any state by default).
    pub(super) state: Option<StateArg>,
    pub(super) session: Option<String>,
    pub(super) kind: Option<KindArg>,
    /// `KEY=VALUE`: only processes carrying this label.
    pub(super) label: Option<String>,
    /// Only children of this process.
    pub(super) parent: Option<String>,
    /// Only processes of this node (see the nodes of a cluster with `bpm nodes`).
    pub(super) node: Option<String>,
    /// At most this many records, newest first (100 by default, 500 at most).
    pub(super) limit: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputArgs {
    /// The process: its id, a unique prefix, its short form, or its name.
    pub(super) process_id: String,
    #[serde(default)]
    pub(super) stream: StreamArg,
    /// Read from this cursor (a `next_cursor` from an earlier answer). Without it,
    /// read what is new since this client's last read of this process and stream.
    pub(super) cursor: Option<u64>,
    /// Instead, the last this many lines.
    pub(super) tail_lines: Option<usize>,
    /// At most this many bytes (16384 by default; the server caps it).
    pub(super) max_bytes: Option<usize>,
    /// A regular expression: return only the lines that match it.
    pub(super) grep: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitArgs {
    /// The process: its id, a unique prefix, its short form, or its name.
    pub(super) process_id: String,
    #[serde(default)]
    pub(super) until: UntilArg,
    /// For `until: pattern`: the regular expression a line must match (all output kept is searched).
    pub(super) pattern: Option<String>,
    /// For `until: idle`: seconds without output (5 by default).
    pub(super) idle_secs: Option<f64>,
    /// Give up after this many seconds (60 by default, 3600 at most); the process keeps running.
    pub(super) timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StopArgs {
    /// The process: its id, a unique prefix, its short form, or its name.
    pub(super) process_id: String,
    /// KILL at once instead of TERM, grace period, KILL.
    pub(super) force: Option<bool>,
    /// Seconds between TERM and KILL, instead of the process's own.
    pub(super) grace_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InputArgs {
    /// The process (started with `stdin: true` or `tty: true`).
    pub(super) process_id: String,
    /// What to write to its standard input.
    pub(super) text: String,
    /// Add a newline after `text` (true by default).
    pub(super) newline: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TrackArgs {
    /// What the operation is (for example "migrate db").
    pub(super) name: String,
    pub(super) session: Option<String>,
    pub(super) kind: Option<KindArg>,
    /// The id of a parent process.
    pub(super) parent: Option<String>,
    /// Free-form JSON kept with the record.
    pub(super) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProgressArgs {
    /// The tracked operation.
    pub(super) process_id: String,
    /// How far along, 0 to 100.
    pub(super) progress: f64,
    /// What it is doing now.
    pub(super) message: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteArgs {
    /// The tracked operation.
    pub(super) process_id: String,
    /// Its result, any JSON.
    pub(super) result: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FailArgs {
    /// The tracked operation.
    pub(super) process_id: String,
    /// What went wrong.
    pub(super) error: String,
}
