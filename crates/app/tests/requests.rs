//! One request through every front end: the same setting given to `bpm
//! run`, to MCP's `start_background_process`, in a `bpm.toml` service and
//! in the page's start form comes out as the same `ProcessSpec`, and the
//! same mistake is refused naming the same field. Each front end is read
//! by its own code (clap and `asked_of` for the CLI, the tool's argument
//! type for MCP, the project reader, the page's form reader); the spec is
//! made by `bpm-intake` with one context, so any difference is the front
//! end's.

use std::collections::BTreeSet;
use std::path::Path;

use bpm_domain::{Environment, ProcessSpec};
use bpm_intake::{Asked, Context, Spelling};
use clap::Parser as _;
use serde_json::{Value, json};

/// One setting, as each front end writes it; `None`: that front end
/// cannot say it (each such gap is named in a test below).
struct Row {
    field: &'static str,
    cli: &'static [&'static str],
    mcp: Value,
    toml: Option<&'static str>,
    form: Option<Value>,
}

fn rows() -> Vec<Row> {
    let r = |field, cli, mcp, toml, form| Row {
        field,
        cli,
        mcp,
        toml,
        form,
    };
    vec![
        r(
            "timeout",
            &["--timeout", "5s"],
            json!({"timeout": "5s"}),
            Some(r#"timeout = "5s""#),
            Some(json!({"timeout": "5s"})),
        ),
        r(
            "grace",
            &["--grace", "2s"],
            json!({"grace": "2s"}),
            Some(r#"grace = "2s""#),
            None,
        ),
        r(
            "restart",
            &["--restart", "on-failure"],
            json!({"restart": "on-failure"}),
            Some(r#"restart = "on-failure""#),
            Some(json!({"restart": "on-failure"})),
        ),
        r(
            "max_restarts",
            &["--max-restarts", "3"],
            json!({"max_restarts": 3}),
            Some("max_restarts = 3"),
            None,
        ),
        r(
            "backoff",
            &["--backoff", "2s"],
            json!({"backoff": "2s"}),
            Some(r#"backoff = "2s""#),
            None,
        ),
        r(
            "stop_signal",
            &["--stop-signal", "INT"],
            json!({"stop_signal": "INT"}),
            Some(r#"stop_signal = "INT""#),
            None,
        ),
        r(
            "priority",
            &["--priority", "5"],
            json!({"priority": 5}),
            Some("priority = 5"),
            None,
        ),
        r(
            "delay",
            &["--delay", "1s"],
            json!({"delay": "1s"}),
            Some(r#"delay = "1s""#),
            None,
        ),
        r(
            "idle_after",
            &["--idle-after", "3s"],
            json!({"idle_after": "3s"}),
            Some(r#"idle_after = "3s""#),
            None,
        ),
        r(
            "ready_pattern",
            &["--ready-pattern", "^up$"],
            json!({"ready_pattern": "^up$"}),
            Some(r#"ready = { log = "^up$" }"#),
            Some(json!({"ready_pattern": "^up$"})),
        ),
        r(
            "ready_port",
            &["--ready-port", "8080"],
            json!({"ready_port": 8080}),
            Some("ready = { port = 8080 }"),
            Some(json!({"ready_port": 8080})),
        ),
        r(
            "ready_http",
            &["--ready-http", "http://127.0.0.1:8080/health"],
            json!({"ready_http": "http://127.0.0.1:8080/health"}),
            Some(r#"ready = { http = "http://127.0.0.1:8080/health" }"#),
            None,
        ),
        r(
            "ready_exec",
            &["--ready-exec", "true"],
            json!({"ready_exec": "true"}),
            Some(r#"ready = { exec = "true" }"#),
            None,
        ),
        r(
            "ready_notify",
            &["--ready-notify"],
            json!({"ready_notify": true}),
            Some("ready = { notify = true }"),
            None,
        ),
        r(
            "ready_timeout",
            &["--ready-timeout", "9s"],
            json!({"ready_timeout": "9s"}),
            Some(r#"ready = { timeout = "9s" }"#),
            None,
        ),
        r(
            "health",
            &[
                "--health-http",
                "http://127.0.0.1:9/h",
                "--health-every",
                "3s",
                "--health-failures",
                "2",
            ],
            json!({"health": {"http": "http://127.0.0.1:9/h", "every": "3s", "failures": 2}}),
            Some(r#"health = { http = "http://127.0.0.1:9/h", every = "3s", failures = 2 }"#),
            None,
        ),
        r(
            "labels",
            &["--label", "a=b"],
            json!({"labels": {"a": "b"}}),
            Some(r#"labels = { a = "b" }"#),
            None,
        ),
        r(
            "node_labels",
            &["--node", "any", "--node-label", "gpu=yes"],
            json!({"node": "any", "node_labels": {"gpu": "yes"}}),
            Some(
                r#"node = "any"
node_labels = { gpu = "yes" }"#,
            ),
            None,
        ),
        r(
            "kind",
            &["--kind", "build"],
            json!({"kind": "build"}),
            Some(r#"kind = "build""#),
            None,
        ),
        r(
            "group",
            &["--group", "g1"],
            json!({"group": "g1"}),
            Some(r#"group = "g1""#),
            Some(json!({"group": "g1"})),
        ),
        r(
            "port",
            &["--port", "auto"],
            json!({"port": "auto"}),
            Some(r#"port = "auto""#),
            None,
        ),
        r(
            "env",
            &["--env", "A=1"],
            json!({"env": {"A": "1"}}),
            Some(r#"env = { A = "1" }"#),
            Some(json!({"env": "A=1"})),
        ),
        r(
            "env_file",
            &["--env-file", "vars.env"],
            json!({"env_file": ["vars.env"]}),
            Some(r#"env_file = "vars.env""#),
            None,
        ),
        r(
            "cwd",
            &["--cwd", "sub"],
            json!({"cwd": "sub"}),
            Some(r#"cwd = "sub""#),
            Some(json!({"cwd": "sub"})),
        ),
        r(
            "watch",
            &[
                "--watch",
                "src",
                "--watch-ignore",
                "*.log",
                "--restart-dependents",
            ],
            json!({"watch": ["src"], "watch_ignore": ["*.log"], "restart_dependents": true}),
            Some(
                r#"watch = ["src"]
watch_ignore = ["*.log"]
restart_dependents = true"#,
            ),
            None,
        ),
        r(
            "every",
            &["--every", "30s", "--jitter", "1s"],
            json!({"every": "30s", "jitter": "1s"}),
            Some(
                r#"every = "30s"
jitter = "1s""#,
            ),
            None,
        ),
        r(
            "cron",
            &["--cron", "*/5 * * * *", "--tz", "Asia/Tokyo"],
            json!({"cron": "*/5 * * * *", "tz": "Asia/Tokyo"}),
            Some(
                r#"cron = "*/5 * * * *"
tz = "Asia/Tokyo""#,
            ),
            None,
        ),
        r(
            "nofile",
            &["--nofile", "256"],
            json!({"nofile": 256}),
            Some("nofile = 256"),
            None,
        ),
        r(
            "tty",
            &["--tty", "--tty-size", "100x30"],
            json!({"tty": true, "tty_size": "100x30"}),
            Some(
                r#"tty = true
tty_size = "100x30""#,
            ),
            None,
        ),
        r(
            "stdin",
            &["--stdin"],
            json!({"stdin": true}),
            Some("stdin = true"),
            None,
        ),
        r(
            "on_exit",
            &["--on-exit", "echo done"],
            json!({"on_exit": "echo done"}),
            Some(r#"on_exit = "echo done""#),
            None,
        ),
        r(
            "failover",
            &["--failover", "--restart", "always"],
            json!({"failover": true, "restart": "always"}),
            Some(
                r#"failover = true
restart = "always""#,
            ),
            None,
        ),
        r(
            "leader_only",
            &["--leader-only"],
            json!({"leader_only": true}),
            Some("leader_only = true"),
            None,
        ),
        r(
            "metadata",
            &["--metadata", r#"{"k":1}"#],
            json!({"metadata": {"k": 1}}),
            Some("metadata = { k = 1 }"),
            None,
        ),
        r(
            "session",
            &["--session", "s1"],
            json!({"session": "s1"}),
            Some(r#"session = "s1""#),
            None,
        ),
        r(
            "owner",
            &["--owner", "session:x", "--owner-grace", "1m"],
            json!({"owner": ["session:x"], "owner_grace": "1m"}),
            Some(
                r#"owner = ["session:x"]
owner_grace = "1m""#,
            ),
            None,
        ),
        r(
            "clean_env",
            &["--clean-env"],
            json!({"clean_env": true}),
            Some("clean_env = true"),
            None,
        ),
        r(
            "name",
            &["--name", "n1"],
            json!({"name": "n1"}),
            None,
            Some(json!({"name": "n1"})),
        ),
        r(
            "ensure",
            &["--name", "n1", "--ensure"],
            json!({"name": "n1", "ensure": true}),
            None,
            None,
        ),
        r(
            "replace",
            &["--name", "n1", "--replace"],
            json!({"name": "n1", "replace": true}),
            None,
            None,
        ),
    ]
}

/// A directory with what the rows name: `sub/`, `src/`, `vars.env`.
fn place() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::create_dir(dir.path().join("sub")).expect("sub");
    std::fs::create_dir(dir.path().join("src")).expect("src");
    std::fs::write(dir.path().join("vars.env"), "B=2\n").expect("env file");
    dir
}

fn env() -> Environment {
    Environment::from([("PATH".into(), "/usr/bin:/bin".into())])
}

fn spec(asked: Asked, dir: &Path, spelling: Spelling) -> Result<ProcessSpec, bpm_intake::AskError> {
    let env = env();
    let machine = bpm_adapters::os::ThisMachine;
    let mut ctx = Context::new(dir, &env, &machine);
    ctx.spelling = spelling;
    ctx.time_zone = Some("Europe/Paris");
    asked.into_spec(&ctx)
}

fn by_cli(flags: &[&str], dir: &Path) -> Result<ProcessSpec, String> {
    let mut line = vec!["bpm", "run"];
    line.extend(flags);
    line.extend(["--", "sleep", "1"]);
    let cli = bpm::cli::Cli::try_parse_from(line).map_err(|e| e.to_string())?;
    let bpm::cli::Command::Run(args) = cli.command else {
        panic!("bpm run parsed as another command");
    };
    let asked = bpm::cli::asked_of(*args)?;
    spec(asked, dir, Spelling::Flags).map_err(|e| format!("{}|{e}", e.field))
}

fn by_mcp(args: &Value, dir: &Path) -> Result<ProcessSpec, String> {
    let mut args = args.clone();
    args["argv"] = json!(["sleep", "1"]);
    let asked: Asked = serde_json::from_value(args).map_err(|e| e.to_string())?;
    spec(asked, dir, Spelling::Keys).map_err(|e| format!("{}|{e}", e.field))
}

fn by_toml(lines: &str, dir: &Path) -> Result<ProcessSpec, String> {
    let file = dir.join("bpm.toml");
    std::fs::write(
        &file,
        format!("[services.one]\nargv = [\"sleep\", \"1\"]\n{lines}\n"),
    )
    .expect("bpm.toml");
    let loaded = bpm_intake::project::load(&file, &env(), &bpm_adapters::os::ThisMachine)?;
    Ok(loaded.project.services[0].spec.clone())
}

fn by_form(form: &Value, dir: &Path) -> Result<ProcessSpec, String> {
    let mut form = form.clone();
    form["command"] = json!("sleep 1");
    let asked = bpm_web::form_asks(form)?;
    spec(asked, dir, Spelling::Keys).map_err(|e| format!("{}|{e}", e.field))
}

#[test]
fn every_front_end_turns_the_same_setting_into_the_same_spec() {
    let dir = place();
    let plain = by_mcp(&json!({}), dir.path()).expect("a plain spec");
    for row in rows() {
        let from_cli =
            by_cli(row.cli, dir.path()).unwrap_or_else(|e| panic!("{}: cli: {e}", row.field));
        let from_mcp =
            by_mcp(&row.mcp, dir.path()).unwrap_or_else(|e| panic!("{}: mcp: {e}", row.field));
        assert_ne!(
            from_cli, plain,
            "{}: the setting changed nothing",
            row.field
        );
        assert_eq!(
            from_cli, from_mcp,
            "{}: the CLI and MCP disagree",
            row.field
        );
        if let Some(lines) = row.toml {
            let from_toml = by_toml(lines, dir.path())
                .unwrap_or_else(|e| panic!("{}: bpm.toml: {e}", row.field));
            assert_eq!(
                from_toml, from_mcp,
                "{}: bpm.toml and MCP disagree",
                row.field
            );
        }
        if let Some(form) = &row.form {
            let from_form =
                by_form(form, dir.path()).unwrap_or_else(|e| panic!("{}: form: {e}", row.field));
            assert_eq!(
                from_form, from_mcp,
                "{}: the page and MCP disagree",
                row.field
            );
        }
    }
}

/// A mistake, as each front end writes it, and the field every one of
/// them must name.
struct Mistake {
    field: &'static str,
    cli: &'static [&'static str],
    mcp: Value,
    toml: &'static str,
}

#[test]
fn every_front_end_refuses_the_same_mistake_naming_the_same_field() {
    let dir = place();
    let mistakes = [
        Mistake {
            field: "ready_exec",
            cli: &["--ready-port", "1", "--ready-exec", "true"],
            mcp: json!({"ready_port": 1, "ready_exec": "true"}),
            toml: r#"ready = { port = 1, exec = "true" }"#,
        },
        Mistake {
            field: "timeout",
            cli: &["--timeout", "5 parsecs"],
            mcp: json!({"timeout": "5 parsecs"}),
            toml: r#"timeout = "5 parsecs""#,
        },
        Mistake {
            field: "restart",
            cli: &["--restart", "sometimes"],
            mcp: json!({"restart": "sometimes"}),
            toml: r#"restart = "sometimes""#,
        },
        Mistake {
            field: "cwd",
            cli: &["--cwd", "nowhere"],
            mcp: json!({"cwd": "nowhere"}),
            toml: r#"cwd = "nowhere""#,
        },
        Mistake {
            field: "env_file",
            cli: &["--env-file", "missing.env"],
            mcp: json!({"env_file": ["missing.env"]}),
            toml: r#"env_file = "missing.env""#,
        },
        Mistake {
            field: "stop_signal",
            cli: &["--stop-signal", "NOPE"],
            mcp: json!({"stop_signal": "NOPE"}),
            toml: r#"stop_signal = "NOPE""#,
        },
        Mistake {
            field: "health",
            cli: &["--health-every", "2s"],
            mcp: json!({"health": {"every": "2s"}}),
            toml: r#"health = { every = "2s" }"#,
        },
        Mistake {
            field: "kind",
            cli: &["--kind", "daemon"],
            mcp: json!({"kind": "daemon"}),
            toml: r#"kind = "daemon""#,
        },
    ];
    for m in mistakes {
        let cli = by_cli(m.cli, dir.path()).expect_err(m.field);
        let mcp = by_mcp(&m.mcp, dir.path()).expect_err(m.field);
        let (cli_field, cli_text) = cli.split_once('|').expect("a field");
        let (mcp_field, mcp_text) = mcp.split_once('|').expect("a field");
        assert_eq!(
            (cli_field, mcp_field),
            (m.field, m.field),
            "{cli_text} / {mcp_text}"
        );
        let flag = Spelling::Flags.of(m.field);
        assert!(cli_text.contains(&flag), "the CLI names {flag}: {cli_text}");
        assert!(
            mcp_text.contains(m.field),
            "MCP names {}: {mcp_text}",
            m.field
        );
        let toml = by_toml(m.toml, dir.path()).expect_err(m.field);
        let key = Spelling::Project.of(m.field);
        assert!(
            toml.contains(&format!("services.one.{key}"))
                || toml.contains(&format!("services.one.{}", m.field)),
            "bpm.toml names services.one.{key}: {toml}"
        );
        // The same words after the field's name, whoever spelt it (and
        // the other fields a reason names spelt alike).
        let why = |text: &str| {
            let reason = text.split_once(": ").map(|(_, w)| w).unwrap_or_default();
            reason
                .split(' ')
                .map(|w| w.trim_start_matches("--").replace(['-', '.'], "_"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            why(cli_text),
            why(mcp_text),
            "{}: the reasons differ",
            m.field
        );
    }
}

/// The fields a front end does not take, by name: a field added to
/// `Asked` fails this test until each front end takes it or is listed.
fn gaps(covered: impl Fn(&Row) -> bool, companions: &[&str]) -> BTreeSet<String> {
    let mut left: BTreeSet<String> = Asked::fields().into_iter().collect();
    for row in rows().iter().filter(|r| covered(r)) {
        left.remove(row.field);
    }
    for c in companions {
        left.remove(*c);
    }
    left
}

/// Fields the rows give only beside another (`tz` with `cron`).
const COMPANIONS: &[&str] = &[
    "command",
    "argv",
    "node",
    "watch_ignore",
    "restart_dependents",
    "jitter",
    "tz",
    "tty_size",
    "owner_grace",
];

#[test]
fn the_cli_and_mcp_take_every_field_and_each_other_gap_is_named() {
    let everything: BTreeSet<String> = Asked::fields().into_iter().collect();
    // Fields no row covers: each front end takes them; they are read
    // the same way (a yes or no, a text) as a covered one.
    let unrowed: BTreeSet<&str> = [
        "after",
        "parent",
        "persistent",
        "overlap",
        "run_now",
        "catch_up",
        "watch_debounce",
        "memory_max",
        "cpu_max",
        "pids_max",
    ]
    .into();
    let mut rowed = gaps(|_| true, COMPANIONS);
    for f in &unrowed {
        assert!(everything.contains(*f), "{f} is no field of Asked");
        rowed.remove(*f);
    }
    assert!(
        rowed.is_empty(),
        "fields no row covers and no list names: {rowed:?}"
    );
    // What a bpm.toml service leaves out: a service's name is its key,
    // up decides between ensure and replace, its dependencies are
    // depends_on (by service, not by record id: after, parent), and a
    // project's process outlives no caller (persistent). The other
    // unrowed fields it takes.
    let toml_gaps = gaps(|r| r.toml.is_some(), COMPANIONS);
    let mut expected: BTreeSet<String> = ["name", "ensure", "replace"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    expected.extend(unrowed.iter().map(|f| (*f).to_owned()));
    assert_eq!(toml_gaps, expected, "what a bpm.toml service leaves out");
}

#[test]
fn web_form_leaves_out() {
    // The page's start form is short on purpose: a command, its
    // directory and environment, a name, a group, a timeout, a restart
    // policy and one readiness check. Everything else is for the CLI,
    // MCP and project files.
    let left = gaps(|r| r.form.is_some(), &["command", "argv"]);
    let expected: BTreeSet<String> = [
        "after",
        "backoff",
        "catch_up",
        "clean_env",
        "cpu_max",
        "cron",
        "delay",
        "ensure",
        "env_file",
        "every",
        "failover",
        "grace",
        "health",
        "idle_after",
        "jitter",
        "kind",
        "labels",
        "leader_only",
        "max_restarts",
        "memory_max",
        "metadata",
        "node",
        "node_labels",
        "nofile",
        "on_exit",
        "overlap",
        "owner",
        "owner_grace",
        "parent",
        "persistent",
        "pids_max",
        "port",
        "priority",
        "ready_exec",
        "ready_http",
        "ready_notify",
        "ready_timeout",
        "replace",
        "restart_dependents",
        "run_now",
        "session",
        "stdin",
        "stop_signal",
        "tty",
        "tty_size",
        "tz",
        "watch",
        "watch_debounce",
        "watch_ignore",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(left, expected);
}
