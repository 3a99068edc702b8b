//! `bpm agents setup|remove TOOL`, run as a person runs it, against each
//! tool's documented file: empty, holding other servers, with comments.
//! What it writes is read back by real parsers of each format, not by
//! bpm's own: Python's `json` (Claude Code, Gemini CLI), Python's
//! `tomllib` (Codex) and VS Code's own `jsonc-parser` from npm (its
//! `mcp.json` takes comments), which tests/run.sh installs under target/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// A home of its own: the user's files go under it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("home"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bpm_home(&self) -> PathBuf {
        self.path().join("bpm-home")
    }

    fn bpm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("HOME", self.path())
            .env("BPM_HOME", self.bpm_home())
            .env_remove("CODEX_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .expect("bpm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.bpm(args);
        assert!(
            out.status.success(),
            "bpm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

/// bpm's own path, as setup writes it.
fn bpm_path() -> String {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_bpm"))
        .expect("bpm")
        .display()
        .to_string()
}

/// `file` as a parser of its format reads it.
fn parsed(tool: &str, file: &Path) -> Value {
    let out = match tool {
        "codex" => Command::new("python3")
            .args([
                "-c",
                "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))",
            ])
            .arg(file)
            .output(),
        "vscode" => Command::new("node")
            .args([
                "-e",
                "const p = require(process.argv[1] + '/jsonc-parser'); const errors = []; \
                 const v = p.parse(require('fs').readFileSync(process.argv[2], 'utf8'), errors, { allowTrailingComma: false }); \
                 if (errors.length) { console.error(JSON.stringify(errors)); process.exit(2); } \
                 console.log(JSON.stringify(v));",
            ])
            .arg(node_modules())
            .arg(file)
            .output(),
        _ => Command::new("python3")
            .args([
                "-c",
                "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))",
            ])
            .arg(file)
            .output(),
    }
    .expect("the parser runs");
    assert!(
        out.status.success(),
        "{tool}'s parser refuses {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// Where npm put VS Code's `jsonc-parser`: `BPM_NODE_MODULES`, as
/// tests/run.sh sets it, else target/npm under the workspace.
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("BPM_NODE_MODULES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm/node_modules"),
        PathBuf::from,
    );
    assert!(
        dir.join("jsonc-parser").is_dir(),
        "VS Code's jsonc-parser is not in {}: run tests/run.sh, which installs it with npm",
        dir.display()
    );
    dir
}

/// The servers a tool's parsed file lists.
fn servers<'a>(tool: &str, parsed: &'a Value) -> &'a Value {
    match tool {
        "codex" => &parsed["mcp_servers"],
        "vscode" => &parsed["servers"],
        _ => &parsed["mcpServers"],
    }
}

/// The user's file of each tool, under `home`.
fn user_file(tool: &str, home: &Path) -> PathBuf {
    home.join(match tool {
        "claude" => ".claude.json",
        "codex" => ".codex/config.toml",
        "gemini" => ".gemini/settings.json",
        _ => ".config/Code/User/mcp.json",
    })
}

const TOOLS: [&str; 4] = ["claude", "codex", "gemini", "vscode"];

#[test]
fn every_tool_gets_its_documented_entry_and_setting_up_again_changes_nothing() {
    let home = Home::new();
    for tool in TOOLS {
        let said = home.ok(&["agents", "setup", tool]);
        let file = user_file(tool, home.path());
        assert!(said.contains(&file.display().to_string()), "{said}");
        let parsed = parsed(tool, &file);
        let entry = &servers(tool, &parsed)["bpm"];
        assert_eq!(entry["command"], bpm_path(), "{tool}: {parsed}");
        assert_eq!(entry["args"], json!(["mcp"]), "{tool}: {parsed}");
        assert_eq!(
            entry["env"]["BPM_HOME"],
            home.bpm_home().display().to_string(),
            "{tool}: the agent's bpm finds this daemon: {parsed}"
        );
        let typed = matches!(tool, "claude" | "vscode");
        assert_eq!(entry["type"] == "stdio", typed, "{tool}: {parsed}");

        let written = std::fs::read(&file).expect("file");
        let again = home.ok(&["agents", "setup", tool]);
        assert!(again.contains("already"), "{again}");
        assert_eq!(std::fs::read(&file).expect("file"), written);
        let mut backup = file.clone().into_os_string();
        backup.push(".bpm-backup");
        assert!(!Path::new(&backup).exists(), "a new file needs no backup");

        let removed = home.ok(&["agents", "remove", tool]);
        assert!(removed.contains("deleted"), "{removed}");
        assert!(!file.exists(), "{tool}: setup made it, remove deletes it");
        let none = home.ok(&["agents", "remove", tool]);
        assert!(none.contains("not set up"), "{none}");
    }
}

/// A project's files as people keep them: other servers, other keys,
/// comments where the format takes them.
fn existing(tool: &str) -> (&'static str, &'static str) {
    match tool {
        "claude" => (
            ".mcp.json",
            "{\n  \"mcpServers\": {\n    \"files\": {\n      \"type\": \"stdio\",\n      \"command\": \"npx\",\n      \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \".\"]\n    }\n  }\n}\n",
        ),
        "codex" => (
            ".codex/config.toml",
            "# Codex, as I like it\nmodel = \"gpt-5\"\n\n[mcp_servers.files] # the file system\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \".\"]\n\n[tui]\nnotifications = true\n",
        ),
        "gemini" => (
            ".gemini/settings.json",
            "{\n  \"theme\": \"GitHub\",\n  \"mcpServers\": {\n    \"files\": {\n      \"command\": \"npx\",\n      \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \".\"],\n      \"trust\": false\n    }\n  }\n}\n",
        ),
        _ => (
            ".vscode/mcp.json",
            "{\n  // Servers for this workspace.\n  \"inputs\": [],\n  \"servers\": {\n    /* the file system */\n    \"files\": {\n      \"type\": \"stdio\",\n      \"command\": \"npx\",\n      \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"${workspaceFolder}\"]\n    }\n  }\n}\n",
        ),
    }
}

#[test]
fn existing_files_keep_their_servers_keys_and_comments_and_come_back_byte_for_byte() {
    let home = Home::new();
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().display().to_string();
    for tool in TOOLS {
        let (name, original) = existing(tool);
        let file = project.path().join(name);
        std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
        std::fs::write(&file, original).expect("write");
        let before = parsed(tool, &file);

        // A dry run says what would change and writes nothing.
        let diff = home.ok(&["agents", "setup", tool, "--project", &dir, "--dry-run"]);
        assert!(
            diff.lines()
                .any(|l| l.starts_with('+') && l.contains("bpm")),
            "{tool}: {diff}"
        );
        assert_eq!(std::fs::read_to_string(&file).expect("file"), original);

        home.ok(&["agents", "setup", tool, "--project", &dir]);
        let text = std::fs::read_to_string(&file).expect("file");
        for comment in [
            "# Codex, as I like it",
            "# the file system",
            "// Servers",
            "/* the file system */",
        ] {
            if original.contains(comment) {
                assert!(text.contains(comment), "{tool} lost {comment:?}:\n{text}");
            }
        }
        let after = parsed(tool, &file);
        assert_eq!(
            servers(tool, &after)["files"],
            servers(tool, &before)["files"],
            "{tool}: {after}"
        );
        assert_eq!(servers(tool, &after)["bpm"]["command"], bpm_path());
        for key in ["model", "tui", "theme", "inputs"] {
            assert_eq!(after[key], before[key], "{tool}: {key}");
        }
        let mut backup = file.clone().into_os_string();
        backup.push(".bpm-backup");
        assert_eq!(std::fs::read_to_string(&backup).expect("backup"), original);

        let said = home.ok(&["agents", "remove", tool, "--project", &dir]);
        assert!(said.contains("as it was"), "{said}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("file"),
            original,
            "{tool}: restored byte for byte"
        );
        assert!(!Path::new(&backup).exists());
    }
}

#[test]
fn an_edit_made_after_setup_stays_when_bpm_is_taken_out() {
    let home = Home::new();
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().display().to_string();
    let file = project.path().join(".mcp.json");
    std::fs::write(&file, "{\"mcpServers\": {}}\n").expect("write");
    home.ok(&["agents", "setup", "claude", "--project", &dir]);
    // The person adds a server of their own, by hand.
    let text = std::fs::read_to_string(&file).expect("file");
    let edited = text.replacen(
        "\"mcpServers\": {",
        "\"mcpServers\": {\n    \"mine\": {\"command\": \"my-server\"},",
        1,
    );
    std::fs::write(&file, &edited).expect("write");
    let said = home.ok(&["agents", "remove", "claude", "--project", &dir]);
    assert!(said.contains("took bpm's entry out"), "{said}");
    let after = parsed("claude", &file);
    assert_eq!(
        after["mcpServers"]["mine"]["command"], "my-server",
        "{after}"
    );
    assert!(after["mcpServers"].get("bpm").is_none(), "{after}");
    let mut backup = file.into_os_string();
    backup.push(".bpm-backup");
    assert!(
        !Path::new(&backup).exists(),
        "a backup older than the edit would undo it"
    );
}

#[test]
fn a_file_that_does_not_parse_is_named_with_its_line_and_left_as_it_was() {
    let home = Home::new();
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().display().to_string();
    for (tool, name, text, line) in [
        (
            "claude",
            ".mcp.json",
            "{\n  \"mcpServers\": {\n    \"a\": ]\n}\n",
            "line 3",
        ),
        (
            "codex",
            ".codex/config.toml",
            "model = \"x\"\n[mcp_servers\n",
            "line 2",
        ),
    ] {
        let file = project.path().join(name);
        std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
        std::fs::write(&file, text).expect("write");
        let out = home.bpm(&["agents", "setup", tool, "--project", &dir]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains(&file.display().to_string()) && err.contains(line),
            "{tool}: {err}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).expect("file"), text);
        let mut backup = file.clone().into_os_string();
        backup.push(".bpm-backup");
        assert!(!Path::new(&backup).exists());
    }
    let out = home.bpm(&["agents", "setup", "claude", "--project", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--project /no/such/dir"));
    let out = home.bpm(&["agents", "setup", "cursor"]);
    assert_eq!(out.status.code(), Some(2), "clap names the tools it takes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("claude, codex, gemini, vscode"));
}

/// `--wrap-servers`: every stdio server the file lists runs through `bpm
/// mcp-run`, its other keys kept; a remote server is left alone; setting up
/// again changes nothing; `remove` puts the file back byte for byte, or,
/// after another edit, unwraps the servers in place.
#[test]
fn wrap_servers_runs_each_stdio_server_through_mcp_run_and_remove_unwraps_it() {
    let home = Home::new();
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().display().to_string();
    let remote = |tool: &str| match tool {
        "codex" => "\n[mcp_servers.remote]\nurl = \"https://example.com/mcp\"\n".to_owned(),
        _ => String::new(),
    };
    for tool in TOOLS {
        let (name, original) = existing(tool);
        let original = format!("{original}{}", remote(tool));
        let file = project.path().join(name);
        std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
        std::fs::write(&file, &original).expect("write");
        let before = parsed(tool, &file);

        home.ok(&["agents", "setup", tool, "--project", &dir, "--wrap-servers"]);
        let after = parsed(tool, &file);
        let files = &servers(tool, &after)["files"];
        assert_eq!(files["command"], bpm_path(), "{tool}: {after}");
        let mut want = vec![json!("mcp-run"), json!("--"), json!("npx")];
        want.extend(
            servers(tool, &before)["files"]["args"]
                .as_array()
                .expect("args")
                .iter()
                .cloned(),
        );
        assert_eq!(files["args"], Value::Array(want), "{tool}");
        for key in ["type", "trust"] {
            assert_eq!(
                files[key],
                servers(tool, &before)["files"][key],
                "{tool}: {key}"
            );
        }
        if tool == "codex" {
            assert_eq!(
                servers(tool, &after)["remote"],
                servers(tool, &before)["remote"]
            );
        }
        assert_eq!(servers(tool, &after)["bpm"]["args"], json!(["mcp"]));
        let said = home.ok(&["agents", "setup", tool, "--project", &dir, "--wrap-servers"]);
        assert!(said.contains("already"), "{tool}: {said}");

        home.ok(&["agents", "remove", tool, "--project", &dir]);
        assert_eq!(
            std::fs::read_to_string(&file).expect("file"),
            original,
            "{tool}: restored byte for byte"
        );

        // Edited after setup: the servers are unwrapped in place.
        home.ok(&["agents", "setup", tool, "--project", &dir, "--wrap-servers"]);
        let mut backup = file.clone().into_os_string();
        backup.push(".bpm-backup");
        std::fs::remove_file(&backup).expect("backup");
        home.ok(&["agents", "remove", tool, "--project", &dir]);
        let unwrapped = parsed(tool, &file);
        assert_eq!(
            servers(tool, &unwrapped)["files"],
            servers(tool, &before)["files"],
            "{tool}: {unwrapped}"
        );
        assert!(servers(tool, &unwrapped).get("bpm").is_none(), "{tool}");
        std::fs::remove_file(&file).expect("clean");
    }
}
