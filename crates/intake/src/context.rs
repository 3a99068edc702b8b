//! What [`Asked::into_spec`](crate::Asked::into_spec) needs from where the
//! request came from, and how it words what it refuses.

use std::collections::BTreeMap;
use std::path::Path;

use bpm_domain::{Environment, Owner, ProcessId, Span, TtySize};
use bpm_ports::Machine;

/// How a front end writes a field's name, so that an error names what
/// its user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// Command-line flags: `--ready-pattern`, `--health-every`.
    Flags,
    /// JSON keys as [`Asked`](crate::Asked) names them: `ready_pattern`,
    /// `health.every` (MCP, the page).
    Keys,
    /// A `bpm.toml` service's keys: `ready.log`, `health.every`.
    Project,
}

impl Spelling {
    /// `field` (as [`Asked`](crate::Asked) names it, `health.every` for a
    /// nested one) as this front end writes it.
    pub fn of(self, field: &str) -> String {
        match self {
            Spelling::Flags => match field {
                "command" | "argv" => "the command (after --)".to_owned(),
                "labels" => "--label".to_owned(),
                "node_labels" => "--node-label".to_owned(),
                _ => format!("--{}", field.replace(['_', '.'], "-")),
            },
            Spelling::Keys => field.to_owned(),
            Spelling::Project => match field {
                "ready_pattern" => "ready.log".to_owned(),
                "ready_port" => "ready.port".to_owned(),
                "ready_http" => "ready.http".to_owned(),
                "ready_exec" => "ready.exec".to_owned(),
                "ready_notify" => "ready.notify".to_owned(),
                "ready_timeout" | "ready_check_timeout" => "ready.timeout".to_owned(),
                "ready_initial_delay" => "ready.initial_delay".to_owned(),
                "ready_every" => "ready.every".to_owned(),
                "ready_successes" => "ready.successes".to_owned(),
                "ready_failures" => "ready.failures".to_owned(),
                "after" => "depends_on".to_owned(),
                _ => field.to_owned(),
            },
        }
    }

    /// The prefix the domain's own readers put before a field's name
    /// (`"--"` on the command line, none elsewhere).
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Spelling::Flags => "--",
            Spelling::Keys | Spelling::Project => "",
        }
    }
}

/// Whether a file may be read or watched (`what` names it in an error:
/// "env file", "watched path", "working directory"): asked before every
/// file a request would make bpm read, so that a caller's policy (`bpm
/// mcp`'s allowed directories) holds.
pub type MayRead<'a> = dyn Fn(&str, &Path) -> Result<(), String> + 'a;

/// Allows every file.
///
/// # Errors
/// Never.
pub fn may_read_anything(_: &str, _: &Path) -> Result<(), String> {
    Ok(())
}

/// Where a request comes from: what relative paths are relative to, the
/// environment it inherits, the machine's answers, and how its fields
/// are spelt.
pub struct Context<'a> {
    /// The directory a relative `cwd` is relative to, and the working
    /// directory when none is asked for.
    pub base: &'a Path,
    /// Whether relative `env_file` and `watch` paths are relative to the
    /// process's `cwd` (MCP) rather than to `base` (a shell, a project
    /// file's directory).
    pub files_from_cwd: bool,
    /// The environment the process inherits unless `clean_env`.
    pub env: &'a Environment,
    /// The machine's checks.
    pub machine: &'a dyn Machine,
    /// Asked before any file is read or watched.
    pub may_read: &'a MayRead<'a>,
    /// How an error names a field.
    pub spelling: Spelling,
    /// The time zone a `cron` without `tz` is in; the machine's when none.
    pub time_zone: Option<&'a str>,
    /// The size of a terminal asked for without a size.
    pub terminal: TtySize,
    /// What the request's process references (`parent`, `after`) resolved
    /// to ([`Asked::references`](crate::Asked::references)); a full id
    /// needs no entry.
    pub ids: BTreeMap<String, ProcessId>,
    /// Who owns the process, and for how long it outlives them, unless it
    /// asks for owners of its own or to be `persistent`.
    pub owner: Option<(Owner, Span)>,
    /// When the request is made: what `at` is counted from (a request
    /// without it cannot say `at`).
    pub now: Option<bpm_domain::Timestamp>,
}

impl<'a> Context<'a> {
    /// A request from `base`, inheriting `env`, checked against `machine`,
    /// with every file allowed and fields spelt as JSON keys.
    pub fn new(base: &'a Path, env: &'a Environment, machine: &'a dyn Machine) -> Self {
        Context {
            base,
            files_from_cwd: false,
            env,
            machine,
            may_read: &may_read_anything,
            spelling: Spelling::Keys,
            time_zone: None,
            terminal: TtySize::default(),
            ids: BTreeMap::new(),
            owner: None,
            now: None,
        }
    }
}

/// Why a request cannot be turned into a spec: the field at fault, as
/// [`Asked`](crate::Asked) names it, and the reason. It reads as the
/// front end's user wrote the field: `--timeout: ...` from the command
/// line, `timeout: ...` from MCP, `services.web.timeout: ...` once a
/// project reader puts its place before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.text())]
#[non_exhaustive]
pub struct AskError {
    /// The field at fault (`ready_pattern`, `health.every`, `command`).
    pub field: String,
    /// What is wrong with it (other fields it names spelt as the front
    /// end spells them).
    pub reason: String,
    /// The field as the front end spells it, when the reason does not
    /// start with it already.
    spelled: Option<String>,
}

impl AskError {
    /// An error of `field` whose `reason` says all, the field included.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AskError {
            field: field.into(),
            reason: reason.into(),
            spelled: None,
        }
    }

    /// An error of `field`, spelt `spelled` before its `reason`.
    pub fn of(
        field: impl Into<String>,
        spelled: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        AskError {
            field: field.into(),
            reason: reason.into(),
            spelled: Some(spelled.into()),
        }
    }

    fn text(&self) -> String {
        match &self.spelled {
            Some(s) => format!("{s}: {}", self.reason),
            None => self.reason.clone(),
        }
    }
}
