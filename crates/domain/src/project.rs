//! Projects: a set of services brought up, kept and brought down together
//! (`bpm up`, `bpm down`), as a project file (`bpm.toml`, a Procfile)
//! describes them.
//!
//! A service runs as a record named `PROJECT/SERVICE` carrying the labels
//! [`PROJECT_LABEL`], [`SERVICE_LABEL`] and [`HASH_LABEL`] (a digest of the
//! service's whole effective definition, the front end's to compute). The
//! rules here are pure: the order services start in, and what `up` does
//! with each given the project's records ([`plan`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::{
    LabelKey, LabelValue, ProcessId, ProcessName, ProcessRecord, ProcessSpec, StateName, Until,
};

/// The label naming a record's project.
pub const PROJECT_LABEL: &str = "bpm.project";
/// The label naming a record's service within its project.
pub const SERVICE_LABEL: &str = "bpm.service";
/// The label holding the digest of the service's definition.
pub const HASH_LABEL: &str = "bpm.hash";

/// One service of a project (a replica counts as a service of its own:
/// `worker`, `worker.2`, `worker.3`, [`replica_name`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Its name in the project.
    pub name: String,
    /// What it runs: every setting but its name, labels of its own aside,
    /// and its dependencies (which [`Project::spec_of`] fills in).
    pub spec: ProcessSpec,
    /// The services it waits for, and how far each must get.
    pub depends_on: BTreeMap<String, Until>,
    /// A digest of its whole effective definition: equal digests, equal
    /// services.
    pub hash: String,
}

/// A project: its name and its services.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Its name.
    pub name: String,
    /// Its services, in the file's order.
    pub services: Vec<Service>,
}

/// Why a project cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    /// A project or service name that cannot be used.
    #[error("invalid {what} name {name:?}: use letters, digits, '-', '_' and '.' (at most 63)")]
    BadName {
        /// "project" or "service".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Two services of one name.
    #[error("service {0:?} is defined twice")]
    Duplicate(String),
    /// A dependency on a service that does not exist.
    #[error("service {service:?} depends on {missing:?}, which is not a service of this project")]
    UnknownDependency {
        /// The dependent.
        service: String,
        /// What it names.
        missing: String,
    },
    /// A service depends on a schedule, or a schedule on a service.
    #[error(
        "service {service}: a schedule starts its runs at due times, so no service depends on one and one depends on nothing (it names {other})"
    )]
    ScheduleDependency {
        /// The service that depends, or the schedule.
        service: String,
        /// The other end.
        other: String,
    },
    /// Services that depend on each other in a circle.
    #[error("services depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A service named that the project does not have.
    #[error("no service {0:?} in this project")]
    NoSuchService(String),
    /// A number of replicas out of bounds.
    #[error(
        "{service}={asked}: give a number of replicas from 1 to {MAX_REPLICAS} (`bpm stop` or `bpm down` ends a service)"
    )]
    BadScale {
        /// The service.
        service: String,
        /// What was asked.
        asked: i64,
    },
}

/// The most replicas one service may have.
pub const MAX_REPLICAS: u32 = 1_000;

/// The name of replica `i` (from 1) of `service`: the first keeps the
/// service's own name, so that scaling a service up or down never renames
/// (and so never touches) the copy that runs; the others are
/// `service.2`, `service.3`...
pub fn replica_name(service: &str, i: u32) -> String {
    if i <= 1 {
        service.to_owned()
    } else {
        format!("{service}.{i}")
    }
}

/// The service and the replica number a name stands for: `worker.3` is
/// replica 3 of `worker`; any other name is replica 1 of itself.
pub fn replica_of(name: &str) -> (&str, u32) {
    match name.rsplit_once('.') {
        Some((base, i)) if !base.is_empty() => match i.parse::<u32>() {
            Ok(n) if n >= 2 && i == n.to_string() => (base, n),
            _ => (name, 1),
        },
        _ => (name, 1),
    }
}

/// What scaling a service changes: the replicas to start and the ones
/// to stop (by name), the rest kept as they run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scaling {
    /// Replicas the scaled project has that do not run.
    pub start: Vec<String>,
    /// Replicas beyond the number asked for.
    pub stop: Vec<String>,
}

/// Whether `name` is usable for a project or a service.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Project {
    /// This project with `service` at `replicas` copies, each a copy of
    /// its first ([`replica_name`]; `BPM_REPLICA` tells each its number
    /// once there are several), and what that starts and stops.
    ///
    /// # Errors
    /// [`ProjectError::NoSuchService`] for a service the project does not
    /// have, [`ProjectError::BadScale`] for a number out of 1 to
    /// [`MAX_REPLICAS`].
    pub fn scaled(&self, service: &str, replicas: i64) -> Result<(Project, Scaling), ProjectError> {
        let bad = || ProjectError::BadScale {
            service: service.to_owned(),
            asked: replicas,
        };
        let n = u32::try_from(replicas).map_err(|_| bad())?;
        if n == 0 || n > MAX_REPLICAS {
            return Err(bad());
        }
        let Some(first) = self.service(service).cloned() else {
            return Err(ProjectError::NoSuchService(service.to_owned()));
        };
        let has: BTreeSet<u32> = self
            .services
            .iter()
            .filter_map(|s| match replica_of(&s.name) {
                (base, i) if base == service => Some(i),
                _ => None,
            })
            .collect();
        let mut scaling = Scaling::default();
        let mut services: Vec<Service> = Vec::with_capacity(self.services.len() + n as usize);
        for s in &self.services {
            let (base, i) = replica_of(&s.name);
            if base == service && i > n {
                scaling.stop.push(s.name.clone());
                continue;
            }
            services.push(s.clone());
        }
        for i in 2..=n {
            if has.contains(&i) {
                continue;
            }
            let mut copy = first.clone();
            copy.name = replica_name(service, i);
            std::sync::Arc::make_mut(&mut copy.spec.env)
                .insert("BPM_REPLICA".into(), i.to_string().into());
            scaling.start.push(copy.name.clone());
            services.push(copy);
        }
        Ok((
            Project {
                name: self.name.clone(),
                services,
            },
            scaling,
        ))
    }

    /// Checks names, dependencies and cycles.
    ///
    /// # Errors
    /// The first [`ProjectError`] found.
    pub fn validate(&self) -> Result<(), ProjectError> {
        if !usable(&self.name) {
            return Err(ProjectError::BadName {
                what: "project",
                name: self.name.clone(),
            });
        }
        let mut seen = BTreeSet::new();
        for s in &self.services {
            if !usable(&s.name) {
                return Err(ProjectError::BadName {
                    what: "service",
                    name: s.name.clone(),
                });
            }
            if !seen.insert(s.name.as_str()) {
                return Err(ProjectError::Duplicate(s.name.clone()));
            }
        }
        for s in &self.services {
            if let Some(missing) = s.depends_on.keys().find(|d| !seen.contains(d.as_str())) {
                return Err(ProjectError::UnknownDependency {
                    service: s.name.clone(),
                    missing: missing.clone(),
                });
            }
            let scheduled = |name: &str| {
                self.service(name)
                    .is_some_and(|d| d.spec.schedule.is_some())
            };
            if let Some(other) = s
                .depends_on
                .keys()
                .find(|d| s.spec.schedule.is_some() || scheduled(d))
            {
                return Err(ProjectError::ScheduleDependency {
                    service: s.name.clone(),
                    other: other.clone(),
                });
            }
        }
        self.order().map(|_| ())
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services in an order that starts each after what it depends
    /// on (the file's order otherwise).
    ///
    /// # Errors
    /// [`ProjectError::Cycle`], naming the services in the circle.
    pub fn order(&self) -> Result<Vec<&Service>, ProjectError> {
        // Depth first, in the file's order; a service met again while it is
        // on the path closes a cycle.
        fn visit<'a>(
            p: &'a Project,
            s: &'a Service,
            done: &mut BTreeSet<&'a str>,
            path: &mut Vec<&'a str>,
            out: &mut Vec<&'a Service>,
        ) -> Result<(), ProjectError> {
            if done.contains(s.name.as_str()) {
                return Ok(());
            }
            if let Some(at) = path.iter().position(|n| *n == s.name) {
                let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
                cycle.push(s.name.clone());
                return Err(ProjectError::Cycle(cycle));
            }
            path.push(&s.name);
            for dep in s.depends_on.keys() {
                if let Some(d) = p.service(dep) {
                    visit(p, d, done, path, out)?;
                }
            }
            path.pop();
            done.insert(&s.name);
            out.push(s);
            Ok(())
        }
        let (mut done, mut out) = (BTreeSet::new(), Vec::with_capacity(self.services.len()));
        for s in &self.services {
            visit(self, s, &mut done, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// `names` and every service they depend on, directly or not (all of
    /// them when `names` is empty).
    ///
    /// # Errors
    /// [`ProjectError::NoSuchService`] for a name the project lacks.
    pub fn with_dependencies(&self, names: &[String]) -> Result<BTreeSet<String>, ProjectError> {
        if names.is_empty() {
            return Ok(self.services.iter().map(|s| s.name.clone()).collect());
        }
        let mut out = BTreeSet::new();
        let mut todo: Vec<String> = names.iter().flat_map(|n| self.replicas_of(n)).collect();
        while let Some(n) = todo.pop() {
            let s = self
                .service(&n)
                .ok_or_else(|| ProjectError::NoSuchService(n.clone()))?;
            if out.insert(n.clone()) {
                todo.extend(s.depends_on.keys().cloned());
            }
        }
        Ok(out)
    }

    /// `name` and its further replicas (`name.2`, `name.3`...): what a
    /// service's name means when someone names it.
    pub fn replicas_of(&self, name: &str) -> Vec<String> {
        let mut out = vec![name.to_owned()];
        out.extend(
            self.services
                .iter()
                .filter(|s| {
                    replica_of(&s.name) != (s.name.as_str(), 1) && replica_of(&s.name).0 == name
                })
                .map(|s| s.name.clone()),
        );
        out
    }

    /// `names` and every service that depends on them, directly or not.
    pub fn with_dependents(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = names.clone();
        loop {
            let more: Vec<String> = self
                .services
                .iter()
                .filter(|s| !out.contains(&s.name) && s.depends_on.keys().any(|d| out.contains(d)))
                .map(|s| s.name.clone())
                .collect();
            if more.is_empty() {
                return out;
            }
            out.extend(more);
        }
    }

    /// The record name of `service`: `PROJECT/SERVICE`.
    pub fn process_name(&self, service: &str) -> ProcessName {
        ProcessName::new(format!("{}/{service}", self.name)).expect("validated names make a name")
    }

    /// The spec `service` runs as: its own, named and labelled for the
    /// project, waiting for the records `ids` gives its dependencies.
    pub fn spec_of(&self, service: &Service, ids: &BTreeMap<String, ProcessId>) -> ProcessSpec {
        let mut spec = service.spec.clone();
        spec.name = Some(self.process_name(&service.name));
        let label = |k: &str, v: &str| {
            (
                LabelKey::new(k).expect("a valid key"),
                LabelValue::new(v).expect("a valid value"),
            )
        };
        spec.labels.extend([
            label(PROJECT_LABEL, &self.name),
            label(SERVICE_LABEL, &service.name),
            label(HASH_LABEL, &service.hash),
        ]);
        for (dep, until) in &service.depends_on {
            if let Some(id) = ids.get(dep) {
                spec.dependencies.push(*id);
                spec.until.insert(*id, *until);
            }
        }
        spec
    }
}

impl Project {
    /// The project named `name` as its records define it: each service's
    /// newest record's spec (its dependencies given back by service), for
    /// `up` of a project whose file is gone. Only the store is read: a
    /// daemon restart, or another directory, changes nothing.
    pub fn from_records(name: &str, records: &[ProcessRecord]) -> Project {
        let newest = newest_by_service(name, records);
        let service_of_id: BTreeMap<ProcessId, &str> = records
            .iter()
            .filter_map(|r| service_of(name, r).map(|s| (r.id(), s)))
            .collect();
        let services = newest
            .iter()
            .map(|(service, r)| {
                let mut spec = r.spec().clone();
                let depends_on: BTreeMap<String, Until> = spec
                    .dependencies
                    .iter()
                    .filter_map(|d| {
                        service_of_id
                            .get(d)
                            .map(|s| ((*s).to_owned(), spec.until_of(*d)))
                    })
                    .collect();
                let hash = label_of(r, HASH_LABEL).unwrap_or_default().to_owned();
                spec.name = None;
                spec.dependencies.clear();
                spec.until.clear();
                spec.request = None;
                spec.if_name_taken = crate::NameTaken::Refuse;
                spec.labels.retain(|k, _| {
                    ![PROJECT_LABEL, SERVICE_LABEL, HASH_LABEL].contains(&k.as_str())
                });
                Service {
                    name: (*service).to_owned(),
                    spec,
                    depends_on,
                    hash,
                }
            })
            .collect();
        Project {
            name: name.to_owned(),
            services,
        }
    }
}

/// The newest record of each of `project`'s services, the live one first.
pub fn newest_by_service<'a>(
    project: &str,
    records: &'a [ProcessRecord],
) -> BTreeMap<&'a str, &'a ProcessRecord> {
    let mut newest: BTreeMap<&str, &ProcessRecord> = BTreeMap::new();
    for r in records {
        let Some(service) = service_of(project, r) else {
            continue;
        };
        let slot = newest.entry(service).or_insert(r);
        if (!r.is_terminal() && slot.is_terminal())
            || (r.is_terminal() == slot.is_terminal() && r.created_at() > slot.created_at())
        {
            *slot = r;
        }
    }
    newest
}

/// What `up` does with one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its record runs (or ran to completion) what the file says: kept.
    Keep(ProcessId),
    /// Nothing of it is live: started.
    Start,
    /// Its live record runs something else: replaced (stopped, then started).
    Replace(ProcessId),
    /// Its record is live, and the file no longer has it: stopped (with
    /// `--remove-orphans`).
    Stop(ProcessId),
    /// Its newest record is `lost`: it may have run to its end (a
    /// migration that succeeded while bpm could not see it), so it is not
    /// run again unless asked ([`UpOptions::rerun_unknown`]) or it
    /// restarts always.
    LeaveUnknown(ProcessId),
}

/// How `up` treats what stands, beyond which services it brings up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpOptions {
    /// Stop the live records of services the file no longer has.
    pub remove_orphans: bool,
    /// Services replaced even when unchanged (started when none is live).
    pub restart: BTreeSet<String>,
    /// Run again a service whose newest record is `lost` (its end unknown).
    pub rerun_unknown: bool,
    /// Replace a changed service without a moment down: its new record
    /// starts beside the live one, which stops once the new one is ready
    /// ([`crate::NameTaken::Roll`]).
    pub rolling: bool,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Keep(_) => "kept",
            Action::Start => "started",
            Action::Replace(_) => "replaced",
            Action::Stop(_) => "stopped",
            Action::LeaveUnknown(_) => "left",
        })
    }
}

fn label_of<'a>(r: &'a ProcessRecord, key: &str) -> Option<&'a str> {
    r.spec()
        .labels
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.as_str())
}

/// The service a record runs, if it is one of `project`'s.
pub fn service_of<'a>(project: &str, r: &'a ProcessRecord) -> Option<&'a str> {
    (label_of(r, PROJECT_LABEL) == Some(project))
        .then(|| label_of(r, SERVICE_LABEL))
        .flatten()
}

/// The project a record belongs to, if any.
pub fn project_of(r: &ProcessRecord) -> Option<&str> {
    label_of(r, PROJECT_LABEL)
}

/// What `up` does with each service of `only` (and what they depend on;
/// every service when empty), in start order, given `records` (the
/// project's, in any order): a service whose newest record is live, or
/// completed, with the same digest is kept (unless named in
/// `how.restart`: replaced, or started when none is live); one whose live
/// record has another digest is replaced; one whose newest record is
/// `lost` is left as it is, since it may have run to its end unseen
/// (unless `how.rerun_unknown`, it is named in `how.restart`, or it
/// restarts always); the others start. With `how.remove_orphans`, the
/// live records of services the file no longer has are stopped (listed
/// first).
///
/// # Errors
/// As [`Project::order`] and [`Project::with_dependencies`].
pub fn plan(
    project: &Project,
    only: &[String],
    records: &[ProcessRecord],
    how: &UpOptions,
) -> Result<Vec<(String, Action)>, ProjectError> {
    let wanted = project.with_dependencies(only)?;
    let newest = newest_by_service(&project.name, records);
    let mut out = Vec::new();
    if how.remove_orphans {
        for (service, r) in &newest {
            if project.service(service).is_none() && !r.is_terminal() {
                out.push(((*service).to_owned(), Action::Stop(r.id())));
            }
        }
    }
    for s in project.order()? {
        if !wanted.contains(&s.name) {
            continue;
        }
        let again = how.restart.contains(&s.name);
        let action = match newest.get(s.name.as_str()) {
            Some(r) if !again && label_of(r, HASH_LABEL) == Some(&s.hash) && kept(r) => {
                Action::Keep(r.id())
            }
            Some(r) if !r.is_terminal() => Action::Replace(r.id()),
            Some(r)
                if r.state() == StateName::Lost
                    && !again
                    && !how.rerun_unknown
                    && s.spec.restart.mode != crate::RestartMode::Always =>
            {
                Action::LeaveUnknown(r.id())
            }
            _ => Action::Start,
        };
        out.push((s.name.clone(), action));
    }
    Ok(out)
}

/// Whether a service's record is up: `Some(true)` ready and live, or
/// completed; `Some(false)` ended otherwise (it will not be); `None` not
/// yet. What `bpm up --wait` waits for.
pub fn is_up(r: &ProcessRecord) -> Option<bool> {
    if r.is_terminal() {
        Some(r.state() == StateName::Completed)
    } else {
        r.lifecycle().ready_at().is_some().then_some(true)
    }
}

/// Where a project stands, from its services' newest records
/// ([`newest_by_service`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing<'a> {
    /// Every service is up ([`is_up`]).
    Up,
    /// These services ended otherwise than completed or stopped on request:
    /// they will not come up.
    Failed(Vec<&'a str>),
    /// A service was stopped on request: the project was brought down.
    Down,
    /// These services are not up yet, in these states.
    Waiting(Vec<(&'a str, StateName)>),
}

/// Where the project of `newest` (each service's newest record) stands: a
/// failure first, then a stop on request, then what it waits for.
pub fn standing<'a>(newest: &BTreeMap<&'a str, &'a ProcessRecord>) -> Standing<'a> {
    let failed: Vec<&str> = newest
        .iter()
        .filter(|(_, r)| is_up(r) == Some(false) && r.state() != StateName::Cancelled)
        .map(|(s, _)| *s)
        .collect();
    if !failed.is_empty() {
        return Standing::Failed(failed);
    }
    if newest.values().any(|r| r.state() == StateName::Cancelled) {
        return Standing::Down;
    }
    let waiting: Vec<(&str, StateName)> = newest
        .iter()
        .filter(|(_, r)| is_up(r).is_none())
        .map(|(s, r)| (*s, r.state()))
        .collect();
    if waiting.is_empty() {
        Standing::Up
    } else {
        Standing::Waiting(waiting)
    }
}

/// Whether a record of the same definition stands: live, or completed.
fn kept(r: &ProcessRecord) -> bool {
    !r.is_terminal() || r.state() == StateName::Completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeId, Timestamp, Transition};

    fn service(name: &str, deps: &[(&str, Until)], hash: &str) -> Service {
        Service {
            name: name.into(),
            spec: ProcessSpec::argv(["run", name]),
            depends_on: deps.iter().map(|(d, u)| ((*d).to_owned(), *u)).collect(),
            hash: hash.into(),
        }
    }

    fn shop() -> Project {
        Project {
            name: "shop".into(),
            services: vec![
                service("api", &[("migrate", Until::Completed)], "a1"),
                service("worker", &[("api", Until::Ready)], "w1"),
                service("db", &[], "d1"),
                service("migrate", &[("db", Until::Ready)], "m1"),
            ],
        }
    }

    #[test]
    fn a_service_scales_by_copies_of_its_first_and_keeps_its_name() {
        assert_eq!(replica_name("web", 1), "web");
        assert_eq!(replica_name("web", 3), "web.3");
        assert_eq!(replica_of("web.3"), ("web", 3));
        for alone in ["web", "web.1", "web.03", "v1.2.x", ".2", "web."] {
            assert_eq!(replica_of(alone), (alone, 1), "{alone}");
        }
        let p = shop();
        let (wider, did) = p.scaled("worker", 3).expect("scaled");
        assert_eq!(did.start, ["worker.2", "worker.3"]);
        assert!(did.stop.is_empty());
        let copy = wider.service("worker.3").expect("a copy");
        assert_eq!(copy.hash, "w1");
        assert_eq!(
            copy.depends_on,
            p.service("worker").expect("first").depends_on
        );
        assert_eq!(
            copy.spec
                .env
                .get(&"BPM_REPLICA".into())
                .map(ToString::to_string),
            Some("3".into())
        );
        assert_eq!(
            wider.replicas_of("worker"),
            ["worker", "worker.2", "worker.3"]
        );
        let names = wider.with_dependencies(&["worker".into()]).expect("deps");
        assert!(
            names.contains("worker.3") && names.contains("db"),
            "{names:?}"
        );
        let (again, did) = wider.scaled("worker", 3).expect("same");
        assert_eq!(did, Scaling::default());
        assert_eq!(again, wider);
        let (narrower, did) = wider.scaled("worker", 1).expect("down");
        assert_eq!(did.stop, ["worker.2", "worker.3"]);
        assert_eq!(narrower, p);
        for bad in [0, -1, 1_001, i64::MAX] {
            assert!(
                matches!(p.scaled("worker", bad), Err(ProjectError::BadScale { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            p.scaled("cache", 2),
            Err(ProjectError::NoSuchService(_))
        ));
    }

    #[test]
    fn services_start_after_what_they_depend_on() {
        let p = shop();
        p.validate().expect("valid");
        let order: Vec<&str> = p
            .order()
            .expect("order")
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, ["db", "migrate", "api", "worker"]);
        let mut bad = shop();
        bad.services[2]
            .depends_on
            .insert("worker".into(), Until::Started);
        assert_eq!(
            bad.validate(),
            Err(ProjectError::Cycle(
                ["api", "migrate", "db", "worker", "api"]
                    .map(String::from)
                    .to_vec()
            ))
        );
        let mut bad = shop();
        bad.services[0]
            .depends_on
            .insert("cache".into(), Until::Started);
        assert!(matches!(
            bad.validate(),
            Err(ProjectError::UnknownDependency { .. })
        ));
        assert_eq!(
            p.with_dependencies(&["api".into()]).expect("known"),
            ["api", "db", "migrate"].map(String::from).into()
        );
        assert_eq!(
            p.with_dependents(&["migrate".into()].into()),
            ["api", "migrate", "worker"].map(String::from).into()
        );
    }

    /// Issue 60, item 2: a service whose last run was lost (it may have
    /// ended, a migration succeeded, while bpm could not see it) is not
    /// run again by `up` unless asked, or unless it restarts always.
    #[test]
    fn a_lost_service_is_left_unless_asked_to_run_again() {
        let p = shop();
        let t = Timestamp::from_millis(1);
        let migrate = p.service("migrate").expect("m");
        let mut lost = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(7)),
            NodeId::local(),
            p.spec_of(migrate, &BTreeMap::new()),
            t,
        );
        lost.apply(Transition::Start, t).expect("start");
        lost.apply(Transition::Spawned { pid: 5 }, t)
            .expect("spawned");
        lost.apply(
            Transition::Lose {
                reason: "its exit code is unknown".into(),
            },
            t,
        )
        .expect("lost");
        let only = ["migrate".to_owned()];
        let records = std::slice::from_ref(&lost);
        let act = |how: &UpOptions| {
            plan(&p, &only, records, how)
                .expect("plan")
                .into_iter()
                .find(|(s, _)| s == "migrate")
                .map(|(_, a)| a)
        };
        assert_eq!(
            act(&UpOptions::default()),
            Some(Action::LeaveUnknown(lost.id()))
        );
        let rerun = UpOptions {
            rerun_unknown: true,
            ..UpOptions::default()
        };
        assert_eq!(act(&rerun), Some(Action::Start));
        let named = UpOptions {
            restart: ["migrate".to_owned()].into(),
            ..UpOptions::default()
        };
        assert_eq!(act(&named), Some(Action::Start));
        let mut always = p.clone();
        for s in &mut always.services {
            s.spec.restart.mode = crate::RestartMode::Always;
        }
        let plan = super::plan(&always, &only, records, &UpOptions::default()).expect("plan");
        assert!(
            plan.contains(&("migrate".into(), Action::Start)),
            "{plan:?}"
        );
    }

    #[test]
    fn up_keeps_what_matches_replaces_what_changed_and_starts_the_rest() {
        let p = shop();
        let t = Timestamp::from_millis(1);
        let record = |n: u128, s: &Service, ids: &BTreeMap<String, ProcessId>| {
            ProcessRecord::new(
                ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
                NodeId::local(),
                p.spec_of(s, ids),
                t,
            )
        };
        let none = BTreeMap::new();
        let db = record(1, p.service("db").expect("db"), &none);
        let mut migrate = record(2, p.service("migrate").expect("m"), &none);
        migrate.apply(Transition::Start, t).expect("start");
        migrate
            .apply(Transition::Spawned { pid: 5 }, t)
            .expect("spawned");
        migrate
            .apply(
                Transition::Exited {
                    status: crate::ExitStatus::Code(0),
                    limit: None,
                },
                t,
            )
            .expect("exit");
        let mut changed = p.service("api").expect("api").clone();
        changed.hash = "old".into();
        let api = record(3, &changed, &none);
        let plan = plan(
            &p,
            &[],
            &[db.clone(), migrate.clone(), api.clone()],
            &UpOptions::default(),
        )
        .expect("plan");
        assert_eq!(
            plan,
            vec![
                ("db".into(), Action::Keep(db.id())),
                ("migrate".into(), Action::Keep(migrate.id())),
                ("api".into(), Action::Replace(api.id())),
                ("worker".into(), Action::Start),
            ]
        );
        assert_eq!(
            db.spec().name.as_ref().map(ProcessName::as_str),
            Some("shop/db")
        );
        assert_eq!(service_of("shop", &db), Some("db"));
        let mut gone = shop();
        gone.services
            .retain(|s| s.name != "worker" && s.name != "db");
        gone.services[1].depends_on.clear();
        let plan = super::plan(
            &gone,
            &[],
            std::slice::from_ref(&db),
            &UpOptions {
                remove_orphans: true,
                ..UpOptions::default()
            },
        )
        .expect("plan");
        assert_eq!(plan[0], ("db".into(), Action::Stop(db.id())));
        let again = super::plan(
            &p,
            &["db".into()],
            std::slice::from_ref(&db),
            &UpOptions {
                restart: ["db".to_owned()].into(),
                ..UpOptions::default()
            },
        )
        .expect("plan");
        assert_eq!(again, vec![("db".into(), Action::Replace(db.id()))]);
        // The records alone give the project back, digests and dependencies
        // included: up from them keeps what stands.
        let mut ids = BTreeMap::new();
        ids.insert("db".to_owned(), db.id());
        let m2 = record(4, p.service("migrate").expect("m"), &ids);
        let back = Project::from_records("shop", &[db.clone(), m2.clone()]);
        assert_eq!(back.services.len(), 2);
        let migrate = back.service("migrate").expect("migrate");
        assert_eq!(migrate.depends_on.get("db"), Some(&Until::Ready));
        assert_eq!(migrate.hash, "m1");
        let plan = super::plan(&back, &[], &[db.clone(), m2.clone()], &UpOptions::default())
            .expect("plan");
        assert_eq!(
            plan,
            vec![
                ("db".into(), Action::Keep(db.id())),
                ("migrate".into(), Action::Keep(m2.id())),
            ]
        );
    }

    #[test]
    fn a_project_stands_failed_before_down_before_waiting_before_up() {
        fn of<'a>(pairs: &[(&'a str, &'a ProcessRecord)]) -> BTreeMap<&'a str, &'a ProcessRecord> {
            pairs.iter().copied().collect()
        }
        let at = Timestamp::from_millis(0);
        let record = |n: u128, moves: Vec<Transition>| {
            let mut r = crate::ProcessRecord::new(
                crate::ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
                NodeId::local(),
                ProcessSpec::argv(["x"]),
                at,
            );
            for m in moves {
                r.apply(m, at).expect("a legal move");
            }
            r
        };
        let pending = record(1, vec![]);
        let done = record(
            2,
            vec![
                Transition::Start,
                Transition::Spawned { pid: 1 },
                Transition::Exited {
                    status: crate::ExitStatus::Code(0),
                    limit: None,
                },
            ],
        );
        let failed = record(3, vec![Transition::Fail { error: "no".into() }]);
        let stopped = record(
            4,
            vec![Transition::Stop {
                cause: crate::StopCause::Requested,
            }],
        );
        assert_eq!(
            standing(&of(&[("a", &failed), ("b", &stopped), ("c", &pending)])),
            Standing::Failed(vec!["a"])
        );
        assert_eq!(
            standing(&of(&[("b", &stopped), ("c", &pending)])),
            Standing::Down
        );
        assert_eq!(
            standing(&of(&[("c", &pending), ("d", &done)])),
            Standing::Waiting(vec![("c", StateName::Pending)])
        );
        assert_eq!(standing(&of(&[("d", &done)])), Standing::Up);
    }
}
