//! MCP Tasks (SEP-2663) backed by records, through rmcp's own client,
//! which speaks the extension: a tool call answered with a task and polled
//! to its end, `notifications/tasks` heard, `tasks/cancel` stopping a tree
//! that ignores TERM, another session's task refused, a session that comes
//! back finding its tasks, and a client without the extension answered as
//! before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bpm_mcp::{McpServer, Policy, SessionOwner, StartDefaults};
use rmcp::model::{
    CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig, GetTaskParams,
    Implementation, TaskPayload, TaskStatus, TaskStatusNotificationParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::fixture::{World, params, world};

/// A client that declares the tasks extension and keeps what
/// `notifications/tasks` said.
#[derive(Clone, Default)]
struct Tasker {
    heard: Arc<Mutex<Vec<(String, TaskStatus)>>>,
}

impl ClientHandler for Tasker {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("tasks-test", "1"),
        )
    }

    async fn on_task_status(
        &self,
        params: TaskStatusNotificationParams,
        _context: NotificationContext<RoleClient>,
    ) {
        let task = &params.task.task;
        self.heard
            .lock()
            .expect("lock")
            .push((task.task_id.clone(), task.status));
    }
}

type TaskClient = RunningService<RoleClient, Tasker>;

/// A server for `session` on `w`'s engine, and a client of it that
/// declares tasks.
async fn tasker(w: &World, session: &str, policy: Policy) -> (TaskClient, Tasker) {
    tasker_of(w, session, policy, false).await
}

/// As [`tasker`], with a server that reads project files when `projects`.
async fn tasker_of(
    w: &World,
    session: &str,
    policy: Policy,
    projects: bool,
) -> (TaskClient, Tasker) {
    tasker_kept(w, session, policy, projects, None).await
}

/// As [`tasker_of`], for a daemon that keeps ended records `retention`.
async fn tasker_kept(
    w: &World,
    session: &str,
    policy: Policy,
    projects: bool,
    retention: Option<bpm_domain::Span>,
) -> (TaskClient, Tasker) {
    let defaults = StartDefaults {
        cwd: w.dir.path().to_path_buf(),
        env: std::collections::BTreeMap::from([(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_default().into(),
        )]),
        owner: Some(SessionOwner {
            session: session.parse().expect("session"),
            grace: bpm_domain::Span::from_secs(60),
        }),
        time_zone: "UTC".into(),
        machine: Arc::new(bpm_adapters::os::ThisMachine),
        retention,
    };
    let mut server = McpServer::new(w.manager.clone(), policy, defaults, "test");
    if projects {
        server = server.with_projects();
    }
    let (server_side, client_side) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_side).await {
            let _ = running.waiting().await;
        }
    });
    let seen = Tasker::default();
    let client = seen.clone().serve(client_side).await.expect("handshake");
    (client, seen)
}

/// Calls `tool` and returns the id of the task it answered with.
async fn task_of(client: &TaskClient, tool: &'static str, args: &Value) -> String {
    match client
        .call_tool_once(params(tool, args))
        .await
        .expect("call")
    {
        CallToolResponse::Task(t) => {
            assert_eq!(t.task.status, TaskStatus::Working, "{t:?}");
            assert_eq!(t.task.poll_interval_ms, Some(1_000));
            t.task.task_id
        }
        other => panic!("{tool} answered without a task: {other:?}"),
    }
}

/// Polls `task` until its status is final.
async fn until_final(client: &TaskClient, task: &str) -> rmcp::model::DetailedTask {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = client
            .get_task(GetTaskParams::new(task))
            .await
            .expect("tasks/get")
            .task;
        if got.status().is_terminal() {
            return got;
        }
        assert!(Instant::now() < deadline, "never ended: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_a_task_polled_to_its_end_and_heard_of_as_it_changes() {
    let w = world().await;
    let (c, seen) = tasker(&w, "mcp-a", Policy::default()).await;
    let task = task_of(
        &c,
        "start_background_process",
        &json!({"argv": ["sh", "-c", "echo hello; sleep 0.3; exit 3"]}),
    )
    .await;
    let ended = until_final(&c, &task).await;
    // A process that failed is a completed task whose result is an error.
    assert_eq!(ended.status(), TaskStatus::Completed, "{ended:?}");
    let TaskPayload::Completed { result } = &ended.payload else {
        panic!("{ended:?}")
    };
    assert_eq!(result["isError"], true, "{result:?}");
    let structured = &result["structuredContent"];
    assert_eq!(structured["exit_code"], 3, "{result:?}");
    assert_eq!(structured["state"], "failed", "{result:?}");
    assert!(
        structured["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("hello")),
        "{result:?}"
    );
    assert!(
        ended
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("failed")),
        "{ended:?}"
    );
    // Heard without polling: the end, pushed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen
        .heard
        .lock()
        .expect("lock")
        .iter()
        .any(|(id, s)| *id == task && *s == TaskStatus::Completed)
    {
        assert!(
            Instant::now() < deadline,
            "no notifications/tasks: {:?}",
            seen.heard
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A completed process is a completed task, without an error; waiting
    // for a record is a task too, the same record's.
    let ok_task = task_of(
        &c,
        "start_background_process",
        &json!({"argv": ["sh", "-c", "sleep 0.2"], "name": "nap"}),
    )
    .await;
    let waited = task_of(&c, "wait_for_process", &json!({"process_id": "nap"})).await;
    assert_eq!(waited, ok_task, "the task is the record");
    let ended = until_final(&c, &waited).await;
    let TaskPayload::Completed { result } = &ended.payload else {
        panic!("{ended:?}")
    };
    assert_ne!(result["isError"], true, "{result:?}");
    assert_eq!(result["structuredContent"]["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_tree_that_ignores_term_and_ends_the_task_cancelled() {
    let w = world().await;
    let (c, _) = tasker(&w, "mcp-a", Policy::default()).await;
    let task = task_of(
        &c,
        "start_background_process",
        &json!({
            "argv": ["sh", "-c", "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300"],
            "grace": "1s"
        }),
    )
    .await;
    let record: bpm_domain::ProcessId = task
        .split_once('.')
        .expect("RECORD.TAG")
        .0
        .parse()
        .expect("a record id");
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.manager.get(record).await.expect("record").pid().is_none() {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("tasks/cancel");
    let ended = until_final(&c, &task).await;
    assert_eq!(ended.status(), TaskStatus::Cancelled, "{ended:?}");
    let gone = w.manager.get(record).await.expect("record");
    assert_eq!(gone.state(), bpm_domain::StateName::Cancelled);
    // Cancelling what ended changes nothing.
    c.cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("tasks/cancel again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_its_sessions_alone_comes_back_with_it_and_a_client_without_tasks_is_answered_as_before()
 {
    let w = world().await;
    let (a, _) = tasker(&w, "mcp-a", Policy::default()).await;
    let task = task_of(
        &a,
        "start_background_process",
        &json!({"argv": ["sleep", "30"]}),
    )
    .await;

    // Another session: refused by name, for reading and for cancelling.
    let (other, _) = tasker(&w, "mcp-b", Policy::default()).await;
    let refused = other
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .expect_err("another session's task");
    assert!(
        refused.to_string().contains("belongs to another session"),
        "{refused}"
    );
    let refused = other
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect_err("another session's task");
    assert!(
        refused.to_string().contains("belongs to another session"),
        "{refused}"
    );
    // Unless the policy shares tasks.
    let shared = Policy {
        share_tasks: true,
        ..Policy::default()
    };
    let (sharer, _) = tasker(&w, "mcp-s", shared).await;
    let seen = sharer
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .expect("shared");
    assert_eq!(seen.task.status(), TaskStatus::Working);
    // An id that is no task's, named.
    let unknown = a
        .get_task(GetTaskParams::new("not-a-task"))
        .await
        .expect_err("unknown");
    assert!(unknown.to_string().contains("\"not-a-task\""), "{unknown}");

    // The client goes; a new server under the same session finds the task.
    drop(a);
    let (again, _) = tasker(&w, "mcp-a", Policy::default()).await;
    let back = again
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .expect("its own task, after a reconnect");
    assert_eq!(back.task.status(), TaskStatus::Working);
    assert!(
        back.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("running")),
        "{back:?}"
    );
    again
        .cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("cancel");
    until_final(&again, &task).await;

    // A client that did not declare the extension gets today's answers.
    let (plain, _) = w.client(Policy::default()).await;
    let r = plain
        .call_tool(params(
            "start_background_process",
            &json!({"argv": ["true"]}),
        ))
        .await
        .expect("call");
    assert!(
        r.structured_content
            .as_ref()
            .is_some_and(|s| s["id"].is_string()),
        "{r:?}"
    );
}

/// The real `bpm mcp` for session `session` on the daemon of `home`, and a
/// client of it that declares tasks, over its stdin and stdout.
async fn real_server(home: &std::path::Path, session: &str) -> (TaskClient, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
        .arg("mcp")
        .env("BPM_HOME", home)
        .env("BPM_SESSION", session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bpm mcp");
    let io = (
        child.stdout.take().expect("stdout"),
        child.stdin.take().expect("stdin"),
    );
    let client = Tasker::default().serve(io).await.expect("handshake");
    (client, child)
}

/// A task outlives its client, the `bpm mcp` that made it and a `kill -9`
/// of the daemon: the next server under the same session reads it to its
/// end; under another session it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_outlives_its_server_and_a_kill_of_the_daemon() {
    let home = tempfile::tempdir().expect("home");
    let (first, mut server) = real_server(home.path(), "agent-1").await;
    let task = task_of(
        &first,
        "start_background_process",
        &json!({"argv": ["sh", "-c", "sleep 2; echo survived"], "persistent": true}),
    )
    .await;
    drop(first);
    server.kill().await.expect("kill bpm mcp");
    let pid = std::fs::read_to_string(home.path().join("daemon.pid")).expect("daemon pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let (again, _server) = real_server(home.path(), "agent-1").await;
    let ended = until_final(&again, &task).await;
    let TaskPayload::Completed { result } = &ended.payload else {
        panic!("{ended:?}")
    };
    assert_eq!(result["structuredContent"]["exit_code"], 0, "{result:?}");
    assert!(
        result["structuredContent"]["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("survived")),
        "{result:?}"
    );
    let (other, _other_server) = real_server(home.path(), "agent-2").await;
    let refused = other
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .expect_err("another session's");
    assert!(
        refused.to_string().contains("belongs to another session"),
        "{refused}"
    );
    let stop = std::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output()
        .expect("bpm daemon stop");
    assert!(stop.status.success());
}

/// `project_up` is a task of the project: working until every service is
/// up, then completed with each one's record; cancelling one still coming
/// up brings the project down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_up_is_a_task_until_every_service_is_up_and_cancelling_brings_it_down() {
    let w = world().await;
    std::fs::write(
        w.dir.path().join("bpm.toml"),
        "[project]\nname = \"shop\"\n\
         [services.db]\ncommand = \"sleep 0.4; echo ready to accept; exec sleep 60\"\n\
         ready = { log = \"ready to accept\" }\n\
         [services.web]\ncommand = \"exec sleep 60\"\ndepends_on = [\"db\"]\n",
    )
    .expect("bpm.toml");
    let (c, seen) = tasker_of(&w, "mcp-p", Policy::default(), true).await;
    let task = task_of(&c, "project_up", &json!({"file": "bpm.toml"})).await;
    assert!(task.starts_with("project:shop."), "{task}");
    let up = until_final(&c, &task).await;
    assert_eq!(up.status(), TaskStatus::Completed, "{up:?}");
    let TaskPayload::Completed { result } = &up.payload else {
        panic!("{up:?}")
    };
    assert_ne!(result["isError"], true, "{result:?}");
    let services = result["structuredContent"]["services"]
        .as_array()
        .expect("services");
    assert_eq!(services.len(), 2, "{result:?}");
    assert!(services.iter().all(|s| s["up"] == true), "{result:?}");

    // A project still coming up, cancelled: brought down.
    std::fs::create_dir(w.dir.path().join("slow")).expect("dir");
    std::fs::write(
        w.dir.path().join("slow/bpm.toml"),
        "[project]\nname = \"slow\"\n\
         [services.db]\ncommand = \"sleep 30; echo ready to accept; exec sleep 60\"\n\
         ready = { log = \"ready to accept\" }\n",
    )
    .expect("bpm.toml");
    let task = task_of(&c, "project_up", &json!({"file": "slow/bpm.toml"})).await;
    let waiting = c
        .get_task(GetTaskParams::new(task.clone()))
        .await
        .expect("tasks/get")
        .task;
    assert_eq!(waiting.status(), TaskStatus::Working, "{waiting:?}");
    assert!(
        waiting
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("0 of 1 up; waiting for db")),
        "{waiting:?}"
    );
    c.cancel_task(CancelTaskParams::new(task.clone()))
        .await
        .expect("tasks/cancel");
    let down = until_final(&c, &task).await;
    assert_eq!(down.status(), TaskStatus::Cancelled, "{down:?}");
    let heard = seen.heard.lock().expect("lock").clone();
    assert!(
        heard
            .iter()
            .any(|(id, s)| *id == task && *s == TaskStatus::Cancelled),
        "{heard:?}"
    );
}

/// `tasks/update` sends a task's process its input (`stdin`), and names
/// what it does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_input_for_the_tasks_process() {
    let w = world().await;
    let (c, _) = tasker(&w, "mcp-u", Policy::default()).await;
    let task = task_of(
        &c,
        "start_background_process",
        &json!({"argv": ["sh", "-c", "read a; read b; echo got $a $b"], "stdin": true}),
    )
    .await;
    let update = |responses: Value| {
        let responses = serde_json::from_value(responses).expect("responses");
        rmcp::model::UpdateTaskParams::new(task.clone(), responses)
    };
    let refused = c
        .update_task(update(json!({"answer": "x"})))
        .await
        .expect_err("not stdin");
    assert!(refused.to_string().contains("not \"answer\""), "{refused}");
    c.update_task(update(json!({"stdin": "one\n"})))
        .await
        .expect("a string, as it is");
    c.update_task(update(json!({"stdin": {"text": "two"}})))
        .await
        .expect("text, and the line's end");
    let ended = until_final(&c, &task).await;
    let TaskPayload::Completed { result } = &ended.payload else {
        panic!("{ended:?}")
    };
    assert!(
        result["structuredContent"]["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("got one two")),
        "{result:?}"
    );
    let late = c
        .update_task(update(json!({"stdin": "three\n"})))
        .await
        .expect_err("it ended");
    assert!(late.to_string().contains(&task), "{late}");
}

/// `ttlMs` follows the daemon's retention: a task lasts its record's life
/// and the retention after it; without a retention, `null` (kept until
/// removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_ttl_is_its_records_life_and_the_retention() {
    let w = world().await;
    let hour = bpm_domain::Span::from_secs(3_600);
    let (kept, _) = tasker_kept(&w, "mcp-ttl", Policy::default(), false, Some(hour)).await;
    let task = task_of(
        &kept,
        "start_background_process",
        &json!({"argv": ["sleep", "0.3"]}),
    )
    .await;
    let ended = until_final(&kept, &task).await;
    let ttl = ended.task.ttl_ms.expect("a ttl under a retention");
    assert!(
        (3_600_300..3_605_000).contains(&ttl),
        "life (about 300 ms) and an hour: {ttl}"
    );
    let (unkept, _) = tasker(&w, "mcp-ttl", Policy::default()).await;
    let again = until_final(&unkept, &task).await;
    assert_eq!(again.task.ttl_ms, None, "no retention: kept until removed");
}
