//! How soon an agent hears that a task's process ended, through the real
//! `bpm mcp` and rmcp's client (which speaks the Tasks extension):
//! `notifications/tasks` and a `tasks/get` poll at the interval the task
//! suggests, each beside the same process waited for with
//! `wait_for_process` (a blocking tool call), in alternating rounds. Every
//! figure is counted from the process's own last moment (it writes the
//! time just before it exits). Prints figures; asserts nothing about them.
//!
//! Run: `cargo bench -p bpm-cli --bench tasks` (`BPM_BENCH_ROUNDS=20`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, GetTaskParams,
    Implementation, TaskStatus, TaskStatusNotificationParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// A client that declares tasks and notes when each task's end was heard.
#[derive(Clone, Default)]
struct Tasker {
    ended: Arc<Mutex<Vec<(String, u128)>>>,
}

impl ClientHandler for Tasker {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("tasks-bench", "1"),
        )
    }

    async fn on_task_status(
        &self,
        params: TaskStatusNotificationParams,
        _context: NotificationContext<RoleClient>,
    ) {
        if params.task.task.status == TaskStatus::Completed {
            let at = now_ns();
            self.ended
                .lock()
                .expect("lock")
                .push((params.task.task.task_id.clone(), at));
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

fn call(tool: &'static str, args: &Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args.as_object().expect("object").clone())
}

/// A process that lives `life` seconds and writes its last moment to `mark`.
fn work(life: f64, mark: &std::path::Path) -> Value {
    json!({"argv": ["sh", "-c", format!("sleep {life}; date +%s%N > {}", mark.display())]})
}

/// The last moment `mark` holds, once it holds one.
async fn last_moment(mark: &std::path::Path) -> u128 {
    loop {
        if let Ok(text) = std::fs::read_to_string(mark)
            && let Ok(ns) = text.trim().parse::<u128>()
        {
            return ns;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A client that does not declare tasks: its calls are answered as
/// before the extension.
#[derive(Clone, Default)]
struct Plain;

impl ClientHandler for Plain {}

/// The real `bpm mcp` on `home`, served to `client` over its stdio.
async fn server<C: ClientHandler>(
    home: &std::path::Path,
    client: C,
) -> (RunningService<RoleClient, C>, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
        .arg("mcp")
        .env("BPM_HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bpm mcp");
    let io = (
        child.stdout.take().expect("stdout"),
        child.stdin.take().expect("stdin"),
    );
    (client.serve(io).await.expect("handshake"), child)
}

/// One round of each: (notification, poll, wait), in ms after the end.
async fn round(
    c: &RunningService<RoleClient, Tasker>,
    plain: &RunningService<RoleClient, Plain>,
    seen: &Tasker,
    dir: &std::path::Path,
    n: usize,
    wait_first: bool,
) -> (f64, f64, f64) {
    let mut waited = 0.0;
    let wait = async |label: &str| {
        let mark = dir.join(format!("wait-{label}"));
        let started = plain
            .call_tool(call("start_background_process", &work(0.3, &mark)))
            .await
            .expect("start");
        let id = started.structured_content.expect("a record")["id"].clone();
        plain
            .call_tool(call(
                "wait_for_process",
                &json!({"process_id": id, "timeout_secs": 30}),
            ))
            .await
            .expect("wait");
        let heard = now_ns();
        ms(heard.saturating_sub(last_moment(&mark).await))
    };
    if wait_first {
        waited = wait(&n.to_string()).await;
    }
    let mark = dir.join(format!("task-{n}"));
    let task = match c
        .peer()
        .call_tool_once(call("start_background_process", &work(0.3, &mark)))
        .await
        .expect("start")
    {
        CallToolResponse::Task(t) => t.task,
        other => panic!("no task: {other:?}"),
    };
    // Polled as an agent without notifications would: at the interval the
    // task suggests.
    let every = Duration::from_millis(task.poll_interval_ms.unwrap_or(1_000));
    let polled = loop {
        tokio::time::sleep(every).await;
        let got = c
            .peer()
            .get_task(GetTaskParams::new(task.task_id.clone()))
            .await
            .expect("tasks/get");
        if got.task.status() == TaskStatus::Completed {
            break now_ns();
        }
    };
    let end = last_moment(&mark).await;
    let notified = loop {
        if let Some((_, at)) = seen
            .ended
            .lock()
            .expect("lock")
            .iter()
            .find(|(id, _)| *id == task.task_id)
        {
            break *at;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    if !wait_first {
        waited = wait(&n.to_string()).await;
    }
    (
        ms(notified.saturating_sub(end)),
        ms(polled.saturating_sub(end)),
        waited,
    )
}

/// Nanoseconds as milliseconds (a gap of seconds at most: exact enough).
fn ms(ns: u128) -> f64 {
    f64::from(u32::try_from(ns / 1_000).unwrap_or(u32::MAX)) / 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("BPM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let home = tempfile::tempdir().expect("home");
    let seen = Tasker::default();
    let (c, mut tasks_server) = server(home.path(), seen.clone()).await;
    let (plain, mut plain_server) = server(home.path(), Plain).await;
    let (mut notified, mut polled, mut waited) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..rounds {
        let (a, b, w) = round(&c, &plain, &seen, home.path(), n, n % 2 == 1).await;
        notified.push(a);
        polled.push(b);
        waited.push(w);
    }
    let (a, b, w) = (median(notified), median(polled), median(waited));
    println!(
        "a task's end heard by an MCP client (median of {rounds}, ms after the process's last moment): notifications/tasks {a:.2}; wait_for_process (blocking call, the baseline) {w:.2}; ratio {:.2}; tasks/get polled every pollIntervalMs {b:.0}",
        a / w
    );
    drop((c, plain));
    let _ = tasks_server.kill().await;
    let _ = plain_server.kill().await;
    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
}
