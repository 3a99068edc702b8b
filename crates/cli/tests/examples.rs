//! The examples in README.md and docs/ run as a reader copies them: every
//! project file shown is `examples/shop/bpm.toml`, which comes up here
//! with the scripts beside it; every configuration shown is read by the
//! daemon's own loader; every JSON shown parses; every `bpm` command shown
//! in a shell block is taken by bpm's own parser as written.

use std::path::{Path, PathBuf};

mod support;
use support::bpm::Bpm;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("root")
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The fenced blocks of `lang` in `page`, each with the line it starts on.
fn blocks(page: &Path, lang: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(page).expect("page");
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_end() == format!("```{lang}") => open = Some((n + 1, String::new())),
            Some(_) if line.trim_end() == "```" => out.extend(open.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Every `bpm.toml` shown is the example's file, and the example comes up
/// as the README says (`bpm up --wait`): the database ready on its log
/// line, the migration run once to exit 0, the API serving on a port bpm
/// handed out with its `.env` read, two workers; `bpm down` stops it all.
#[test]
fn every_project_file_shown_is_the_example_and_it_comes_up() {
    let example = root().join("examples/shop");
    let file = std::fs::read_to_string(example.join("bpm.toml")).expect("examples/shop/bpm.toml");
    let mut shown = 0;
    for page in pages() {
        for (line, body) in blocks(&page, "toml") {
            if body.starts_with("[project]") {
                assert_eq!(
                    body,
                    file,
                    "{}:{line} shows a project file other than examples/shop/bpm.toml",
                    page.display()
                );
                shown += 1;
            }
        }
    }
    assert!(
        shown >= 2,
        "README.md and docs/projects.md show the project"
    );

    // As a reader would: a copy of the folder, `bpm up` in it.
    let dir = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(&example).expect("examples/shop") {
        let path = entry.expect("entry").path();
        let to = dir.path().join(path.file_name().expect("name"));
        std::fs::copy(&path, &to).expect("copy keeps the mode");
    }
    let bpm = Bpm::new();
    let up = bpm
        .cmd(&["up", "--wait", "--wait-timeout", "60s"])
        .current_dir(dir.path())
        .output()
        .expect("bpm up");
    let said = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{:?}: {said}{}",
        up.status,
        String::from_utf8_lossy(&up.stderr)
    );
    let started: Vec<&str> = said
        .lines()
        .filter_map(|l| l.strip_prefix("started"))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        started,
        ["db", "migrate", "api", "worker", "worker.2"],
        "{said}"
    );
    let listed = bpm.json(&["ps", "--all", "--project", "shop", "--json"]);
    let records = listed.as_array().expect("list");
    let summary: Vec<(String, String)> = records
        .iter()
        .map(|r| (r["name"].to_string(), r["state"].to_string()))
        .collect();
    let state = |service: &str| {
        records
            .iter()
            .find(|r| r["labels"]["bpm.service"] == service)
            .unwrap_or_else(|| panic!("{service} in {summary:?}"))
            .clone()
    };
    assert_eq!(state("migrate")["state"], "completed", "{summary:?}");
    assert_eq!(state("migrate")["exit_code"], 0, "{summary:?}");
    for service in ["db", "api", "worker", "worker.2"] {
        assert_eq!(state(service)["state"], "running", "{summary:?}");
    }
    let api = state("api");
    let port = api["port"].as_u64().expect("a handed-out port");
    let pid = api["pid"].as_u64().expect("pid");
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("the API's environment");
    let env = String::from_utf8_lossy(&env);
    assert!(
        env.split('\0').any(|v| v == "SHOP_CURRENCY=EUR"),
        ".env read"
    );
    assert!(env.split('\0').any(|v| v == format!("PORT={port}")), "PORT");
    let page = std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).expect("port")));
    assert!(page.is_ok(), "the API listens on {port}");
    let db_log = bpm.ok(&["logs", "shop/db"]);
    assert!(db_log.contains("ready to accept connections"), "{db_log}");

    let down = bpm
        .cmd(&["down"])
        .current_dir(dir.path())
        .output()
        .expect("bpm down");
    assert!(down.status.success(), "{down:?}");
    let live = bpm.json(&["ps", "--project", "shop", "--json"]);
    assert_eq!(
        live.as_array().map(Vec::len),
        Some(0),
        "still live after down"
    );
    bpm.ok(&["daemon", "stop", "--kill-all"]);
}

/// Every configuration shown (`$BPM_HOME/config.toml`, whole or one
/// section) is taken by the loader the daemon uses, which refuses an
/// unknown key by name.
#[test]
fn every_configuration_shown_is_taken_by_the_daemons_loader() {
    let mut shown = 0;
    for page in pages() {
        for (line, body) in blocks(&page, "toml") {
            if body.starts_with("[project]") {
                continue;
            }
            let home = tempfile::tempdir().expect("home");
            std::fs::write(home.path().join("config.toml"), &body).expect("config");
            if let Err(e) = bpm::config::Config::load(home.path()) {
                panic!("{}:{line}: {e}", page.display());
            }
            shown += 1;
        }
    }
    assert!(
        shown >= 4,
        "daemon.md, mcp.md and nodes.md show configurations"
    );
}

/// Every JSON shown parses; an MCP entry names `bpm` and its arguments.
#[test]
fn every_json_shown_parses() {
    let mut shown = 0;
    for page in pages() {
        for (line, body) in blocks(&page, "json") {
            let value: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{}:{line}: {e}", page.display()));
            let entry = value["mcpServers"].get("bpm").unwrap_or(&value);
            assert_eq!(entry["command"], "bpm", "{}:{line}", page.display());
            assert!(entry["args"].is_array(), "{}:{line}", page.display());
            shown += 1;
        }
    }
    assert!(shown >= 2, "agents.md and mcp.md show MCP entries");
}

/// The `bpm` commands of a shell line: split at `;`, `|`, `&&`, `$(`,
/// `)` and a redirection outside quotes, after its comment is cut; those
/// that start with `bpm`.
fn bpm_commands(line: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => break,
            (None, ';' | '|' | '&' | '(' | ')' | '>' | '<') => {
                parts.push(String::new());
                previous = c;
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("a part").push(c);
        previous = c;
    }
    parts
        .into_iter()
        .map(|p| p.trim().trim_end_matches('$').trim().to_owned())
        .filter(|p| p == "bpm" || p.starts_with("bpm "))
        .collect()
}

/// Every `bpm` command in a shell block of README.md or docs/ is one the
/// command line takes as written: its command, flags and values. What it
/// runs (`cargo test`, `npm run dev`) is the reader's own; bpm's part is
/// checked here, by bpm's own parser.
#[test]
fn every_bpm_command_shown_is_taken_as_written() {
    use clap::Parser as _;
    let mut taken = 0;
    let mut refused = Vec::new();
    for page in pages() {
        for (start, body) in blocks(&page, "sh") {
            // A line ending in `\` goes on on the next.
            let mut lines: Vec<(usize, String)> = Vec::new();
            let mut goes_on = false;
            for (n, line) in body.lines().enumerate() {
                match lines.last_mut() {
                    Some((_, joined)) if goes_on => joined.push_str(line),
                    _ => lines.push((n, line.to_owned())),
                }
                goes_on = line.ends_with('\\');
                if goes_on && let Some((_, joined)) = lines.last_mut() {
                    joined.pop();
                }
            }
            for (n, line) in lines {
                for command in bpm_commands(&line) {
                    let at = format!("{}:{}", page.display(), start + n + 1);
                    let words = shell_words::split(&command)
                        .unwrap_or_else(|e| panic!("{at}: `{command}` does not split: {e}"));
                    match bpm::cli::Cli::try_parse_from(&words) {
                        Ok(_) => taken += 1,
                        Err(e) => refused.push(format!("{at}: `{command}`: {}", e.kind())),
                    }
                }
            }
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    // README's tour alone shows more than twenty.
    assert!(taken > 40, "only {taken} bpm commands found");
    eprintln!("NOTE: {taken} bpm commands shown in README.md and docs/ are taken as written");
}

#[test]
fn a_shell_line_gives_its_bpm_commands() {
    assert_eq!(
        bpm_commands(r#"id=$(bpm track "migrate db"); bpm progress $id 40 "a; b" # c"#),
        ["bpm track \"migrate db\"", "bpm progress $id 40 \"a; b\""]
    );
    assert_eq!(
        bpm_commands("seq 100 | bpm run --from - -- ./x.sh   # one per line"),
        ["bpm run --from - -- ./x.sh"]
    );
    assert_eq!(
        bpm_commands("bpm input repl 'print(1)'"),
        ["bpm input repl 'print(1)'"]
    );
    assert_eq!(bpm_commands("bpm man > bpm.1"), ["bpm man"]);
    assert!(bpm_commands("cargo run -p bpm-cli -- ps").is_empty());
}
