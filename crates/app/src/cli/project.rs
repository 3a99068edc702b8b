//! `bpm up` and `bpm down`: a project's services brought up, idempotently,
//! and brought down, in dependency order. The rules (the order, what is
//! kept, replaced or started) are `bpm_domain::project`'s; this runs them
//! through the manager.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bpm_domain::project::{self, Action, Project};
use bpm_domain::{
    LabelKey, LabelValue, ListFilter, NameTaken, ProcessId, ProcessRecord, RequestRef, Span,
};
use bpm_ports::{ManagerError, OutputQuery, StopOptions};
use tokio::sync::broadcast;

use super::error::{CliError, Outcome};
use super::{DownArgs, Manager, UpArgs};
use crate::project::{FILE_NAME, Loaded, find, load};

/// The metadata key holding the project file a record's service came from.
const FILE_KEY: &str = "bpm.file";

/// The filter for `project`'s records, in any state.
pub(super) fn of_project(project: &str) -> ListFilter {
    ListFilter {
        labels: vec![(
            LabelKey::new(project::PROJECT_LABEL).expect("a valid key"),
            LabelValue::new(project).unwrap_or_else(|_| LabelValue::new("-").expect("valid")),
        )],
        ..ListFilter::default()
    }
}

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
    let records = m.list(of_project(name)).await?;
    Ok(records.iter().rev().find_map(|r| {
        r.spec()
            .metadata
            .get(FILE_KEY)
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
    }))
}

/// Reads the project, or says what to do when there is none.
async fn loaded(
    m: &Manager,
    file: Option<PathBuf>,
    names: &mut Vec<String>,
) -> Result<Loaded, CliError> {
    // `bpm up shop` from anywhere: a single name that is no service here
    // may name a project brought up before.
    let by_name = (names.len() == 1).then(|| names[0].clone());
    let path = project_file(m, file.clone(), by_name.as_deref()).await?;
    let Some(path) = path else {
        return Err(CliError::invalid(format!(
            "no {FILE_NAME} here or in a parent directory: give one with -f FILE (a bpm.toml, a Procfile or a process-compose.yaml)"
        )));
    };
    let env = bpm_adapters::os::inherited_env();
    let l = load(&path, &env).map_err(CliError::invalid)?;
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

/// `bpm up`.
pub(super) async fn up(m: &Manager, mut a: UpArgs) -> Outcome {
    let read = loaded(m, a.file.take(), &mut a.services).await?;
    let p = &read.project;
    let records = m.list(of_project(&p.name)).await?;
    let steps = project::plan(p, &a.services, &records, a.remove_orphans)
        .map_err(|e| CliError::invalid(e.to_string()))?;
    if a.dry_run {
        for (service, action) in &steps {
            let id = match action {
                Action::Keep(id) | Action::Replace(id) | Action::Stop(id) => id.short(),
                Action::Start => "-".into(),
            };
            out!("{:<9}{:<20}{id}", format!("{action}"), service);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Subscribed before anything starts, so that no end is missed.
    let events = m.subscribe();
    let mut ids: BTreeMap<String, ProcessId> = BTreeMap::new();
    let mut started = Vec::new();
    for (service, action) in &steps {
        let done = match *action {
            Action::Stop(id) => {
                m.stop(id, StopOptions::default()).await?;
                "stopped"
            }
            Action::Keep(id) => {
                ids.insert(service.clone(), id);
                "kept"
            }
            Action::Start | Action::Replace(_) => {
                let service_def = p.service(service).expect("planned from the project");
                let mut spec = p.spec_of(service_def, &ids);
                spec.metadata.insert(
                    FILE_KEY.into(),
                    serde_json::Value::String(read.file.display().to_string()),
                );
                spec.if_name_taken = match action {
                    Action::Replace(_) => NameTaken::Replace,
                    _ => NameTaken::Ensure,
                };
                let request = uuid::Uuid::now_v7();
                spec.request = Some(RequestRef {
                    id: request,
                    index: 0,
                });
                let record = m
                    .start(spec)
                    .await
                    .map_err(|e| CliError::from(e).with_prefix(&format!("{}/{service}", p.name)))?;
                ids.insert(service.clone(), record.id());
                // Another `up` started it meanwhile: kept, not started twice.
                if record.spec().request.is_none_or(|r| r.id != request) {
                    "kept"
                } else {
                    started.push(record.id());
                    match action {
                        Action::Replace(_) => "replaced",
                        _ => "started",
                    }
                }
            }
        };
        let id = ids
            .get(service)
            .map_or_else(|| "-".into(), ProcessId::short);
        out!("{done:<9}{service:<20}{id}");
    }
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = a
        .wait_timeout
        .as_deref()
        .map(|t| {
            t.parse::<Span>()
                .map_err(|e| CliError::invalid(format!("--wait-timeout: {e}")))
        })
        .transpose()?;
    wait_up(m, p, &ids, events, timeout.map(Span::as_duration)).await
}

/// Whether a service's record is up: ready and live, or completed; `Err`
/// when it ended otherwise.
fn up_yet(r: &ProcessRecord) -> Result<bool, ()> {
    if r.is_terminal() {
        return if r.state() == bpm_domain::StateName::Completed {
            Ok(true)
        } else {
            Err(())
        };
    }
    Ok(r.lifecycle().ready_at().is_some())
}

/// `bpm up --wait`: returns once every service is up; otherwise names the
/// one that failed or is not up in time, with its last lines.
async fn wait_up(
    m: &Manager,
    p: &Project,
    ids: &BTreeMap<String, ProcessId>,
    mut events: broadcast::Receiver<bpm_domain::Event>,
    timeout: Option<Duration>,
) -> Outcome {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    // In start order, so that a failure is named where it began.
    let order: Vec<&String> = p
        .order()
        .map(|o| {
            o.into_iter()
                .filter_map(|s| ids.get_key_value(&s.name).map(|(k, _)| k))
                .collect()
        })
        .unwrap_or_default();
    let mut pending: Vec<&String> = order;
    loop {
        let mut still = Vec::new();
        for service in pending {
            let r = m.get(ids[service]).await?;
            match up_yet(&r) {
                Ok(true) => {}
                Ok(false) => still.push(service),
                Err(()) => {
                    return Err(failed_service(m, p, service, &r, "failed").await);
                }
            }
        }
        pending = still;
        let Some(first) = pending.first().copied() else {
            return Ok(ExitCode::SUCCESS);
        };
        let next = async {
            loop {
                match events.recv().await {
                    Ok(e) if ids.values().any(|id| *id == e.id) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
        };
        match deadline {
            Some(at) => {
                if tokio::time::timeout_at(at, next).await.is_err() {
                    let r = m.get(ids[first]).await?;
                    let mut e = failed_service(m, p, first, &r, "not up in time").await;
                    e.code = 124;
                    return Err(e);
                }
            }
            None => next.await,
        }
    }
}

/// The error naming a service that failed, with its last 20 lines.
async fn failed_service(
    m: &Manager,
    p: &Project,
    service: &str,
    r: &ProcessRecord,
    what: &str,
) -> CliError {
    let tail = m
        .read_output(
            r.id(),
            OutputQuery {
                tail_lines: Some(20),
                ..OutputQuery::default()
            },
        )
        .await
        .map(|c| {
            let bytes: Vec<u8> = c.pieces.into_iter().flat_map(|p| p.data).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .unwrap_or_default();
    let why = r
        .lifecycle()
        .error()
        .map_or_else(|| r.state().to_string(), |e| format!("{} ({e})", r.state()));
    let mut message = format!("{}/{service} {what}: {why}", p.name);
    if !tail.trim().is_empty() {
        message.push_str("\nits last lines:\n");
        message.push_str(tail.trim_end());
    }
    CliError::failed(message)
}

/// `bpm down`: the project's live records stopped in reverse dependency
/// order (each whole tree, with its grace); returns when they are gone.
pub(super) async fn down(m: &Manager, mut a: DownArgs) -> Outcome {
    let read = loaded(m, a.file.take(), &mut a.services).await?;
    let p = &read.project;
    let records = m.list(of_project(&p.name)).await?;
    let mut live: BTreeMap<String, ProcessId> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.is_terminal()) {
        if let Some(service) = project::service_of(&p.name, r) {
            live.insert(service.to_owned(), r.id());
        }
    }
    let wanted: BTreeSet<String> = if a.services.is_empty() {
        live.keys().cloned().collect()
    } else {
        for s in &a.services {
            if p.service(s).is_none() {
                return Err(CliError::invalid(format!(
                    "no service {s:?} in project {}",
                    p.name
                )));
            }
        }
        a.services.iter().cloned().collect()
    };
    // Services the file no longer has first, then the file's in reverse
    // start order.
    let order = p.order().map_err(|e| CliError::invalid(e.to_string()))?;
    let mut sequence: Vec<String> = wanted
        .iter()
        .filter(|s| p.service(s).is_none())
        .cloned()
        .collect();
    sequence.extend(
        order
            .iter()
            .rev()
            .map(|s| s.name.clone())
            .filter(|s| wanted.contains(s)),
    );
    for service in sequence {
        let Some(id) = live.get(&service) else {
            continue;
        };
        match m.stop(*id, StopOptions::default()).await {
            Ok(_) | Err(ManagerError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        out!("{:<9}{service:<20}{}", "stopped", id.short());
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
    follow: bool,
    lines: Option<usize>,
    stream: bpm_ports::StreamSelect,
    color: bool,
) -> Outcome {
    use std::io::Write as _;
    // The newest record of each service, the live one first.
    let mut newest: BTreeMap<&str, &ProcessRecord> = BTreeMap::new();
    for r in records {
        if let Some(s) = project::service_of(project, r) {
            let slot = newest.entry(s).or_insert(r);
            if (!r.is_terminal() && slot.is_terminal())
                || (r.is_terminal() == slot.is_terminal() && r.created_at() > slot.created_at())
            {
                *slot = r;
            }
        }
    }
    let width = newest.keys().map(|s| s.len()).max().unwrap_or(0);
    let mut tails: Vec<Tail> = newest
        .iter()
        .enumerate()
        .map(|(i, (service, r))| {
            let name = format!("{service:<width$} | ");
            let prefix = if color {
                format!("\x1b[{}m{name}\x1b[0m", 31 + (i % 6))
            } else {
                name
            };
            Tail {
                id: r.id(),
                prefix,
                cursor: None,
                partial: Vec::new(),
                done: false,
            }
        })
        .collect();
    let mut out = std::io::stdout();
    loop {
        let mut all_done = true;
        for t in &mut tails {
            if t.done {
                continue;
            }
            let ended = !follow || m.get(t.id).await?.is_terminal();
            let query = OutputQuery {
                stream,
                cursor: t.cursor,
                max_bytes: 1 << 20,
                tail_lines: if t.cursor.is_none() { lines } else { None },
            };
            let chunk = m.read_output(t.id, query).await?;
            for piece in chunk.pieces {
                t.partial.extend_from_slice(&piece.data);
            }
            while let Some(at) = t.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = t.partial.drain(..=at).collect();
                super::enough_if_gone(out.write_all(t.prefix.as_bytes()));
                super::enough_if_gone(out.write_all(&line));
            }
            t.cursor = Some(chunk.next);
            if ended && !chunk.truncated {
                if !t.partial.is_empty() {
                    super::enough_if_gone(out.write_all(t.prefix.as_bytes()));
                    super::enough_if_gone(out.write_all(&t.partial));
                    super::enough_if_gone(out.write_all(b"\n"));
                    t.partial.clear();
                }
                t.done = true;
            } else {
                all_done = false;
            }
        }
        super::enough_if_gone(out.flush());
        if all_done {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
