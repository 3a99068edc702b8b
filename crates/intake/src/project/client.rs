//! A project's services brought up, waited for and brought down through any
//! [`ProcessManager`], as `bpm up`, `bpm down` and the MCP server's
//! `project_up` and `project_down` do: the rules (the order, what is kept,
//! replaced or started) are [`bpm_domain::project`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bpm_domain::project::{self, Action, Project};
use bpm_domain::{
    Event, LabelKey, LabelValue, ListFilter, NameTaken, ProcessId, ProcessRecord, RequestRef,
};
use tokio::sync::broadcast;

use bpm_ports::{ManagerError, OutputQuery, ProcessManager, StopOptions};

/// The metadata key holding the project file a service's record came from:
/// `bpm up NAME` finds the file again from any directory.
pub const FILE_KEY: &str = "bpm.file";

/// How long `wait_up` waits for an event before it reads the records
/// again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// What was done with one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its record stands as it is.
    Kept,
    /// A record was started.
    Started,
    /// Its record was replaced (stopped, then started again).
    Replaced,
    /// Its record was stopped.
    Stopped,
    /// Its newest record is `lost`, its end unknown: left as it is, not
    /// run again ([`project::Action::LeaveUnknown`]).
    Left,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Done::Kept => "kept",
            Done::Started => "started",
            Done::Replaced => "replaced",
            Done::Stopped => "stopped",
            Done::Left => "left",
        })
    }
}

/// One service and what was done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The service.
    pub service: String,
    /// What was done.
    pub done: Done,
    /// Its record.
    pub id: ProcessId,
}

/// A service that failed, or was not up in time.
#[derive(Debug, Clone, PartialEq)]
pub struct NotUp {
    /// The service.
    pub service: String,
    /// Its record as it was then.
    pub record: ProcessRecord,
    /// Whether the wait ran out (rather than the service failing).
    pub timed_out: bool,
    /// Its last lines of output.
    pub tail: String,
}

impl fmt::Display for NotUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.record;
        let why = r
            .lifecycle()
            .error()
            .map_or_else(|| r.state().to_string(), |e| format!("{} ({e})", r.state()));
        let name = r
            .spec()
            .name
            .as_ref()
            .map_or(self.service.as_str(), |n| n.as_str());
        if self.timed_out {
            write!(f, "{name} not up in time: {why}")?;
        } else {
            write!(f, "{name} failed: {why}")?;
        }
        if r.state() == bpm_domain::StateName::Lost {
            write!(
                f,
                "\nits end is unknown, so bpm up does not run it again by itself: `bpm up --rerun-unknown` (or `bpm restart {name}`) does"
            )?;
        }
        if !self.tail.trim().is_empty() {
            write!(f, "\nits last lines:\n{}", self.tail.trim_end())?;
        }
        Ok(())
    }
}

/// The filter for `project`'s records, in any state.
pub fn of_project(project: &str) -> ListFilter {
    ListFilter {
        labels: vec![(
            LabelKey::new(project::PROJECT_LABEL).expect("a valid key"),
            LabelValue::new(project).unwrap_or_else(|_| LabelValue::new("-").expect("valid")),
        )],
        ..ListFilter::default()
    }
}

/// The project file a project named `name` was brought up from, if any
/// of its records says.
///
/// # Errors
/// As [`ProcessManager::list`].
pub async fn file_of(m: &dyn ProcessManager, name: &str) -> Result<Option<String>, ManagerError> {
    let records = m.list(of_project(name)).await?;
    Ok(records.iter().rev().find_map(|r| {
        r.spec()
            .metadata
            .get(FILE_KEY)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }))
}

/// The project named `name` as the store's records define it
/// ([`Project::from_records`]): for `up` and `down` once its file is gone.
/// `None` when no record is its.
///
/// # Errors
/// As [`ProcessManager::list`].
pub async fn from_store(
    m: &dyn ProcessManager,
    name: &str,
) -> Result<Option<Project>, ManagerError> {
    let records = m.list(of_project(name)).await?;
    Ok((!records.is_empty()).then(|| Project::from_records(name, &records)))
}

/// Brings `p` up from `file`: each service of `only` (and what it depends
/// on; all when empty) kept, started, replaced or left as
/// [`project::plan`] says under `how`, in dependency order. A start that
/// another caller made meanwhile is kept, not made twice. `each` hears
/// every step as it is done.
///
/// # Errors
/// The service whose start was refused, and why; the steps done before it
/// stand.
pub async fn up(
    m: &dyn ProcessManager,
    p: &Project,
    file: &str,
    only: &[String],
    how: &project::UpOptions,
    mut each: impl FnMut(&Step),
) -> Result<Vec<Step>, (String, ManagerError)> {
    let records = m
        .list(of_project(&p.name))
        .await
        .map_err(|e| (p.name.clone(), e))?;
    let steps = project::plan(p, only, &records, how)
        .map_err(|e| (p.name.clone(), ManagerError::BadRequest(e.to_string())))?;
    let mut ids: BTreeMap<String, ProcessId> = BTreeMap::new();
    let mut done = Vec::with_capacity(steps.len());
    // Starts go in batches, one request each: a batch is cut before a
    // service that depends on one of it (its spec needs that one's id),
    // and before a stop, so that the plan's order holds.
    let mut batch: Vec<(String, Action)> = Vec::new();
    let mut record = |step: Step, ids: &mut BTreeMap<String, ProcessId>| {
        if step.done != Done::Stopped {
            ids.insert(step.service.clone(), step.id);
        }
        each(&step);
        done.push(step);
    };
    for (service, action) in steps {
        if let Action::Start | Action::Replace(_) = action {
            let s = p.service(&service).expect("planned from the project");
            if s.depends_on
                .keys()
                .any(|d| batch.iter().any(|(b, _)| b == d))
            {
                start_batch(
                    m,
                    (p, file, how.rolling),
                    std::mem::take(&mut batch),
                    &mut ids,
                    &mut record,
                )
                .await?;
            }
            batch.push((service, action));
            continue;
        }
        start_batch(
            m,
            (p, file, how.rolling),
            std::mem::take(&mut batch),
            &mut ids,
            &mut record,
        )
        .await?;
        let what = match action {
            Action::Stop(id) => {
                match m.stop(id, StopOptions::default()).await {
                    Ok(_) | Err(ManagerError::NotFound(_)) => {}
                    Err(e) => return Err((format!("{}/{service}", p.name), e)),
                }
                Done::Stopped
            }
            Action::Keep(_) => Done::Kept,
            _ => Done::Left,
        };
        let (Action::Stop(id) | Action::Keep(id) | Action::LeaveUnknown(id) | Action::Replace(id)) =
            action
        else {
            unreachable!("a start is batched above")
        };
        record(
            Step {
                service,
                done: what,
                id,
            },
            &mut ids,
        );
    }
    start_batch(m, (p, file, how.rolling), batch, &mut ids, &mut record).await?;
    Ok(done)
}

/// Why [`scale`] did not do all it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Refused before anything was done: what to do instead.
    #[error("{0}")]
    Refused(String),
    /// A stop or a start failed; what was done before it stands.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

/// Scales `service` of the project named `project` to `replicas` copies,
/// as its records define it ([`Project::from_records`]): the copies it
/// lacks start (each a copy of the first, after what it depends on), the
/// ones beyond the number stop, highest first; every other record, the
/// first copy's among them, is left as it runs. The project file is not
/// changed: the next `bpm up` brings what it says (copies it does not
/// have are kept unless `--remove-orphans`).
///
/// # Errors
/// A project with no records, a service it does not have or that does not
/// run, a number of replicas out of bounds (naming what to do instead),
/// and what a stop or a start returns (the steps done before it stand).
pub async fn scale(
    m: &dyn ProcessManager,
    project: &str,
    service: &str,
    replicas: i64,
    mut each: impl FnMut(&Step),
) -> Result<Vec<Step>, (String, ScaleError)> {
    let whole = format!("{project}/{service}");
    let failed = |e: ManagerError| (whole.clone(), ScaleError::Manager(e));
    let refused = |why: String| (whole.clone(), ScaleError::Refused(why));
    let records = m.list(of_project(project)).await.map_err(failed)?;
    if records.is_empty() {
        return Err(refused(format!(
            "no project {project:?} has run here: bring it up first (bpm up)"
        )));
    }
    let p = Project::from_records(project, &records);
    let (scaled, scaling) = p
        .scaled(service, replicas)
        .map_err(|e| refused(e.to_string()))?;
    let newest = project::newest_by_service(project, &records);
    if newest.get(service).is_none_or(|r| r.is_terminal()) {
        return Err(refused(format!(
            "it does not run: bring it up first (bpm up {service}), then scale it"
        )));
    }
    let mut done = Vec::new();
    for name in scaling.stop.iter().rev() {
        let Some(r) = newest.get(name.as_str()).filter(|r| !r.is_terminal()) else {
            continue;
        };
        match m.stop(r.id(), StopOptions::default()).await {
            Ok(_) | Err(ManagerError::NotFound(_)) => {}
            Err(e) => return Err((format!("{project}/{name}"), e.into())),
        }
        let step = Step {
            service: name.clone(),
            done: Done::Stopped,
            id: r.id(),
        };
        each(&step);
        done.push(step);
    }
    if !scaling.start.is_empty() {
        let file = file_of(m, project)
            .await
            .map_err(failed)?
            .unwrap_or_default();
        let started = up(
            m,
            &scaled,
            &file,
            &scaling.start,
            &project::UpOptions::default(),
            |step| {
                if step.done != Done::Kept {
                    each(step);
                }
            },
        )
        .await
        .map_err(|(who, e)| (who, e.into()))?;
        done.extend(started.into_iter().filter(|s| s.done != Done::Kept));
    }
    Ok(done)
}

/// Starts `batch` (services of `p` to start or replace, none depending on
/// another of it) in one request, each with the ids of what it depends
/// on, and hands `record` each step, in order; a replace rolls when
/// `rolling`. A start refused leaves the others of the batch started
/// (each recorded), and is the error.
async fn start_batch(
    m: &dyn ProcessManager,
    (p, file, rolling): (&Project, &str, bool),
    batch: Vec<(String, Action)>,
    ids: &mut BTreeMap<String, ProcessId>,
    record: &mut impl FnMut(Step, &mut BTreeMap<String, ProcessId>),
) -> Result<(), (String, ManagerError)> {
    if batch.is_empty() {
        return Ok(());
    }
    let request = uuid::Uuid::now_v7();
    let specs = batch
        .iter()
        .enumerate()
        .map(|(index, (service, action))| {
            let s = p.service(service).expect("planned from the project");
            let mut spec = p.spec_of(s, ids);
            spec.metadata
                .insert(FILE_KEY.into(), serde_json::Value::String(file.to_owned()));
            spec.if_name_taken = match action {
                Action::Replace(_) if rolling => NameTaken::Roll,
                Action::Replace(_) => NameTaken::Replace,
                _ => NameTaken::Ensure,
            };
            spec.request = Some(RequestRef {
                id: request,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
            spec
        })
        .collect();
    let answers = m
        .start_many(specs)
        .await
        .map_err(|e| (format!("{}/{}", p.name, batch[0].0), e))?;
    let mut refused = None;
    for ((service, action), answer) in batch.into_iter().zip(answers) {
        match answer {
            Ok(r) => {
                // Another caller started it meanwhile: kept, not made twice.
                let what = if r.spec().request.is_none_or(|r| r.id != request) {
                    Done::Kept
                } else if matches!(action, Action::Replace(_)) {
                    Done::Replaced
                } else {
                    Done::Started
                };
                record(
                    Step {
                        service,
                        done: what,
                        id: r.id(),
                    },
                    ids,
                );
            }
            Err(e) => {
                refused.get_or_insert((format!("{}/{service}", p.name), e));
            }
        }
    }
    refused.map_or(Ok(()), Err)
}

/// The last `lines` lines of `id`'s output.
pub async fn tail(m: &dyn ProcessManager, id: ProcessId, lines: usize) -> String {
    m.read_output(
        id,
        OutputQuery {
            tail_lines: Some(lines),
            ..OutputQuery::default()
        },
    )
    .await
    .map(|c| {
        let bytes: Vec<u8> = c.pieces.into_iter().flat_map(|p| p.data).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    })
    .unwrap_or_default()
}

/// After a wait that `not_up` ended: when the service not up was the new
/// copy of a rolling replace (`steps` replaced it), that copy is stopped,
/// and the copy that ran before runs on; says whether it was.
///
/// # Errors
/// The manager's, when the stop fails.
pub async fn give_up_roll(
    m: &dyn ProcessManager,
    steps: &[Step],
    not_up: &NotUp,
) -> Result<bool, ManagerError> {
    let new = not_up.record.id();
    let rolled = not_up.record.spec().if_name_taken == NameTaken::Roll
        && steps
            .iter()
            .any(|s| s.id == new && s.done == Done::Replaced);
    if !rolled || not_up.record.is_terminal() {
        return Ok(rolled);
    }
    match m.stop(new, StopOptions::default()).await {
        Ok(_) | Err(ManagerError::NotFound(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Waits until every service of `steps` is up (ready, or completed), in
/// start order, so that a failure is named where it began. `events` must
/// have been subscribed before the steps were taken.
///
/// # Errors
/// `Ok(Err(..))` names the service that failed, or was not up within
/// `timeout`, with its last 20 lines; `Err` when the manager fails.
pub async fn wait_up(
    m: &dyn ProcessManager,
    steps: &[Step],
    events: broadcast::Receiver<Event>,
    timeout: Option<Duration>,
) -> Result<Result<(), NotUp>, ManagerError> {
    let started: Vec<&Step> = steps.iter().filter(|s| s.done != Done::Stopped).collect();
    let ids: Vec<ProcessId> = started.iter().map(|s| s.id).collect();
    let mut pending = started.clone();
    // An event of one of them, or a second without one: the records are
    // read again either way, so a manager gone quiet is noticed.
    let how = crate::Looking {
        ids: &ids,
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        every: Some(LOOK_AGAIN),
    };
    let mut waiter = crate::Waiter::new(m, events, how);
    loop {
        let mut still = Vec::new();
        for step in pending {
            let r = m.get(step.id).await?;
            match project::is_up(&r) {
                Some(true) => {}
                None => still.push(step),
                Some(false) => return Ok(Err(first_failed(m, &started, step, r).await?)),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(Ok(()));
        }
        if !waiter.next().await {
            break;
        }
    }
    let Some(first) = pending.first() else {
        return Ok(Ok(()));
    };
    let r = m.get(first.id).await?;
    let tail = tail(m, r.id(), 20).await;
    Ok(Err(NotUp {
        service: first.service.clone(),
        record: r,
        timed_out: true,
        tail,
    }))
}

/// What failed when `step`'s record `r` did: a dependent fails because
/// what it needs failed first, perhaps since that one was read, so the
/// first failed in start order (dependencies first) is the one named.
async fn first_failed(
    m: &dyn ProcessManager,
    started: &[&Step],
    step: &Step,
    r: ProcessRecord,
) -> Result<NotUp, ManagerError> {
    let (mut service, mut record) = (step.service.clone(), r);
    for earlier in started.iter().take_while(|s| s.id != step.id) {
        let e = m.get(earlier.id).await?;
        if project::is_up(&e) == Some(false) {
            (service, record) = (earlier.service.clone(), e);
            break;
        }
    }
    let tail = tail(m, record.id(), 20).await;
    Ok(NotUp {
        service,
        record,
        timed_out: false,
        tail,
    })
}

/// Stops `p`'s live records (of `only`, or all) in reverse dependency
/// order, those of services the file no longer has first; each whole tree,
/// with its grace. `each` hears every step as it is done.
///
/// # Errors
/// The first stop that failed.
pub async fn down(
    m: &dyn ProcessManager,
    p: &Project,
    only: &[String],
    mut each: impl FnMut(&Step),
) -> Result<Vec<Step>, ManagerError> {
    if let Some(missing) = only.iter().find(|s| p.service(s).is_none()) {
        return Err(ManagerError::BadRequest(format!(
            "no service {missing:?} in project {}",
            p.name
        )));
    }
    // A service's name means its replicas too.
    let only: Vec<String> = only.iter().flat_map(|s| p.replicas_of(s)).collect();
    let records = m.list(of_project(&p.name)).await?;
    let mut live: BTreeMap<String, ProcessId> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.is_terminal()) {
        if let Some(service) = project::service_of(&p.name, r) {
            live.insert(service.to_owned(), r.id());
        }
    }
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let order = p
        .order()
        .map_err(|e| ManagerError::BadRequest(e.to_string()))?;
    let mut sequence: Vec<String> = live
        .keys()
        .filter(|s| p.service(s).is_none() && only.is_empty())
        .cloned()
        .collect();
    sequence.extend(
        order
            .iter()
            .rev()
            .map(|s| s.name.clone())
            .filter(|s| wanted(s)),
    );
    let mut done = Vec::new();
    for service in sequence {
        let Some(id) = live.get(&service).copied() else {
            continue;
        };
        match m.stop(id, StopOptions::default()).await {
            Ok(_) | Err(ManagerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let step = Step {
            service,
            done: Done::Stopped,
            id,
        };
        each(&step);
        done.push(step);
    }
    Ok(done)
}
