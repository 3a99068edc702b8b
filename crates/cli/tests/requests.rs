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
    /// MCP's arguments, as JSON.
    mcp: &'static str,
    toml: Option<&'static str>,
    /// The page's form, as JSON.
    form: Option<&'static str>,
}

/// Every row of the table.
const ROWS: &[Row] = &[
    Row {
        field: "timeout",
        cli: &["--timeout", "5s"],
        mcp: r#"{"timeout": "5s"}"#,
        toml: Some(r#"timeout = "5s""#),
        form: Some(r#"{"timeout": "5s"}"#),
    },
    Row {
        field: "grace",
        cli: &["--grace", "2s"],
        mcp: r#"{"grace": "2s"}"#,
        toml: Some(r#"grace = "2s""#),
        form: None,
    },
    Row {
        field: "restart",
        cli: &["--restart", "on-failure"],
        mcp: r#"{"restart": "on-failure"}"#,
        toml: Some(r#"restart = "on-failure""#),
        form: Some(r#"{"restart": "on-failure"}"#),
    },
    Row {
        field: "max_restarts",
        cli: &["--max-restarts", "3"],
        mcp: r#"{"max_restarts": 3}"#,
        toml: Some("max_restarts = 3"),
        form: None,
    },
    Row {
        field: "backoff",
        cli: &["--backoff", "2s"],
        mcp: r#"{"backoff": "2s"}"#,
        toml: Some(r#"backoff = "2s""#),
        form: None,
    },
    Row {
        field: "stop_signal",
        cli: &["--stop-signal", "INT"],
        mcp: r#"{"stop_signal": "INT"}"#,
        toml: Some(r#"stop_signal = "INT""#),
        form: None,
    },
    Row {
        field: "stop_command",
        cli: &["--stop-command", "kill -INT $PPID"],
        mcp: r#"{"stop_command": "kill -INT $PPID"}"#,
        toml: Some(r#"stop_command = "kill -INT $PPID""#),
        form: None,
    },
    Row {
        field: "stop_command_timeout",
        cli: &["--stop-command", "true", "--stop-command-timeout", "3s"],
        mcp: r#"{"stop_command": "true", "stop_command_timeout": "3s"}"#,
        toml: Some(
            r#"stop_command = "true"
stop_command_timeout = "3s""#,
        ),
        form: None,
    },
    Row {
        field: "log_archive",
        cli: &["--log-archive", "5"],
        mcp: r#"{"log_archive": 5}"#,
        toml: Some("log_archive = 5"),
        form: None,
    },
    Row {
        field: "success_codes",
        cli: &["--success-code", "130", "--success-code", "2"],
        mcp: r#"{"success_codes": [130, 2]}"#,
        toml: Some("success_codes = [130, 2]"),
        form: None,
    },
    Row {
        field: "priority",
        cli: &["--priority", "5"],
        mcp: r#"{"priority": 5}"#,
        toml: Some("priority = 5"),
        form: None,
    },
    Row {
        field: "delay",
        cli: &["--delay", "1s"],
        mcp: r#"{"delay": "1s"}"#,
        toml: Some(r#"delay = "1s""#),
        form: None,
    },
    Row {
        field: "at",
        cli: &["--at", "12:30"],
        mcp: r#"{"at": "12:30"}"#,
        toml: None,
        form: None,
    },
    Row {
        field: "idle_after",
        cli: &["--idle-after", "3s"],
        mcp: r#"{"idle_after": "3s"}"#,
        toml: Some(r#"idle_after = "3s""#),
        form: None,
    },
    Row {
        field: "ready_pattern",
        cli: &["--ready-pattern", "^up$"],
        mcp: r#"{"ready_pattern": "^up$"}"#,
        toml: Some(r#"ready = { log = "^up$" }"#),
        form: Some(r#"{"ready_pattern": "^up$"}"#),
    },
    Row {
        field: "ready_port",
        cli: &["--ready-port", "8080"],
        mcp: r#"{"ready_port": 8080}"#,
        toml: Some("ready = { port = 8080 }"),
        form: Some(r#"{"ready_port": 8080}"#),
    },
    Row {
        field: "ready_http",
        cli: &["--ready-http", "http://127.0.0.1:8080/health"],
        mcp: r#"{"ready_http": "http://127.0.0.1:8080/health"}"#,
        toml: Some(r#"ready = { http = "http://127.0.0.1:8080/health" }"#),
        form: None,
    },
    Row {
        field: "ready_exec",
        cli: &["--ready-exec", "true"],
        mcp: r#"{"ready_exec": "true"}"#,
        toml: Some(r#"ready = { exec = "true" }"#),
        form: None,
    },
    Row {
        field: "ready_notify",
        cli: &["--ready-notify"],
        mcp: r#"{"ready_notify": true}"#,
        toml: Some("ready = { notify = true }"),
        form: None,
    },
    Row {
        field: "ready_timeout",
        cli: &["--ready-timeout", "9s"],
        mcp: r#"{"ready_timeout": "9s"}"#,
        toml: Some(r#"ready = { timeout = "9s" }"#),
        form: None,
    },
    Row {
        field: "ready_initial_delay",
        cli: &["--ready-exec", "true", "--ready-initial-delay", "2s"],
        mcp: r#"{"ready_exec": "true", "ready_initial_delay": "2s"}"#,
        toml: Some(r#"ready = { exec = "true", initial_delay = "2s" }"#),
        form: None,
    },
    Row {
        field: "ready_every",
        cli: &["--ready-port", "8080", "--ready-every", "1s"],
        mcp: r#"{"ready_port": 8080, "ready_every": "1s"}"#,
        toml: Some(r#"ready = { port = 8080, every = "1s" }"#),
        form: None,
    },
    Row {
        field: "ready_check_timeout",
        cli: &["--ready-exec", "true", "--ready-check-timeout", "1s"],
        mcp: r#"{"ready_exec": "true", "ready_check_timeout": "1s"}"#,
        toml: Some(r#"ready = { exec = "true", timeout = "1s" }"#),
        form: None,
    },
    Row {
        field: "ready_successes",
        cli: &["--ready-exec", "true", "--ready-successes", "2"],
        mcp: r#"{"ready_exec": "true", "ready_successes": 2}"#,
        toml: Some(r#"ready = { exec = "true", successes = 2 }"#),
        form: None,
    },
    Row {
        field: "ready_failures",
        cli: &["--ready-exec", "true", "--ready-failures", "20"],
        mcp: r#"{"ready_exec": "true", "ready_failures": 20}"#,
        toml: Some(r#"ready = { exec = "true", failures = 20 }"#),
        form: None,
    },
    Row {
        field: "health",
        cli: &[
            "--health-http",
            "http://127.0.0.1:9/h",
            "--health-every",
            "3s",
            "--health-failures",
            "2",
            "--health-initial-delay",
            "1s",
            "--health-successes",
            "2",
        ],
        mcp: r#"{"health": {"http": "http://127.0.0.1:9/h", "every": "3s", "failures": 2, "initial_delay": "1s", "successes": 2}}"#,
        toml: Some(
            r#"health = { http = "http://127.0.0.1:9/h", every = "3s", failures = 2, initial_delay = "1s", successes = 2 }"#,
        ),
        form: None,
    },
    Row {
        field: "labels",
        cli: &["--label", "a=b"],
        mcp: r#"{"labels": {"a": "b"}}"#,
        toml: Some(r#"labels = { a = "b" }"#),
        form: None,
    },
    Row {
        field: "node_labels",
        cli: &["--node", "any", "--node-label", "gpu=yes"],
        mcp: r#"{"node": "any", "node_labels": {"gpu": "yes"}}"#,
        toml: Some(
            r#"node = "any"
node_labels = { gpu = "yes" }"#,
        ),
        form: None,
    },
    Row {
        field: "kind",
        cli: &["--kind", "build"],
        mcp: r#"{"kind": "build"}"#,
        toml: Some(r#"kind = "build""#),
        form: None,
    },
    Row {
        field: "group",
        cli: &["--group", "g1"],
        mcp: r#"{"group": "g1"}"#,
        toml: Some(r#"group = "g1""#),
        form: Some(r#"{"group": "g1"}"#),
    },
    Row {
        field: "port",
        cli: &["--port", "auto"],
        mcp: r#"{"port": "auto"}"#,
        toml: Some(r#"port = "auto""#),
        form: None,
    },
    Row {
        field: "env",
        cli: &["--env", "A=1"],
        mcp: r#"{"env": {"A": "1"}}"#,
        toml: Some(r#"env = { A = "1" }"#),
        form: Some(r#"{"env": "A=1"}"#),
    },
    Row {
        field: "env_file",
        cli: &["--env-file", "vars.env"],
        mcp: r#"{"env_file": ["vars.env"]}"#,
        toml: Some(r#"env_file = "vars.env""#),
        form: None,
    },
    Row {
        field: "cwd",
        cli: &["--cwd", "sub"],
        mcp: r#"{"cwd": "sub"}"#,
        toml: Some(r#"cwd = "sub""#),
        form: Some(r#"{"cwd": "sub"}"#),
    },
    Row {
        field: "watch",
        cli: &[
            "--watch",
            "src",
            "--watch-ignore",
            "*.log",
            "--restart-dependents",
        ],
        mcp: r#"{"watch": ["src"], "watch_ignore": ["*.log"], "restart_dependents": true}"#,
        toml: Some(
            r#"watch = ["src"]
watch_ignore = ["*.log"]
restart_dependents = true"#,
        ),
        form: None,
    },
    Row {
        field: "every",
        cli: &["--every", "30s", "--jitter", "1s"],
        mcp: r#"{"every": "30s", "jitter": "1s"}"#,
        toml: Some(
            r#"every = "30s"
jitter = "1s""#,
        ),
        form: None,
    },
    Row {
        field: "cron",
        cli: &["--cron", "*/5 * * * *", "--tz", "Asia/Tokyo"],
        mcp: r#"{"cron": "*/5 * * * *", "tz": "Asia/Tokyo"}"#,
        toml: Some(
            r#"cron = "*/5 * * * *"
tz = "Asia/Tokyo""#,
        ),
        form: None,
    },
    Row {
        field: "nofile",
        cli: &["--nofile", "256"],
        mcp: r#"{"nofile": 256}"#,
        toml: Some("nofile = 256"),
        form: None,
    },
    Row {
        field: "tty",
        cli: &["--tty", "--tty-size", "100x30"],
        mcp: r#"{"tty": true, "tty_size": "100x30"}"#,
        toml: Some(
            r#"tty = true
tty_size = "100x30""#,
        ),
        form: None,
    },
    Row {
        field: "stdin",
        cli: &["--stdin"],
        mcp: r#"{"stdin": true}"#,
        toml: Some("stdin = true"),
        form: None,
    },
    Row {
        field: "on_exit",
        cli: &["--on-exit", "echo done"],
        mcp: r#"{"on_exit": "echo done"}"#,
        toml: Some(r#"on_exit = "echo done""#),
        form: None,
    },
    Row {
        field: "failover",
        cli: &["--failover", "--restart", "always"],
        mcp: r#"{"failover": true, "restart": "always"}"#,
        toml: Some(
            r#"failover = true
restart = "always""#,
        ),
        form: None,
    },
    Row {
        field: "leader_only",
        cli: &["--leader-only"],
        mcp: r#"{"leader_only": true}"#,
        toml: Some("leader_only = true"),
        form: None,
    },
    Row {
        field: "metadata",
        cli: &["--metadata", r#"{"k":1}"#],
        mcp: r#"{"metadata": {"k": 1}}"#,
        toml: Some("metadata = { k = 1 }"),
        form: None,
    },
    Row {
        field: "session",
        cli: &["--session", "s1"],
        mcp: r#"{"session": "s1"}"#,
        toml: Some(r#"session = "s1""#),
        form: None,
    },
    Row {
        field: "owner",
        cli: &["--owner", "session:x", "--owner-grace", "1m"],
        mcp: r#"{"owner": ["session:x"], "owner_grace": "1m"}"#,
        toml: Some(
            r#"owner = ["session:x"]
owner_grace = "1m""#,
        ),
        form: None,
    },
    Row {
        field: "clean_env",
        cli: &["--clean-env"],
        mcp: r#"{"clean_env": true}"#,
        toml: Some("clean_env = true"),
        form: None,
    },
    Row {
        field: "name",
        cli: &["--name", "n1"],
        mcp: r#"{"name": "n1"}"#,
        toml: None,
        form: Some(r#"{"name": "n1"}"#),
    },
    Row {
        field: "ensure",
        cli: &["--name", "n1", "--ensure"],
        mcp: r#"{"name": "n1", "ensure": true}"#,
        toml: None,
        form: None,
    },
    Row {
        field: "replace",
        cli: &["--name", "n1", "--replace"],
        mcp: r#"{"name": "n1", "replace": true}"#,
        toml: None,
        form: None,
    },
];

/// A directory with what the rows name: `sub/`, `src/`, `vars.env`.
fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("a row's JSON")
}

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
    // 2026-11-29T10:00:00Z, what `at` counts from.
    ctx.now = Some(bpm_domain::Timestamp::from_millis(1_795_946_400_000));
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
    for row in ROWS {
        let from_cli =
            by_cli(row.cli, dir.path()).unwrap_or_else(|e| panic!("{}: cli: {e}", row.field));
        let from_mcp = by_mcp(&json(row.mcp), dir.path())
            .unwrap_or_else(|e| panic!("{}: mcp: {e}", row.field));
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
        if let Some(form) = row.form {
            let from_form = by_form(&json(form), dir.path())
                .unwrap_or_else(|e| panic!("{}: form: {e}", row.field));
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
            field: "ready_failures",
            cli: &["--ready-pattern", "up", "--ready-failures", "3"],
            mcp: json!({"ready_pattern": "up", "ready_failures": 3}),
            toml: r#"ready = { log = "up", failures = 3 }"#,
        },
        Mistake {
            field: "ready_successes",
            cli: &["--ready-exec", "true", "--ready-successes", "0"],
            mcp: json!({"ready_exec": "true", "ready_successes": 0}),
            toml: r#"ready = { exec = "true", successes = 0 }"#,
        },
        Mistake {
            field: "stop_command_timeout",
            cli: &["--stop-command-timeout", "2s"],
            mcp: json!({"stop_command_timeout": "2s"}),
            toml: r#"stop_command_timeout = "2s""#,
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
    for row in ROWS.iter().filter(|r| covered(r)) {
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
    // A start time (`at`) is a request's, counted from when it is made: a
    // project file says `delay` instead.
    let mut expected: BTreeSet<String> = ["name", "ensure", "replace", "at"]
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
        "at",
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
        "log_archive",
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
        "ready_check_timeout",
        "ready_every",
        "ready_exec",
        "ready_failures",
        "ready_http",
        "ready_initial_delay",
        "ready_notify",
        "ready_successes",
        "ready_timeout",
        "replace",
        "restart_dependents",
        "run_now",
        "session",
        "stdin",
        "stop_command",
        "stop_command_timeout",
        "stop_signal",
        "success_codes",
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

/// A first restart delay longer than the usual longest (a minute) is its
/// own longest, through every front end: process-compose files ask for
/// five minutes, and nothing needs restarts sooner than asked.
#[test]
fn a_long_first_backoff_is_its_own_longest() {
    let dir = place();
    for spec in [
        by_cli(&["--backoff", "5m"], dir.path()),
        by_mcp(&json(r#"{"backoff": "5m"}"#), dir.path()),
        by_toml(r#"backoff = "5m""#, dir.path()),
    ] {
        let spec = spec.expect("taken");
        let backoff = spec.restart.backoff;
        assert_eq!(backoff.initial, bpm_domain::Span::from_secs(300));
        assert_eq!(backoff.max, bpm_domain::Span::from_secs(300));
    }
    let short = by_cli(&["--backoff", "2s"], dir.path()).expect("taken");
    assert_eq!(short.restart.backoff.max, bpm_domain::Span::from_secs(60));
}
