//! The MCP tool handlers through rmcp's own client, over an in-memory pipe,
//! on an embedded engine running real processes: per-session cursors, waits,
//! input, tracked operations, progress notifications, resources and the
//! safety policy. (`mcp_client.rs` drives the real binary with Python's client.)

mod fixture;
mod policy;
mod tasks;

use std::time::Duration;

use bpm_mcp::Policy;
use rmcp::model::{
    CallToolRequestParams, ClientRequest, ReadResourceRequestParams, Request, ServerResult,
    SubscribeRequestParams,
};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};

#[allow(clippy::wildcard_imports)]
use fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_session_has_its_own_read_cursor() {
    let w = world().await;
    let (a, _) = w.client(Policy::default()).await;
    let (b, _) = w.client(Policy::default()).await;
    let p = ok(
        &a,
        "start_background_process",
        sh("echo one; sleep 0.3; echo two; sleep 30"),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_owned();
    ok(
        &a,
        "wait_for_process",
        json!({"process_id": id, "until": "pattern", "pattern": "^two$", "timeout_secs": 10}),
    )
    .await;
    let first = ok(&a, "get_process_output", json!({"process_id": id})).await;
    assert_eq!(first["text"], "one\ntwo\n");
    let again = ok(&a, "get_process_output", json!({"process_id": id})).await;
    assert_eq!(again["text"], "", "nothing new for a");
    assert_eq!(again["cursor"], first["next_cursor"]);
    // b has read nothing yet: it sees everything, and reading consumed nothing.
    let other = ok(&b, "get_process_output", json!({"process_id": id})).await;
    assert_eq!(other["text"], "one\ntwo\n");
    // Reading from a cursor re-reads without moving a's place back.
    let from = ok(
        &a,
        "get_process_output",
        json!({"process_id": id, "cursor": 4}),
    )
    .await;
    assert_eq!(from["text"], "two\n");
    let tail = ok(
        &a,
        "get_process_output",
        json!({"process_id": id, "tail_lines": 1}),
    )
    .await;
    assert_eq!(tail["text"], "two\n");
    let cut = ok(
        &b,
        "get_process_output",
        json!({"process_id": id, "cursor": 0, "max_bytes": 2}),
    )
    .await;
    assert_eq!(
        (cut["text"].as_str(), cut["truncated"].as_bool()),
        (Some("on"), Some(true))
    );
    assert!(
        cut["notice"]
            .as_str()
            .is_some_and(|n| n.contains("truncated")),
        "{cut}"
    );
    let stopped = ok(
        &a,
        "stop_background_process",
        json!({"process_id": id, "force": true}),
    )
    .await;
    assert_eq!(stopped["process"]["state"], "cancelled");
    assert_eq!(stopped["signal"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_end_on_exit_pattern_idle_or_timeout() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let p = ok(
        &c,
        "start_background_process",
        json!({"argv": ["sh", "-c", "echo start; sleep 0.4; echo done; exit 7"]}),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_owned();
    let exit = ok(
        &c,
        "wait_for_process",
        json!({"process_id": id, "timeout_secs": 10}),
    )
    .await;
    assert_eq!(
        (exit["condition_met"].as_bool(), exit["exit_code"].as_i64()),
        (Some(true), Some(7))
    );
    assert_eq!(exit["state"], "failed");
    assert_eq!(exit["output_tail"], "start\ndone\n");

    let quiet = ok(&c, "start_background_process", sh("echo hi; sleep 30")).await;
    let qid = quiet["id"].as_str().expect("id").to_owned();
    let idle = ok(
        &c,
        "wait_for_process",
        json!({"process_id": qid, "until": "idle", "idle_secs": 0.3, "timeout_secs": 10}),
    )
    .await;
    assert_eq!(idle["condition_met"], true, "{idle}");
    assert!(
        idle["waited_ms"].as_u64().is_some_and(|ms| ms >= 300),
        "idle before its quiet time: {idle}"
    );
    let late = ok(
        &c,
        "start_background_process",
        sh("sleep 0.6; echo late line; sleep 30"),
    )
    .await;
    let heard = ok(
        &c,
        "wait_for_process",
        json!({"process_id": late["id"], "until": "pattern", "pattern": "^late", "timeout_secs": 10}),
    )
    .await;
    assert_eq!(heard["condition_met"], true, "{heard}");
    assert!(
        heard["reason"]
            .as_str()
            .is_some_and(|r| r.contains("late line")),
        "{heard}"
    );
    ok(
        &c,
        "stop_background_process",
        json!({"process_id": late["id"]}),
    )
    .await;
    let timeout = ok(
        &c,
        "wait_for_process",
        json!({"process_id": qid, "until": "pattern", "pattern": "never", "timeout_secs": 0.3}),
    )
    .await;
    assert_eq!(
        (
            timeout["condition_met"].as_bool(),
            timeout["state"].as_str()
        ),
        (Some(false), Some("running"))
    );
    assert!(
        timeout["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out")),
        "{timeout}"
    );
    let ready = ok(
        &c,
        "wait_for_process",
        json!({"process_id": qid, "until": "ready", "timeout_secs": 5}),
    )
    .await;
    assert_eq!(
        ready["condition_met"], true,
        "without a readiness check a running process is ready"
    );
    ok(&c, "stop_background_process", json!({"process_id": qid})).await;
    let ended = ok(
        &c,
        "wait_for_process",
        json!({"process_id": qid, "until": "pattern", "pattern": "never", "timeout_secs": 5}),
    )
    .await;
    assert_eq!(ended["condition_met"], false);
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ended")),
        "{ended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sends_progress_notifications_for_a_progress_token() {
    let w = world().await;
    let (c, seen) = w.client(Policy::default()).await;
    let p = ok(&c, "start_background_process", sh("sleep 2.2")).await;
    let request = ClientRequest::CallToolRequest(Request::new(params(
        "wait_for_process",
        &json!({"process_id": p["id"], "timeout_secs": 10}),
    )));
    let handle = c
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("sent");
    let token = handle.progress_token.clone();
    let ServerResult::CallToolResult(result) = handle.await_response().await.expect("answer")
    else {
        panic!("not a tool result");
    };
    assert_eq!(
        result.structured_content.expect("structured")["condition_met"],
        true
    );
    let progress = seen.progress.lock().expect("lock").clone();
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(
        progress
            .iter()
            .all(|p| p.progress_token == token && p.total == Some(10.0))
    );
    assert!(
        progress.windows(2).all(|w| w[0].progress < w[1].progress),
        "increasing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_tracked_operations_and_restart() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let cat = ok(
        &c,
        "start_background_process",
        json!({"argv": ["cat"], "stdin": true, "name": "echoer"}),
    )
    .await;
    let sent = ok(
        &c,
        "send_process_input",
        json!({"process_id": "echoer", "text": "hello"}),
    )
    .await;
    assert_eq!(sent["bytes_written"], 6);
    let heard = ok(&c, "wait_for_process", json!({"process_id": "echoer", "until": "pattern", "pattern": "^hello$", "timeout_secs": 10})).await;
    assert_eq!(heard["condition_met"], true, "{heard}");
    let paused = ok(
        &c,
        "pause_background_process",
        json!({"process_id": cat["id"]}),
    )
    .await;
    assert_eq!(paused["state"], "paused");
    let resumed = ok(
        &c,
        "resume_background_process",
        json!({"process_id": cat["id"]}),
    )
    .await;
    assert_eq!(resumed["state"], "running");
    let again = ok(
        &c,
        "restart_background_process",
        json!({"process_id": cat["id"]}),
    )
    .await;
    assert_eq!(again["restarted_from"], cat["id"]);
    assert_ne!(again["id"], cat["id"]);
    // The old one is stopped first; the restart does not wait for that.
    let old = ok(
        &c,
        "wait_for_process",
        json!({"process_id": cat["id"], "timeout_secs": 10}),
    )
    .await;
    assert_eq!(old["state"], "cancelled");
    let new = ok(
        &c,
        "wait_for_process",
        json!({"process_id": again["id"], "until": "ready", "timeout_secs": 10}),
    )
    .await;
    assert_eq!(new["state"], "running");
    ok(
        &c,
        "stop_background_process",
        json!({"process_id": again["id"]}),
    )
    .await;

    let op = ok(
        &c,
        "track_operation",
        json!({"name": "migrate db", "metadata": {"tables": 10}}),
    )
    .await;
    assert_eq!(
        (op["state"].as_str(), op["pid"].as_u64()),
        (Some("running"), None)
    );
    let at = ok(
        &c,
        "update_operation_progress",
        json!({"process_id": op["id"], "progress": 40, "message": "table 4"}),
    )
    .await;
    assert_eq!(at["progress"]["percent"], 40);
    let done = ok(
        &c,
        "complete_operation",
        json!({"process_id": op["id"], "result": {"rows": 12}}),
    )
    .await;
    assert_eq!(
        (done["process"]["state"].as_str(), done["no_op"].as_bool()),
        (Some("completed"), Some(false))
    );
    let twice = ok(
        &c,
        "fail_operation",
        json!({"process_id": op["id"], "error": "late"}),
    )
    .await;
    assert_eq!(
        (twice["process"]["state"].as_str(), twice["no_op"].as_bool()),
        (Some("completed"), Some(true))
    );
    let msg = tool_error(
        &c,
        "update_operation_progress",
        json!({"process_id": op["id"], "progress": 140}),
    )
    .await;
    assert!(msg.contains("140"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_tool_errors_that_name_the_problem() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    for (tool, args, needle) in [
        ("no_such_tool", json!({}), "unknown tool"),
        (
            "get_background_process_status",
            json!({}),
            "missing field `process_id`",
        ),
        (
            "get_background_process_status",
            json!({"process_id": "ghost"}),
            "ghost",
        ),
        (
            "get_background_process_status",
            json!({"process_id": 5}),
            "invalid type",
        ),
        ("start_background_process", json!({}), "missing command"),
        (
            "start_background_process",
            json!({"command": "x", "argv": ["x"]}),
            "not both",
        ),
        (
            "start_background_process",
            json!({"argv": []}),
            "argv is empty",
        ),
        (
            "start_background_process",
            json!({"command": "x", "ready_pattern": "("}),
            "ready_pattern: invalid regex",
        ),
        (
            "start_background_process",
            json!({"command": "x", "kind": "daemon"}),
            "kind: invalid kind \"daemon\": expected agent_session",
        ),
        (
            "start_background_process",
            json!({"command": "x", "timeout_secs": -1}),
            "timeout",
        ),
        (
            "start_background_process",
            json!({"command": "x", "parent": "nobody"}),
            "nobody",
        ),
        (
            "list_background_processes",
            json!({"label": "novalue"}),
            "KEY=VALUE",
        ),
        (
            "get_process_output",
            json!({"process_id": "x", "cursor": 0, "tail_lines": 3}),
            "not both",
        ),
        (
            "list_background_processes",
            json!({"limit": 0}),
            "invalid limit",
        ),
        (
            "get_process_output",
            json!({"process_id": "x", "grep": "["}),
            "x",
        ),
        (
            "wait_for_process",
            json!({"process_id": "x", "until": "later"}),
            "unknown variant `later`",
        ),
    ] {
        let msg = tool_error(&c, tool, args.clone()).await;
        assert!(
            msg.contains(needle),
            "{tool} {args}: {msg:?} lacks {needle:?}"
        );
    }
    let p = ok(&c, "start_background_process", sh("true")).await;
    let msg = tool_error(
        &c,
        "get_process_output",
        json!({"process_id": p["id"], "grep": "["}),
    )
    .await;
    assert!(msg.contains("invalid grep regex"), "{msg}");
    let msg = tool_error(
        &c,
        "wait_for_process",
        json!({"process_id": p["id"], "until": "pattern"}),
    )
    .await;
    assert!(msg.contains("needs a pattern"), "{msg}");
    ok(
        &c,
        "wait_for_process",
        json!({"process_id": p["id"], "timeout_secs": 10}),
    )
    .await;
    let msg = tool_error(
        &c,
        "send_process_input",
        json!({"process_id": p["id"], "text": "x"}),
    )
    .await;
    let id = p["id"].as_str().expect("id");
    assert!(
        msg.contains("no running process") && msg.contains(id),
        "{msg}"
    );
    // The server is still there.
    ok(&c, "list_background_processes", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_resources_with_update_notifications() {
    let w = world().await;
    let (c, seen) = w.client(Policy::default()).await;
    let p = ok(
        &c,
        "start_background_process",
        sh("echo resource-out; sleep 30"),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_owned();
    ok(&c, "wait_for_process", json!({"process_id": id, "until": "pattern", "pattern": "resource-out", "timeout_secs": 10})).await;
    let listed = c.list_all_resources().await.expect("resources");
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    let record_uri = format!("bpm://process/{id}");
    let output_uri = format!("{record_uri}/output");
    assert!(
        uris.contains(&record_uri.as_str()) && uris.contains(&output_uri.as_str()),
        "{uris:?}"
    );
    let templates = c.list_all_resource_templates().await.expect("templates");
    assert_eq!(templates.len(), 2);
    let record = c
        .read_resource(ReadResourceRequestParams::new(record_uri.clone()))
        .await
        .expect("read");
    let text = serde_json::to_value(&record.contents[0]).expect("json")["text"].clone();
    let view: Value = serde_json::from_str(text.as_str().expect("text")).expect("record json");
    assert_eq!(view["id"], id);
    let output = c
        .read_resource(ReadResourceRequestParams::new(output_uri.clone()))
        .await
        .expect("read");
    let text = serde_json::to_value(&output.contents[0]).expect("json")["text"].clone();
    assert_eq!(text, "resource-out\n");
    assert!(
        c.read_resource(ReadResourceRequestParams::new("bpm://process/nope"))
            .await
            .is_err()
    );

    #[allow(deprecated)]
    c.subscribe(SubscribeRequestParams::new(record_uri.clone()))
        .await
        .expect("subscribe");
    ok(&c, "stop_background_process", json!({"process_id": id})).await;
    for _ in 0..100 {
        if seen.updated.lock().expect("lock").contains(&record_uri) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.updated.lock().expect("lock").contains(&record_uri));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_what_a_running_tree_uses() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let listen = "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)";
    ok(
        &c,
        "start_background_process",
        json!({"argv": ["python3", "-c", listen], "name": "dev-server"}),
    )
    .await;
    let waited = ok(&c, "wait_for_process", json!({"process_id": "dev-server", "until": "pattern", "pattern": "^[0-9]+$", "timeout_secs": 20})).await;
    assert_eq!(waited["condition_met"], true, "{waited}");
    let output = ok(
        &c,
        "get_process_output",
        json!({"process_id": "dev-server"}),
    )
    .await;
    let port: u16 = output["text"]
        .as_str()
        .expect("output text")
        .trim()
        .parse()
        .expect("the port");
    let status = ok(
        &c,
        "get_background_process_status",
        json!({"process_id": "dev-server"}),
    )
    .await;
    assert_eq!(status["listening_ports"], json!([port]), "{status}");
    assert!(
        status["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{status}"
    );
    assert!(status["cpu_percent"].is_number(), "{status}");
    ok(
        &c,
        "stop_background_process",
        json!({"process_id": "dev-server"}),
    )
    .await;
    let ended = ok(
        &c,
        "get_background_process_status",
        json!({"process_id": "dev-server"}),
    )
    .await;
    assert!(
        ended["rss_bytes"].is_null() && ended["listening_ports"].is_null(),
        "{ended}"
    );
}

/// Fuzzing the tool inputs (proptest's values, `PROPTEST_CASES` of them, 64
/// by default): any arguments to any tool get a result or a tool error,
/// never a protocol error or a dead server. The policy lets only `echo` and
/// `true` start, in a temporary folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_tool_arguments_get_a_result_or_a_tool_error() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let w = world().await;
    let policy = Policy {
        allow_commands: vec!["echo".into(), "true".into()],
        allow_dirs: vec![w.dir.path().to_path_buf()],
        ..Policy::default()
    };
    let (client, _) = w.client(policy).await;
    let tools = [
        "start_background_process",
        "list_background_processes",
        "get_background_process_status",
        "get_process_output",
        "stop_background_process",
        "pause_background_process",
        "resume_background_process",
        "restart_background_process",
        "send_process_input",
        "wait_for_process",
        "track_operation",
        "update_operation_progress",
        "complete_operation",
        "fail_operation",
        "what_changed",
        "project_up",
        "project_down",
        "project_scale",
        "project_status",
        "no_such_tool",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,40}".prop_map(Value::from),
        "echo [a-z]{0,8}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        Just("command"),
        Just("argv"),
        Just("process_id"),
        Just("name"),
        Just("cwd"),
        Just("env"),
        Just("timeout_secs"),
        Just("grace_secs"),
        Just("stream"),
        Just("lines"),
        Just("cursor"),
        Just("max_bytes"),
        Just("data"),
        Just("progress"),
        Just("message"),
        Just("result"),
        Just("error"),
        Just("state"),
        Just("labels"),
        Just("restart"),
        Just("ready_pattern"),
        Just("ready_port"),
        Just("session"),
        Just("group"),
        Just("force"),
    ];
    let args = proptest::collection::btree_map(key, value, 0..6);
    let call = (0..tools.len(), args);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    // A fresh seed each run, as the proptest! targets have.
    let mut runner = TestRunner::new(proptest::test_runner::Config::default());
    for _ in 0..cases {
        let (tool, args) = call.new_tree(&mut runner).expect("a case").current();
        let args: serde_json::Map<String, Value> =
            args.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let request = CallToolRequestParams::new(tools[tool]).with_arguments(args.clone());
        match tokio::time::timeout(Duration::from_secs(5), client.call_tool(request)).await {
            Ok(Ok(_)) => {}
            // An unknown tool is refused by the protocol, as it should be.
            Ok(Err(_)) if tools[tool] == "no_such_tool" => {}
            Ok(Err(e)) => panic!("{} {args:?}: a protocol error: {e}", tools[tool]),
            // A wait may wait as long as it was told.
            Err(elapsed) => assert!(
                tools[tool] == "wait_for_process",
                "{} {args:?}: no answer ({elapsed})",
                tools[tool]
            ),
        }
    }
    ok(&client, "list_background_processes", json!({})).await;
}

/// `ensure` returns the live process of its name (`reused: true`) and is
/// safe to repeat; without it a second start is refused naming the live
/// one; `replace` stops it and starts the new one; `leader_only` reaches
/// the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_ensured_refused_or_replaced() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let args = json!({ "command": "sleep 30", "name": "dev", "ensure": true });
    let first = ok(&c, "start_background_process", args.clone()).await;
    assert!(first.get("reused").is_none(), "{first}");
    let again = ok(&c, "start_background_process", args).await;
    assert_eq!(
        (&again["id"], &again["reused"]),
        (&first["id"], &json!(true))
    );
    let e = tool_error(
        &c,
        "start_background_process",
        json!({ "command": "sleep 30", "name": "dev" }),
    )
    .await;
    assert!(e.contains(first["id"].as_str().expect("id")), "{e}");
    let e = tool_error(
        &c,
        "start_background_process",
        json!({ "command": "sleep 30", "ensure": true, "replace": true, "name": "dev" }),
    )
    .await;
    assert!(e.contains("contradict"), "{e}");
    let next = ok(
        &c,
        "start_background_process",
        json!({ "command": "sleep 31", "name": "dev", "replace": true, "leader_only": true }),
    )
    .await;
    assert_ne!(next["id"], first["id"]);
    assert_eq!(next["spec"]["leader_only"], json!(true));
    let old = ok(
        &c,
        "wait_for_process",
        json!({ "process_id": first["id"], "timeout_secs": 20 }),
    )
    .await;
    assert_eq!(old["state"], "cancelled", "{old}");
    ok(
        &c,
        "stop_background_process",
        json!({ "process_id": next["id"] }),
    )
    .await;
}

/// `what_changed` tells each client what ended or became ready since its
/// own last call, once, with exits and output tails; another client still
/// gets all of it; `limit` leaves the rest for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_changed_tells_each_client_once() {
    let w = world().await;
    let (a, _) = w.client(Policy::default()).await;
    let (b, _) = w.client(Policy::default()).await;
    let fails = ok(&a, "start_background_process", sh("echo boom; exit 3")).await;
    let ready = ok(
        &a,
        "start_background_process",
        json!({ "command": "echo up; sleep 30", "ready_pattern": "up" }),
    )
    .await;
    for (p, until) in [(&fails, "exit"), (&ready, "ready")] {
        ok(
            &a,
            "wait_for_process",
            json!({ "process_id": p["id"], "until": until, "timeout_secs": 20 }),
        )
        .await;
    }
    let changed = ok(&a, "what_changed", json!({})).await;
    let of = |v: &Value, p: &Value| {
        v["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .find(|c| c["process_id"] == p["id"])
            .cloned()
            .unwrap_or_else(|| panic!("{p} not told: {v}"))
    };
    let failed = of(&changed, &fails);
    assert_eq!(
        (&failed["change"], &failed["exit_code"]),
        (&json!("failed"), &json!(3))
    );
    assert!(
        failed["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("boom")),
        "{failed}"
    );
    assert_eq!(of(&changed, &ready)["change"], "ready");
    let again = ok(&a, "what_changed", json!({})).await;
    assert_eq!(again["count"], 0, "told once: {again}");
    let first = ok(&b, "what_changed", json!({ "limit": 1 })).await;
    assert_eq!(
        (&first["count"], &first["left_out"]),
        (&json!(1), &json!(1))
    );
    let rest = ok(&b, "what_changed", json!({ "limit": 1 })).await;
    assert_eq!((&rest["count"], &rest["left_out"]), (&json!(1), &json!(0)));
    let e = tool_error(&b, "what_changed", json!({ "limit": 0 })).await;
    assert!(e.contains("invalid limit 0"), "{e}");
    ok(
        &a,
        "stop_background_process",
        json!({ "process_id": ready["id"] }),
    )
    .await;
}

/// `watch` restarts the process when a watched file changes: the old
/// record ends, replaced; a path that does not exist is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_process_restarts_on_change() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    std::fs::write(w.dir.path().join("conf.txt"), "v1").expect("conf");
    let p = ok(
        &c,
        "start_background_process",
        json!({"command": "exec sleep 300", "watch": ["conf.txt"], "watch_debounce_secs": 0.1}),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_owned();
    for _ in 0..200 {
        let s = ok(
            &c,
            "get_background_process_status",
            json!({"process_id": id}),
        )
        .await;
        if s["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(w.dir.path().join("conf.txt"), "v2").expect("conf");
    let mut last = Value::Null;
    for _ in 0..300 {
        last = ok(
            &c,
            "get_background_process_status",
            json!({"process_id": id}),
        )
        .await;
        if last["state"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["state"], "cancelled", "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("replaced")),
        "{last}"
    );
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"command": "true", "watch": ["no-such-dir"]}),
    )
    .await;
    assert!(msg.contains("no-such-dir"), "{msg}");
}

/// `every` makes a schedule: its runs are records of their own with
/// `scheduled_from`; `cron` reads its hours in the server's zone unless the
/// call names one; a bad expression is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_and_cron_make_schedules() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let p = ok(
        &c,
        "start_background_process",
        json!({"command": "echo ran", "every": "1s", "run_now": true}),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(p["spec"]["schedule"]["every"], "1s", "{p}");
    let mut runs = Vec::new();
    for _ in 0..150 {
        let list = ok(&c, "list_background_processes", json!({})).await;
        runs = list["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter(|r| r["scheduled_from"] == id.as_str())
            .cloned()
            .collect();
        if runs.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        runs.len() >= 2,
        "a run now and one a second later: {runs:#?}"
    );
    let cron = ok(
        &c,
        "start_background_process",
        json!({"command": "true", "cron": "0 9 * * *"}),
    )
    .await;
    assert_eq!(cron["spec"]["schedule"]["tz"], "Europe/Paris", "{cron}");
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"command": "true", "cron": "0 9 * *"}),
    )
    .await;
    assert!(msg.contains("five standard fields"), "{msg}");
}

/// `memory_max`, `cpu_max`, `pids_max` and `nofile` reach the record and
/// the process: one that allocates past its memory ends failed with the
/// reason; a value that does not read names its argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_reach_the_process() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let asked = bpm_domain::ResourceLimits {
        memory_max: Some(64 << 20),
        cpu_max: Some(150),
        pids_max: Some(50),
        nofile: None,
    };
    let by_cgroups = bpm_adapters::os::check_limits(&asked, "")
        .is_ok_and(|how| how.iter().all(|(_, by)| by.starts_with("cgroup")));
    if !by_cgroups {
        use std::io::Write as _;
        // Past the harness's capture: which form ran is said even on a pass.
        let _ = writeln!(
            std::io::stderr().lock(),
            "NOTE resource_limits_reach_the_process: this machine lets bpm write no cgroup; the test checks the MCP refusal instead. Its cgroup form runs where cgroups are writable (CI's machines)."
        );
        let msg = tool_error(
            &c,
            "start_background_process",
            json!({"command": "true", "cpu_max": 150}),
        )
        .await;
        assert!(
            msg.contains("cpu_max") && msg.contains("cannot be enforced"),
            "{msg}"
        );
        return;
    }
    let p = ok(
        &c,
        "start_background_process",
        json!({
            "command": "python3 -c \"import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True); x = bytearray(300 << 20)\"",
            "memory_max": "64M",
            "nofile": 100,
            "pids_max": 50,
            "cpu_max": 150,
        }),
    )
    .await;
    assert_eq!(
        p["spec"]["limits"],
        json!({"memory_max": 64 << 20, "cpu_max": 150, "pids_max": 50, "nofile": 100}),
        "{p}"
    );
    let id = p["id"].as_str().expect("id").to_owned();
    let ended = ok(
        &c,
        "wait_for_process",
        json!({"process_id": id, "timeout_secs": 20}),
    )
    .await;
    let shown = ok(
        &c,
        "get_background_process_status",
        json!({"process_id": id}),
    )
    .await;
    assert_eq!(shown["state"], "failed", "{ended} {shown}");
    assert_eq!(shown["error"], "memory limit (64 MiB)", "{shown}");
    let out = ok(&c, "get_process_output", json!({"process_id": id})).await;
    assert!(
        out["text"].as_str().is_some_and(|t| t.starts_with("100\n")),
        "{out}"
    );
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"command": "true", "memory_max": "a lot"}),
    )
    .await;
    assert!(msg.contains("memory_max"), "{msg}");
}

/// `tty` runs the process on a pseudo-terminal (`tty_size` its size), and
/// `send_process_input` types into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_process_takes_typed_input() {
    let w = world().await;
    let (c, _) = w.client(Policy::default()).await;
    let p = ok(
        &c,
        "start_background_process",
        json!({
            "command": "python3 -c \"import os; print(tuple(os.get_terminal_size())); print('hello', input('name? '))\"",
            "tty": true,
            "tty_size": "100x30",
        }),
    )
    .await;
    assert_eq!(p["spec"]["tty"], json!({"cols": 100, "rows": 30}), "{p}");
    let id = p["id"].as_str().expect("id").to_owned();
    ok(
        &c,
        "wait_for_process",
        json!({"process_id": id, "until": "pattern", "pattern": "name\\? ", "timeout_secs": 10}),
    )
    .await;
    ok(
        &c,
        "send_process_input",
        json!({"process_id": id, "text": "alice"}),
    )
    .await;
    let ended = ok(
        &c,
        "wait_for_process",
        json!({"process_id": id, "timeout_secs": 10}),
    )
    .await;
    assert_eq!(ended["state"], "completed", "{ended}");
    let out = ok(&c, "get_process_output", json!({"process_id": id})).await;
    assert_eq!(
        out["text"], "(100, 30)\r\nname? alice\r\nhello alice\r\n",
        "{out}"
    );
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"command": "true", "tty_size": "wide"}),
    )
    .await;
    assert!(msg.contains("tty_size"), "{msg}");
}
