//! `bpm up` and `bpm down`: a project's services brought up, idempotently,
//! and brought down, in dependency order. The rules (the order, what is
//! kept, replaced or started) are `bpm_domain::project`'s; this runs them
//! through the manager.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bpm_domain::project::{self, Action};
use bpm_domain::{ProcessId, ProcessRecord, Span};
use bpm_intake::project as ports_project;
use bpm_ports::OutputQuery;

use super::error::{CliError, Outcome};
use super::{DownArgs, Manager, ScaleArgs, UpArgs};
use crate::home::Home;
use bpm_intake::project::{FILE_NAME, Loaded, find, load, load_all};

/// The project file to use: `-f FILE`, else the `bpm.toml` of this
/// directory or the nearest parent, else, when `name` names a project that
/// was brought up before, the file it came from.
async fn project_file(
    m: &Manager,
    file: Option<PathBuf>,
    name: Option<&str>,
) -> Result<Option<PathBuf>, CliError> {
    if let Some(f) = file {
        return Ok(Some(f));
    }
    let here = std::env::current_dir()
        .map_err(|e| CliError::invalid(format!("cannot read the current directory: {e}")))?;
    if let Some(f) = find(&here) {
        return Ok(Some(f));
    }
    let Some(name) = name else {
        return Ok(None);
    };
    Ok(ports_project::file_of(m.as_ref(), name)
        .await?
        .map(PathBuf::from))
}

/// The project `--project` names: `given`, or with no name (an empty
/// one), the project of the `bpm.toml` here or in the nearest parent.
pub(super) fn named_or_here(given: String) -> Result<String, CliError> {
    if !given.is_empty() {
        return Ok(given);
    }
    here(
        "--project without a name means this directory's project",
        "name the project (--project NAME)",
    )
}

/// The name of the project of the `bpm.toml` here or in the nearest
/// parent; without one, an error that says `why` one was looked for and
/// `instead` what to type.
pub(super) fn here(why: &str, instead: &str) -> Result<String, CliError> {
    match read_here()? {
        (_, Some(l)) => Ok(l.project.name),
        (dir, None) => Err(CliError::invalid(format!(
            "{why}, and there is no {FILE_NAME} in {} or a parent: {instead}",
            dir.display()
        ))),
    }
}

/// The directory bpm was called in, and the project of the `bpm.toml`
/// there or in the nearest parent, if any (read with an empty environment:
/// enough for its names).
pub(super) fn read_here() -> Result<(PathBuf, Option<Loaded>), CliError> {
    let dir = std::env::current_dir()
        .map_err(|e| CliError::invalid(format!("cannot read the current directory: {e}")))?;
    let loaded = find(&dir)
        .map(|file| {
            load(
                &file,
                &bpm_domain::Environment::new(),
                &bpm_adapters::os::ThisMachine,
            )
            .map_err(CliError::invalid)
        })
        .transpose()?;
    Ok((dir, loaded))
}

/// Reads the project (from `files`, read as one, when given), or says
/// what to do when there is none.
async fn loaded(
    m: &Manager,
    files: Vec<PathBuf>,
    names: &mut Vec<String>,
) -> Result<Loaded, CliError> {
    // `bpm up shop` from anywhere: a single name that is no service here
    // may name a project brought up before.
    let by_name = (names.len() == 1).then(|| names[0].clone());
    let file = files.first().cloned();
    let path = project_file(m, file.clone(), by_name.as_deref()).await?;
    let Some(path) = path.filter(|p| file.is_some() || p.exists()) else {
        // Its file is gone: the store's records define it still.
        if let Some(name) = &by_name
            && let Some(project) = ports_project::from_store(m.as_ref(), name).await?
        {
            names.clear();
            return Ok(Loaded {
                project,
                file: PathBuf::from(
                    ports_project::file_of(m.as_ref(), name)
                        .await?
                        .unwrap_or_default(),
                ),
                ignored: Vec::new(),
                merged: None,
            });
        }
        return Err(CliError::invalid(format!(
            "no {FILE_NAME} here or in a parent directory: give one with -f FILE (a bpm.toml, a Procfile or a process-compose.yaml)"
        )));
    };
    let env = bpm_adapters::os::inherited_env();
    let files = if files.is_empty() { vec![path] } else { files };
    let l = load_all(&files, &env, &bpm_adapters::os::ThisMachine).map_err(CliError::invalid)?;
    if let Some(name) = &by_name
        && file.is_none()
        && *name == l.project.name
        && l.project.service(name).is_none()
    {
        names.clear();
    }
    for key in &l.ignored {
        eprintln!(
            "bpm: {}: {key}: not supported by bpm; ignored",
            l.file.display()
        );
    }
    Ok(l)
}

/// Project `name`'s lock ([`Home::lock_project`]), waited for off the
/// runtime's threads.
async fn lock(home: &Home, name: &str) -> Result<std::fs::File, CliError> {
    let (home, name) = (home.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || home.lock_project(&name))
        .await
        .map_err(|e| CliError::failed(e.to_string()))?
        .map_err(|e| CliError::failed(format!("{e:#}")))
}

/// `bpm up`.
pub(super) async fn up(home: &Home, m: &Manager, mut a: UpArgs) -> Outcome {
    let read = loaded(m, std::mem::take(&mut a.file), &mut a.services).await?;
    let p = &read.project;
    // Held while the plan is carried out (not while it is waited for):
    // racing `up`s apply one at a time.
    let held = if a.dry_run {
        None
    } else {
        Some(lock(home, &p.name).await?)
    };
    let line = |s: &ports_project::Step| {
        out!("{:<9}{:<20}{}", s.done.to_string(), s.service, s.id.short());
    };
    let how = project::UpOptions {
        remove_orphans: a.remove_orphans,
        rerun_unknown: a.rerun_unknown,
        rolling: a.rolling,
        ..project::UpOptions::default()
    };
    if a.dry_run {
        if let Some((files, doc)) = &read.merged {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            out!(
                "# read as one: {}\n{}",
                names.join(", then "),
                doc.trim_end()
            );
        }
        let records = m.list(ports_project::of_project(&p.name)).await?;
        let steps = project::plan(p, &a.services, &records, &how)
            .map_err(|e| CliError::invalid(e.to_string()))?;
        for (service, action) in &steps {
            let id = match action {
                Action::Keep(id)
                | Action::Replace(id)
                | Action::Stop(id)
                | Action::LeaveUnknown(id) => id.short(),
                Action::Start => "-".into(),
            };
            let would = match action {
                Action::Keep(_) => "would keep",
                Action::Start => "would start",
                Action::Replace(_) => "would replace",
                Action::Stop(_) => "would stop",
                Action::LeaveUnknown(_) => "would leave",
            };
            out!("{would:<15}{service:<20}{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.wait_timeout.is_some() && !a.wait && !a.rolling {
        return Err(CliError::invalid(
            "--wait-timeout bounds a wait: give --wait (or --rolling) with it",
        ));
    }
    let timeout = a
        .wait_timeout
        .as_deref()
        .map(|t| {
            t.parse::<Span>()
                .map_err(|e| CliError::invalid(format!("--wait-timeout: {e}")))
        })
        .transpose()?;
    // Subscribed before anything starts, so that no end is missed.
    let events = m.subscribe();
    let file = read.file.display().to_string();
    let started = std::cell::RefCell::new(Vec::new());
    let each = |s: &ports_project::Step| {
        line(s);
        if matches!(
            s.done,
            ports_project::Done::Started | ports_project::Done::Replaced
        ) {
            started.borrow_mut().push(s.service.clone());
        }
    };
    let steps = ports_project::up(m.as_ref(), p, &file, &a.services, &how, each)
        .await
        .map_err(|(service, e)| {
            let mut e = CliError::from(e).with_prefix(&service);
            let started = started.borrow();
            if !started.is_empty() {
                e.message = format!(
                    "{}\nup stopped there; started before it, and running on: {} (bpm down stops them)",
                    e.message,
                    started.join(", ")
                );
            }
            e
        })?;
    drop(held);
    if a.rolling && !a.wait {
        return settle_rolls(m, &steps, events, timeout).await;
    }
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    match ports_project::wait_up(m.as_ref(), &steps, events, timeout.map(Span::as_duration)).await?
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(not_up) => Err(rolled_back(m, &steps, not_up).await),
    }
}

/// How long a rolling replace waits for its new copies unless told.
const ROLL_WITHIN: Duration = Duration::from_mins(2);

/// Waits for the new copies of a rolling replace (`steps` replaced) to
/// be ready, within `timeout` ([`ROLL_WITHIN`] by default).
async fn settle_rolls(
    m: &Manager,
    steps: &[ports_project::Step],
    events: tokio::sync::broadcast::Receiver<bpm_domain::Event>,
    timeout: Option<Span>,
) -> Outcome {
    let rolled: Vec<ports_project::Step> = steps
        .iter()
        .filter(|s| s.done == ports_project::Done::Replaced)
        .cloned()
        .collect();
    if rolled.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let within = timeout.map_or(ROLL_WITHIN, Span::as_duration);
    match ports_project::wait_up(m.as_ref(), &rolled, events, Some(within)).await? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(not_up) => Err(rolled_back(m, steps, not_up).await),
    }
}

/// The error for a service not up; a new copy of a rolling replace that
/// was not ready is stopped, and the message says the old one runs on.
async fn rolled_back(
    m: &Manager,
    steps: &[ports_project::Step],
    not_up: ports_project::NotUp,
) -> CliError {
    let code = if not_up.timed_out { 124 } else { 1 };
    let mut message = not_up.to_string();
    match ports_project::give_up_roll(m.as_ref(), steps, &not_up).await {
        Ok(true) => {
            message = format!(
                "{message}\nthe rolling replace of {} stopped there: its new copy ({}) is stopped, and the copy that ran before runs on",
                not_up.service,
                not_up.record.id().short()
            );
        }
        Ok(false) => {}
        Err(e) => message = format!("{message}\nits new copy could not be stopped: {e}"),
    }
    CliError { code, message }
}

/// `bpm restart --rolling` of a record that is no project's service: a
/// copy of its spec started beside it, which it gives way to once ready.
pub(super) async fn roll(m: &Manager, record: &ProcessRecord) -> Outcome {
    let mut spec = record.spec().clone();
    spec.if_name_taken = bpm_domain::NameTaken::Roll;
    spec.request = None;
    let name = spec.name.as_ref().map(ToString::to_string).ok_or_else(|| {
        CliError::invalid(format!(
            "{}: a rolling restart needs a name (it replaces the live record of its name): restart it without --rolling",
            record.id().short()
        ))
    })?;
    let events = m.subscribe();
    let new = m.start(spec).await?;
    out!("{}", new.id());
    let step = ports_project::Step {
        service: name,
        done: ports_project::Done::Replaced,
        id: new.id(),
    };
    settle_rolls(m, &[step], events, None).await
}

/// `bpm down`: the project's live records stopped in reverse dependency
/// order (each whole tree, with its grace); returns when they are gone.
pub(super) async fn down(home: &Home, m: &Manager, mut a: DownArgs) -> Outcome {
    let read = loaded(m, std::mem::take(&mut a.file), &mut a.services).await?;
    let _lock = lock(home, &read.project.name).await?;
    let said = std::cell::Cell::new(false);
    let line = |s: &ports_project::Step| {
        said.set(true);
        out!("{:<9}{:<20}{}", s.done.to_string(), s.service, s.id.short());
    };
    ports_project::down(m.as_ref(), &read.project, &a.services, line).await?;
    if !said.get() {
        out!("nothing of project {} is up", read.project.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `bpm scale SERVICE=N...`: each service of the project scaled in turn;
/// the project is the one `PROJECT/` names, else the file's (`-f`, or the
/// `bpm.toml` here).
pub(super) async fn scale(home: &Home, m: &Manager, mut a: ScaleArgs) -> Outcome {
    let mut asked = Vec::with_capacity(a.scales.len());
    for text in &a.scales {
        let bad = || {
            CliError::invalid(format!(
                "{text:?}: expected SERVICE=N (or PROJECT/SERVICE=N), N a number of replicas from 1 to {}",
                bpm_domain::project::MAX_REPLICAS
            ))
        };
        let (who, count) = text.split_once('=').ok_or_else(bad)?;
        let count: i64 = count.trim().parse().map_err(|_| bad())?;
        let (project, service) = match who.split_once('/') {
            Some((p, s)) => (Some(p.to_owned()), s.to_owned()),
            None => (None, who.to_owned()),
        };
        if service.is_empty() {
            return Err(bad());
        }
        asked.push((project, service, count));
    }
    let here = if asked.iter().any(|(p, _, _)| p.is_none()) {
        let mut none = Vec::new();
        Some(
            loaded(m, std::mem::take(&mut a.file), &mut none)
                .await?
                .project
                .name,
        )
    } else {
        None
    };
    for (project, service, count) in asked {
        let project = project.or_else(|| here.clone()).unwrap_or_default();
        let _lock = lock(home, &project).await?;
        let line = |s: &ports_project::Step| {
            out!("{:<9}{:<20}{}", s.done.to_string(), s.service, s.id.short());
        };
        let done = ports_project::scale(m.as_ref(), &project, &service, count, line)
            .await
            .map_err(|(who, e)| {
                match e {
                    ports_project::ScaleError::Refused(why) => CliError::invalid(why),
                    ports_project::ScaleError::Manager(e) => CliError::from(e),
                }
                .with_prefix(&who)
            })?;
        if done.is_empty() {
            let copies = if count == 1 { "copy" } else { "copies" };
            out!("{project}/{service} already runs {count} {copies}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One service's output being followed.
struct Tail {
    id: ProcessId,
    prefix: String,
    cursor: Option<bpm_ports::Cursor>,
    partial: Vec<u8>,
    done: bool,
}

/// `bpm logs PROJECT`: every service's output, each line prefixed with
/// its service's name (in a colour of its own on a terminal), as foreman
/// and docker compose show them; with `follow`, interleaved as it comes
/// until every service has ended.
pub(super) async fn logs(
    m: &Manager,
    project: &str,
    records: &[ProcessRecord],
    how: &LinesAsked<'_>,
    color: bool,
) -> Outcome {
    let newest = project::newest_by_service(project, records);
    let width = newest.keys().map(|s| s.len()).max().unwrap_or(0);
    let tails: Vec<Tail> = newest
        .iter()
        .enumerate()
        .map(|(i, (service, r))| {
            let name = format!("{service:<width$} | ");
            let prefix = if color {
                format!("\x1b[{}m{name}\x1b[0m", 31 + (i % 6))
            } else {
                name
            };
            Tail::of(r.id(), prefix)
        })
        .collect();
    print_lines(m, tails, how).await
}

/// How output is read line by line: following or not, the last lines,
/// which streams, and the lines kept (`--grep`).
pub(super) struct LinesAsked<'a> {
    /// Until the processes end.
    pub(super) follow: bool,
    /// Only the last N lines of each.
    pub(super) lines: Option<usize>,
    /// Which streams.
    pub(super) stream: bpm_ports::StreamSelect,
    /// Only lines this matches.
    pub(super) grep: Option<&'a regex::Regex>,
}

/// `bpm logs ID --grep RE`: one record's lines that match.
pub(super) async fn grep_one(m: &Manager, id: ProcessId, how: &LinesAsked<'_>) -> Outcome {
    print_lines(m, vec![Tail::of(id, String::new())], how).await
}

impl Tail {
    fn of(id: ProcessId, prefix: String) -> Self {
        Tail {
            id,
            prefix,
            cursor: None,
            partial: Vec::new(),
            done: false,
        }
    }
}

/// Prints the lines of `tails`, each after its prefix, as they come (with
/// `follow`) until every one has ended.
async fn print_lines(m: &Manager, mut tails: Vec<Tail>, how: &LinesAsked<'_>) -> Outcome {
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let mut print = |prefix: &str, line: &[u8]| {
        let kept = how
            .grep
            .is_none_or(|re| re.is_match(&String::from_utf8_lossy(line)));
        if kept {
            super::enough_if_gone(out.write_all(prefix.as_bytes()));
            super::enough_if_gone(out.write_all(line));
        }
    };
    // The daemon says when a followed record writes; only those are read again.
    let mut follow = super::follow::Follow::new(m.clone());
    let mut due: Vec<usize> = (0..tails.len()).collect();
    loop {
        let mut again = Vec::new();
        for i in due.drain(..) {
            let t = &mut tails[i];
            if t.done {
                continue;
            }
            let ended = !how.follow || m.get(t.id).await?.is_terminal();
            let query = OutputQuery {
                stream: how.stream,
                cursor: t.cursor,
                max_bytes: 1 << 20,
                tail_lines: if t.cursor.is_none() { how.lines } else { None },
            };
            let chunk = m.read_output(t.id, query).await?;
            for piece in chunk.pieces {
                t.partial.extend_from_slice(&piece.data);
            }
            while let Some(at) = t.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = t.partial.drain(..=at).collect();
                print(&t.prefix, &line);
            }
            t.cursor = Some(chunk.next);
            if ended && !chunk.truncated {
                if !t.partial.is_empty() {
                    let mut last = std::mem::take(&mut t.partial);
                    last.push(b'\n');
                    print(&t.prefix, &last);
                }
                t.done = true;
                follow.set(i, None, false);
            } else if chunk.truncated {
                again.push(i);
            } else {
                follow.set(i, Some((t.id, chunk.next)), true);
            }
        }
        super::enough_if_gone(std::io::stdout().flush());
        if tails.iter().all(|t| t.done) {
            return Ok(ExitCode::SUCCESS);
        }
        due = again;
        if due.is_empty() {
            due.push(follow.next().await);
        }
    }
}

/// `bpm restart SERVICE` of a project's service: the service (and, with
/// `with_dependents`, what depends on it) replaced through the project,
/// so that each dependent waits for the new record of what it depends on.
/// `None` when `record` is no project's service whose file can be read.
pub(super) async fn restart(
    home: &Home,
    m: &Manager,
    record: &ProcessRecord,
    with_dependents: bool,
    rolling: bool,
) -> Option<Outcome> {
    let project_name = project::project_of(record)?.to_owned();
    let service = project::service_of(&project_name, record)?.to_owned();
    let file = ports_project::file_of(m.as_ref(), &project_name)
        .await
        .ok()??;
    let read = match load(
        std::path::Path::new(&file),
        &bpm_adapters::os::inherited_env(),
        &bpm_adapters::os::ThisMachine,
    ) {
        Ok(read) => read,
        Err(e) => return Some(Err(CliError::invalid(e))),
    };
    let p = &read.project;
    let mut restart: BTreeSet<String> = [service].into();
    if with_dependents {
        restart = p.with_dependents(&restart);
    }
    let only: Vec<String> = restart.iter().cloned().collect();
    let line = |s: &ports_project::Step| {
        out!("{:<9}{:<20}{}", s.done.to_string(), s.service, s.id.short());
    };
    let how = project::UpOptions {
        restart,
        rolling,
        ..project::UpOptions::default()
    };
    let _lock = match lock(home, &p.name).await {
        Ok(l) => l,
        Err(e) => return Some(Err(e)),
    };
    let events = m.subscribe();
    let done = ports_project::up(m.as_ref(), p, &file, &only, &how, line).await;
    let steps = match done {
        Ok(steps) => steps,
        Err((service, e)) => return Some(Err(CliError::from(e).with_prefix(&service))),
    };
    if rolling {
        return Some(settle_rolls(m, &steps, events, None).await);
    }
    Some(Ok(ExitCode::SUCCESS))
}
