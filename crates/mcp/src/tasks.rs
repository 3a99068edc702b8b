//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663),
//! backed by bpm's records. To a client that declared the extension,
//! `start_background_process`, `restart_background_process`,
//! `wait_for_process` and `project_up` answer with a task at once: the
//! task *is* the record (or the project's records), so it lasts as the record does (through the client's reconnect,
//! this server's restart and the daemon's `kill -9`), and nothing is kept
//! in this server's memory but which tasks to send `notifications/tasks`
//! for.
//!
//! A task's id is the record's id and a tag of the session that made it
//! (`RECORD.TAG`): another session's `tasks/get` or `tasks/cancel` is
//! refused by name, unless the policy shares tasks; a client that comes
//! back under its session (`BPM_SESSION`) finds its tasks again. The tag is
//! a digest of the session's name, which it does not reveal.
//!
//! A record's state is the task's status: working while it is pending,
//! starting, running, paused, stopping or unreachable (its status message
//! says which, with its progress and readiness); completed once it ended,
//! with a `CallToolResult` that carries its exit, the reason and the tail
//! of its output, `isError` unless it completed (a process that failed is
//! a completed task whose result is an error, as the extension says);
//! cancelled once it was stopped on request.

use std::fmt::Write as _;

use bpm_domain::{ProcessId, ProcessRecord, StateName};
use bpm_ports::{OutputQuery, ProcessManager, StreamSelect};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, DetailedTask, Task, TaskPayload, TaskStatus};
use sha2::{Digest, Sha256};

/// How often a client should ask again, when it polls.
pub(crate) const POLL_INTERVAL_MS: u64 = 1_000;

/// How many lines of output a completed task's result carries.
const TAIL_LINES: usize = 20;

/// The tools that answer with a task, to a client that asked for tasks.
pub(crate) const TASK_TOOLS: &[&str] = &[
    "start_background_process",
    "restart_background_process",
    "wait_for_process",
    "project_up",
];

/// What a task is: one record, or a project's services.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TaskOf {
    /// A record.
    Record(ProcessId),
    /// A project, by name: up once every service is.
    Project(String),
}

/// How a project's task id begins.
const PROJECT: &str = "project:";

/// The tag of `session` in its tasks' ids: the first 16 hex digits of a
/// SHA-256 of its name.
fn tag(session: &str) -> String {
    let digest = Sha256::digest(format!("bpm mcp task session {session}").as_bytes());
    digest[..8].iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The id of the task that is `what`, made by `session`.
pub(crate) fn task_id(what: &TaskOf, session: &str) -> String {
    match what {
        TaskOf::Record(record) => format!("{record}.{}", tag(session)),
        TaskOf::Project(name) => format!("{PROJECT}{name}.{}", tag(session)),
    }
}

/// The record a task id names, if `session` may see it (its own, or any
/// when tasks are `shared`).
///
/// # Errors
/// An id that is not a task id of this server, or another session's.
pub(crate) fn record_of(task: &str, session: &str, shared: bool) -> Result<TaskOf, ErrorData> {
    let unknown = || {
        ErrorData::invalid_params(
            format!(
                "task {task:?} is not a task of this server (an id is RECORD.TAG, as a tool call gave it)"
            ),
            None,
        )
    };
    let (what, tagged) = task.rsplit_once('.').ok_or_else(unknown)?;
    let what = match what.strip_prefix(PROJECT) {
        Some(name) if !name.is_empty() => TaskOf::Project(name.to_owned()),
        Some(_) => return Err(unknown()),
        None => TaskOf::Record(what.parse().map_err(|_| unknown())?),
    };
    if !shared && tagged != tag(session) {
        return Err(ErrorData::invalid_params(
            format!(
                "task {task:?} belongs to another session: a session reads and cancels only its own tasks"
            ),
            None,
        ));
    }
    Ok(what)
}

/// The task `task` as `record` stands now, its output's tail read from
/// `manager` once it has ended.
pub(crate) async fn detailed(
    manager: &dyn ProcessManager,
    task: &str,
    record: &ProcessRecord,
    retention: Option<bpm_domain::Span>,
) -> DetailedTask {
    let state = record.state();
    let mut base = Task::new(
        task,
        TaskStatus::Working,
        record.created_at().to_string(),
        record.updated_at().to_string(),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    base.ttl_ms = ttl_ms(record, retention);
    let payload = match state {
        StateName::Cancelled => TaskPayload::Cancelled,
        s if s.is_terminal() => TaskPayload::Completed {
            result: completed(manager, record).await,
        },
        _ => TaskPayload::Working,
    };
    DetailedTask::new(base.with_status_message(status_message(record)), payload)
}

/// How long from its creation a record's task lasts: its life (so far,
/// while it runs) and the daemon's retention after it ends; `None`, for
/// as long as it is not removed, when the daemon keeps records without
/// a retention.
fn ttl_ms(record: &ProcessRecord, retention: Option<bpm_domain::Span>) -> Option<u64> {
    let retention = retention?;
    let until = record
        .lifecycle()
        .ended_at()
        .unwrap_or_else(|| record.updated_at());
    let life = until.saturating_since(record.created_at());
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Some(ms(life).saturating_add(retention.as_millis()))
}

/// What a task's status message says of `record`: its state, and, while it
/// runs, its readiness and progress.
fn status_message(record: &ProcessRecord) -> String {
    let state = record.state();
    let mut said = format!("{state}");
    if state == StateName::Running {
        if record.lifecycle().ready_at().is_some() {
            said.push_str(", ready");
        }
        if let Some(p) = record.progress() {
            let _ = write!(said, ", {}%", p.percent.get());
            if let Some(m) = &p.message {
                let _ = write!(said, " {m}");
            }
        }
    }
    if let Some(error) = record.lifecycle().error() {
        let _ = write!(said, ": {error}");
    }
    said
}

/// The `CallToolResult` of an ended record, as JSON: its exit, the reason
/// and its output's tail; an error unless it completed.
async fn completed(
    manager: &dyn ProcessManager,
    record: &ProcessRecord,
) -> serde_json::Map<String, serde_json::Value> {
    let tail = manager
        .read_output(
            record.id(),
            OutputQuery {
                stream: StreamSelect::Both,
                cursor: None,
                max_bytes: 16 << 10,
                tail_lines: Some(TAIL_LINES),
            },
        )
        .await
        .map(|chunk| {
            chunk
                .pieces
                .iter()
                .map(|p| String::from_utf8_lossy(&p.data).into_owned())
                .collect::<String>()
        })
        .unwrap_or_default();
    let exit = record.lifecycle().exit();
    let structured = serde_json::json!({
        "id": record.id().to_string(),
        "state": record.state().to_string(),
        "exit_code": exit.and_then(bpm_domain::ExitStatus::code),
        "signal": exit.and_then(bpm_domain::ExitStatus::signal),
        "error": record.lifecycle().error(),
        "output_tail": tail,
    });
    tool_result(&structured, record.state() != StateName::Completed)
}

/// A completed task's `CallToolResult`, as JSON: `structured`, and the
/// same as text; an error when `error`.
fn tool_result(
    structured: &serde_json::Value,
    error: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut result = if error {
        CallToolResult::structured_error(structured.clone())
    } else {
        CallToolResult::structured(structured.clone())
    };
    result.content = vec![ContentBlock::text(structured.to_string())];
    match serde_json::to_value(result) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

impl crate::McpServer {
    /// The session this client's tasks are tagged with: its owner's, or
    /// none (a server without one: its tasks are one anonymous session's).
    fn task_session(&self) -> String {
        self.inner
            .defaults
            .owner
            .as_ref()
            .map(|o| o.session.to_string())
            .unwrap_or_default()
    }

    /// A tool call answered with a task ([`TASK_TOOLS`]): the start,
    /// restart or `up` carried out (an `up` not waited for), or the record
    /// to wait for found, and the task that is its record (or its project)
    /// returned at once. A call that fails is a tool error, as without
    /// tasks.
    pub(crate) async fn call_as_task(
        &self,
        name: &str,
        mut args: serde_json::Value,
        ctx: &rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let what = if name == "wait_for_process" {
            match args.get("process_id").and_then(serde_json::Value::as_str) {
                Some(text) => self.id(text).await.map(TaskOf::Record),
                None => Err("wait_for_process: process_id is required".to_owned()),
            }
        } else {
            if name == "project_up" {
                // The task is the wait.
                args["wait"] = serde_json::Value::Bool(false);
            }
            self.call(name, args, ctx).await.and_then(|reply| {
                let field = |key: &str| {
                    reply
                        .structured
                        .get(key)
                        .and_then(serde_json::Value::as_str)
                };
                match (field("project"), field("id")) {
                    (Some(project), _) if name == "project_up" => {
                        Ok(TaskOf::Project(project.to_owned()))
                    }
                    (_, Some(id)) => id
                        .parse::<ProcessId>()
                        .map(TaskOf::Record)
                        .map_err(|e| e.to_string()),
                    _ => Err(format!("{name} made no record")),
                }
            })
        };
        let what = match what {
            Ok(what) => what,
            Err(message) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
            }
        };
        let id = task_id(&what, &self.task_session());
        let detailed = match self.detailed_of(&what, &id).await {
            Ok(d) => d,
            Err(e) => {
                return Ok(
                    CallToolResult::error(vec![ContentBlock::text(e.message.to_string())]).into(),
                );
            }
        };
        self.follow_task(what, id, ctx.peer.clone());
        Ok(rmcp::model::CallToolResponse::Task(
            rmcp::model::CreateTaskResult::new(detailed.task),
        ))
    }

    /// `tasks/get`: the task as its record (or its project's) stands now.
    pub(crate) async fn task(
        &self,
        task: &str,
        peer: rmcp::Peer<rmcp::RoleServer>,
    ) -> Result<DetailedTask, ErrorData> {
        let what = record_of(task, &self.task_session(), self.inner.policy.share_tasks)?;
        let detailed = self.detailed_of(&what, task).await?;
        self.follow_task(what, task.to_owned(), peer);
        Ok(detailed)
    }

    /// `tasks/cancel`: the record's whole tree stopped with its grace, or
    /// the project brought down (the status says `cancelled` once they are
    /// gone); a task that ended already stays as it ended.
    pub(crate) async fn cancel(&self, task: &str) -> Result<(), ErrorData> {
        if self.inner.policy.read_only {
            return Err(ErrorData::invalid_params(
                format!("task {task:?}: this server is read-only; nothing is stopped"),
                None,
            ));
        }
        let what = record_of(task, &self.task_session(), self.inner.policy.share_tasks)?;
        if self.detailed_of(&what, task).await?.status().is_terminal() {
            return Ok(());
        }
        let server = self.clone();
        tokio::spawn(async move {
            let stopped = match what {
                TaskOf::Record(id) => server
                    .manager()
                    .stop(id, bpm_ports::StopOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                TaskOf::Project(name) => {
                    match serde_json::from_value(serde_json::json!({ "project": name })) {
                        Ok(args) => server.project_down(args).await.map(|_| ()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "could not stop a cancelled task's processes");
            }
        });
        Ok(())
    }

    /// `tasks/update`: input for a task's process, started with `stdin`
    /// (or a terminal). The one response it takes is `stdin`: a string,
    /// written as it is (with the line's end, if it is to end one), or
    /// `{"text": "...", "newline": true}`, as `send_process_input` takes it.
    pub(crate) async fn update(
        &self,
        task: &str,
        responses: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<(), ErrorData> {
        if self.inner.policy.read_only {
            return Err(ErrorData::invalid_params(
                format!("task {task:?}: this server is read-only; no input is sent"),
                None,
            ));
        }
        let what = record_of(task, &self.task_session(), self.inner.policy.share_tasks)?;
        let TaskOf::Record(id) = what else {
            return Err(ErrorData::invalid_params(
                format!("task {task:?} is a project's: input goes to one service's task"),
                None,
            ));
        };
        let refused =
            |why: String| ErrorData::invalid_params(format!("task {task:?}: {why}"), None);
        if let Some(other) = responses.keys().find(|k| k.as_str() != "stdin") {
            return Err(refused(format!(
                "tasks/update takes the response \"stdin\" alone (the process's input), not {other:?}"
            )));
        }
        let Some(input) = responses.get("stdin") else {
            return Err(refused(
                "tasks/update without \"stdin\": nothing to send".into(),
            ));
        };
        let data = match input {
            serde_json::Value::String(text) => text.clone().into_bytes(),
            serde_json::Value::Object(o) => match o.get("text").and_then(serde_json::Value::as_str)
            {
                Some(text) => {
                    let mut data = text.as_bytes().to_vec();
                    if o.get("newline").and_then(serde_json::Value::as_bool) != Some(false) {
                        data.push(b'\n');
                    }
                    data
                }
                None => return Err(refused("\"stdin\" as an object needs \"text\"".into())),
            },
            _ => {
                return Err(refused(
                    "\"stdin\" is a string, or {\"text\": ..., \"newline\": ...}".into(),
                ));
            }
        };
        self.detailed_of(&TaskOf::Record(id), task).await?;
        self.manager()
            .send_input(id, data)
            .await
            .map_err(|e| refused(e.to_string()))
    }

    /// The task `task` that is `what`, as it stands now.
    async fn detailed_of(&self, what: &TaskOf, task: &str) -> Result<DetailedTask, ErrorData> {
        let gone = || {
            ErrorData::invalid_params(
                format!(
                    "task {task:?} is gone: its records ended longer ago than the daemon keeps records, or were removed"
                ),
                None,
            )
        };
        let failed = |e: bpm_ports::ManagerError| match e {
            bpm_ports::ManagerError::NotFound(_) => gone(),
            other => ErrorData::internal_error(format!("task {task:?}: {other}"), None),
        };
        match what {
            TaskOf::Record(id) => {
                let record = self.manager().get(*id).await.map_err(failed)?;
                let retention = self.inner.defaults.retention;
                Ok(detailed(self.manager(), task, &record, retention).await)
            }
            TaskOf::Project(name) => {
                let records = self
                    .manager()
                    .list(bpm_intake::project::of_project(name))
                    .await
                    .map_err(failed)?;
                if records.is_empty() {
                    return Err(gone());
                }
                Ok(project_task(task, name, &records))
            }
        }
    }

    /// Sends `notifications/tasks` to `peer` for task `task`, that is
    /// `what`, as its records change, from now on.
    fn follow_task(&self, what: TaskOf, task: String, peer: rmcp::Peer<rmcp::RoleServer>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(what, task);
        let mut slot = self
            .inner
            .task_forwarder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let events = self.inner.manager.subscribe();
        let state = std::sync::Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(forward_tasks(events, state, peer)));
    }
}

/// A project's task, as the project stands ([`bpm_domain::project::standing`]):
/// completed once every service is up, an error if one will not come up;
/// cancelled once it was brought down; working meanwhile, saying which it
/// waits for.
fn project_task(task: &str, name: &str, records: &[ProcessRecord]) -> DetailedTask {
    use bpm_domain::project;
    let newest = project::newest_by_service(name, records);
    let created = records.iter().map(ProcessRecord::created_at).min();
    let updated = records.iter().map(ProcessRecord::updated_at).max();
    let services: Vec<serde_json::Value> = newest
        .iter()
        .map(|(service, r)| {
            serde_json::json!({
                "service": service,
                "id": r.id().to_string(),
                "state": r.state().to_string(),
                "up": project::is_up(r),
                "error": r.lifecycle().error(),
            })
        })
        .collect();
    let structured = serde_json::json!({ "project": name, "services": services });
    let (payload, message) = match project::standing(&newest) {
        project::Standing::Failed(failed) => (
            TaskPayload::Completed {
                result: tool_result(&structured, true),
            },
            format!("project {name}: {} did not come up", failed.join(", ")),
        ),
        project::Standing::Down => (
            TaskPayload::Cancelled,
            format!("project {name} was brought down"),
        ),
        project::Standing::Up => (
            TaskPayload::Completed {
                result: tool_result(&structured, false),
            },
            format!("project {name}: all {} services up", newest.len()),
        ),
        project::Standing::Waiting(waiting) => {
            let names: Vec<String> = waiting
                .iter()
                .map(|(s, state)| format!("{s} ({state})"))
                .collect();
            (
                TaskPayload::Working,
                format!(
                    "project {name}: {} of {} up; waiting for {}",
                    newest.len() - waiting.len(),
                    newest.len(),
                    names.join(", ")
                ),
            )
        }
    };
    let at = |t: Option<bpm_domain::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let base = Task::new(task, TaskStatus::Working, at(created), at(updated))
        .with_poll_interval_ms(POLL_INTERVAL_MS)
        .with_status_message(message);
    DetailedTask::new(base, payload)
}

/// What was last said of each task: its status and message.
type Said = std::collections::HashMap<String, (TaskStatus, Option<String>)>;

/// Sends each followed task's new status as its records' events come (all
/// of them again when events were missed), until the client goes.
async fn forward_tasks(
    mut events: tokio::sync::broadcast::Receiver<bpm_domain::Event>,
    state: std::sync::Weak<crate::ClientState>,
    peer: rmcp::Peer<rmcp::RoleServer>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut said = Said::new();
    loop {
        let event = events.recv().await;
        // The client's state is held only while an event is handled: a
        // client that went lets it go, and this task ends with it.
        let Some(inner) = state.upgrade() else { return };
        let server = crate::McpServer { inner };
        let followed: Vec<(TaskOf, String)> = server
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(w, t)| (w.clone(), t.clone()))
            .collect();
        let touched: Vec<(TaskOf, String)> =
            match event {
                Ok(e) => {
                    let project =
                        if followed
                            .iter()
                            .any(|(w, _)| matches!(w, TaskOf::Project(_)))
                        {
                            server.manager().get(e.id).await.ok().and_then(|r| {
                                bpm_domain::project::project_of(&r).map(str::to_owned)
                            })
                        } else {
                            None
                        };
                    followed
                        .into_iter()
                        .filter(|(w, _)| match w {
                            TaskOf::Record(id) => *id == e.id,
                            TaskOf::Project(name) => project.as_deref() == Some(name.as_str()),
                        })
                        .collect()
                }
                Err(RecvError::Lagged(_)) => followed,
                Err(RecvError::Closed) => return,
            };
        for (what, task) in touched {
            let Ok(now) = server.detailed_of(&what, &task).await else {
                continue;
            };
            let key = (now.task.status, now.task.status_message.clone());
            if said.get(&task) == Some(&key) {
                continue;
            }
            said.insert(task, key);
            let note = rmcp::model::ServerNotification::TaskStatusNotification(
                rmcp::model::Notification::new(rmcp::model::TaskStatusNotificationParams::new(now)),
            );
            if peer.send_notification(note).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_is_its_record_and_its_sessions_tag() {
        let record: ProcessId = "0192f0a0-0000-7000-8000-000000000001".parse().expect("id");
        let id = task_id(&TaskOf::Record(record), "mcp-a");
        assert_eq!(
            record_of(&id, "mcp-a", false).expect("own"),
            TaskOf::Record(record)
        );
        let theirs = record_of(&id, "mcp-b", false).expect_err("another session's");
        assert!(
            theirs.message.contains("belongs to another session"),
            "{theirs:?}"
        );
        assert_eq!(
            record_of(&id, "mcp-b", true).expect("shared"),
            TaskOf::Record(record)
        );
        let project = task_id(&TaskOf::Project("shop.v2".into()), "mcp-a");
        assert_eq!(
            record_of(&project, "mcp-a", false).expect("own"),
            TaskOf::Project("shop.v2".into())
        );
        assert!(!id.contains("mcp-a"), "the id does not reveal the session");
        let bad = record_of("nothing", "mcp-a", false).expect_err("not a task id");
        assert!(bad.message.contains("\"nothing\""), "{bad:?}");
    }
}
