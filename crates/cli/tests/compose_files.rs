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
