//! Reading a project file into a [`Project`]: the file's shape, its
//! bounds, and each service as an [`Asked`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Amount, Asked, Context, HealthAsked, Spelling};
use bpm_domain::project::{Project, Service};
use bpm_domain::{Environment, ProcessSpec, ReadinessCheck, Until};
use bpm_ports::Machine;
use serde::Deserialize;
use sha2::Digest as _;

/// The file `bpm up` reads when none is given.
pub const FILE_NAME: &str = "bpm.toml";

/// The largest project file read, in bytes.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// The most services a project may have, replicas counted.
pub const MAX_SERVICES: usize = 1_000;
/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = bpm_domain::project::MAX_REPLICAS;
/// The deepest nesting of lists and tables a project file may have.
pub const MAX_NESTING: usize = 64;
/// The longest parser message an error carries whole, in characters (a
/// list of the keys a table accepts fits; a 1 MiB line it quotes does
/// not).
const QUOTED_AT_MOST: usize = 1_000;

/// `message` as an error may carry it: a parser's message can quote the
/// line at fault whole, so a long one keeps its first characters and says
/// how long it was.
pub(crate) fn quoted(message: &str) -> String {
    if message.chars().count() <= QUOTED_AT_MOST {
        return message.to_owned();
    }
    let head: String = message.chars().take(QUOTED_AT_MOST).collect();
    format!("{head}… (cut: {} bytes in all)", message.len())
}

/// A value of a file as an error quotes it: its first characters and its
/// length when it is long.
pub(crate) fn quoted_value(value: &str) -> String {
    const AT_MOST: usize = 40;
    if value.chars().count() <= AT_MOST {
        return value.to_owned();
    }
    let head: String = value.chars().take(AT_MOST).collect();
    format!("{head}… ({} bytes)", value.len())
}

/// A parser's `message` without the names of bpm's own Rust types, which
/// say nothing to whoever wrote the file: what the key accepts instead.
fn in_plain_words(message: &str) -> String {
    const ACCEPTS: &[(&str, &str)] = &[
        (
            "untagged enum PortValue",
            "expected a port number, \"auto\" or a range \"FIRST-LAST\"",
        ),
        (
            "untagged enum DependsOn",
            "expected a list of service names, or a table of name = \"started\", \"ready\", \"completed\" or \"ended\"",
        ),
        (
            "untagged enum OneOrMany",
            "expected a text or a list of texts",
        ),
        ("untagged enum TextOrNumber", "expected a text or a number"),
    ];
    if let Some((_, accepts)) = ACCEPTS.iter().find(|(rust, _)| message.contains(rust)) {
        return (*accepts).to_owned();
    }
    match message.split_once(", expected struct ") {
        Some((found, _)) => format!("{found}, expected a table of keys"),
        None => message.to_owned(),
    }
}

/// How deeply `text` nests lists and tables (`[` and `{`, outside
/// quotes): refused past [`MAX_NESTING`] before any parser recurses.
fn nesting(text: &str) -> usize {
    let (mut depth, mut most, mut quote) = (0usize, 0usize, None::<char>);
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    most = most.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        // An apostrophe in a plain word (`don't`) must not hide the rest
        // of the file: a quote ends at its line's end here.
        if c == '\n' {
            quote = None;
        }
    }
    most
}

/// The project file in `dir` or the nearest parent that has one.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|f| f.is_file())
}

/// A project file, read.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// The file it came from (absolute).
    pub file: PathBuf,
    /// Keys of a process-compose file bpm does not act on, by name.
    pub ignored: Vec<String>,
    /// When several files were read as one (a file's `extends`, an
    /// override file beside it): the files, in the order merged, and the
    /// merged document, as `bpm up --dry-run` prints it.
    pub merged: Option<(Vec<PathBuf>, String)>,
}

/// Reads the project file `file` (a `bpm.toml`, a Procfile, or a
/// process-compose `.yaml`), with `env` the environment its processes start
/// from (the caller's).
///
/// # Errors
/// What is wrong, naming the file, the line where known, and the key.
pub fn load(file: &Path, env: &Environment, machine: &dyn Machine) -> Result<Loaded, String> {
    load_confined(
        file,
        &Reading {
            env,
            machine,
            may_read: &crate::may_read_anything,
        },
    )
}

/// What a project's services are read with: the environment they start
/// from (the caller's), the machine their directories, env files,
/// watches and limits are checked against, and whether a file may be
/// read.
pub struct Reading<'a> {
    /// The environment its processes start from.
    pub env: &'a Environment,
    /// The machine's checks.
    pub machine: &'a dyn Machine,
    /// Asked before the project file, and each file it names, is read.
    pub may_read: &'a MayRead<'a>,
}

use crate::MayRead;

mod compose;
mod layers;
mod merge;

/// [`load`], asking `may_read` before reading the file and each env file
/// it names: `bpm mcp`'s allowed directories, so a request never makes
/// bpm read a file its policy does not allow.
///
/// # Errors
/// Those of [`load`], and `may_read`'s refusal.
pub fn load_confined(file: &Path, from: &Reading<'_>) -> Result<Loaded, String> {
    load_all_confined(&[file.to_path_buf()], from)
}

/// Several project files read as one (`bpm up -f a -f b`), the later
/// winning key by key: process-compose files as process-compose merges
/// them, `bpm.toml` files table by table. One file is read with what
/// goes with it: the `process-compose.override.yaml` beside a
/// `process-compose.yaml`, the `bpm.override.toml` beside a `bpm.toml`.
///
/// # Errors
/// Those of [`load`], naming the file each wrong key came from; a
/// Procfile among others, or files of both kinds.
pub fn load_all(
    files: &[PathBuf],
    env: &Environment,
    machine: &dyn Machine,
) -> Result<Loaded, String> {
    load_all_confined(
        files,
        &Reading {
            env,
            machine,
            may_read: &crate::may_read_anything,
        },
    )
}

/// What kind of project file a path names, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Procfile,
    Compose,
    Toml,
}

impl Kind {
    fn of(file: &Path) -> Self {
        let base = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if base.starts_with("Procfile") {
            Kind::Procfile
        } else if file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        {
            Kind::Compose
        } else {
            Kind::Toml
        }
    }
}

/// A project file's text, once `may_read` allows it and its size and
/// nesting are within bounds.
fn read_text(file: &Path, from: &Reading<'_>) -> Result<String, String> {
    (from.may_read)("project file", file)?;
    let size = std::fs::metadata(file)
        .map_err(|e| format!("{}: cannot read it: {e}", file.display()))?
        .len();
    if size > MAX_FILE_BYTES as u64 {
        return Err(format!(
            "{}: {size} bytes: a project file may hold at most {MAX_FILE_BYTES}",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read it: {e}", file.display()))?;
    let depth = nesting(&text);
    if depth > MAX_NESTING {
        return Err(format!(
            "{}: lists and tables nest {depth} deep: a project file may nest them at most {MAX_NESTING} deep",
            file.display()
        ));
    }
    Ok(text)
}

/// [`load_all`], asking `may_read` as [`load_confined`] does.
///
/// # Errors
/// Those of [`load_all`], and `may_read`'s refusal.
pub fn load_all_confined(files: &[PathBuf], from: &Reading<'_>) -> Result<Loaded, String> {
    let files = files
        .iter()
        .map(|f| std::path::absolute(f).map_err(|e| format!("{}: {e}", f.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(file) = files.first().cloned() else {
        return Err("no project file given".into());
    };
    let kind = Kind::of(&file);
    if let Some(other) = files.iter().skip(1).find(|f| Kind::of(f) != kind) {
        return Err(format!(
            "{}: {} and {} cannot be read as one: give files of one kind (bpm.toml files, or process-compose files)",
            other.display(),
            file.display(),
            other.display()
        ));
    }
    if kind == Kind::Procfile && files.len() > 1 {
        return Err(format!(
            "{}: a Procfile is read alone: give it as the only -f",
            files[1].display()
        ));
    }
    let text = read_text(&file, from)?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let default_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("project")
        .to_owned();
    let named = |e: String| format!("{}:{e}", file.display());
    let mut merged = None;
    let (project, ignored) = match kind {
        Kind::Procfile => (
            procfile(&text, &default_name, &dir, from).map_err(named)?,
            Vec::new(),
        ),
        Kind::Compose => compose_files(&files, &text, &default_name, &dir, from, &mut merged)?,
        Kind::Toml => {
            let mut all = vec![(file.clone(), text)];
            let beside = dir.join(OVERRIDE_FILE_NAME);
            let override_too = files.len() == 1
                && file.file_name().and_then(|n| n.to_str()) == Some(FILE_NAME)
                && beside.is_file();
            let more = files.iter().skip(1).chain(override_too.then_some(&beside));
            for f in more {
                all.push((f.clone(), read_text(f, from)?));
            }
            if all.len() == 1 {
                (
                    bpm_toml(&all[0].1, &default_name, &dir, from).map_err(named)?,
                    Vec::new(),
                )
            } else {
                let (project, doc) = layers::read(&all, &default_name, &dir, from)?;
                merged = Some((all.into_iter().map(|(f, _)| f).collect(), doc));
                (project, Vec::new())
            }
        }
    };
    project
        .validate()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    check_sizes(&project).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Loaded {
        project,
        file,
        ignored,
        merged,
    })
}

/// The file read over a `bpm.toml` beside it, when it is there.
pub const OVERRIDE_FILE_NAME: &str = "bpm.override.toml";

/// Process-compose files with what process-compose reads with them: the
/// files each one's top-level `extends` names, and, for a single
/// `process-compose.yaml`, the `process-compose.override.yaml` (or
/// `.yml`) beside it, merged in that order.
fn compose_files(
    files: &[PathBuf],
    text: &str,
    default_name: &str,
    dir: &Path,
    from: &Reading<'_>,
    merged_into: &mut Option<(Vec<PathBuf>, String)>,
) -> Result<(Project, Vec<String>), String> {
    let file = files[0].clone();
    let mut files = files.to_vec();
    let base = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if base == "process-compose" && files.len() == 1 {
        let beside = ["yaml", "yml"]
            .iter()
            .map(|ext| dir.join(format!("process-compose.override.{ext}")))
            .find(|f| f.is_file());
        files.extend(beside);
    }
    let read = |f: &Path| -> Result<String, String> {
        if f == file {
            return Ok(text.to_owned());
        }
        read_text(f, from)
    };
    let sources = merge::sources(&files, &read)?;
    if sources.len() == 1 {
        let named = |e: String| format!("{}:{e}", file.display());
        return compose::read(&sources[0].text, default_name, dir, from).map_err(named);
    }
    let merged = merge::merge(sources)?;
    *merged_into = Some((
        merged.sources.iter().map(|s| s.file.clone()).collect(),
        serde_norway::to_string(&merged.doc).unwrap_or_default(),
    ));
    let named = |e: String| {
        if e.starts_with('/') {
            e
        } else {
            format!("{}:{e}", file.display())
        }
    };
    compose::read_merged(&merged, default_name, dir, from).map_err(named)
}

/// What `up` could not send: more services than [`MAX_SERVICES`], or one
/// whose start would not fit one request to the daemon. Checked when the
/// file is read, so `--dry-run` refuses what `up` would refuse, and `up`
/// starts nothing of a project it cannot start whole.
fn check_sizes(project: &Project) -> Result<(), String> {
    if project.services.len() > MAX_SERVICES {
        return Err(format!(
            "{} services (replicas counted): a project may have at most {MAX_SERVICES}",
            project.services.len()
        ));
    }
    // The request's own words and the dependencies' ids come on top.
    let room = bpm_ports::MAX_REQUEST_BYTES - 64 * 1024;
    for s in &project.services {
        let bytes = serde_json::to_vec(&s.spec).map_or(usize::MAX, |v| v.len());
        if bytes > room {
            return Err(format!(
                "services.{}: its definition takes {bytes} bytes (command, environment and the rest): one service may take at most {room}",
                s.name
            ));
        }
    }
    Ok(())
}

/// `bpm.toml`'s shape; every key optional but a service's command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    project: ProjectTable,
    #[serde(default)]
    services: BTreeMap<String, toml::Spanned<ServiceTable>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectTable {
    name: Option<String>,
}

/// One service in `bpm.toml`.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceTable {
    pub(crate) command: Option<String>,
    pub(crate) argv: Option<Vec<String>>,
    pub(crate) cwd: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) env_file: Option<OneOrMany>,
    pub(crate) ready: Option<ReadyTable>,
    #[serde(default)]
    pub(crate) depends_on: DependsOn,
    pub(crate) port: Option<PortValue>,
    pub(crate) restart: Option<String>,
    pub(crate) max_restarts: Option<u32>,
    pub(crate) backoff: Option<String>,
    pub(crate) health: Option<HealthTable>,
    pub(crate) replicas: Option<u32>,
    pub(crate) disabled: Option<bool>,
    pub(crate) group: Option<String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) kind: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeout: Option<String>,
    pub(crate) grace: Option<String>,
    pub(crate) stop_signal: Option<String>,
    pub(crate) stop_command: Option<String>,
    pub(crate) stop_command_timeout: Option<String>,
    pub(crate) delay: Option<String>,
    pub(crate) idle_after: Option<String>,
    pub(crate) log_archive: Option<u32>,
    pub(crate) success_codes: Option<Vec<i32>>,
    pub(crate) node: Option<String>,
    #[serde(default)]
    pub(crate) node_labels: BTreeMap<String, String>,
    pub(crate) failover: Option<bool>,
    pub(crate) leader_only: Option<bool>,
    pub(crate) stdin: Option<bool>,
    pub(crate) on_exit: Option<String>,
    pub(crate) watch: Option<OneOrMany>,
    pub(crate) watch_ignore: Option<OneOrMany>,
    pub(crate) watch_debounce: Option<String>,
    pub(crate) restart_dependents: Option<bool>,
    pub(crate) every: Option<String>,
    pub(crate) cron: Option<String>,
    pub(crate) tz: Option<String>,
    pub(crate) overlap: Option<String>,
    pub(crate) jitter: Option<String>,
    pub(crate) run_now: Option<bool>,
    pub(crate) catch_up: Option<bool>,
    pub(crate) memory_max: Option<TextOrNumber>,
    pub(crate) cpu_max: Option<TextOrNumber>,
    pub(crate) pids_max: Option<TextOrNumber>,
    pub(crate) nofile: Option<TextOrNumber>,
    pub(crate) tty: Option<bool>,
    pub(crate) tty_size: Option<String>,
    pub(crate) clean_env: Option<bool>,
    pub(crate) session: Option<String>,
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub(crate) owner: Vec<String>,
    pub(crate) owner_grace: Option<String>,
}

/// A value written as text or as a number (`pids_max = 64`, `memory_max = "512M"`).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum TextOrNumber {
    Number(i64),
    Text(String),
}

impl TextOrNumber {
    fn text(&self) -> String {
        match self {
            TextOrNumber::Number(n) => n.to_string(),
            TextOrNumber::Text(t) => t.clone(),
        }
    }
}

impl ServiceTable {
    /// What the service asks for, as every front end writes it.
    fn asked(&self) -> Asked {
        let many = |v: &Option<OneOrMany>| -> Vec<String> {
            v.as_ref()
                .map(|m| m.all().into_iter().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let length = |d: &Option<String>| d.as_deref().map(crate::Duration::from);
        let amount = |v: &Option<TextOrNumber>| v.as_ref().map(|v| Amount::Text(v.text()));
        let ready = self.ready.as_ref();
        Asked {
            command: self.command.as_deref().map(bpm_domain::OsText::from),
            argv: self.argv.as_ref().map(|a| {
                a.iter()
                    .map(|w| bpm_domain::OsText::from(w.as_str()))
                    .collect()
            }),
            cwd: self.cwd.as_ref().map(PathBuf::from),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            env_file: many(&self.env_file)
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            ready_pattern: ready.and_then(|r| r.log.clone()),
            ready_port: ready.and_then(|r| r.port),
            ready_http: ready.and_then(|r| r.http.clone()),
            ready_exec: ready.and_then(|r| r.exec.clone()),
            ready_notify: ready.and_then(|r| r.notify),
            ready_timeout: ready
                .filter(|r| !r.is_probed())
                .and_then(|r| length(&r.timeout)),
            ready_check_timeout: ready
                .filter(|r| r.is_probed())
                .and_then(|r| length(&r.timeout)),
            ready_initial_delay: ready.and_then(|r| length(&r.initial_delay)),
            ready_every: ready.and_then(|r| length(&r.every)),
            ready_successes: ready.and_then(|r| r.successes),
            ready_failures: ready.and_then(|r| r.failures),
            port: self.port.as_ref().map(|p| match p {
                PortValue::Number(n) => Amount::Number(i64::from(*n)),
                PortValue::Text(t) => Amount::Text(t.clone()),
            }),
            restart: self.restart.clone(),
            max_restarts: self.max_restarts,
            backoff: length(&self.backoff),
            health: self.health.as_ref().map(|h| HealthAsked {
                http: h.http.clone(),
                exec: h.exec.clone(),
                port: h.port,
                every: length(&h.every),
                failures: h.failures,
                timeout: length(&h.timeout),
                initial_delay: length(&h.initial_delay),
                successes: h.successes,
            }),
            group: self.group.clone(),
            labels: self.labels.clone(),
            kind: self.kind.clone(),
            priority: self.priority,
            timeout: length(&self.timeout),
            grace: length(&self.grace),
            stop_signal: self.stop_signal.clone(),
            stop_command: self.stop_command.clone(),
            stop_command_timeout: length(&self.stop_command_timeout),
            delay: length(&self.delay),
            idle_after: length(&self.idle_after),
            log_archive: self.log_archive,
            success_codes: self.success_codes.clone(),
            node: self.node.clone(),
            node_labels: self.node_labels.clone(),
            failover: self.failover,
            leader_only: self.leader_only,
            stdin: self.stdin,
            on_exit: self.on_exit.clone(),
            watch: many(&self.watch).into_iter().map(PathBuf::from).collect(),
            watch_ignore: many(&self.watch_ignore),
            watch_debounce: length(&self.watch_debounce),
            restart_dependents: self.restart_dependents,
            every: self.every.clone(),
            cron: self.cron.clone(),
            tz: self.tz.clone(),
            overlap: self.overlap.clone(),
            jitter: self.jitter.clone(),
            run_now: self.run_now,
            catch_up: self.catch_up,
            memory_max: amount(&self.memory_max),
            cpu_max: amount(&self.cpu_max),
            pids_max: amount(&self.pids_max),
            nofile: amount(&self.nofile),
            tty: self.tty,
            tty_size: self.tty_size.clone(),
            clean_env: self.clean_env,
            session: self.session.clone(),
            metadata: self.metadata.clone(),
            owner: self.owner.clone(),
            owner_grace: length(&self.owner_grace),
            ..Asked::default()
        }
    }
}

/// A string or a list of them.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn all(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `port = "auto"`, `port = 3000` or `port = "3000-3099"`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum PortValue {
    Number(u16),
    Text(String),
}

/// `depends_on = { db = "ready" }`, or a list of names (each must start).
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum DependsOn {
    #[default]
    None,
    Conditions(BTreeMap<String, String>),
    Names(Vec<String>),
}

/// `ready = { log = "..." }` and its siblings, with an optional timeout:
/// how long one try may take for an HTTP, command or port check (paced
/// by `initial_delay`, `every`, `successes` and `failures`), how long the
/// process may take to be ready for the others.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadyTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) initial_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) successes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failures: Option<u32>,
}

impl ReadyTable {
    /// Whether its check is tried again and again (HTTP, a command, a
    /// port), so that `timeout` cuts one try.
    fn is_probed(&self) -> bool {
        self.http.is_some() || self.exec.is_some() || self.port.is_some()
    }
}

/// `health = { http = "/", every = "2s", failures = 3 }`.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthTable {
    pub(crate) http: Option<String>,
    pub(crate) exec: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) every: Option<String>,
    pub(crate) failures: Option<u32>,
    pub(crate) timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) initial_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) successes: Option<u32>,
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

fn bpm_toml(
    text: &str,
    default_name: &str,
    dir: &Path,
    from: &Reading<'_>,
) -> Result<Project, String> {
    let file = parse_toml(text)?;
    // Counted before anything is resolved: reading a service costs.
    count_services(&file)?;
    let name = file.project.name.unwrap_or_else(|| default_name.to_owned());
    let mut services = Vec::new();
    for (service, table) in file.services {
        let line = line_of(text, table.span().start);
        let table = table.into_inner();
        let at = |e: String| format!("{line}: services.{service}.{e}");
        services.extend(resolve(&service, &table, dir, from).map_err(at)?);
    }
    expand_replicas(&mut services);
    Ok(Project { name, services })
}

/// The services a file asks for, replicas counted, within [`MAX_SERVICES`].
fn count_services(file: &File) -> Result<(), String> {
    let asked: u64 = file
        .services
        .values()
        .map(|t| u64::from(t.get_ref().replicas.unwrap_or(1)))
        .sum();
    if asked > MAX_SERVICES as u64 {
        return Err(format!(
            " {asked} services (replicas counted): a project may have at most {MAX_SERVICES}"
        ));
    }
    Ok(())
}

/// A `bpm.toml`'s text as its shape; an error begins with the line.
fn parse_toml(text: &str) -> Result<File, String> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let key = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty() && !k.starts_with('['))
            // A message that names the key already (an unknown one) is enough.
            .filter(|k| !e.message().contains(&format!("`{k}`")));
        let message = in_plain_words(e.message());
        match key {
            Some(key) => format!("{line}: {key}: {}", quoted(&message)),
            None => format!("{line}: {}", quoted(&message)),
        }
    })
}

/// A service's table as specs: one per replica (`NAME.1`, `NAME.2`...),
/// none when disabled. Errors name the key, after `services.NAME.`.
pub(crate) fn resolve(
    name: &str,
    t: &ServiceTable,
    dir: &Path,
    from: &Reading<'_>,
) -> Result<Vec<Service>, String> {
    if t.disabled == Some(true) {
        return Ok(Vec::new());
    }
    let ctx = Context {
        spelling: Spelling::Project,
        may_read: from.may_read,
        ..Context::new(dir, from.env, from.machine)
    };
    let (spec, from_files) = t.asked().into_parts(&ctx).map_err(|e| e.to_string())?;
    let depends_on: BTreeMap<String, Until> = match &t.depends_on {
        DependsOn::None => BTreeMap::new(),
        DependsOn::Names(names) => names.iter().map(|n| (n.clone(), Until::Started)).collect(),
        DependsOn::Conditions(map) => map
            .iter()
            .map(|(n, c)| {
                c.parse::<Until>()
                    .map(|u| (n.clone(), u))
                    .map_err(|e| format!("depends_on.{n}: {e}"))
            })
            .collect::<Result<_, _>>()?,
    };
    // The digest covers the effective definition: the file's settings,
    // the env files' contents and the directory, not the caller's shell.
    let mut digested = spec.clone();
    let mut own = from_files;
    own.extend(
        t.env
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into())),
    );
    digested.env = Arc::new(own);
    let hash = digest(&digested, &depends_on);
    let replicas = t.replicas.unwrap_or(1);
    if replicas == 0 {
        return Err("replicas: 0 runs nothing; use disabled = true".into());
    }
    if replicas > MAX_REPLICAS {
        return Err(format!(
            "replicas: {replicas}: a service may have at most {MAX_REPLICAS}"
        ));
    }
    Ok((1..=replicas)
        .map(|i| {
            let mut spec = spec.clone();
            if replicas > 1 {
                Arc::make_mut(&mut spec.env).insert("BPM_REPLICA".into(), i.to_string().into());
            }
            let name = bpm_domain::project::replica_name(name, i);
            Service {
                name,
                spec,
                depends_on: depends_on.clone(),
                hash: hash.clone(),
            }
        })
        .collect())
}

/// Replicas depended on by their service's name: `worker` means
/// `worker` and every `worker.N`.
pub(crate) fn expand_replicas(services: &mut [Service]) {
    // Each service's further replicas, so that the expansion is linear in
    // the services.
    let mut replicas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in services.iter() {
        let (base, i) = bpm_domain::project::replica_of(&s.name);
        if i > 1 {
            replicas
                .entry(base.to_owned())
                .or_default()
                .push(s.name.clone());
        }
    }
    for s in services.iter_mut() {
        let mut expanded = BTreeMap::new();
        for (dep, until) in std::mem::take(&mut s.depends_on) {
            if let Some(each) = replicas.get(&dep) {
                for r in each {
                    expanded.insert(r.clone(), until);
                }
            }
            expanded.insert(dep, until);
        }
        s.depends_on = expanded;
    }
}

/// A hex digest of a service's definition.
fn digest(spec: &ProcessSpec, depends_on: &BTreeMap<String, Until>) -> String {
    let text = serde_json::to_string(&(spec, depends_on)).unwrap_or_default();
    let sum = sha2::Sha256::digest(text.as_bytes());
    sum.iter()
        .take(8)
        .fold(String::with_capacity(16), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// A Procfile: `name: command` lines; each service gets a port of its
/// own in `PORT`, as foreman hands them out.
fn procfile(
    text: &str,
    default_name: &str,
    dir: &Path,
    from: &Reading<'_>,
) -> Result<Project, String> {
    let mut services = Vec::new();
    // A `.env` beside the Procfile is read, as foreman and honcho do (and
    // again at each start).
    let dotenv = dir.join(".env").is_file();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: expected `name: command`, got {line:?}", i + 1))?;
        let table = ServiceTable {
            command: Some(command.trim().to_owned()),
            port: Some(PortValue::Text("auto".into())),
            env_file: dotenv.then(|| OneOrMany::One(".env".into())),
            ..ServiceTable::default()
        };
        let name = name.trim();
        services.extend(
            resolve(name, &table, dir, from).map_err(|e| format!("{}: {name}: {e}", i + 1))?,
        );
    }
    // A port handed to a Procfile's process is its readiness only if it
    // asks for one: most processes of a Procfile (workers) listen on none.
    for s in &mut services {
        s.spec.readiness.check = ReadinessCheck::Running;
    }
    Ok(Project {
        name: default_name.to_owned(),
        services,
    })
}
