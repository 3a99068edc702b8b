//! The safety policy: which commands, directories, variables and files
//! a request may name, and what is shown.

use std::time::Duration;

use bpm_mcp::Policy;
use serde_json::{Value, json};

#[allow(clippy::wildcard_imports)]
use crate::fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_limits_commands_directories_changes_and_what_is_shown() {
    let w = world().await;
    let inside = w.dir.path().join("work");
    std::fs::create_dir(&inside).expect("mkdir");
    let strict = Policy {
        allow_commands: vec!["echo".into()],
        allow_dirs: vec![inside.clone()],
        ..Policy::default()
    };
    let (c, _) = w.client(strict).await;
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"argv": ["rm", "-rf", "x"], "cwd": inside}),
    )
    .await;
    assert!(
        msg.contains("not allowed") && msg.contains("rm -rf x"),
        "{msg}"
    );
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"command": "echo a; rm x", "cwd": inside}),
    )
    .await;
    assert!(msg.contains("shell operator"), "{msg}");
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"argv": ["echo", "a"], "cwd": "/"}),
    )
    .await;
    assert!(msg.contains("working directory / is not allowed"), "{msg}");
    let p = ok(&c, "start_background_process", json!({"argv": ["echo", "$API_TOKEN"], "cwd": "work", "env": {"API_TOKEN": "s3cr3t-value", "PLAIN": "visible"}})).await;
    assert_eq!(p["spec"]["env"]["API_TOKEN"], "[redacted]");
    assert_eq!(p["spec"]["env"]["PLAIN"], "[redacted]");
    let sh_printer = ok(&c, "start_background_process", json!({"argv": ["echo", "token s3cr3t-value"], "cwd": "work", "env": {"API_TOKEN": "s3cr3t-value"}})).await;
    let out = ok(
        &c,
        "wait_for_process",
        json!({"process_id": sh_printer["id"], "timeout_secs": 10}),
    )
    .await;
    assert_eq!(out["output_tail"], "token [redacted]\n");
    let read = ok(
        &c,
        "get_process_output",
        json!({"process_id": sh_printer["id"]}),
    )
    .await;
    assert_eq!(read["text"], "token [redacted]\n");
    // A secret from an env file (relative to cwd) is hidden the same way;
    // one outside the allowed directories is refused.
    std::fs::write(inside.join(".env"), "DB_PASSWORD=hunter2-long\n").expect("env file");
    let from_file = ok(
        &c,
        "start_background_process",
        json!({"argv": ["echo", "pw hunter2-long"], "cwd": "work", "env_file": [".env"]}),
    )
    .await;
    let out = ok(
        &c,
        "wait_for_process",
        json!({"process_id": from_file["id"], "timeout_secs": 10}),
    )
    .await;
    assert_eq!(out["output_tail"], "pw [redacted]\n");
    let msg = tool_error(
        &c,
        "start_background_process",
        json!({"argv": ["echo", "a"], "cwd": "work", "env_file": ["/etc/passwd"]}),
    )
    .await;
    assert!(msg.contains("env file /etc/passwd is not allowed"), "{msg}");

    let (ro, _) = w
        .client(Policy {
            read_only: true,
            ..Policy::default()
        })
        .await;
    let tools = ro.list_all_tools().await.expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "get_background_process_status",
            "list_background_processes",
            "get_process_output",
            "wait_for_process",
            "what_changed",
            "project_status"
        ]
    );
    let msg = tool_error(
        &ro,
        "stop_background_process",
        json!({"process_id": p["id"]}),
    )
    .await;
    assert!(msg.contains("read-only"), "{msg}");
    ok(
        &ro,
        "get_background_process_status",
        json!({"process_id": p["id"]}),
    )
    .await;
}

/// Issue 60, items 10 and 11: every command bpm would run for a request
/// passes the allowlist, the variables that change what runs are refused
/// under it, and no file outside the allowed directories is read (nor
/// quoted in an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_covers_every_command_variable_and_file_a_request_names() {
    let w = world().await;
    let inside = w.dir.path().join("work");
    let outside = w.dir.path().join("outside");
    std::fs::create_dir(&inside).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    let pwned = w.dir.path().join("pwned");
    let strict = Policy {
        allow_commands: vec!["echo".into(), "sleep".into()],
        allow_dirs: vec![inside.clone()],
        ..Policy::default()
    };
    let (c, _) = w.client_with(strict.clone(), true).await;
    let touch = format!("touch {}", pwned.display());
    let start = |extra: Value| {
        let mut args = json!({"argv": ["echo", "x"], "cwd": "work"});
        for (k, v) in extra.as_object().expect("object") {
            args[k] = v.clone();
        }
        args
    };
    for (what, extra) in [
        ("ready_exec", json!({"ready_exec": touch})),
        ("health.exec", json!({"health": {"exec": touch}})),
        ("LD_PRELOAD", json!({"env": {"LD_PRELOAD": "/tmp/evil.so"}})),
        ("PATH", json!({"env": {"PATH": "/tmp/evil"}})),
        (
            "ld_library_path",
            json!({"env": {"ld_library_path": "/tmp"}}),
        ),
        (
            "NODE_OPTIONS",
            json!({"env": {"NODE_OPTIONS": "--require /tmp/x"}}),
        ),
    ] {
        let msg = tool_error(&c, "start_background_process", start(extra)).await;
        assert!(
            msg.contains("not allowed") || msg.contains("is refused"),
            "{what}: {msg}"
        );
    }
    // An env file that sets such a variable is refused too, and its
    // variables are read now, not at a later restart.
    std::fs::write(inside.join("evil.env"), "LD_PRELOAD=/tmp/evil.so\n").expect("write");
    let msg = tool_error(
        &c,
        "start_background_process",
        start(json!({"env_file": ["evil.env"]})),
    )
    .await;
    assert!(msg.contains("env LD_PRELOAD is refused"), "{msg}");
    // The same value as the server's own PATH is no change.
    let same = ok(
        &c,
        "start_background_process",
        start(json!({"env": {"PATH": std::env::var("PATH").unwrap_or_default(), "MODE": "x"}})),
    )
    .await;
    ok(
        &c,
        "wait_for_process",
        json!({"process_id": same["id"], "timeout_secs": 10}),
    )
    .await;

    let secret = projects_beyond_the_policy_start_nothing(&c, &inside, &outside, &touch).await;
    their_project_passes_the_policy_as_a_file_would(&w, &c, &inside, &touch, &pwned).await;
    // A project file outside the allowed directories is not read.
    std::fs::write(
        outside.join("bpm.toml"),
        "[services.a]\ncommand = \"echo\"\n",
    )
    .expect("write");
    let msg = tool_error(&c, "project_up", json!({"file": "outside/bpm.toml"})).await;
    assert!(
        msg.contains("project file") && msg.contains("not allowed"),
        "{msg}"
    );
    let msg = tool_error(
        &c,
        "project_up",
        json!({"file": "work/../outside/bpm.toml"}),
    )
    .await;
    assert!(msg.contains("not allowed"), "{msg}");
    // A link inside that points outside is followed before the check.
    std::os::unix::fs::symlink(&secret, inside.join("link.env")).expect("symlink");
    let msg = tool_error(
        &c,
        "start_background_process",
        start(json!({"env_file": ["link.env"]})),
    )
    .await;
    assert!(
        msg.contains("not allowed") && !msg.contains("root:"),
        "{msg}"
    );
    let listed = w
        .manager
        .list(bpm_domain::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "only the one allowed start made a record");

    a_spec_made_outside_the_policy_is_not_restarted_through_it(&w, &c, &inside, &touch, &pwned)
        .await;
}

/// A restart runs the record's spec again: one made outside the policy
/// (by the CLI, say) is not restarted through it, and nothing the policy
/// refused ever ran.
async fn a_spec_made_outside_the_policy_is_not_restarted_through_it(
    w: &World,
    c: &Client,
    inside: &std::path::Path,
    touch: &str,
    pwned: &std::path::Path,
) {
    let mut spec = bpm_domain::ProcessSpec::shell(touch);
    spec.cwd = Some(inside.to_path_buf());
    let foreign = w.manager.start(spec).await.expect("start");
    w.manager
        .wait(foreign.id(), Some(Duration::from_secs(10)))
        .await
        .expect("wait");
    std::fs::remove_file(pwned).expect("the CLI's own start ran");
    let msg = tool_error(
        c,
        "restart_background_process",
        json!({"process_id": foreign.id().to_string()}),
    )
    .await;
    assert!(msg.contains("not allowed"), "{msg}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pwned.exists(), "nothing the policy refused ever ran");
}

/// Projects: a probe, a hook, a variable or an env file beyond the policy
/// refuses the whole project, starts nothing, and quotes no file. The
/// secret file outside, for the checks that follow.
async fn projects_beyond_the_policy_start_nothing(
    c: &Client,
    inside: &std::path::Path,
    outside: &std::path::Path,
    touch: &str,
) -> std::path::PathBuf {
    let secret = outside.join("shadow");
    std::fs::write(&secret, "root:$6$salt$hash:19000:0:99999:7:::\n").expect("write");
    for (what, service) in [
        ("ready exec", format!("ready = {{ exec = {touch:?} }}")),
        ("health exec", format!("health = {{ exec = {touch:?} }}")),
        ("on_exit", format!("on_exit = {touch:?}")),
        (
            "LD_PRELOAD",
            "env = { LD_PRELOAD = \"/tmp/evil.so\" }".to_owned(),
        ),
        (
            "env file outside",
            format!("env_file = {:?}", secret.display().to_string()),
        ),
        (
            "cwd outside",
            format!("cwd = {:?}", outside.display().to_string()),
        ),
    ] {
        std::fs::write(
            inside.join("bpm.toml"),
            format!("[project]\nname = \"p\"\n[services.a]\ncommand = \"sleep 30\"\n{service}\n"),
        )
        .expect("write");
        let msg = tool_error(
            c,
            "project_up",
            json!({"file": "work/bpm.toml", "wait": false}),
        )
        .await;
        assert!(
            msg.contains("not allowed") || msg.contains("is refused"),
            "{what}: {msg}"
        );
        assert!(
            !msg.contains("root") && !msg.contains("salt"),
            "{what} quotes the file: {msg}"
        );
    }
    secret
}

/// A project brought up before by someone else, whose file is gone, is
/// defined by its records: they pass the policy as a file would.
async fn their_project_passes_the_policy_as_a_file_would(
    w: &World,
    c: &Client,
    inside: &std::path::Path,
    touch: &str,
    pwned: &std::path::Path,
) {
    let mut outsider = bpm_domain::ProcessSpec::shell(touch);
    outsider.cwd = Some(inside.to_path_buf());
    outsider.labels.insert(
        bpm_domain::project::PROJECT_LABEL.parse().expect("key"),
        "theirs".parse().expect("value"),
    );
    outsider.labels.insert(
        bpm_domain::project::SERVICE_LABEL.parse().expect("key"),
        "a".parse().expect("value"),
    );
    let theirs = w.manager.start(outsider).await.expect("start");
    w.manager
        .wait(theirs.id(), Some(Duration::from_secs(10)))
        .await
        .expect("wait");
    std::fs::remove_file(pwned).expect("their own start ran");
    let msg = tool_error(c, "project_up", json!({"project": "theirs", "wait": false})).await;
    assert!(msg.contains("not allowed"), "{msg}");
    w.manager.remove(theirs.id()).await.expect("remove");
}
