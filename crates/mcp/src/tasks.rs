//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663),
//! backed by bpm's records. To a client that declared the extension,
//! `start_background_process`, `restart_background_process` and
//! `wait_for_process` answer with a task at once: the task *is* the
//! record, so it lasts as the record does (through the client's reconnect,
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
];

/// The tag of `session` in its tasks' ids: the first 16 hex digits of a
/// SHA-256 of its name.
fn tag(session: &str) -> String {
    let digest = Sha256::digest(format!("bpm mcp task session {session}").as_bytes());
    digest[..8].iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The id of the task that is `record`, made by `session`.
pub(crate) fn task_id(record: ProcessId, session: &str) -> String {
    format!("{record}.{}", tag(session))
}

/// The record a task id names, if `session` may see it (its own, or any
/// when tasks are `shared`).
///
/// # Errors
/// An id that is not a task id of this server, or another session's.
pub(crate) fn record_of(task: &str, session: &str, shared: bool) -> Result<ProcessId, ErrorData> {
    let unknown = || {
        ErrorData::invalid_params(
            format!(
                "task {task:?} is not a task of this server (an id is RECORD.TAG, as a tool call gave it)"
            ),
            None,
        )
    };
    let (record, tagged) = task.split_once('.').ok_or_else(unknown)?;
    let record: ProcessId = record.parse().map_err(|_| unknown())?;
    if !shared && tagged != tag(session) {
        return Err(ErrorData::invalid_params(
            format!(
                "task {task:?} belongs to another session: a session reads and cancels only its own tasks"
            ),
            None,
        ));
    }
    Ok(record)
}

/// The task `task` as `record` stands now, its output's tail read from
/// `manager` once it has ended.
pub(crate) async fn detailed(
    manager: &dyn ProcessManager,
    task: &str,
    record: &ProcessRecord,
) -> DetailedTask {
    let state = record.state();
    let base = Task::new(
        task,
        TaskStatus::Working,
        record.created_at().to_string(),
        record.updated_at().to_string(),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    let payload = match state {
        StateName::Cancelled => TaskPayload::Cancelled,
        s if s.is_terminal() => TaskPayload::Completed {
            result: completed(manager, record).await,
        },
        _ => TaskPayload::Working,
    };
    DetailedTask::new(base.with_status_message(status_message(record)), payload)
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
    let ok = record.state() == StateName::Completed;
    let mut result = if ok {
        CallToolResult::structured(structured.clone())
    } else {
        CallToolResult::structured_error(structured.clone())
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

    /// A tool call answered with a task ([`TASK_TOOLS`]): the start or
    /// restart carried out, or the record to wait for found, and the task
    /// that is its record returned at once. A call that fails is a tool
    /// error, as without tasks.
    pub(crate) async fn call_as_task(
        &self,
        name: &str,
        args: serde_json::Value,
        ctx: &rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let record = if name == "wait_for_process" {
            match args.get("process_id").and_then(serde_json::Value::as_str) {
                Some(text) => self.id(text).await,
                None => Err("wait_for_process: process_id is required".to_owned()),
            }
        } else {
            self.call(name, args, ctx).await.and_then(|reply| {
                reply
                    .structured
                    .get("id")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|id| id.parse::<ProcessId>().ok())
                    .ok_or_else(|| format!("{name} made no record"))
            })
        };
        let record = match record {
            Ok(record) => record,
            Err(message) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
            }
        };
        let id = task_id(record, &self.task_session());
        let detailed = match self.manager().get(record).await {
            Ok(r) => detailed(self.manager(), &id, &r).await,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into());
            }
        };
        self.follow_task(record, id, ctx.peer.clone());
        Ok(rmcp::model::CallToolResponse::Task(
            rmcp::model::CreateTaskResult::new(detailed.task),
        ))
    }

    /// `tasks/get`: the task as its record stands now.
    pub(crate) async fn task(
        &self,
        task: &str,
        peer: rmcp::Peer<rmcp::RoleServer>,
    ) -> Result<DetailedTask, ErrorData> {
        let record = self.record_of_task(task).await?;
        let detailed = detailed(self.manager(), task, &record).await;
        self.follow_task(record.id(), task.to_owned(), peer);
        Ok(detailed)
    }

    /// `tasks/cancel`: the record's whole tree stopped, with its grace (the
    /// status says `cancelled` once it is gone); a task that ended already
    /// stays as it ended.
    pub(crate) async fn cancel(&self, task: &str) -> Result<(), ErrorData> {
        if self.inner.policy.read_only {
            return Err(ErrorData::invalid_params(
                format!("task {task:?}: this server is read-only; nothing is stopped"),
                None,
            ));
        }
        let record = self.record_of_task(task).await?;
        if record.is_terminal() {
            return Ok(());
        }
        let manager = std::sync::Arc::clone(&self.inner.manager);
        tokio::spawn(async move {
            if let Err(e) = manager
                .stop(record.id(), bpm_ports::StopOptions::default())
                .await
            {
                tracing::warn!(error = %e, "could not stop a cancelled task's process");
            }
        });
        Ok(())
    }

    /// The record of `task`, if this session may see it and it is kept.
    async fn record_of_task(&self, task: &str) -> Result<ProcessRecord, ErrorData> {
        let id = record_of(task, &self.task_session(), self.inner.policy.share_tasks)?;
        self.manager().get(id).await.map_err(|e| match e {
            bpm_ports::ManagerError::NotFound(_) => ErrorData::invalid_params(
                format!("task {task:?} is gone: its record ended longer ago than the daemon keeps records, or was removed"),
                None,
            ),
            other => ErrorData::internal_error(format!("task {task:?}: {other}"), None),
        })
    }

    /// Sends `notifications/tasks` to `peer` for `record`'s task `task` as
    /// its record changes, from now on.
    fn follow_task(&self, record: ProcessId, task: String, peer: rmcp::Peer<rmcp::RoleServer>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(record, task);
        let mut slot = self
            .inner
            .task_forwarder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let events = self.inner.manager.subscribe();
        let weak = std::sync::Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(forward_tasks(events, weak, peer)));
    }
}

/// What was last said of each task: its status and message.
type Said = std::collections::HashMap<ProcessId, (TaskStatus, Option<String>)>;

/// Sends each followed task's new status as its record's events come (all
/// of them again when events were missed), until the client goes.
async fn forward_tasks(
    mut events: tokio::sync::broadcast::Receiver<bpm_domain::Event>,
    state: std::sync::Weak<crate::ClientState>,
    peer: rmcp::Peer<rmcp::RoleServer>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut said = Said::new();
    loop {
        let changed: Vec<ProcessId> = match events.recv().await {
            Ok(e) => vec![e.id],
            Err(RecvError::Lagged(_)) => match state.upgrade() {
                Some(s) => s
                    .tasks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .keys()
                    .copied()
                    .collect(),
                None => return,
            },
            Err(RecvError::Closed) => return,
        };
        let Some(inner) = state.upgrade() else { return };
        for record in changed {
            let task = inner
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&record)
                .cloned();
            let Some(task) = task else { continue };
            let Ok(r) = inner.manager.get(record).await else {
                continue;
            };
            let now = detailed(inner.manager.as_ref(), &task, &r).await;
            let key = (now.task.status, now.task.status_message.clone());
            if said.get(&record) == Some(&key) {
                continue;
            }
            said.insert(record, key);
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
        let id = task_id(record, "mcp-a");
        assert_eq!(record_of(&id, "mcp-a", false).expect("own"), record);
        let theirs = record_of(&id, "mcp-b", false).expect_err("another session's");
        assert!(
            theirs.message.contains("belongs to another session"),
            "{theirs:?}"
        );
        assert_eq!(record_of(&id, "mcp-b", true).expect("shared"), record);
        assert!(!id.contains("mcp-a"), "the id does not reveal the session");
        let bad = record_of("nothing", "mcp-a", false).expect_err("not a task id");
        assert!(bad.message.contains("\"nothing\""), "{bad:?}");
    }
}
