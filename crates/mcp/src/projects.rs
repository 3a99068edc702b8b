//! The project tools: `project_up`, `project_down`, `project_scale` and
//! `project_status`,
//! so that an agent says "make sure the dev stack is up" in one call and
//! may repeat it safely. Reading a project file and bringing it up are
//! `bpm_intake::project`'s, as they are for `bpm up`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::project::{self, Project};
use bpm_intake::project as ports_project;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{McpServer, Reply};

/// A project file, read: the project, the file (absolute), and the keys of
/// it that bpm does not act on.
#[derive(Debug, Clone)]
pub struct LoadedProject {
    /// The project.
    pub project: Project,
    /// Its file.
    pub file: PathBuf,
    /// Keys bpm does not act on, by name.
    pub ignored: Vec<String>,
}

pub use bpm_intake::MayRead;

/// Takes project `name`'s lock, waiting for it (a blocking call); the
/// lock is held until what it returns is dropped.
pub type ProjectLock =
    Arc<dyn Fn(&str) -> Result<Box<dyn std::any::Any + Send>, String> + Send + Sync>;

/// Which project a call means.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProjectArgs {
    /// The project file (a bpm.toml, a Procfile or a process-compose.yaml),
    /// relative to the server's directory; by default the bpm.toml there
    /// or in the nearest parent.
    pub(super) file: Option<String>,
    /// Or the name of a project brought up before (from its file).
    pub(super) project: Option<String>,
    /// Only these services (and, for `project_up`, what they depend on).
    pub(super) services: Option<Vec<String>>,
    /// `project_up`: wait until every service is ready (or completed), and
    /// say which failed or was not up in time (default true).
    pub(super) wait: Option<bool>,
    /// `project_up`: how long to wait, in seconds (default 120).
    pub(super) wait_timeout_secs: Option<f64>,
    /// `project_up`: stop the services the file no longer has.
    pub(super) remove_orphans: Option<bool>,
    /// `project_up`: run again a service whose last run was lost (it may
    /// have run to its end unseen); by default it is left (action "left").
    pub(super) rerun_unknown: Option<bool>,
    /// `project_up`: replace a changed service without a moment down: its
    /// new copy starts beside the running one, which stops once the new
    /// one is ready; a new copy not ready in time is stopped, and the old
    /// one runs on (`failed.rolled_back`). Needs a readiness check.
    pub(super) rolling: Option<bool>,
}

/// `project_scale`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleArgs {
    /// The project's name (or give `file`; by default the bpm.toml in the
    /// server's directory or the nearest parent).
    pub(super) project: Option<String>,
    /// Or its file, as for `project_up`.
    pub(super) file: Option<String>,
    /// The service to scale.
    pub(super) service: String,
    /// How many copies of it should run: 1 to 1000.
    pub(super) replicas: i64,
}

fn step_json(s: &ports_project::Step) -> Value {
    json!({ "service": s.service, "action": s.done.to_string(), "process_id": s.id })
}

impl McpServer {
    /// The project a call names.
    async fn project_of(&self, a: &ProjectArgs) -> Result<LoadedProject, String> {
        if !self.inner.projects {
            return Err("this server reads no project files".into());
        }
        let cwd = &self.inner.defaults.cwd;
        let file = match (&a.file, &a.project) {
            (Some(f), _) => Some(cwd.join(f)),
            (None, Some(name)) => {
                let found = ports_project::file_of(self.manager(), name)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(PathBuf::from);
                match found {
                    Some(f) if f.exists() => Some(f),
                    // Its file is gone: the store's records define it still.
                    _ => {
                        let mut project = ports_project::from_store(self.manager(), name)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or_else(|| {
                                format!("no project {name:?} was brought up: give its file")
                            })?;
                        // Someone else's records: the policy sees them as
                        // it sees a file's.
                        self.confine(&mut project)?;
                        return Ok(LoadedProject {
                            project,
                            file: PathBuf::from("(the store)"),
                            ignored: Vec::new(),
                        });
                    }
                }
            }
            (None, None) => None,
        };
        if let Some(f) = &file {
            self.inner.policy.check_path("project file", f)?;
        }
        let policy = &self.inner.policy;
        let may_read = |what: &str, path: &Path| policy.check_path(what, path);
        let path = match file {
            Some(f) => f,
            None => ports_project::find(cwd).ok_or_else(|| {
                format!(
                    "no {} in {} or a parent directory: give its file",
                    ports_project::FILE_NAME,
                    cwd.display()
                )
            })?,
        };
        let reading = ports_project::Reading {
            env: &self.inner.defaults.env,
            machine: &*self.inner.defaults.machine,
            may_read: &may_read,
        };
        let loaded = ports_project::load_confined(&path, &reading)?;
        let mut loaded = LoadedProject {
            project: loaded.project,
            file: loaded.file,
            ignored: loaded.ignored,
        };
        // Found by walking up from the server's directory: it may lie
        // above every allowed one.
        policy.check_path("project file", &loaded.file)?;
        self.confine(&mut loaded.project)?;
        Ok(loaded)
    }

    /// Every service of `project` checked as a start is
    /// ([`Policy::check_spec`](crate::Policy::check_spec)), its env files
    /// folded in under an allowlist.
    fn confine(&self, project: &mut Project) -> Result<(), String> {
        let (policy, base) = (&self.inner.policy, &self.inner.defaults.env);
        for service in &mut project.services {
            policy
                .fold_env_files(&mut service.spec, &*self.inner.defaults.machine)
                .and_then(|()| policy.check_spec(&service.spec, base))
                .map_err(|e| format!("service {:?}: {e}", service.name))?;
        }
        Ok(())
    }

    /// Project `name`'s lock, if this server has one ([`ProjectLock`]).
    async fn lock(&self, name: &str) -> Result<Option<Box<dyn std::any::Any + Send>>, String> {
        let Some(lock) = self.inner.project_lock.clone() else {
            return Ok(None);
        };
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || lock(&name))
            .await
            .map_err(|e| e.to_string())?
            .map(Some)
    }

    /// `project_up`.
    pub(super) async fn project_up(&self, a: ProjectArgs) -> Result<Reply, String> {
        let loaded = self.project_of(&a).await?;
        let p = &loaded.project;
        let lock = self.lock(&p.name).await?;
        let only = a.services.clone().unwrap_or_default();
        let events = self.manager().subscribe();
        let file = loaded.file.display().to_string();
        let steps = ports_project::up(
            self.manager(),
            p,
            &file,
            &only,
            &project::UpOptions {
                remove_orphans: a.remove_orphans.unwrap_or(false),
                rerun_unknown: a.rerun_unknown.unwrap_or(false),
                rolling: a.rolling.unwrap_or(false),
                ..project::UpOptions::default()
            },
            |_| {},
        )
        .await
        .map_err(|(service, e)| format!("{service}: {e}"))?;
        drop(lock);
        let mut answer = json!({
            "project": p.name,
            "file": file,
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
            "ignored_keys": loaded.ignored,
        });
        if a.wait.unwrap_or(true) {
            let secs = a.wait_timeout_secs.unwrap_or(120.0);
            if !secs.is_finite() || secs <= 0.0 {
                return Err(format!("invalid wait_timeout_secs {secs}"));
            }
            let waited = ports_project::wait_up(
                self.manager(),
                &steps,
                events,
                Some(Duration::from_secs_f64(secs)),
            )
            .await
            .map_err(|e| e.to_string())?;
            answer["up"] = json!(waited.is_ok());
            if let Err(not_up) = waited {
                let tail = self.tail(&not_up.record).await;
                let rolled_back = ports_project::give_up_roll(self.manager(), &steps, &not_up)
                    .await
                    .map_err(|e| e.to_string())?;
                answer["failed"] = json!({
                    "service": not_up.service,
                    "process_id": not_up.record.id(),
                    "state": not_up.record.state(),
                    "timed_out": not_up.timed_out,
                    "error": not_up.record.lifecycle().error(),
                    "output_tail": tail,
                    "rolled_back": rolled_back,
                });
            }
        }
        Ok(Reply::json(answer))
    }

    /// `project_down`.
    pub(super) async fn project_down(&self, a: ProjectArgs) -> Result<Reply, String> {
        let loaded = self.project_of(&a).await?;
        let only = a.services.clone().unwrap_or_default();
        let _lock = self.lock(&loaded.project.name).await?;
        let steps = ports_project::down(self.manager(), &loaded.project, &only, |_| {})
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::json(json!({
            "project": loaded.project.name,
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
        })))
    }

    /// `project_scale`: a running service's copies made as many as asked,
    /// the others left as they run. Each copy to start is checked against
    /// the server's policy as a start is.
    pub(super) async fn project_scale(&self, a: ScaleArgs) -> Result<Reply, String> {
        let name = if let (Some(name), None) = (&a.project, &a.file) {
            name.clone()
        } else {
            let which = ProjectArgs {
                file: a.file.clone(),
                project: a.project.clone(),
                services: None,
                wait: None,
                wait_timeout_secs: None,
                remove_orphans: None,
                rerun_unknown: None,
                rolling: None,
            };
            self.project_of(&which).await?.project.name
        };
        let records = self
            .manager()
            .list(ports_project::of_project(&name))
            .await
            .map_err(|e| e.to_string())?;
        let (scaled, scaling) = Project::from_records(&name, &records)
            .scaled(&a.service, a.replicas)
            .map_err(|e| e.to_string())?;
        let (policy, base) = (&self.inner.policy, &self.inner.defaults.env);
        for s in scaled
            .services
            .iter()
            .filter(|s| scaling.start.contains(&s.name))
        {
            policy
                .check_spec(&s.spec, base)
                .map_err(|e| format!("service {:?}: {e}", s.name))?;
        }
        let _lock = self.lock(&name).await?;
        let steps = ports_project::scale(self.manager(), &name, &a.service, a.replicas, |_| {})
            .await
            .map_err(|(who, e)| format!("{who}: {e}"))?;
        Ok(Reply::json(json!({
            "project": name,
            "service": a.service,
            "replicas": a.replicas,
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
        })))
    }

    /// `project_status`: each service's newest record, with its state,
    /// readiness, health, port and last lines.
    pub(super) async fn project_status(&self, a: ProjectArgs) -> Result<Reply, String> {
        let name = match (&a.project, &a.file) {
            (Some(name), None) => name.clone(),
            _ => self.project_of(&a).await?.project.name,
        };
        let records = self
            .manager()
            .list(ports_project::of_project(&name))
            .await
            .map_err(|e| e.to_string())?;
        let newest = project::newest_by_service(&name, &records);
        let mut services = Vec::with_capacity(newest.len());
        for (service, r) in newest {
            let l = r.lifecycle();
            services.push(json!({
                "service": service,
                "process_id": r.id(),
                "state": r.state(),
                "ready": l.ready_at().is_some(),
                "health": r.health(),
                "port": r.port(),
                "pid": r.pid(),
                "exit_code": l.exit().and_then(bpm_domain::ExitStatus::code),
                "error": l.error(),
                "output_tail": self.tail(r).await,
            }));
        }
        Ok(Reply::json(
            json!({ "project": name, "services": services }),
        ))
    }
}
