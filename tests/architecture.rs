//! The architecture's invariants, checked: the domain stays pure, the
//! layers depend only downwards, no two files of a crate need each other,
//! and `app` spawns and reads the clock only where it says why.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use bpm_tests::workspace_root;
use serde_json::Value;

/// Crates the domain must never reach, directly or through another crate:
/// async runtimes, async traits, Redis, OS and I/O crates.
const FORBIDDEN_IN_DOMAIN: &[&str] = &[
    "tokio",
    "async-trait",
    "futures",
    "futures-core",
    "futures-util",
    "async-std",
    "smol",
    "mio",
    "redis",
    "nix",
    "rustix",
    "libc",
    "socket2",
    "hyper",
    "reqwest",
    "rmcp",
    "tracing",
];

/// The only direct dependencies the domain may have: pure data and text
/// crates. `chrono`, `chrono-tz` and `croner` are calendar arithmetic over
/// compiled-in time zone data: schedules' due times. (`croner` turns on
/// `chrono`'s `clock` feature; the domain's source never calls `now()`,
/// which `the_domain_source_does_no_io_and_reads_no_clock` checks.) `proptest` comes only with the
/// domain's `proptest` feature (strategies for property tests of code built
/// on bpm), which no build of bpm turns on: the closure above, of the
/// domain built alone, is without it.
const ALLOWED_DIRECT_IN_DOMAIN: &[&str] = &[
    "chrono",
    "chrono-tz",
    "croner",
    "proptest",
    "regex",
    "serde",
    "serde_json",
    "thiserror",
    "uuid",
];

struct Graph {
    /// package id → (name, normal dependency ids)
    nodes: HashMap<String, (String, Vec<String>)>,
    by_name: HashMap<String, String>,
}

fn metadata() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let names: HashMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_owned(),
                p["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let mut nodes = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().expect("id").to_owned();
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .expect("kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().expect("pkg").to_owned())
            .collect();
        nodes.insert(id.clone(), (names[&id].clone(), deps));
    }
    let by_name = names
        .iter()
        .map(|(id, name)| (name.clone(), id.clone()))
        .collect();
    Graph { nodes, by_name }
}

impl Graph {
    fn direct(&self, package: &str) -> BTreeSet<String> {
        let id = &self.by_name[package];
        self.nodes[id]
            .1
            .iter()
            .map(|d| self.nodes[d].0.clone())
            .collect()
    }

    /// Every package reachable through normal dependencies, with the workspace's unified features.
    fn transitive(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.by_name[package].clone()];
        while let Some(id) = stack.pop() {
            for dep in &self.nodes[&id].1 {
                if seen.insert(self.nodes[dep].0.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }
}

/// What building `bpm-domain` alone compiles in, with the features it asks for
/// (cargo metadata would unify features with the rest of the workspace).
fn domain_build_closure() -> BTreeSet<String> {
    build_closure("bpm-domain")
}

/// What building `package` alone compiles in, itself included, with the
/// features it asks for.
fn build_closure(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_domain_depends_on_no_async_or_io_crate() {
    let graph = metadata();
    let reached = domain_build_closure();
    assert!(
        reached.contains("serde"),
        "the closure was read: {reached:?}"
    );
    let bad: Vec<_> = FORBIDDEN_IN_DOMAIN
        .iter()
        .filter(|c| reached.contains(**c))
        .collect();
    assert!(
        bad.is_empty(),
        "bpm-domain reaches {bad:?}; the domain must stay pure"
    );
    let direct = graph.direct("bpm-domain");
    let extra: Vec<_> = direct
        .iter()
        .filter(|d| !ALLOWED_DIRECT_IN_DOMAIN.contains(&d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "bpm-domain gained dependencies {extra:?}; if one is pure, add it to ALLOWED_DIRECT_IN_DOMAIN with a reason"
    );
}

#[test]
fn layers_depend_only_downwards() {
    let graph = metadata();
    let ours = |p: &str| -> BTreeSet<String> {
        graph
            .direct(p)
            .into_iter()
            .filter(|d| d.starts_with("bpm"))
            .collect()
    };
    assert!(
        ours("bpm-domain").is_empty(),
        "domain depends on no other layer"
    );
    assert_eq!(ours("bpm-ports"), BTreeSet::from(["bpm-domain".to_owned()]));
    assert_eq!(
        ours("bpm-adapters"),
        BTreeSet::from(["bpm-domain".to_owned(), "bpm-ports".to_owned()])
    );
    assert_eq!(
        ours("bpm-runtime"),
        BTreeSet::from(["bpm-domain".to_owned(), "bpm-ports".to_owned()]),
        "the engine drives the core through the ports and knows no adapter"
    );
    assert!(
        !graph.transitive("bpm-runtime").contains("redis"),
        "the engine knows no adapter's backend"
    );
    assert!(
        !graph.transitive("bpm-ports").contains("redis"),
        "ports know no adapter's backend"
    );
    for krate in [
        "bpm-domain",
        "bpm-ports",
        "bpm-adapters",
        "bpm-runtime",
        "bpm-mcp",
        "bpm-web",
    ] {
        let pulled = graph.transitive(krate);
        assert!(!pulled.contains("redis"), "{krate} pulls in redis");
    }
    assert_eq!(
        ours("bpm-embed"),
        BTreeSet::from([
            "bpm-adapters".to_owned(),
            "bpm-domain".to_owned(),
            "bpm-intake".to_owned(),
            "bpm-runtime".to_owned(),
            "bpm-ports".to_owned(),
        ]),
        "the embedding builder wires the engine to the adapters without a server, and brings projects up through intake"
    );
    let embedded = graph.transitive("bpm-embed");
    for server in ["axum", "rmcp", "redis"] {
        assert!(
            !embedded.contains(server),
            "an embedded engine (bpm-embed) pulls in {server}"
        );
    }
    // Built alone, with its default features, an embedded engine compiles
    // no file watcher (its `watch` feature adds one) and no proc-macro
    // builders, and fewer than 60 crates in all.
    // Built alone, it compiles no schema generator (intake's `schema`
    // feature, which MCP turns on), no project-file parser (its `files`
    // feature, embed's `project-files`) and no TLS (adapters' `tls`
    // feature, embed's `tls`, which HTTPS checks need).
    let alone = build_closure("bpm-embed");
    for heavy in [
        "rustls",
        "ring",
        "notify",
        "inotify",
        "globset",
        "derive_builder",
        "strum",
        "schemars",
        "toml",
        "serde_norway",
    ] {
        assert!(
            !alone.contains(heavy),
            "bpm-embed built alone pulls in {heavy}"
        );
    }
    assert!(
        alone.len() < 60,
        "bpm-embed built alone compiles {} crates: {alone:?}",
        alone.len()
    );
}

#[test]
fn intake_and_the_front_ends_stand_on_the_ports() {
    let graph = metadata();
    let ours = |p: &str| -> BTreeSet<String> {
        graph
            .direct(p)
            .into_iter()
            .filter(|d| d.starts_with("bpm"))
            .collect()
    };
    // The one way in: what a request asks for becomes a spec in
    // `bpm-intake`, which stands on the domain and the ports alone.
    assert_eq!(
        ours("bpm-intake"),
        BTreeSet::from(["bpm-domain".to_owned(), "bpm-ports".to_owned()]),
        "intake reads requests through the ports and knows no adapter"
    );
    // A crate per technology. The Redis store stands on the adapters
    // without a server; the front ends (MCP, the page) stand on the
    // ports and intake alone: the machine and the daemon reach them
    // through ports the wiring hands in, so they run on any
    // `ProcessManager` (ARCHITECTURE.md, invariant "front ends").
    assert_eq!(
        ours("bpm-redis"),
        BTreeSet::from([
            "bpm-adapters".to_owned(),
            "bpm-domain".to_owned(),
            "bpm-ports".to_owned(),
        ]),
        "bpm-redis's own crates"
    );
    let front_end = BTreeSet::from([
        "bpm-domain".to_owned(),
        "bpm-intake".to_owned(),
        "bpm-ports".to_owned(),
    ]);
    for krate in ["bpm-mcp", "bpm-web"] {
        assert_eq!(ours(krate), front_end, "{krate}'s own crates");
        assert!(
            !graph.transitive(krate).contains("bpm-adapters"),
            "{krate} reaches bpm-adapters"
        );
    }
}

/// The longest a source file of the workspace may be, in lines: past it, a
/// file holds more than one idea.
const MOST_LINES: usize = 1_200;

#[test]
fn no_file_is_over_1200_lines() {
    let long: Vec<String> = every_source()
        .into_iter()
        .map(|(path, text)| (path, text.lines().count()))
        .filter(|(_, lines)| *lines > MOST_LINES)
        .map(|(path, lines)| format!("{}: {lines}", path.display()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MOST_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The longest a function may be, in lines.
const MOST_FN_LINES: usize = 120;

/// Each function of `text` (a line `fn NAME` and the line closing it at
/// the same indentation), as its name and its length in lines.
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let body = body
            .strip_prefix("pub(crate) ")
            .or_else(|| body.strip_prefix("pub(super) "))
            .or_else(|| body.strip_prefix("pub "))
            .unwrap_or(body);
        let body = body.strip_prefix("async ").unwrap_or(body);
        let body = body.strip_prefix("const ").unwrap_or(body);
        let Some(rest) = body.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if line.trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
            out.push((name, end + 2));
        }
    }
    out
}

#[test]
fn no_function_is_over_120_lines() {
    let root = workspace_root();
    let files = every_source();
    let mut over = Vec::new();
    for (path, text) in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for (name, lines) in functions(text) {
            if lines > MOST_FN_LINES {
                over.push(format!(
                    "{rel}: {name} is {lines} lines (at most {MOST_FN_LINES})"
                ));
            }
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n"));
}

/// Every Rust source of the workspace: each crate's sources, tests,
/// benches and examples, and the end-to-end tests.
fn every_source() -> Vec<(std::path::PathBuf, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root.join("crates")).expect("crates") {
        let krate = dir.expect("a crate").path();
        for part in ["src", "tests", "benches", "examples"] {
            if krate.join(part).is_dir() {
                files.extend(sources(&krate.join(part)));
            }
        }
    }
    files.extend(sources(&root.join("tests")));
    files
}

/// The Rust sources under `dir`, with their text.
fn sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    out
}

#[test]
fn the_app_holds_no_lifecycle_rule() {
    // The core and its inputs are the engine's; lists of states or event
    // kinds are the domain's (`StateName::LIVE`, `EventKind::ends_record`).
    let forbidden = [
        "Supervisor",
        "Input::",
        "Effect::",
        "Lifecycle::",
        "Transition::",
        "EventKind::",
        ".apply(",
        "StateName::Pending",
        "StateName::Starting",
        "StateName::Stopping",
    ];
    let files = sources(&workspace_root().join("crates/cli/src"));
    assert!(
        files.len() >= 10,
        "found only {} app source files",
        files.len()
    );
    for (path, text) in files {
        // The one place a state is mapped to something: its colour in a table.
        if path.ends_with("cli/table.rs") {
            continue;
        }
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{} uses {word}: rules belong in bpm-domain, their driver in bpm-runtime",
                path.display()
            );
        }
    }
}

#[test]
fn the_app_spawns_and_reads_the_clock_only_where_it_says_why() {
    // The processes bpm manages are the spawner's; the cluster's and the
    // core's times are the drivers'. What `app` starts and times itself is
    // this list, each with its reason; a file that stops needing its entry
    // must leave the list too, so the list stays true.
    let spawns: &[(&str, &str)] = &[
        ("daemon.rs", "starts the daemon, and runs the on_exit hooks"),
        ("keeper.rs", "starts the keeper"),
        ("web.rs", "opens the page with xdg-open"),
        ("cli/unit.rs", "asks systemctl and loginctl for `bpm unit`"),
        (
            "cli/tui/mod.rs",
            "runs `bpm attach` for the tui's attach key, on the terminal it gave back",
        ),
        (
            "mcp_run.rs",
            "`bpm mcp-pipe` becomes the hosted MCP server (exec), inside its record",
        ),
        (
            "mcp_hub.rs",
            "`bpm mcp-hub` starts the shared MCP server, inside its record",
        ),
    ];
    let clocks: &[(&str, &str)] = &[
        (
            "daemon.rs",
            "waits at most 10 s for a daemon it starts to answer",
        ),
        (
            "keeper.rs",
            "waits at most 10 s for a keeper it starts to answer",
        ),
        (
            "cli/commands/mod.rs",
            "the deadline of `bpm wait --timeout`",
        ),
        ("cli/table.rs", "ages in tables"),
        (
            "cli/tui/mod.rs",
            "draws a busy writer's output at most once a frame (100 ms) after the last draw",
        ),
        (
            "mcp_hub.rs",
            "waits at most 30 s for a shared MCP server to listen",
        ),
    ];
    let spawn_words = ["Command::new(", "posix_spawn", "fork("];
    let clock_words = [
        "Instant::now()",
        "SystemTime::now()",
        "Utc::now()",
        "Local::now()",
        "clock_gettime",
    ];
    let src = workspace_root().join("crates/cli/src");
    let files = sources(&src);
    assert!(
        files.len() >= 10,
        "found only {} app source files",
        files.len()
    );
    let mut wrong = Vec::new();
    for (listed, words, what) in [
        (spawns, &spawn_words[..], "spawns"),
        (clocks, &clock_words[..], "reads the clock"),
    ] {
        for (path, text) in &files {
            let rel = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let uses = words.iter().any(|w| text.contains(w));
            let allowed = listed.iter().any(|(file, _)| *file == rel);
            if uses && !allowed {
                wrong.push(format!(
                    "crates/cli/src/{rel} {what}, and is not on the list of files that may"
                ));
            }
            if allowed && !uses {
                wrong.push(format!(
                    "crates/cli/src/{rel} no longer {what}: take it off the list"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn front_ends_run_on_the_port_not_on_a_client() {
    // The CLI's commands, the MCP server and the page take a
    // `ProcessManager`; which one (a daemon's client) is wiring's choice.
    let root = workspace_root();
    let mut files = sources(&root.join("crates/cli/src/cli"));
    files.extend(sources(&root.join("crates/mcp/src")));
    files.extend(sources(&root.join("crates/web/src")));
    assert!(
        files.len() >= 10,
        "found only {} front-end files",
        files.len()
    );
    for (path, text) in files {
        assert!(
            !text.contains("DaemonClient"),
            "{} names DaemonClient: front ends take the ProcessManager port",
            path.display()
        );
    }
}

#[test]
fn the_domain_source_does_no_io_and_reads_no_clock() {
    let dir = workspace_root().join("crates/domain/src");
    let forbidden = [
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "std::io::",
        "SystemTime::now",
        "Instant::now",
        "tokio",
        "async fn",
        ".await",
    ];
    let files = sources(&dir);
    for (path, text) in &files {
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{} uses {word}: the domain must stay pure",
                path.display()
            );
        }
    }
    let checked = files.len();
    assert!(checked >= 10, "found only {checked} domain source files");
}

/// A source file's module path within its crate: `cli/commands.rs` is
/// `["cli", "commands"]`, `cli/mod.rs` is `["cli"]`, `lib.rs` is `[]`.
fn module_of(src: &std::path::Path, file: &std::path::Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Names a module re-exports (`pub use spec::{ProcessSpec, Command};`,
/// `pub use self::a::B as C;`): (the module, the name it is known by
/// there) → the module the name comes from. A file that names
/// `crate::ProcessSpec` needs `spec`, not the crate root.
type Reexports = HashMap<(Vec<String>, String), Vec<String>>;

/// The `use` trees of `text`'s `pub use` and `pub(crate) use` items, each as
/// its path and the name it is known by: `a::{b::C, D as E}` is
/// (`a::b::C`, `C`) and (`a::D`, `E`).
fn reexported(text: &str) -> Vec<(Vec<String>, String)> {
    fn expand(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let mut base = prefix.to_vec();
            base.extend(
                tree[..open]
                    .split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            // Split at the commas outside nested braces.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => {
                        expand(&inner[start..i], &base, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&inner[start..], &base, out);
            return;
        }
        if tree.is_empty() || tree.ends_with('*') {
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim())),
            None => (tree, None),
        };
        let mut full = prefix.to_vec();
        full.extend(path.split("::").map(str::trim).map(str::to_owned));
        let name = alias.map_or_else(|| full.last().cloned().unwrap_or_default(), str::to_owned);
        out.push((full, name));
    }
    let mut out = Vec::new();
    for keyword in ["pub use ", "pub(crate) use "] {
        for (at, _) in text.match_indices(keyword) {
            let rest = &text[at + keyword.len()..];
            let tree: String = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            expand(&tree, &[], &mut out);
        }
    }
    out
}

/// Every re-export of a crate whose files are `files`, resolved to the
/// module each name is defined in (a re-export of a re-export followed).
fn reexports_of(
    src: &std::path::Path,
    files: &[(std::path::PathBuf, String)],
    modules: &BTreeSet<Vec<String>>,
) -> Reexports {
    let mut map = Reexports::new();
    for (path, text) in files {
        let me = module_of(src, path);
        for (full, name) in reexported(text) {
            // `crate::a::B` from the root, `self::a::B` and `a::B` from here.
            let (mut at, rest): (Vec<String>, &[String]) = match full.first().map(String::as_str) {
                Some("crate") => (Vec::new(), &full[1..]),
                Some("self") => (me.clone(), &full[1..]),
                Some("super") => (me[..me.len().saturating_sub(1)].to_vec(), &full[1..]),
                _ => (me.clone(), &full[..]),
            };
            for segment in rest {
                let mut longer = at.clone();
                longer.push(segment.clone());
                if !modules.contains(&longer) {
                    break;
                }
                at = longer;
            }
            if at != me {
                map.insert((me.clone(), name), at);
            }
        }
    }
    // Follow chains (a name re-exported from a module that re-exports it).
    for _ in 0..4 {
        let snapshot = map.clone();
        let mut changed = false;
        for (key, target) in &snapshot {
            if let Some(further) = snapshot.get(&(target.clone(), key.1.clone()))
                && further != target
            {
                map.insert(key.clone(), further.clone());
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    map
}

/// The modules a file names through `crate::` or `super::` paths (the first
/// segments that are modules, and where a name a module re-exports comes
/// from), less its own ancestors and descendants: a parent declares its
/// children, and they may use what it holds.
fn modules_named(
    me: &[String],
    text: &str,
    modules: &BTreeSet<Vec<String>>,
    reexports: &Reexports,
) -> BTreeSet<Vec<String>> {
    let mut named = BTreeSet::new();
    let parent = me[..me.len().saturating_sub(1)].to_vec();
    // Code only: a link in a comment sends a reader on, not the compiler.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            // `prefix{a, b::c}` names each of a and b; `prefix a::b` names a::b.
            let items: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for item in items {
                let mut path = base.clone();
                for segment in item.split("::") {
                    let word: String = segment
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let mut longer = path.clone();
                    longer.push(word.clone());
                    if !modules.contains(&longer) {
                        if let Some(from) = reexports.get(&(path.clone(), word)) {
                            path.clone_from(from);
                        }
                        break;
                    }
                    path = longer;
                }
                let related = path.starts_with(me) || me.starts_with(&path);
                if !related {
                    named.insert(path);
                }
            }
        }
    }
    named
}

#[test]
fn no_two_source_files_of_a_crate_need_each_other() {
    // A cycle between files is one idea split in two, or a third one
    // hiding in both; either way neither can be read alone.
    let root = workspace_root();
    let mut cycles = BTreeSet::new();
    for krate in [
        "domain", "ports", "adapters", "intake", "redis", "mcp", "web", "runtime", "embed", "cli",
    ] {
        let src = root.join("crates").join(krate).join("src");
        let files = sources(&src);
        let modules: BTreeSet<Vec<String>> =
            files.iter().map(|(p, _)| module_of(&src, p)).collect();
        let reexports = reexports_of(&src, &files, &modules);
        let graph: HashMap<Vec<String>, BTreeSet<Vec<String>>> = files
            .iter()
            .map(|(p, text)| {
                let me = module_of(&src, p);
                let named = modules_named(&me, text, &modules, &reexports);
                (me, named)
            })
            .collect();
        for (from, tos) in &graph {
            for to in tos {
                // A path back from `to` to `from` closes a cycle.
                let mut seen = BTreeSet::new();
                let mut stack = vec![to.clone()];
                while let Some(m) = stack.pop() {
                    if &m == from {
                        let mut pair = [from.join("/"), to.join("/")];
                        pair.sort();
                        cycles.insert(format!("crates/{krate}: {} and {}", pair[0], pair[1]));
                        break;
                    }
                    if seen.insert(m.clone()) {
                        stack.extend(graph.get(&m).into_iter().flatten().cloned());
                    }
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "source files that need each other (through crate:: or super:: paths, or names re-exported on the way):\n{}",
        cycles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Each port that has a contract suite, and the macro that stamps it.
const SUITES: &[(&str, &str)] = &[
    ("ProcessStore", "store_contract_tests!"),
    ("OutputStore", "output_contract_tests!"),
    ("ProcessSpawner", "spawner_contract_tests!"),
    ("ClaimQueue", "claims_contract_tests!"),
    ("EventBus", "events_contract_tests!"),
    ("CommandBus", "commands_contract_tests!"),
    ("Membership", "membership_contract_tests!"),
    ("Failover", "failover_contract_tests!"),
    ("ProcessManager", "manager_contract_tests!"),
    ("ResourceSampler", "usage_contract_tests!"),
    ("Host", "host_contract_tests!"),
];

#[test]
fn every_implementation_of_a_port_with_a_contract_suite_is_stamped_with_it() {
    // An implementation in a crate's source (not a test's double, not the
    // ports' own mocks) must be named in a test file that stamps its
    // port's suite: the file's harness builds it.
    let root = workspace_root();
    let mut sources_of_impls = Vec::new();
    let mut tests = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("crates") {
        let krate = krate.expect("a crate").path();
        if krate.ends_with("ports") {
            continue;
        }
        sources_of_impls.extend(sources(&krate.join("src")));
        if krate.join("tests").is_dir() {
            tests.extend(sources(&krate.join("tests")));
        }
    }
    tests.extend(
        sources(&root.join("tests"))
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "rs")),
    );
    let mut found = 0;
    let mut unstamped = Vec::new();
    for (path, text) in &sources_of_impls {
        for (port, stamp) in SUITES {
            for line in text.lines() {
                let line = line.trim_start();
                let Some(rest) = line.strip_prefix("impl") else {
                    continue;
                };
                let rest = rest.trim_start_matches(|c: char| c != ' ').trim_start();
                let Some(ty) = rest
                    .strip_prefix(&format!("{port} for "))
                    .or_else(|| rest.strip_prefix(&format!("bpm_ports::{port} for ")))
                else {
                    continue;
                };
                let ty: String = ty
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found += 1;
                let stamped = tests
                    .iter()
                    .any(|(_, t)| t.contains(stamp) && t.contains(&ty));
                if !stamped {
                    unstamped.push(format!("{}: {ty} ({port})", path.display()));
                }
            }
        }
    }
    assert!(found >= 10, "found only {found} implementations of ports");
    assert!(
        unstamped.is_empty(),
        "implementations no test stamps with their port's contract suite:\n{}",
        unstamped.join("\n")
    );
}
