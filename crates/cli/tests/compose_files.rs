//! process-compose's own files (`tests/fixtures/process-compose/`, pinned
//! copies with their licence), each read by `bpm up --dry-run -f` as a person
//! switching from process-compose would run it: every one is accepted but
//! those refused on purpose, each named here with its reason (and in
//! docs/projects.md).

mod support;

use std::path::{Path, PathBuf};

use support::bpm::Bpm;
use support::workspace_root;

/// The files refused on purpose, and what their refusal must say.
const REFUSED: &[(&str, &str)] = &[
    // process-compose refuses it too: the fixture tests that refusal.
    (
        "fixtures-code/process-compose-circular.yaml",
        "depend on each other in a cycle",
    ),
    // Its working_dir is relative to where process-compose's own tests
    // run (two folders up from the file), which is not here.
    (
        "fixtures-code/process-compose-env-file.yaml",
        "working directory not found",
    ),
];

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures/process-compose")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a fixtures folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_process_compose_file_reads_or_is_refused_on_purpose() {
    let bpm = Bpm::new();
    let root = fixtures();
    let mut files = Vec::new();
    for dir in ["fixtures", "fixtures-code", "examples", "issues"] {
        yaml_files(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() >= 60, "only {} files", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        let out = bpm
            .cmd(&["up", "--dry-run", "-f", &rel])
            .current_dir(&root)
            .output()
            .expect("bpm up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match REFUSED.iter().find(|(f, _)| *f == rel) {
            Some((_, says)) if out.status.success() || !stderr.contains(says) => {
                wrong.push(format!("{rel}: refused on purpose, yet: {stderr}"));
            }
            None if !out.status.success() => wrong.push(format!("{rel}: {stderr}")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!("{} process-compose files read", files.len());
}

/// `extends` between processes, a file's `extends` of another file, and
/// a dependency on a disabled process, as process-compose reads them.
#[test]
fn extends_and_disabled_dependencies_read_as_process_compose_reads_them() {
    let bpm = Bpm::new();
    let root = fixtures();
    let dry = |file: &str| {
        let out = bpm
            .cmd(&["up", "--dry-run", "-f", file])
            .current_dir(&root)
            .output()
            .expect("bpm up");
        assert!(out.status.success(), "{file}: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plan, _) = dry("fixtures-code/process-compose-process-extends.yaml");
    for service in ["base", "derived", "chain_top"] {
        assert!(plan.contains(service), "{plan}");
    }
    // The server's file extends the db's: both come up, db first, and
    // the dry run shows the files read as one.
    let (plan, _) = dry("issues/issue_278/server/process-compose.yaml");
    assert!(
        plan.contains("# read as one: ")
            && plan.contains("issue_278/db/process-compose.yaml, then ")
            && plan.contains("working_dir: "),
        "{plan}"
    );
    let db = plan.find(" db ").expect("db");
    let server = plan.find(" server ").expect("server");
    assert!(db < server, "{plan}");
    let (plan, said) = dry("issues/issue_166/process-compose.yaml");
    assert!(
        plan.contains("test") && !plan.contains("runtrial"),
        "{plan}"
    );
    assert!(
        said.contains("runtrial is disabled, so test does not wait"),
        "{said}"
    );
}

/// What a derived process inherits, and a merged set's errors naming the
/// file a wrong key came from.
#[test]
fn an_override_file_beside_the_main_one_is_merged_and_its_errors_name_it() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let main = dir.path().join("process-compose.yaml");
    std::fs::write(
        &main,
        "processes:\n  web:\n    command: sleep 30\n    environment: [A=3, C=8]\n  base:\n    command: sleep 40\n    environment: [SHARED=base]\n  derived:\n    extends: base\n    environment: [EXTRA=2]\n",
    )
    .expect("main");
    std::fs::write(
        dir.path().join("process-compose.override.yaml"),
        "processes:\n  web:\n    environment: [A=4, B=5]\n  cache:\n    command: sleep 50\n",
    )
    .expect("override");
    let main_arg = main.display().to_string();
    bpm.ok(&["up", "-f", &main_arg]);
    let env_of = |name: &str| {
        let records = bpm.json(&["ps", "--json"]);
        let r = records
            .as_array()
            .expect("list")
            .iter()
            .find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&format!("/{name}")))
            })
            .unwrap_or_else(|| panic!("{name} in {records}"))
            .clone();
        r["spec"]["env"].clone()
    };
    let web = env_of("web");
    assert_eq!(
        (web["A"].as_str(), web["B"].as_str(), web["C"].as_str()),
        (Some("4"), Some("5"), Some("8"))
    );
    let derived = env_of("derived");
    assert_eq!(derived["SHARED"], "base");
    assert_eq!(derived["EXTRA"], "2");
    let _ = env_of("cache");
    bpm.ok(&["down", "-f", &main_arg]);

    std::fs::write(
        dir.path().join("process-compose.override.yaml"),
        "processes:\n  web:\n    replicas: many\n",
    )
    .expect("override");
    let out = bpm
        .cmd(&["up", "--dry-run", "-f", &main_arg])
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("process-compose.override.yaml:3: processes.web.replicas"),
        "the override file and its line are named: {said}"
    );
}

/// A readiness probe's timings run as process-compose runs them: its
/// first try after the initial delay, its passes in a row before ready,
/// and its failures in a row stopping a process that never gets ready
/// (then started again under its restart policy, or failed). bpm.toml's
/// `ready` table says the same in its own words.
#[test]
fn probe_timings_are_kept_as_process_compose_keeps_them() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("process-compose.yaml");
    std::fs::write(
        &file,
        r#"processes:
  slow:
    command: "touch ok; exec sleep 300"
    readiness_probe:
      exec:
        command: "echo x >> tries; test -f ok"
      initial_delay_seconds: 2
      period_seconds: 1
      success_threshold: 2
  never:
    command: "exec sleep 300"
    readiness_probe:
      exec:
        command: "echo not yet; false"
      period_seconds: 1
      failure_threshold: 2
    availability:
      restart: "no"
"#,
    )
    .expect("compose");
    let file_arg = file.display().to_string();
    bpm.ok(&["up", "-f", &file_arg]);
    let project = bpm.json(&["ps", "--json"]);
    let id_of = |name: &str| {
        project
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with(name)))
            .and_then(|r| r["id"].as_str())
            .unwrap_or_else(|| panic!("{name} in {project}"))
            .to_owned()
    };
    let (slow, never) = (id_of("/slow"), id_of("/never"));
    let mut shown = serde_json::Value::Null;
    for _ in 0..200 {
        shown = bpm.json(&["show", &slow, "--json"]);
        if shown["ready_at"].is_string() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let at = |key: &str| {
        let text = shown[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {shown}"));
        text.parse::<bpm_domain::Timestamp>()
            .expect("a time")
            .as_millis()
    };
    let took = std::time::Duration::from_millis(at("ready_at") - at("created_at"));
    assert!(
        took >= std::time::Duration::from_millis(2_900)
            && took < std::time::Duration::from_secs(10),
        "ready after {took:?}: the 2 s delay and two passes 1 s apart come first"
    );
    let tries = std::fs::read_to_string(dir.path().join("tries")).expect("tries");
    assert_eq!(tries.lines().count(), 2, "{tries:?}");
    bpm.until_state(&never, "failed");
    let shown = bpm.json(&["show", &never, "--json"]);
    let said = shown.to_string();
    assert!(
        said.contains("readiness check failed 2 times in a row")
            && said.contains("exited 1: not yet"),
        "{shown}"
    );
    bpm.ok(&["down", "-f", &file_arg]);

    // bpm.toml: the same keys in the ready table, read into the spec.
    let toml = dir.path().join("bpm.toml");
    std::fs::write(
        &toml,
        "[project]\nname = \"paced\"\n[services.web]\ncommand = \"exec sleep 300\"\nport = \"auto\"\nready = { http = \"/\", initial_delay = \"2s\", every = \"1s\", timeout = \"1s\", successes = 1, failures = 20 }\n",
    )
    .expect("toml");
    let out = bpm.ok(&["up", "--dry-run", "-f", &toml.display().to_string()]);
    assert!(out.contains("would start"), "{out}");
    let toml_arg = toml.display().to_string();
    bpm.ok(&["up", "-f", &toml_arg]);
    let web = bpm.json(&["show", "paced/web", "--json"]);
    let pace = &web["spec"]["readiness"]["pace"];
    assert_eq!(
        (
            pace["initial_delay"].as_str(),
            pace["every"].as_str(),
            pace["timeout"].as_str(),
            pace["successes"].as_u64(),
            pace["failures"].as_u64()
        ),
        (Some("2s"), Some("1s"), Some("1s"), Some(1), Some(20)),
        "{web}"
    );
    assert!(web["spec"]["readiness"]["timeout"].is_null(), "{web}");
    bpm.ok(&["down", "-f", &toml_arg]);
}

/// process-compose's own shutdown-order fixture, run for real: `bpm down`
/// runs each process's `shutdown.command` before its signal, dependents
/// before what they depend on, and the commands' output is kept in the
/// processes' logs; `bpm stop` runs it too, and one that hangs is cut at
/// its timeout.
#[test]
fn shutdown_commands_run_in_down_and_stop_in_order() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("shutdown.log");
    let file = fixtures().join("fixtures-code/process-compose-shutdown-inorder.yaml");
    let file_arg = file.display().to_string();
    let run = |args: &[&str]| {
        let out = bpm
            .cmd(args)
            .env("PC_TEST_SHUTDOWN_LOG", &log)
            .output()
            .expect("bpm");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["up", "-f", &file_arg, "--wait", "--wait-timeout", "30s"]);
    let said = run(&["down", "-f", &file_arg]);
    let order = std::fs::read_to_string(&log).expect("the commands wrote");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.len(), 4, "{order:?} ({said})");
    assert_eq!(order[0], "B: exit", "{order:?}");
    assert_eq!(order[3], "A: exit", "{order:?}");
    // Each ended, after its command failed (exit 1), by its signal.
    let listed = bpm.json(&["ps", "--all", "--json"]);
    let records = listed.as_array().expect("list");
    assert_eq!(records.len(), 4, "{listed}");
    for r in records {
        assert_eq!(r["state"], "cancelled", "{r}");
    }
    let a = records
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with("/procA")))
        .expect("procA");
    let logs = bpm.ok(&["logs", a["id"].as_str().expect("id")]);
    assert!(
        logs.contains("A: starting") && logs.contains("the stop command `printf"),
        "{logs}"
    );

    // bpm stop runs it too; one that hangs is cut at its timeout, and the
    // signal follows.
    let out = bpm.ok(&[
        "run",
        "--name",
        "hangs",
        "--stop-command",
        "echo asked to stop; exec sleep 60",
        "--stop-command-timeout",
        "1s",
        "--",
        "sleep",
        "300",
    ]);
    assert!(!out.is_empty());
    let began = std::time::Instant::now();
    bpm.ok(&["stop", "hangs"]);
    bpm.until_state("hangs", "cancelled");
    let took = began.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(8),
        "stopped after {took:?}"
    );
    let logs = bpm.ok(&["logs", "hangs"]);
    assert!(
        logs.contains("asked to stop") && logs.contains("took over 1s"),
        "{logs}"
    );
}

/// Several `-f` files read as one, in order, as process-compose reads
/// them (a file an earlier one read already is not read twice), and a
/// `bpm.override.toml` over the `bpm.toml` beside it, its wrong keys named
/// with its own file and line.
#[test]
fn several_files_and_an_override_toml_are_read_as_one() {
    let bpm = Bpm::new();
    let root = fixtures();
    let out = bpm
        .cmd(&[
            "up",
            "--dry-run",
            "-f",
            "issues/issue_278/db/process-compose.yaml",
            "-f",
            "issues/issue_278/server/process-compose.yaml",
        ])
        .current_dir(&root)
        .output()
        .expect("bpm up");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let db = plan.find(" db ").expect("db");
    let server = plan.find(" server ").expect("server");
    assert!(db < server, "{plan}");
    assert_eq!(plan.matches("db/process-compose.yaml").count(), 1, "{plan}");

    let dir = tempfile::tempdir().expect("dir");
    let main = dir.path().join("bpm.toml");
    std::fs::write(
        &main,
        "[project]\nname = \"layered\"\n[services.web]\ncommand = \"exec sleep 300\"\nenv = { A = \"1\", B = \"2\" }\n[services.worker]\ncommand = \"exec sleep 301\"\n",
    )
    .expect("main");
    let over = dir.path().join("bpm.override.toml");
    std::fs::write(
        &over,
        "[services.web]\nenv = { B = \"3\" }\n[services.cache]\ncommand = \"exec sleep 302\"\n",
    )
    .expect("override");
    let main_arg = main.display().to_string();
    let plan = bpm.ok(&["up", "--dry-run", "-f", &main_arg]);
    assert!(
        plan.contains("# read as one: ") && plan.contains("bpm.override.toml"),
        "{plan}"
    );
    // Found by `bpm up` in the directory too.
    let out = bpm
        .cmd(&["up"])
        .current_dir(dir.path())
        .output()
        .expect("bpm up");
    assert!(out.status.success(), "{out:?}");
    let web = bpm.json(&["show", "layered/web", "--json"]);
    assert_eq!(
        (
            web["spec"]["env"]["A"].as_str(),
            web["spec"]["env"]["B"].as_str()
        ),
        (Some("1"), Some("3")),
        "{web}"
    );
    let _ = bpm.json(&["show", "layered/cache", "--json"]);
    let _ = bpm.json(&["show", "layered/worker", "--json"]);
    bpm.ok(&["down", "-f", &main_arg]);

    // A third file given with -f: the override beside is not read then.
    let third = dir.path().join("staging.toml");
    std::fs::write(&third, "[services.worker]\ncommand = \"exec sleep 303\"\n").expect("third");
    let plan = bpm.ok(&[
        "up",
        "--dry-run",
        "-f",
        &main_arg,
        "-f",
        &third.display().to_string(),
    ]);
    assert!(
        plan.contains("sleep 303") && !plan.contains("cache"),
        "{plan}"
    );

    // A wrong key in the override is named with the override's file and line.
    std::fs::write(
        &over,
        "[services.web]\nenv = { B = \"3\" }\nready = { log = \"(\" }\n",
    )
    .expect("override");
    let out = bpm
        .cmd(&["up", "--dry-run", "-f", &main_arg])
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("bpm.override.toml:1: services.web.ready.log"),
        "{said}"
    );
    std::fs::write(&over, "[services.web]\nreplicas = \"many\"\n").expect("override");
    let out = bpm
        .cmd(&["up", "--dry-run", "-f", &main_arg])
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("bpm.override.toml:2: replicas"), "{said}");
    // Files of two kinds are refused by name.
    let out = bpm
        .cmd(&[
            "up",
            "--dry-run",
            "-f",
            &main_arg,
            "-f",
            &root
                .join("issues/issue_278/db/process-compose.yaml")
                .display()
                .to_string(),
        ])
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot be read as one"), "{said}");
}

/// A loopback port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
        .port()
}

/// `http_get` with `scheme: https` is checked over TLS: a server with a
/// self-signed certificate (as a local one usually has) gets ready, and
/// a plain HTTP server behind an https probe never does.
#[test]
fn an_https_probe_is_checked_over_tls() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl (tests/run.sh installs it)");
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let server = format!(
        "import http.server, ssl\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain('cert.pem', 'key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n"
    );
    std::fs::write(dir.path().join("serve.py"), server).expect("server");
    let file = dir.path().join("process-compose.yaml");
    std::fs::write(
        &file,
        format!(
            "processes:\n  web:\n    command: \"exec python3 serve.py\"\n    readiness_probe:\n      http_get:\n        scheme: https\n        host: 127.0.0.1\n        port: {port}\n        path: /\n      period_seconds: 1\n      failure_threshold: 20\n"
        ),
    )
    .expect("compose");
    let file_arg = file.display().to_string();
    bpm.ok(&["up", "-f", &file_arg, "--wait", "--wait-timeout", "30s"]);
    let name = format!(
        "{}/web",
        dir.path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
    );
    let web = bpm.json(&["show", &name, "--json"]);
    assert!(web["ready_at"].is_string(), "{web}");
    assert_eq!(
        web["spec"]["readiness"]["check"]["target"].as_str(),
        Some(format!("https://127.0.0.1:{port}/").as_str()),
        "{web}"
    );
    bpm.ok(&["down", "-f", &file_arg]);

    // A plain HTTP server is not ready to an https check.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/");
    let serve = format!("exec python3 -m http.server --bind 127.0.0.1 {port}");
    bpm.ok(&[
        "run",
        "--name",
        "plain",
        "--ready-http",
        &url,
        "--ready-every",
        "300ms",
        "--ready-failures",
        "3",
        "--ready-initial-delay",
        "1500ms",
        "--shell",
        "--",
        &serve,
    ]);
    bpm.until_state("plain", "failed");
    let shown = bpm.json(&["show", "plain", "--json"]).to_string();
    assert!(
        shown.contains("readiness check failed 3 times in a row") && shown.contains("TLS"),
        "{shown}"
    );
}

/// `bpm scale SERVICE=N` changes how many copies of a running service run
/// and touches nothing else: the first copy keeps its name and process,
/// new ones are `web.3`, `web.4` (each told its number), extra ones stop
/// highest first; a number out of bounds, a service the project lacks,
/// and a project that is not up are refused with what to do.
#[test]
fn scale_changes_a_services_copies_and_nothing_else() {
    let bpm = Bpm::new();
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let project = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let file = dir.join("process-compose.yaml");
    std::fs::write(
        &file,
        "processes:\n  db:\n    command: exec sleep 300\n  web:\n    command: echo copy $BPM_REPLICA; exec sleep 300\n    replicas: 2\n    depends_on:\n      db:\n        condition: process_started\n",
    )
    .expect("compose");
    let file_arg = file.display().to_string();
    bpm.ok(&["up", "-f", &file_arg, "--wait", "--wait-timeout", "30s"]);
    let pids = || -> std::collections::BTreeMap<String, u64> {
        bpm.json(&["ps", "--json"])
            .as_array()
            .expect("list")
            .iter()
            .filter(|r| r["state"] == "running")
            .map(|r| {
                let name = r["name"].as_str().expect("name");
                let service = name.rsplit_once('/').map_or(name, |(_, s)| s);
                (service.to_owned(), r["pid"].as_u64().expect("pid"))
            })
            .collect()
    };
    let before = pids();
    assert_eq!(before.keys().collect::<Vec<_>>(), ["db", "web", "web.2"]);

    let scale = |what: &str| {
        bpm.cmd(&["scale", "-f", &file_arg, what])
            .output()
            .expect("bpm scale")
    };
    let out = scale("web=4");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("started  web.3")
            && lines[1].starts_with("started  web.4"),
        "{said}"
    );
    let wider = pids();
    for kept in ["db", "web", "web.2"] {
        assert_eq!(wider[kept], before[kept], "{kept} was not touched");
    }
    assert_eq!(wider.len(), 5, "{wider:?}");
    let logs = bpm.ok(&["logs", &format!("{project}/web.4")]);
    assert!(logs.contains("copy 4"), "{logs}");

    let out = bpm.ok(&["scale", &format!("{project}/web=1")]);
    let stopped: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(stopped, ["web.4", "web.3", "web.2"], "{out}");
    let narrower = pids();
    assert_eq!(narrower.keys().collect::<Vec<_>>(), ["db", "web"]);
    assert_eq!(narrower["web"], before["web"]);
    let again = bpm.ok(&["scale", "-f", &file_arg, "web=1"]);
    assert!(again.contains("already runs 1 copy"), "{again}");

    for (what, says) in [
        ("web=0", "from 1 to 1000"),
        ("web=-3", "from 1 to 1000"),
        ("web=5000", "from 1 to 1000"),
        ("web=many", "expected SERVICE=N"),
        ("web", "expected SERVICE=N"),
        ("cache=2", "no service \"cache\""),
        ("elsewhere/web=2", "no project \"elsewhere\""),
    ] {
        let out = scale(what);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{what}: {said}");
        assert!(said.contains(says), "{what}: {said}");
    }
    bpm.ok(&["down", "-f", &file_arg]);
    let out = scale("web=2");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("does not run: bring it up first"), "{said}");
}

/// `bpm up --rolling` replaces a changed service without a moment down:
/// the new copy (on a port of its own) is ready before the old one is
/// stopped; a new copy that is never ready is stopped after the wait, and
/// the old one runs on, said so; `bpm restart --rolling` of a record
/// without a readiness check is refused with what to do.
#[test]
fn a_rolling_replace_keeps_a_copy_answering() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    let write = |version: &str, command: &str| {
        std::fs::write(
            &file,
            format!(
                "[project]\nname = \"rolled\"\n[services.web]\ncommand = \"echo {version}; {command}\"\nport = \"auto\"\nready = {{ http = \"/\" }}\n"
            ),
        )
        .expect("bpm.toml");
    };
    let serve = "exec python3 -m http.server --bind 127.0.0.1 $PORT";
    write("v1", serve);
    let f = file.display().to_string();
    bpm.ok(&["up", "-f", &f, "--wait", "--wait-timeout", "30s"]);
    let first = bpm.json(&["show", "rolled/web", "--json"]);
    write("v2", serve);
    let said = bpm.ok(&["up", "-f", &f, "--rolling"]);
    assert!(said.starts_with("replaced web"), "{said}");
    let records = bpm.json(&["ps", "--all", "--json"]);
    let of = |id: &serde_json::Value| {
        records
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["id"] == *id)
            .cloned()
            .expect("a record")
    };
    let old = of(&first["id"]);
    let second = bpm.json(&["show", "rolled/web", "--json"]);
    let at = |r: &serde_json::Value, key: &str| {
        r[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {r}"))
            .parse::<bpm_domain::Timestamp>()
            .expect("a time")
            .as_millis()
    };
    assert_ne!(second["id"], first["id"]);
    assert_ne!(second["port"], first["port"], "a port of its own");
    assert_eq!(old["state"], "cancelled", "{old}");
    assert!(
        at(&second, "ready_at") <= at(&old, "ended_at"),
        "the new copy was ready ({}) before the old one ended ({})",
        second["ready_at"],
        old["ended_at"]
    );

    // A new copy never ready: stopped after the wait; the old one runs on.
    write("v3", "exec sleep 300");
    let out = bpm
        .cmd(&["up", "-f", &f, "--rolling", "--wait-timeout", "2s"])
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{said}");
    assert!(
        said.contains("not up in time") && said.contains("the copy that ran before runs on"),
        "{said}"
    );
    let now = bpm.json(&["show", "rolled/web", "--json"]);
    assert_eq!(now["id"], second["id"], "the running copy keeps the name");
    assert_eq!(now["pid"], second["pid"]);
    assert_eq!(now["state"], "running");
    bpm.ok(&["down", "-f", &f]);

    bpm.ok(&["run", "--name", "plain", "--", "sleep", "60"]);
    let out = bpm
        .cmd(&["restart", "--rolling", "plain"])
        .output()
        .expect("bpm restart");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(said.contains("needs a readiness check"), "{said}");
    bpm.ok(&["stop", "plain"]);
}

/// Brings fixture `file` up in a state directory of its own, and answers
/// its records once every one has ended or waits, or `most` has passed.
fn run_fixture(root: &Path, file: &str, most: std::time::Duration) -> Vec<serde_json::Value> {
    // A state directory each: two fixtures of one folder are one
    // project by name.
    let bpm = Bpm::new();
    let path = root.join(file);
    let out = bpm
        .cmd(&["up", "-f", &path.display().to_string()])
        .current_dir(path.parent().expect("dir"))
        .output()
        .expect("bpm up");
    assert!(out.status.success(), "{file}: {out:?}");
    let project = path
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let mut seen = Vec::new();
    let began = std::time::Instant::now();
    while began.elapsed() < most {
        let all = bpm.json(&["ps", "--all", "--project", &project, "--json"]);
        seen = all.as_array().cloned().unwrap_or_default();
        let settled = seen.iter().all(|r| {
            ["completed", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or(""))
                || (r["state"] == "pending" && r["waiting"].is_string())
        });
        if !seen.is_empty() && settled {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bpm.ok(&["down", "-f", &path.display().to_string()]);
    seen
}

/// process-compose's own fixtures whose meaning can be checked, run for
/// real: a rhombus of dependencies completes in its order; a chain with
/// errors fails each dependent of a failure and runs one that waits only
/// for an end; a dependent of a log line that never comes never starts;
/// an exit code allowed as success completes and is not restarted.
#[test]
fn checkable_fixtures_run_as_process_compose_runs_them() {
    let root = fixtures();
    let run = |file: &str, most| run_fixture(&root, file, most);
    let newest = |records: &[serde_json::Value], service: &str| -> serde_json::Value {
        records
            .iter()
            .filter(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&format!("/{service}")))
            })
            .max_by_key(|r| r["created_at"].as_str().unwrap_or("").to_owned())
            .cloned()
            .unwrap_or_else(|| panic!("{service} in {records:?}"))
    };
    let at = |r: &serde_json::Value, key: &str| r[key].as_str().unwrap_or("").to_owned();

    let long = std::time::Duration::from_secs(30);
    let rhombus = run("fixtures/process-compose-chain-rhombus.yaml", long);
    for n in 1..=8 {
        assert_eq!(
            newest(&rhombus, &format!("process{n}"))["state"],
            "completed"
        );
    }
    let ended = |n: u32| at(&newest(&rhombus, &format!("process{n}")), "ended_at");
    let started = |n: u32| at(&newest(&rhombus, &format!("process{n}")), "started_at");
    for (before, after) in [
        (8, 6),
        (8, 7),
        (6, 5),
        (7, 5),
        (5, 4),
        (4, 3),
        (3, 2),
        (2, 1),
    ] {
        assert!(
            ended(before) <= started(after),
            "process{before} ends before process{after} starts"
        );
    }

    let errors = run("fixtures/process-compose-chain-with-errors.yaml", long);
    assert_eq!(newest(&errors, "process3")["state"], "failed");
    assert_eq!(
        newest(&errors, "process4")["state"],
        "completed",
        "it waits only for process5 to end"
    );
    let five = newest(&errors, "process5");
    assert_eq!(five["state"], "failed");
    assert_eq!(five["restarts"], 1, "max_restarts 1: {five}");
    for dependent in ["process2", "process1"] {
        let r = newest(&errors, dependent);
        assert_eq!(r["state"], "failed", "{r}");
        assert!(at(&r, "error").contains("dependency"), "{r}");
    }

    // failer restarts on failure (process-compose ends the project on its
    // failure instead): either way oblivious never starts.
    let log_line = run(
        "fixtures/process-compose-dependent-on-failing-log-line.yml",
        std::time::Duration::from_secs(3),
    );
    let oblivious = newest(&log_line, "oblivious");
    assert!(
        oblivious["started_at"].is_null() && oblivious["exit_code"].is_null(),
        "never started: {oblivious}"
    );
    assert!(newest(&log_line, "failer")["restarts"].as_u64() >= Some(1));

    // A readiness probe that never passes (exec `false`, 2 failures, 1 s
    // apart, after 1 s): stopped as unhealthy, and started again (always).
    let probed = run(
        "issues/issue_403/process-compose.yaml",
        std::time::Duration::from_secs(6),
    );
    let first = probed
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("/my-process"))
        })
        .min_by_key(|r| r["created_at"].as_str().unwrap_or("").to_owned())
        .expect("my-process");
    let attempt = &first["attempts"][0];
    let ms = |key: &str| {
        attempt[key]
            .as_str()
            .and_then(|t| t.parse::<bpm_domain::Timestamp>().ok())
            .map_or(0, bpm_domain::Timestamp::as_millis)
    };
    assert!(first["restarts"].as_u64() >= Some(1), "{first}");
    assert_eq!(attempt["exit"]["signal"], 15, "stopped by bpm: {first}");
    let lasted = ms("ended_at") - ms("started_at");
    assert!(
        (1_900..4_000).contains(&lasted),
        "1 s of delay, then 2 failures 1 s apart: {lasted} ms"
    );

    let codes = run(
        "fixtures-code/process-compose-success-exit-codes.yaml",
        long,
    );
    let allowed = newest(&codes, "allowed");
    assert_eq!(
        (allowed["state"].as_str(), allowed["restarts"].as_u64()),
        (Some("completed"), Some(0)),
        "{allowed}"
    );
    let control = newest(&codes, "control");
    assert_eq!(
        (control["state"].as_str(), control["restarts"].as_u64()),
        (Some("failed"), Some(1)),
        "{control}"
    );
}
