//! What a newcomer meets first: the help, the hint for a command given
//! without `--`, the default home, and commands that say what they did.

use std::process::Command;

mod support;
use support::bpm::Bpm;

/// What a newcomer meets first says what bpm does and what to type: the
/// help opens with it, `--home` shows its default plainly, a command given
/// without `--` gets the line that works, an empty `BPM_HOME` is the
/// default home, an empty `ps` points at `--all`, and `daemon stop`,
/// `down` with nothing up and `up --dry-run` say what they did or would do.
#[test]
fn what_a_newcomer_meets_first_says_what_to_do() {
    let help = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .arg("--help")
        .output()
        .expect("bpm");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.starts_with("bpm runs commands in the background"),
        "{help}"
    );
    assert!(help.contains("bpm run -- CMD"), "{help}");
    let home = help
        .split("--home <DIR>")
        .nth(1)
        .and_then(|rest| rest.split("\n  -").next())
        .expect("--home's help");
    assert!(
        home.contains("$XDG_STATE_HOME/bpm") && !home.contains('`'),
        "{home}"
    );

    // The man page, in roff, names the commands.
    let man = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .arg("man")
        .output()
        .expect("bpm man");
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH bpm 1") && man.contains(".SH NAME"),
        "{man}"
    );
    assert!(
        man.contains("bpm\\-agents") || man.contains("agents"),
        "{man}"
    );

    let bpm = Bpm::new();
    let out = bpm.run(&["run", "--name", "nap", "sleep", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bpm run --name nap -- sleep 5"), "{err}");

    let out = bpm.run(&["ps"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bpm ps --all"),
        "{out:?}"
    );

    // An empty BPM_HOME is the default home ($XDG_STATE_HOME/bpm here).
    let state = tempfile::tempdir().expect("state");
    let default = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("BPM_HOME", "")
            .env("XDG_STATE_HOME", state.path())
            .output()
            .expect("bpm")
    };
    let listed = default(&["ps"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(state.path().join("bpm/bpm.sock").exists());
    let stopped = default(&["daemon", "stop"]);
    let said = String::from_utf8_lossy(&stopped.stdout);
    assert!(
        said.starts_with("stopped bpm's daemon (pid ") && said.contains("run on"),
        "{said}"
    );

    let dir = tempfile::tempdir().expect("project");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        "[project]\nname = \"calm\"\n[services.nap]\ncommand = \"sleep 30\"\n",
    )
    .expect("file");
    let f = file.to_str().expect("utf-8");
    let plan = bpm.ok(&["up", "-f", f, "--dry-run"]);
    assert!(plan.starts_with("would start    nap"), "{plan}");
    let down = bpm.ok(&["down", "-f", f]);
    assert_eq!(down.trim(), "nothing of project calm is up");
    let stopped = bpm.ok(&["daemon", "stop", "--kill-all"]);
    assert!(
        stopped.starts_with("stopped bpm's daemon (pid ") && stopped.contains("every process"),
        "{stopped}"
    );
}
