//! The tools' arguments, as agents send them. Every struct refuses unknown
//! fields, so a misspelt argument is named in the error instead of ignored.

use std::collections::BTreeMap;

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
    Custom,
}

/// When the process restarts by itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RestartArg {
    Never,
    OnFailure,
    Always,
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
pub(super) struct StartArgs {
    /// A command line, run with `sh -c`. Give this or `argv`.
    pub(super) command: Option<String>,
    /// Program and arguments, run without a shell. Give this or `command`.
    pub(super) argv: Option<Vec<String>>,
    /// Working directory (absolute, or relative to the server's); the server's own by default.
    pub(super) cwd: Option<String>,
    /// Environment variables added to (or overriding) the server's environment.
    pub(super) env: Option<BTreeMap<String, String>>,
    /// Environment files in dotenv format (absolute, or relative to
    /// `cwd`): their variables go over the server's environment, a later
    /// file's over an earlier's, and `env` over all. Read again at each
    /// start, so an edit takes effect on the next restart. Secret values
    /// from them are redacted as `env`'s are.
    pub(super) env_file: Option<Vec<String>>,
    /// Restart it (as a new record, as `restart_background_process` does)
    /// when files under these paths (absolute, or relative to `cwd`)
    /// change. Changes under `.git` never count.
    pub(super) watch: Option<Vec<String>>,
    /// With `watch`: globs of paths whose changes do not count (`*.log`, `target/**`).
    pub(super) watch_ignore: Option<Vec<String>>,
    /// With `watch`: seconds of quiet after a change before the restart
    /// (0.3 by default), so that a burst of saves is one restart.
    pub(super) watch_debounce_secs: Option<f64>,
    /// Make a schedule instead of one run: a run of the command every
    /// this long ("30s", "5m", "1h"), counted from now. Each run is a
    /// process record of its own, with `scheduled_from` the schedule's id.
    pub(super) every: Option<String>,
    /// Make a schedule: a run at each time this standard five-field cron
    /// expression names ("*/5 * * * *").
    pub(super) cron: Option<String>,
    /// With `cron`: the IANA time zone its hours are in; the server's by default.
    pub(super) tz: Option<String>,
    /// With a schedule: what a due time does while the last run is live:
    /// "skip" (the default; counted), "queue" (waits for it) or "allow".
    pub(super) overlap: Option<String>,
    /// With a schedule: each run starts up to this long after its due time ("10s").
    pub(super) jitter: Option<String>,
    /// With a schedule: the first run starts now.
    pub(super) run_now: Option<bool>,
    /// With a schedule: after a time no daemon ran, the last due time
    /// missed runs late, once.
    pub(super) catch_up: Option<bool>,
    /// Memory the process and its tree may use ("512M", "2G"): past it the
    /// kernel kills it and it ends failed with the error "memory limit (SIZE)".
    pub(super) memory_max: Option<String>,
    /// CPU the tree may use, in percent of one CPU (50; 200 for two CPUs).
    pub(super) cpu_max: Option<u32>,
    /// How many processes and threads the tree may hold at once.
    pub(super) pids_max: Option<u32>,
    /// How many files each of its processes may hold open.
    pub(super) nofile: Option<u64>,
    /// Run it under a pseudo-terminal, so that programs that check for one
    /// (prompts, REPLs, colours) behave as they do for a person; type into
    /// it with `send_process_input`.
    pub(super) tty: Option<bool>,
    /// With tty: its size in columns by rows ("120x40"; 80x24 by default).
    pub(super) tty_size: Option<String>,
    /// A name, unique enough to refer to the process by.
    pub(super) name: Option<String>,
    pub(super) kind: Option<KindArg>,
    /// A session to group processes by (for example the agent's conversation).
    pub(super) session: Option<String>,
    /// The node to run it on (see the nodes of a cluster with `bpm nodes`);
    /// "any": the first node with room takes it; the server's own node by default.
    pub(super) node: Option<String>,
    /// The id of a parent process: stopping the parent stops this one.
    pub(super) parent: Option<String>,
    /// A concurrency group (limits apply per group).
    pub(super) group: Option<String>,
    /// Stop it (TERM, grace, KILL) after this many seconds; it ends `timed_out`.
    pub(super) timeout_secs: Option<f64>,
    /// A regular expression: the process is ready when a line of its output matches.
    pub(super) ready_pattern: Option<String>,
    /// A TCP port on 127.0.0.1: the process is ready when it accepts connections.
    pub(super) ready_port: Option<u16>,
    pub(super) restart: Option<RestartArg>,
    /// At most this many automatic restarts.
    pub(super) max_restarts: Option<u32>,
    /// Seconds between TERM and KILL when it is stopped (5 by default).
    pub(super) grace_secs: Option<f64>,
    /// Open a pipe to its standard input, for `send_process_input`. Without it, stdin is empty.
    pub(super) stdin: Option<bool>,
    /// Labels, for filtering.
    pub(super) labels: Option<BTreeMap<String, String>>,
    /// With `node` "any": only a node carrying all these labels (its `[node] labels`) may take it.
    pub(super) node_labels: Option<BTreeMap<String, String>>,
    /// When its node is lost, run it again on another node (one carrying
    /// `node_labels`); its node stops it first. Needs `restart`
    /// "on-failure" or "always", and nodes sharing a Redis store.
    pub(super) failover: Option<bool>,
    /// End the record when its leader exits, leaving what it started
    /// running. By default a command that backgrounds a server and exits
    /// (`sh -c 'server &'`) stays live until the server ends, and a stop
    /// reaches it.
    pub(super) leader_only: Option<bool>,
    /// If a live process has this `name`: start nothing and return it
    /// (`reused: true`), when it runs the same command and settings;
    /// refused, naming the differences, otherwise. Safe to repeat.
    pub(super) ensure: Option<bool>,
    /// If a live process has this `name`: stop it (its whole tree, its
    /// grace) and start this one once it has ended.
    pub(super) replace: Option<bool>,
    /// A TCP port handed to the process in `PORT` and `BPM_PORT`, held
    /// until it ends: "auto" (any free port), a range ("3000-3099") or one
    /// port ("3000", refused when another process holds it or anything
    /// listens there). It is ready once the port accepts connections,
    /// unless another readiness check is given. Shown as `port`.
    pub(super) port: Option<String>,
    /// Ready when an HTTP GET of this URL (or this path on `port`)
    /// answers 2xx or 3xx.
    pub(super) ready_http: Option<String>,
    /// Ready when this command (`sh -c`, in the process's directory and
    /// environment) exits 0.
    pub(super) ready_exec: Option<String>,
    /// Ready when the process says so itself: `READY=1` on the socket in
    /// `NOTIFY_SOCKET` (`sd_notify`), or `bpm ready` from a script.
    pub(super) ready_notify: Option<bool>,
    /// A liveness check: `{"http": "/healthz"}`, `{"exec": "..."}` or
    /// `{"port": 5432}`, with `every_secs` (2), `failures` (3) and
    /// `timeout_secs` (5). After its failures in a row the process is
    /// started again under its restart policy.
    pub(super) health: Option<HealthArg>,
    /// Keep it running after this client goes away. By default a process
    /// started here is stopped once this client's session has been gone
    /// for the server's grace (10 minutes unless `[mcp] owner_grace` says
    /// otherwise); a client that comes back under the same session
    /// (`BPM_SESSION`) within it keeps its processes.
    pub(super) persistent: Option<bool>,
    /// Free-form JSON kept with the record.
    pub(super) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A liveness check for `start_background_process`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthArg {
    /// An HTTP GET of this URL (or path on `port`) must answer 2xx or 3xx.
    pub(super) http: Option<String>,
    /// This command must exit 0.
    pub(super) exec: Option<String>,
    /// This loopback TCP port must accept connections.
    pub(super) port: Option<u16>,
    /// How often, in seconds (2).
    pub(super) every_secs: Option<f64>,
    /// How many failures in a row make it unhealthy (3).
    pub(super) failures: Option<u32>,
    /// How long one check may take, in seconds (5).
    pub(super) timeout_secs: Option<f64>,
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
