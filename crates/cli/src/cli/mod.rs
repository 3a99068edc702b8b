//! The `bpm` command line. Every command but `daemon` talks to the per-user
//! daemon through the control socket, starting it when none answers.
//!
//! Exit codes: 0 success; 1 failure; 2 usage; 3 unknown id; 4 invalid input
//! (ambiguous id, invalid spec, refused, illegal transition); 5 the daemon
//! cannot be reached; 124 `wait` timed out. `wait ID` and `run --wait` exit
//! with the process's own code (128+n when a signal ended it).

/// `println!` for a command's results: a reader that has gone (`| head`)
/// has seen enough, so the command ends there, successfully, instead of
/// panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::enough_if_gone(std::io::Write::write_fmt(
            &mut std::io::stdout().lock(),
            format_args!("{}\n", format_args!($($arg)*)),
        ))
    };
}

mod agents;
mod attach;
mod commands;
mod error;
mod fast;
mod follow;
mod nodes;
mod project;
mod resolve;
mod table;
mod top;
mod tui;
mod unit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use commands::{asked_of, dispatch};
pub(crate) use error::exit_code_of;

/// What every command runs on: the port, never a concrete client, so a
/// command works the same on any manager (the daemon's client today).
type Manager = std::sync::Arc<dyn bpm_ports::ProcessManager>;

/// bpm: run, watch and stop background processes.
#[derive(Debug, Parser)]
#[command(
    name = "bpm",
    version,
    about = "run commands in the background, keep them under control, and learn at once when they end",
    long_about = "bpm runs commands in the background, keeps them under control, and says at once when they end.\n\
                  Start with: bpm run -- CMD ARGS...; then bpm ps, bpm logs ID, bpm wait ID, bpm stop ID.",
    propagate_version = true
)]
pub struct Cli {
    /// The state directory. An empty `BPM_HOME` counts as unset.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help = "The state directory [env: BPM_HOME; default: $XDG_STATE_HOME/bpm, else ~/.local/state/bpm]"
    )]
    pub home: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it runs: building the
// whole tree took about a tenth of a command's start (`bpm --version`
// 1.32 -> 1.15 ms). The argument structs' doc comments are then their help.
#[command(defer = true)]
pub enum Command {
    /// Start a process in the background; prints its id.
    Run(Box<RunArgs>),
    /// List processes.
    Ps(PsArgs),
    /// Tell bpm this process is ready (`READY=1` on `NOTIFY_SOCKET`): for
    /// a process started with --ready-notify.
    Ready {
        /// A status line to send with it.
        #[arg(long)]
        status: Option<String>,
    },
    /// Bring a project's services up, idempotently: a bpm.toml (here or in
    /// a parent directory), a Procfile or a process-compose file (-f).
    /// Prints what it did with each: kept, started, replaced or stopped.
    Up(UpArgs),
    /// Stop a project's services in reverse dependency order; returns when
    /// they are gone.
    Down(DownArgs),
    /// Change how many copies of a running service run (`bpm scale web=3`):
    /// the missing copies start (web.2, web.3), the extra ones stop, and
    /// nothing else is touched. The project file is not changed.
    Scale(ScaleArgs),
    /// Show one process.
    Show {
        /// Id (full, unique prefix or short form) or unique name.
        id: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a process's output.
    Logs(LogsArgs),
    /// Stop processes (and their descendants); returns when they are gone.
    Stop(StopArgs),
    /// Pause a process (SIGSTOP to its tree).
    Pause {
        /// Id or name.
        id: String,
    },
    /// Resume a paused process.
    Resume {
        /// Id or name.
        id: String,
    },
    /// Connect this terminal to a process started with --tty: what you
    /// type goes to it, what it writes comes back, until the detach key
    /// (Ctrl-] by default) or its end (then exit with its exit code).
    Attach {
        /// Id or name.
        id: String,
        /// The key that detaches, leaving the process running: ctrl-]
        /// (the default), ctrl-a to ctrl-z, ctrl-\, ctrl-^ or ctrl-_.
        #[arg(long, value_name = "KEY")]
        detach_key: Option<String>,
    },
    /// Type into a process started with --stdin or --tty: TEXT and a newline, or,
    /// without TEXT (or with -), all of this command's standard input as it is.
    Input {
        /// Id or name.
        id: String,
        /// What to send; `-` or nothing: standard input.
        text: Option<String>,
        /// Send TEXT without the newline after it.
        #[arg(short = 'n', long)]
        no_newline: bool,
    },
    /// Start a new record with the same spec; prints the new id.
    Restart {
        /// Id or name (inside a project's directory, a service's name).
        id: String,
        /// For a project's service: restart what depends on it too, each
        /// once what it waits for is back.
        #[arg(long)]
        with_dependents: bool,
        /// Without a moment down: the new copy starts beside the running
        /// one, which stops once the new one is ready (a new copy not
        /// ready within 2 minutes is stopped, and the old one runs on).
        /// Needs a name and a readiness check.
        #[arg(long)]
        rolling: bool,
    },
    /// Wait for processes to end (with one id, exit with its exit code).
    Wait {
        /// Ids or names.
        #[arg(required_unless_present_any = ["label", "session", "project"])]
        ids: Vec<String>,
        /// And every live process carrying this label K=V (repeatable: all
        /// of them), when the wait begins.
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
        /// And every live process of this session, when the wait begins.
        #[arg(long)]
        session: Option<String>,
        /// And every live process of this project (`bpm up`), when the
        /// wait begins; with no name, the project of the `bpm.toml` here
        /// or in the nearest parent.
        #[arg(long, value_name = "PROJECT", num_args = 0..=1, default_missing_value = "")]
        project: Option<String>,
        /// Give up after this many seconds in all (exit 124).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Return when the first of them ends: print its id and exit with
        /// its exit code.
        #[arg(long)]
        any: bool,
    },
    /// Remove finished records and their output.
    Rm {
        /// Ids or names.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove finished records in bulk.
    Clean {
        /// Only records in this state (repeatable).
        #[arg(long)]
        state: Vec<String>,
        /// Only records that ended longer ago than this (e.g. 1h, 7d).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    /// Print recent events (up to 1,000) as JSON lines.
    Events {
        /// Then keep printing new ones as they happen.
        #[arg(short, long)]
        follow: bool,
    },
    /// Track work you do yourself; prints its id.
    Track {
        /// A name for it.
        name: String,
        /// Its session.
        #[arg(long)]
        session: Option<String>,
        /// Its parent.
        #[arg(long)]
        parent: Option<String>,
        /// Metadata (a JSON object).
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// Report progress on a tracked operation (or a process reporting about itself).
    Progress {
        /// Id or name (a child finds its own in `BPM_PROCESS_ID`).
        id: String,
        /// 0 to 100.
        percent: f64,
        /// What it is doing.
        message: Option<String>,
    },
    /// Complete a tracked operation.
    Complete {
        /// Id or name.
        id: String,
        /// Its result (JSON).
        #[arg(long, value_name = "JSON")]
        result: Option<String>,
    },
    /// Fail a tracked operation.
    Fail {
        /// Id or name.
        id: String,
        /// Why.
        message: String,
    },
    /// Fencing tokens: whether a process is still its record's current attempt.
    Fence {
        /// What to do.
        #[command(subcommand)]
        action: FenceAction,
    },
    /// Make an agent tool start `bpm mcp`: Claude Code, Codex, Gemini CLI
    /// or VS Code (its own MCP configuration file, edited in place).
    Agents {
        /// What to do.
        #[command(subcommand)]
        action: AgentsAction,
    },
    /// Print bpm's man page (roff): `bpm man > ~/.local/share/man/man1/bpm.1`.
    Man,
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run or manage the daemon.
    Daemon(DaemonArgs),
    /// List the nodes that share this home's Redis store, with their state.
    Nodes {
        /// Print the nodes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve MCP on stdin/stdout (or HTTP with --http), so AI agents use bpm as tools.
    Mcp {
        /// Refuse every tool that changes anything (start, stop, input, ...).
        #[arg(long)]
        read_only: bool,
        /// Only start commands beginning with this prefix (repeatable; adds to config).
        #[arg(long, value_name = "PREFIX")]
        allow_command: Vec<String>,
        /// Only start processes in this directory or below (repeatable; adds to config).
        #[arg(long, value_name = "DIR")]
        allow_dir: Vec<PathBuf>,
        /// Under --allow-command, let requests set this variable although it changes
        /// what runs (`PATH`, `LD_*`, `NODE_OPTIONS`...; a trailing * matches any end; repeatable).
        #[arg(long, value_name = "NAME")]
        allow_env: Vec<String>,
        /// Show environment values to the agent instead of redacting them.
        #[arg(long)]
        show_env: bool,
        /// Serve MCP over Streamable HTTP on ADDR:PORT (at /mcp, for many clients at
        /// once; the bearer token is in $BPM_HOME/mcp-token) instead of stdio.
        #[arg(long, value_name = "ADDR:PORT")]
        http: Option<std::net::SocketAddr>,
    },
    /// Host a stdio MCP server for an agent tool: put `bpm mcp-run --` before the
    /// server's command in the tool's configuration. The server runs as a bpm record
    /// (kind mcp) owned by the tool, and its whole tree is stopped a grace after the
    /// tool goes, however it goes.
    #[command(name = "mcp-run")]
    McpRun {
        /// The record's name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// One server for every caller of the same command, arguments, environment
        /// and directory (for servers without per-client state); stopped when the last
        /// caller has been gone for the grace.
        #[arg(long)]
        shared: bool,
        /// How long the server outlives its caller (its last caller, with --shared).
        #[arg(long, value_name = "DURATION", default_value = crate::mcp_run::DEFAULT_GRACE)]
        grace: String,
        /// The server's program and arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// A shared MCP server's record (`bpm mcp-run --shared` starts it).
    #[command(name = "mcp-hub", hide = true)]
    McpHub {
        /// How long the server outlives its last caller.
        #[arg(long, value_name = "DURATION")]
        grace: String,
        /// The server's program and arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Serve the live dashboard on a local web page; prints its URL (with the token).
    Web {
        /// Listen on ADDR:PORT (default 127.0.0.1 and a free port).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Show, never change: hide and refuse every action.
        #[arg(long)]
        read_only: bool,
        /// Open the page in a browser (xdg-open).
        #[arg(long)]
        open: bool,
    },
    /// The records and their output, live, with keys to stop, restart, pause,
    /// resume, attach and filter (? lists them).
    Tui {
        /// Show, never change: every action key is refused.
        #[arg(long)]
        read_only: bool,
    },
    /// A live view of running processes: CPU, memory and ports of each tree.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0, value_name = "SECS")]
        interval: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(short = 'n', long, value_name = "N")]
        iterations: Option<u64>,
    },
    /// The keeper: the parent of every process on this node (started by the daemon).
    #[command(hide = true)]
    Keeper {
        /// The store whose output the keeper writes (a redis:// URL; files otherwise).
        #[arg(long)]
        store: Option<String>,
    },
}

/// Start a process in the background; prints its id.
// (With the deferred subcommands, this comment is also the command's help.)
#[derive(Debug, Default, Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct RunArgs {
    /// A name.
    #[arg(long)]
    pub name: Option<String>,
    /// `agent_session`, `test_suite`, build, server, analysis or custom.
    #[arg(long)]
    pub kind: Option<String>,
    /// Concurrency group.
    #[arg(long)]
    pub group: Option<String>,
    /// Session.
    #[arg(long)]
    pub session: Option<String>,
    /// Run it on this node (its daemon makes the record); `any`: the first
    /// node with room takes it; this node by default.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// With `--node any`: only a node carrying this label K=V (its
    /// `[node] labels`) may take it (repeatable).
    #[arg(long, value_name = "K=V")]
    pub node_label: Vec<String>,
    /// When its node is lost, run it again on another node (one carrying
    /// the --node-label labels); its node stops it first. Needs --restart
    /// on-failure or always, and a shared (Redis) store.
    #[arg(long)]
    pub failover: bool,
    /// End the record when its leader exits, leaving the processes it
    /// started running (by default the record stays live until the last
    /// of them ends, and stops reach them).
    #[arg(long)]
    pub leader_only: bool,
    /// If a live process has this --name: start nothing and print its id,
    /// when it runs the same command and settings (refused, naming the
    /// differences, otherwise).
    #[arg(long)]
    pub ensure: bool,
    /// If a live process has this --name: stop it (its whole tree, its
    /// grace) and start this one once it has ended.
    #[arg(long)]
    pub replace: bool,
    /// Hand the process a TCP port in `PORT` and `BPM_PORT`, held until its
    /// record ends: `auto` (any free port), a range (3000-3099, the lowest
    /// free) or one port (refused when another process holds it or
    /// anything listens there). It is ready when the port accepts
    /// connections, unless another readiness check is given.
    #[arg(long, value_name = "auto|N|A-B")]
    pub port: Option<String>,
    /// Live only while this owner lives (repeatable): `pid:PID` (a
    /// process, `pid:$$` for this shell) or `session:NAME` (a session a
    /// client holds, as `bpm mcp` does). When the last owner has been gone
    /// for --owner-grace, the process is stopped (cause `owner gone`).
    #[arg(long, value_name = "pid:PID|session:NAME", conflicts_with = "persist")]
    pub owner: Vec<String>,
    /// How long the process outlives its last owner (default 30s).
    #[arg(long, value_name = "DURATION", requires = "owner")]
    pub owner_grace: Option<String>,
    /// Live until it ends or is stopped, whatever else ends: the default
    /// when no --owner is given.
    #[arg(long)]
    pub persist: bool,
    /// Parent process (id or name).
    #[arg(long)]
    pub parent: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Environment variable K=V (repeatable), added to this shell's environment.
    #[arg(long, value_name = "K=V")]
    pub env: Vec<std::ffi::OsString>,
    /// Environment file in dotenv format (repeatable; a later file's
    /// variables over an earlier's, --env over both). Read again at each
    /// start, so an edit takes effect on the next restart.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Restart it (as `bpm restart` does: a new record) when files under
    /// this path change (repeatable; a file or a directory, everything
    /// under it). Changes under .git and bpm's own state never count.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// With --watch: changes to paths matching this glob do not count
    /// (repeatable; matched below the watched path and against the file
    /// name: '*.log', 'target/**').
    #[arg(long, value_name = "GLOB", requires = "watch")]
    pub watch_ignore: Vec<String>,
    /// With --watch: how long to wait after a change for the next before
    /// restarting, so that a burst of saves is one restart (default 300ms).
    #[arg(long, value_name = "DURATION", requires = "watch")]
    pub watch_debounce: Option<String>,
    /// With --watch: restart the live processes that depend on this one too.
    #[arg(long, requires = "watch")]
    pub restart_dependents: bool,
    /// Start from the daemon's environment instead of this shell's.
    #[arg(long)]
    pub clean_env: bool,
    /// Stop it (`timed_out`) after this long, e.g. 30s, 5m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Grace period between TERM and KILL.
    #[arg(long)]
    pub grace: Option<String>,
    /// The signal that asks it to stop (TERM by default): a name (INT, SIGHUP) or a number.
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// A command (`sh -c`, in its directory and environment) run to stop
    /// it, before the stop signal; its output goes to the process's.
    #[arg(long, value_name = "CMD")]
    pub stop_command: Option<String>,
    /// How long the stop command may take before the signal follows (10s).
    #[arg(long, value_name = "DURATION")]
    pub stop_command_timeout: Option<String>,
    /// The first delay before an automatic restart, doubling up to a minute (1s by default).
    #[arg(long, value_name = "DURATION")]
    pub backoff: Option<String>,
    /// never, on-failure or always.
    #[arg(long)]
    pub restart: Option<String>,
    /// How many automatic restarts at most.
    #[arg(long)]
    pub max_restarts: Option<u32>,
    /// Start only after this process completed (repeatable).
    #[arg(long, value_name = "ID")]
    pub after: Vec<String>,
    /// Higher starts first (after the few already handed to the keeper to start next).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Wait this long before starting.
    #[arg(long)]
    pub delay: Option<String>,
    /// Start at TIME instead: HH:MM today (in --tz, else this machine's zone), or an
    /// RFC 3339 time (2026-11-30T14:30:00+01:00).
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    pub at: Option<String>,
    /// Ready when a line of output matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub ready_pattern: Option<String>,
    /// Ready when this loopback TCP port accepts connections.
    #[arg(long, value_name = "PORT")]
    pub ready_port: Option<u16>,
    /// Ready when an HTTP GET of this URL (or this path on the --port
    /// handed out) answers 2xx or 3xx.
    #[arg(long, value_name = "URL_OR_PATH")]
    pub ready_http: Option<String>,
    /// Ready when this command (`sh -c`, in the process's directory and
    /// environment) exits 0; tried every 250 ms (--ready-every).
    #[arg(long, value_name = "CMD")]
    pub ready_exec: Option<String>,
    /// Liveness: an HTTP GET of this URL (or path on the --port) must
    /// answer 2xx or 3xx.
    #[arg(long, value_name = "URL_OR_PATH")]
    pub health_http: Option<String>,
    /// Liveness: this command (`sh -c`) must exit 0.
    #[arg(long, value_name = "CMD")]
    pub health_exec: Option<String>,
    /// Liveness: this loopback TCP port must accept connections.
    #[arg(long, value_name = "PORT")]
    pub health_port: Option<u16>,
    /// How often the health check runs (default 2s).
    #[arg(long, value_name = "DURATION")]
    pub health_every: Option<String>,
    /// How many failures in a row make it unhealthy: it is stopped and
    /// started again under its restart policy (default 3).
    #[arg(long, value_name = "N")]
    pub health_failures: Option<u32>,
    /// How long one health check may take (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// The first health check this long after the start (default: one
    /// --health-every).
    #[arg(long, value_name = "DURATION")]
    pub health_initial_delay: Option<String>,
    /// Passes in a row that make it healthy again after a failure (default 1).
    #[arg(long, value_name = "N")]
    pub health_successes: Option<u32>,
    /// Ready when the process says so: `READY=1` on `NOTIFY_SOCKET`
    /// (systemd's `sd_notify`), or `bpm ready` from a script.
    #[arg(long)]
    pub ready_notify: bool,
    /// Fail if not ready within this long.
    #[arg(long)]
    pub ready_timeout: Option<String>,
    /// With --ready-http, --ready-exec or --ready-port: the first try this
    /// long after the start (default: at once).
    #[arg(long, value_name = "DURATION")]
    pub ready_initial_delay: Option<String>,
    /// With --ready-http, --ready-exec or --ready-port: how long after a
    /// failed try the next is made (default 250ms).
    #[arg(long, value_name = "DURATION")]
    pub ready_every: Option<String>,
    /// With --ready-http, --ready-exec or --ready-port: how long one try
    /// may take (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub ready_check_timeout: Option<String>,
    /// Passes in a row that make it ready (default 1).
    #[arg(long, value_name = "N")]
    pub ready_successes: Option<u32>,
    /// Failed readiness tries in a row after which it is stopped and
    /// started again under its restart policy (default: tried until ready).
    #[arg(long, value_name = "N")]
    pub ready_failures: Option<u32>,
    /// Announce idleness after this long without output.
    #[arg(long)]
    pub idle_after: Option<String>,
    /// An exit code besides 0 that counts as success: completed, and not
    /// restarted by --restart on-failure (repeatable).
    #[arg(
        long = "success-code",
        value_name = "CODE",
        allow_negative_numbers = true
    )]
    pub success_codes: Vec<i32>,
    /// Keep the last N pieces of old output its newest pushes out,
    /// gzip-compressed (1 to 100): `bpm logs --archived ID` reads them.
    #[arg(long, value_name = "N")]
    pub log_archive: Option<u32>,
    /// Label K=V (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Metadata (a JSON object).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Keep stdin open as a pipe for sending input.
    #[arg(long)]
    pub stdin: bool,
    /// Run it under a pseudo-terminal: programs that check isatty see a
    /// terminal, prompts and REPLs work, colours are kept. Type into it
    /// with `bpm input`, or connect to it with `bpm attach`.
    #[arg(long, conflicts_with = "stdin")]
    pub tty: bool,
    /// The terminal's size in columns by rows (120x40; implies --tty). By
    /// default this terminal's size, or 80x24.
    #[arg(long, value_name = "COLSxROWS")]
    pub tty_size: Option<String>,
    /// Run one string through `sh -c`.
    #[arg(long)]
    pub shell: bool,
    /// A command to run when it ends (the record as JSON on stdin).
    #[arg(long, value_name = "CMD")]
    pub on_exit: Option<String>,
    /// Make a schedule: start a run of the command every DURATION (30s,
    /// 5m, 1h), counted from now. Each run is a record of its own.
    #[arg(long, value_name = "DURATION", conflicts_with = "cron")]
    pub every: Option<String>,
    /// Make a schedule: start a run at each time a standard five-field
    /// cron expression names ("*/5 * * * *", "0 9 * * MON-FRI").
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// With --cron: the IANA time zone its hours are in (Europe/Paris,
    /// UTC); this machine's by default.
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub tz: Option<String>,
    /// With a schedule: what a due time does while the last run is live:
    /// skip (default; counted), queue (waits for it to end) or allow.
    #[arg(long, value_name = "RULE")]
    pub overlap: Option<String>,
    /// With a schedule: start each run up to DURATION after its due time
    /// (the same delay for the same due time), so schedules spread out.
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<String>,
    /// With a schedule: start the first run now, not at the first due time.
    #[arg(long)]
    pub run_now: bool,
    /// With a schedule: after a time no daemon ran (a reboot), run the
    /// last due time missed, once, instead of skipping it.
    #[arg(long)]
    pub catch_up: bool,
    /// Memory the process and its tree may use (512M, 2G): past it the
    /// kernel kills it, and it ends failed with the reason `memory limit`.
    /// A cgroup where the machine lets bpm make one, else an address-space
    /// rlimit; `bpm show` says which.
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,
    /// CPU the tree may use, in percent of one CPU (50, 200 for two);
    /// needs a cgroup cpu controller, refused otherwise.
    #[arg(long, value_name = "PERCENT")]
    pub cpu_max: Option<String>,
    /// How many processes and threads the tree may hold at once (a fork
    /// bomb stops there).
    #[arg(long, value_name = "N")]
    pub pids_max: Option<String>,
    /// How many files each of its processes may hold open (an rlimit).
    #[arg(long, value_name = "N")]
    pub nofile: Option<String>,
    /// Follow the output and exit with the process's own exit code.
    #[arg(long)]
    pub wait: bool,
    /// Print the whole record as JSON instead of the id.
    #[arg(long)]
    pub json: bool,
    /// Start one process per line of FILE (`-` for stdin), in one request:
    /// the line's words (quoted as in a shell, never expanded) follow CMD,
    /// or are the command when no CMD is given; with --shell the line runs
    /// through `sh -c`. Prints one id per line.
    #[arg(long, value_name = "FILE", conflicts_with = "wait")]
    pub from: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "from", value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// List processes.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include finished records.
    #[arg(short, long)]
    pub all: bool,
    /// Only this state (repeatable).
    #[arg(long)]
    pub state: Vec<String>,
    /// Only this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only children of this process.
    #[arg(long)]
    pub parent: Option<String>,
    /// Only this label K=V (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// Only this project's services (`bpm up`); with no name, the
    /// project of the `bpm.toml` here or in the nearest parent.
    #[arg(long, value_name = "PROJECT", num_args = 0..=1, default_missing_value = "")]
    pub project: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Draw parents and children.
    #[arg(long)]
    pub tree: bool,
    /// Only this hierarchy depth (roots are 0).
    #[arg(long)]
    pub level: Option<usize>,
    /// Print an array of records as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Print a process's output.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Id or name, or a project's name (every service's output); none:
    /// the project of the `bpm.toml` here or in the nearest parent.
    pub id: Option<String>,
    /// Follow until the process ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// stdout, stderr or both.
    #[arg(long, default_value = "both")]
    pub stream: String,
    /// Start at this cursor (printed by --json reads as `next`).
    #[arg(long, value_name = "CURSOR")]
    pub since: Option<u64>,
    /// Only the lines that match this regular expression (of one process,
    /// or of every service of a project).
    #[arg(long, value_name = "RE", conflicts_with = "since")]
    pub grep: Option<String>,
    /// The archives of old output a process keeps (--log-archive N),
    /// oldest first, both streams as written.
    #[arg(long, conflicts_with_all = ["follow", "since", "grep", "lines"])]
    pub archived: bool,
}

/// `bpm up`.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // one per flag
pub struct UpArgs {
    /// Only these services (and what they depend on); a single name may
    /// also name a project brought up before, from any directory.
    pub services: Vec<String>,
    /// The project file: a bpm.toml, a Procfile or a process-compose.yaml
    /// (repeatable: the files are read as one, the later winning key by
    /// key). A single bpm.toml is read with the bpm.override.toml beside
    /// it, a process-compose.yaml with its process-compose.override.yaml.
    #[arg(short, long, value_name = "FILE")]
    pub file: Vec<PathBuf>,
    /// Return once every service is ready (or completed); otherwise exit
    /// non-zero naming the service that failed, with its last lines.
    #[arg(long)]
    pub wait: bool,
    /// With --wait or --rolling: give up after this long (exit 124), e.g. 60s.
    #[arg(long, value_name = "DURATION")]
    pub wait_timeout: Option<String>,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop the services the file no longer has.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Replace a changed service without a moment down: the new copy
    /// starts beside the running one (on a port of its own with port =
    /// "auto"), and the running one stops once the new one is ready; a
    /// new copy not ready in time (--wait-timeout, 2m by default) is
    /// stopped, and the running one runs on. Needs a readiness check.
    #[arg(long)]
    pub rolling: bool,
    /// Run again a service whose last run was lost (it may have ended while
    /// bpm could not see it: a migration that succeeded); by default it is
    /// left, and `up` says so.
    #[arg(long)]
    pub rerun_unknown: bool,
}

/// `bpm scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=N (or PROJECT/SERVICE=N), one or more.
    #[arg(required = true, value_name = "SERVICE=N")]
    pub scales: Vec<String>,
    /// The project file whose project is meant, as for `up` (by default
    /// the bpm.toml here or in a parent).
    #[arg(short, long, value_name = "FILE")]
    pub file: Vec<PathBuf>,
}

/// `bpm down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Only these services; a single name may also name a project.
    pub services: Vec<String>,
    /// The project file, as for `up` (repeatable).
    #[arg(short, long, value_name = "FILE")]
    pub file: Vec<PathBuf>,
}

/// Stop processes (and their descendants); returns when they are gone.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Ids or names (none: pick from a list, on a terminal).
    pub ids: Vec<String>,
    /// KILL at once.
    #[arg(long)]
    pub force: bool,
    /// Grace period in seconds between TERM and KILL.
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,
    /// Every live process of this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Every live process.
    #[arg(long)]
    pub all: bool,
    /// Every live process at this hierarchy depth.
    #[arg(long)]
    pub level: Option<usize>,
    /// A schedule's live runs too (a stop of a schedule alone stops its
    /// future runs and leaves the live one to finish).
    #[arg(long)]
    pub all_runs: bool,
}

/// `bpm agents ACTION`.
#[derive(Debug, Subcommand)]
pub enum AgentsAction {
    /// Write bpm into TOOL's MCP configuration, so that it starts `bpm
    /// mcp`. Every other key and comment stays; setting up again changes
    /// nothing; the file as it was is kept beside it (FILE.bpm-backup).
    Setup(AgentsArgs),
    /// Take bpm out of TOOL's MCP configuration: the backup put back byte
    /// for byte when nothing else changed since, else bpm's entry alone.
    Remove(AgentsArgs),
}

/// Which tool's configuration `bpm agents` edits, and how.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// claude, codex, gemini or vscode.
    pub tool: crate::agents::Tool,
    /// The project's configuration in DIR (`.mcp.json`,
    /// `.codex/config.toml`, `.gemini/settings.json`, `.vscode/mcp.json`)
    /// instead of the user's.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Print what would change, as a diff, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With setup: also run the file's other stdio MCP servers through `bpm
    /// mcp-run`, so that they are stopped when the tool goes (remove puts them back).
    #[arg(long)]
    pub wrap_servers: bool,
}

/// `bpm fence ACTION`.
#[derive(Debug, Subcommand)]
pub enum FenceAction {
    /// Exit 0 while TOKEN is still the token of the record's current
    /// attempt; 1, saying why, once a newer attempt exists, the record
    /// ended, or its node's lease lapsed. Guard a write with it:
    /// `bpm fence check && write`.
    Check {
        /// The token (default: `BPM_FENCE`, which bpm gives every process).
        token: Option<u64>,
        /// The record (default: `BPM_PROCESS_ID`).
        #[arg(long)]
        id: Option<String>,
    },
}

/// Run or manage the daemon.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// What to do (nothing: run in the foreground).
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
    /// The store: fs, memory or a redis:// URL (overrides config.toml).
    #[arg(long)]
    pub store: Option<String>,
}

/// `bpm daemon ACTION`.
#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Print its pid, version, store and counts.
    Status,
    /// Stop it; processes keep running unless --kill-all.
    Stop {
        /// Stop every process first.
        #[arg(long)]
        kill_all: bool,
    },
    /// Write and enable a systemd user unit that starts the daemon at
    /// login (at boot with lingering), for this state directory.
    Install,
    /// Disable and remove that unit.
    Uninstall,
}

/// Ends the command, successfully, when `written` failed because the reader
/// of its standard output has gone (`bpm logs -f | head`); any other
/// failure to write is left to the caller.
pub(crate) fn enough_if_gone<T>(written: std::io::Result<T>) -> Option<T> {
    match written {
        Ok(v) => Some(v),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(_) => None,
    }
}

/// Prints clap's error (or the help it was asked for), with a hint where
/// the mistake is a common one: a command after `bpm run` without `--`.
fn usage_error(args: &[std::ffi::OsString], e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if let Some(hint) = run_hint(args, e) {
        eprintln!("\n{hint}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// For `bpm run sleep 5`: the same line with `--` before the command.
fn run_hint(args: &[std::ffi::OsString], e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let run = words.iter().position(|w| w == "run")?;
    if words.iter().any(|w| w == "--") || bad.starts_with('-') {
        return None;
    }
    let at = run + 1 + words[run + 1..].iter().position(|w| w == bad)?;
    let quote = |w: &String| {
        if !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
        {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    let line: Vec<String> = words[..at]
        .iter()
        .map(quote)
        .chain(std::iter::once("--".to_owned()))
        .chain(words[at..].iter().map(quote))
        .collect();
    Some(format!(
        "tip: the command to run goes after --, so that its own options stay its own:\n  bpm {}",
        line.join(" ")
    ))
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> ExitCode {
    // The lines scripts type most are read without clap (`fast`), which
    // spares them most of a command's own start; clap reads the rest.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A hosted MCP server's first step (`bpm mcp-run`'s): it becomes the
    // server at once, before anything else is set up.
    if args.get(1).is_some_and(|a| a == "mcp-pipe") {
        let command = args
            .get(2)
            .filter(|a| *a == "--")
            .map_or(&args[2..], |_| &args[3..]);
        return crate::mcp_run::pipe(command);
    }
    // An empty BPM_HOME is no home: the default one is used.
    let env_home = std::env::var_os("BPM_HOME").filter(|h| !h.is_empty());
    let mut cli = match fast::parse(&args, env_home.as_deref()) {
        Some(cli) => cli,
        None => match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) => return usage_error(&args, &e),
        },
    };
    if cli.home.is_none() {
        cli.home = env_home.map(PathBuf::from);
    }
    // The daemon and the keeper run on one thread: their work is short
    // steps handed from task to task, and on worker threads each hand-over
    // woke another thread (about a fifth of their CPU time for 500 short
    // processes). What waits for the disk goes to the blocking pool. The
    // MCP server, which can embed the whole manager, keeps worker threads;
    // a command does one thing and starts faster on the thread it has.
    let mut builder = if matches!(cli.command, Command::Mcp { .. } | Command::Web { .. }) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    // An idle blocking thread is kept 10 minutes, not tokio's 10 seconds:
    // a daemon's first disk write or usage sample after a quiet would
    // otherwise wait for a new thread.
    builder.thread_keep_alive(std::time::Duration::from_mins(10));
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bpm: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli))
}
