//! The tool list: names, descriptions, input schemas (from the argument
//! types) and output schemas (written out, since they describe JSON views).

use std::sync::{Arc, LazyLock};

use rmcp::handler::server::common::schema_for_input;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::inputs::{
    ChangedArgs, CompleteArgs, FailArgs, IdArgs, InputArgs, ListArgs, OutputArgs, ProgressArgs,
    StopArgs, TrackArgs, WaitArgs,
};

/// A tool's name, and whether it changes anything (read-only servers refuse those).
pub(super) struct ToolInfo {
    pub(super) tool: Tool,
    pub(super) mutating: bool,
}

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("schemas are objects"),
    }
}

fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}

/// A record as [`bpm_intake::view::record_json`] shows it.
fn record_schema() -> Value {
    let states: Vec<&str> = bpm_domain::StateName::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "description": "The process's UUID." },
            "name": nullable("string"),
            "kind": { "type": "string" },
            "state": { "type": "string", "enum": states },
            "pid": nullable("integer"),
            "exit_code": nullable("integer"),
            "signal": nullable("integer"),
            "session": nullable("string"),
            "node": { "type": "string" },
            "parent": nullable("string"),
            "group": nullable("string"),
            "progress": nullable("object"),
            "created_at": { "type": "string" },
            "started_at": nullable("string"),
            "ended_at": nullable("string"),
            "error": nullable("string"),
            "cpu_percent": nullable("number"),
            "rss_bytes": nullable("integer"),
            "listening_ports": { "type": ["array", "null"], "items": { "type": "integer" } },
            "restarted_from": nullable("string"),
            "labels": { "type": "object" },
            "metadata": { "type": "object" },
            "spec": { "type": "object" }
        },
        "required": ["id", "name", "kind", "state", "pid", "exit_code", "signal", "node", "created_at"]
    })
}

fn tail_schema() -> Value {
    json!({ "type": "string", "description": "The last lines of output (stdout and stderr)." })
}

fn with_record(extra: &Value, required: &[&str]) -> Value {
    let mut properties = json!({ "process": record_schema() });
    if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let mut req = vec!["process"];
    req.extend_from_slice(required);
    json!({ "type": "object", "properties": properties, "required": req })
}

fn tool(
    name: &'static str,
    title: &str,
    description: &'static str,
    input: Result<Arc<JsonObject>, String>,
    output: Value,
    mutating: bool,
) -> ToolInfo {
    let input = input.unwrap_or_else(|e| panic!("input schema of {name}: {e}"));
    let annotations = ToolAnnotations::with_title(title)
        .read_only(!mutating)
        .destructive(false)
        .open_world(false);
    ToolInfo {
        tool: Tool::new(name, description, input)
            .with_title(title)
            .with_raw_output_schema(object(output))
            .annotate(annotations),
        mutating,
    }
}

/// Every tool, in the order they are listed.
pub(super) static TOOLS: LazyLock<Vec<ToolInfo>> = LazyLock::new(|| {
    let record = record_schema;
    let output_fields = json!({
        "process_id": { "type": "string" },
        "state": { "type": "string" },
        "text": { "type": "string", "description": "The output read (invalid UTF-8 replaced), or the matching lines with grep." },
        "cursor": { "type": "integer", "description": "Where this read started." },
        "next_cursor": { "type": "integer", "description": "Where the next read starts to see only what is new." },
        "bytes": { "type": "integer", "description": "Bytes of output read." },
        "skipped_bytes": { "type": "integer", "description": "Output dropped by rotation before it could be read." },
        "dropped_bytes": { "type": "integer", "description": "Output the process wrote that bpm could not store (a full disk, its store out of reach), over the process's life." },
        "truncated": { "type": "boolean", "description": "More output waits at next_cursor than max_bytes allowed." },
        "matched_lines": nullable("integer"),
        "notice": nullable("string")
    });
    vec![
        tool(
            "start_background_process",
            "Start a background process",
            "Starts a command in the background and returns its record at once (with its id). The process runs in its own process group under the bpm daemon, so it outlives this agent session; its stdout and stderr are captured (capped). Give `command` (a shell line) or `argv`. Use `ready_pattern`/`ready_port` for servers, then wait_for_process with until=ready.",
            schema_for_input::<bpm_intake::Asked>(),
            record(),
            true,
        ),
        tool(
            "get_background_process_status",
            "Get a process's status",
            "Returns the process's record: state (pending, starting, running, paused, stopping, unreachable (its node stopped answering), completed, failed, timed_out, cancelled, lost), pid, exit code or signal, progress, timestamps, error; and, while it runs, what its whole process tree uses: cpu_percent (of one core), rss_bytes, and listening_ports (the TCP ports it listens on: for a dev server, the port to open).",
            schema_for_input::<IdArgs>(),
            record(),
            false,
        ),
        tool(
            "list_background_processes",
            "List background processes",
            "Lists processes, newest first, with optional filters. The text is a compact table; structuredContent carries the records.",
            schema_for_input::<ListArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "processes": { "type": "array", "items": record() },
                    "count": { "type": "integer" },
                    "more": { "type": "boolean", "description": "More records matched than the limit allowed." }
                },
                "required": ["processes", "count", "more"]
            }),
            false,
        ),
        tool(
            "get_process_output",
            "Read a process's output",
            "Reads a process's captured output. Without a cursor it returns only what is new since this client's last read (per process and stream); with a cursor it reads from there; with tail_lines, the last lines. Always returns next_cursor and says what was skipped or truncated. Reading never consumes output for other readers.",
            schema_for_input::<OutputArgs>(),
            json!({
                "type": "object",
                "properties": output_fields,
                "required": ["process_id", "state", "text", "cursor", "next_cursor", "bytes", "skipped_bytes", "dropped_bytes", "truncated"]
            }),
            false,
        ),
        tool(
            "wait_for_process",
            "Wait for a process",
            "Blocks until the process exits, becomes ready, prints a line matching a pattern, or goes idle, or until the timeout; no sleep-and-poll loop needed. Returns the state, the exit code, whether the condition was met, and the last lines of output. Sends progress notifications while waiting when the request has a progress token.",
            schema_for_input::<WaitArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "process_id": { "type": "string" },
                    "until": { "type": "string" },
                    "condition_met": { "type": "boolean" },
                    "reason": { "type": "string", "description": "Why the wait ended." },
                    "state": { "type": "string" },
                    "exit_code": nullable("integer"),
                    "signal": nullable("integer"),
                    "error": nullable("string"),
                    "waited_ms": { "type": "integer" },
                    "output_tail": tail_schema()
                },
                "required": ["process_id", "until", "condition_met", "reason", "state", "exit_code", "signal", "waited_ms", "output_tail"]
            }),
            false,
        ),
        tool(
            "what_changed",
            "What changed since the last call",
            "For this client: the processes that ended (completed, failed, timed_out, cancelled, lost), became ready, unhealthy or healthy again, became unreachable, or whose leader exited while its work runs on, since this client's last call (or since it connected): each once, its latest change, with its exit code or signal, the reason, and, for an end, the last lines of its output. Ask this one question instead of polling each process. At most `limit` changes (20; at most 100) are returned; left_out says how many wait for the next call, overflowed how many were dropped because over 1,000 processes changed between two calls.",
            schema_for_input::<ChangedArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "count": { "type": "integer" },
                    "changes": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "process_id": { "type": "string" },
                            "name": nullable("string"),
                            "change": { "type": "string" },
                            "state": { "type": "string" },
                            "at": { "type": "string" },
                            "exit_code": nullable("integer"),
                            "signal": nullable("integer"),
                            "reason": nullable("string"),
                            "output_tail": { "type": "string" },
                            "leader_exit": { "type": "string" }
                        },
                        "required": ["process_id", "change", "state", "at"]
                    } },
                    "left_out": { "type": "integer" },
                    "overflowed": { "type": "integer" }
                },
                "required": ["count", "changes", "left_out", "overflowed"]
            }),
            false,
        ),
        tool(
            "project_up",
            "Bring a project up",
            "Makes sure a project's services run, idempotently: each service of its file (a bpm.toml, a Procfile or a process-compose.yaml; by default the bpm.toml of the server's directory or a parent; or a `project` brought up before) whose process runs as the file says is kept (same pid), one that changed is replaced, a missing one is started, in dependency order. With wait (the default), returns once every service is ready or completed, or names the one that failed or was not up in time with its last lines. Safe to repeat; two calls at once start one copy of each service.",
            schema_for_input::<super::projects::ProjectArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "project": { "type": "string" },
                    "file": { "type": "string" },
                    "steps": { "type": "array", "items": { "type": "object", "properties": {
                        "service": { "type": "string" },
                        "action": { "type": "string", "description": "kept, started, replaced or stopped" },
                        "process_id": { "type": "string" }
                    } } },
                    "ignored_keys": { "type": "array", "items": { "type": "string" } },
                    "up": { "type": "boolean" },
                    "failed": { "type": "object" }
                },
                "required": ["project", "file", "steps", "ignored_keys"]
            }),
            true,
        ),
        tool(
            "project_down",
            "Bring a project down",
            "Stops a project's processes in reverse dependency order (each whole tree, with its grace) and returns when they are gone.",
            schema_for_input::<super::projects::ProjectArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "project": { "type": "string" },
                    "steps": { "type": "array", "items": { "type": "object" } }
                },
                "required": ["project", "steps"]
            }),
            true,
        ),
        tool(
            "project_scale",
            "Scale a project's service",
            "Makes a running service of a project run as many copies as asked (1 to 1000): the copies it lacks start (web.2, web.3...), the extra ones stop, and nothing else is touched. The project file is not changed.",
            schema_for_input::<super::projects::ScaleArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "project": { "type": "string" },
                    "service": { "type": "string" },
                    "replicas": { "type": "integer" },
                    "steps": { "type": "array", "items": { "type": "object" } }
                },
                "required": ["project", "service", "replicas", "steps"]
            }),
            true,
        ),
        tool(
            "project_status",
            "A project's status",
            "Each service of a project: its newest process's state, whether it is ready, its health, its port, its exit code or error, and its last lines.",
            schema_for_input::<super::projects::ProjectArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "project": { "type": "string" },
                    "services": { "type": "array", "items": { "type": "object" } }
                },
                "required": ["project", "services"]
            }),
            false,
        ),
        tool(
            "stop_background_process",
            "Stop a process",
            "Stops the process and every descendant (TERM, grace period, KILL; force kills at once) and returns once the whole tree is gone, with the exit status and the output's tail. Stopping a finished process returns it unchanged.",
            schema_for_input::<StopArgs>(),
            with_record(
                &json!({
                    "exit_code": nullable("integer"),
                    "signal": nullable("integer"),
                    "output_tail": tail_schema()
                }),
                &["exit_code", "signal", "output_tail"],
            ),
            true,
        ),
        tool(
            "pause_background_process",
            "Pause a process",
            "Pauses a running process and its descendants (SIGSTOP). Its timeout keeps counting.",
            schema_for_input::<IdArgs>(),
            record(),
            true,
        ),
        tool(
            "resume_background_process",
            "Resume a process",
            "Resumes a paused process and its descendants (SIGCONT).",
            schema_for_input::<IdArgs>(),
            record(),
            true,
        ),
        tool(
            "restart_background_process",
            "Restart a process",
            "Starts a new record with the same command and settings (restarted_from points at the old one); a live process is stopped first. Returns the new record.",
            schema_for_input::<IdArgs>(),
            record(),
            true,
        ),
        tool(
            "send_process_input",
            "Send input to a process",
            "Writes text (and a newline, unless newline is false) to the standard input of a running process started with stdin: true, or types it into its terminal (tty: true).",
            schema_for_input::<InputArgs>(),
            json!({
                "type": "object",
                "properties": {
                    "process_id": { "type": "string" },
                    "bytes_written": { "type": "integer" }
                },
                "required": ["process_id", "bytes_written"]
            }),
            true,
        ),
        tool(
            "track_operation",
            "Track an operation",
            "Creates a record for work the caller does itself (a migration, a long edit): it is running at once; report on it with update_operation_progress, complete_operation and fail_operation. Others see it with the other tools.",
            schema_for_input::<TrackArgs>(),
            record(),
            true,
        ),
        tool(
            "update_operation_progress",
            "Report progress",
            "Records a tracked operation's progress (0-100) and message; bpm derives an ETA.",
            schema_for_input::<ProgressArgs>(),
            record(),
            true,
        ),
        tool(
            "complete_operation",
            "Complete an operation",
            "Marks a tracked operation completed, with an optional JSON result. Completing a finished one changes nothing (no_op: true).",
            schema_for_input::<CompleteArgs>(),
            with_record(&json!({ "no_op": { "type": "boolean" } }), &["no_op"]),
            true,
        ),
        tool(
            "fail_operation",
            "Fail an operation",
            "Marks a tracked operation failed with an error message. Failing a finished one changes nothing (no_op: true).",
            schema_for_input::<FailArgs>(),
            with_record(&json!({ "no_op": { "type": "boolean" } }), &["no_op"]),
            true,
        ),
    ]
});
