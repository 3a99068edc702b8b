//! `bpm tui` through a real terminal: tmux runs it at 80x24, `send-keys`
//! types, `capture-pane` reads the screen. Each key is checked against the
//! screen and against bpm itself.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::bpm::Bpm;

/// A tmux server of the test's own, with one window of `cols`x`rows`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(bpm: &Bpm, cols: u16, rows: u16, extra_env: &[(&str, &str)]) -> Tmux {
        let socket = format!(
            "bpm-tui-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let tmux = Tmux { socket };
        let mut env = format!("BPM_HOME={} TERM=xterm-256color", bpm.home().display());
        for (k, v) in extra_env {
            use std::fmt::Write as _;
            let _ = write!(env, " {k}={v}");
        }
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            // A shell, so that the screen after bpm tui can be read.
            &format!("env {env} sh"),
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names, or text with `-l`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "0", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "0"])
    }

    fn screen_with_escapes(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", "0"])
    }

    /// The screen, once `ok` holds of it (10 s at most).
    fn until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "not on the screen within 10 s: {what}\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn state_of(bpm: &Bpm, name: &str) -> String {
    bpm.json(&["show", name, "--json"])["state"]
        .as_str()
        .expect("state")
        .to_owned()
}

fn until_state(bpm: &Bpm, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(bpm, name) != state {
        assert!(Instant::now() < deadline, "{name} never became {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a person does at the screen, key by key: the list grouped by
/// project, the help, a filter, following output, a search, pause, resume,
/// stop, ended records shown, a start again, and quitting to a terminal
/// given back as it was.
#[test]
fn each_key_of_the_tui_does_what_its_help_says() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("project");
    std::fs::write(
        dir.path().join("bpm.toml"),
        "[project]\nname = \"shop\"\n[services.api]\ncommand = \"sleep 300\"\n[services.worker]\ncommand = \"sleep 300\"\n",
    )
    .expect("bpm.toml");
    let up = bpm
        .cmd(&["up"])
        .current_dir(dir.path())
        .output()
        .expect("bpm up");
    assert!(up.status.success(), "{up:?}");
    bpm.ok(&[
        "run",
        "--name",
        "ticker",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done",
    ]);
    let t = Tmux::new(&bpm, 80, 24, &[]);
    t.text(&format!("{} tui", support::BPM));
    t.keys(&["Enter"]);
    let screen = t.until("the list", |s| s.contains("ticker") && s.contains("worker"));
    assert!(
        screen.contains("project shop"),
        "grouped by project:\n{screen}"
    );

    t.keys(&["?"]);
    t.until("the help", |s| {
        s.contains(" keys ") && s.contains("attach to a --tty")
    });
    t.keys(&["x"]);
    let screen = t.until("the help closed", |s| !s.contains(" keys "));
    assert_eq!(
        state_of(&bpm, "ticker"),
        "running",
        "a key that closes the help does nothing else"
    );
    assert!(screen.contains("ticker"));

    // A filter, then the output of what it leaves.
    t.keys(&["/"]);
    t.text("tick");
    t.keys(&["Enter"]);
    t.until(
        "ticker alone, its output following, the filter shown",
        |s| {
            !s.contains("worker")
                && s.contains("tick 1")
                && s.contains("following")
                && s.contains("[tick]")
        },
    );
    t.keys(&["f"]);
    t.text("tick 3");
    t.keys(&["Enter"]);
    t.until("the search found", |s| s.contains("\"tick 3\" at line"));

    t.keys(&["p"]);
    until_state(&bpm, "ticker", "paused");
    t.until("paused shown", |s| s.contains("paused"));
    t.keys(&["u"]);
    until_state(&bpm, "ticker", "running");
    t.keys(&["x"]);
    until_state(&bpm, "ticker", "cancelled");
    t.until("gone from the live list", |s| {
        s.contains("stopping ticker") && !s.contains("running")
    });
    t.keys(&["a"]);
    t.until("the ended shown", |s| s.contains("cancelled"));
    t.keys(&["s"]);
    t.until("started again", |s| s.contains("started ticker again"));
    let live = bpm.json(&["ps", "--json"]);
    assert!(
        live.as_array()
            .expect("list")
            .iter()
            .any(|r| r["name"] == "ticker" && r["state"] == "running"),
        "{live}"
    );

    // + and -: a copy more, then fewer, of the selected service.
    t.keys(&["/"]);
    t.keys(&["Escape"]);
    t.keys(&["/"]);
    t.text("worker");
    t.keys(&["Enter"]);
    t.until("the worker alone", |s| {
        !s.contains("ticker") && s.contains("worker")
    });
    t.keys(&["+"]);
    t.until("scaled up", |s| {
        s.contains("shop/worker: 2 running") && s.contains("worker.2")
    });
    until_state(&bpm, "shop/worker.2", "running");
    t.keys(&["-"]);
    t.until("scaled down", |s| s.contains("shop/worker: 1 running"));
    until_state(&bpm, "shop/worker.2", "cancelled");
    assert_eq!(state_of(&bpm, "shop/worker"), "running");

    t.keys(&["q"]);
    t.text("echo back-at-the-shell");
    t.keys(&["Enter"]);
    let screen = t.until("the shell", |s| s.contains("back-at-the-shell\n"));
    assert!(
        !screen.contains('┌'),
        "the terminal is given back as it was:\n{screen}"
    );
    bpm.ok(&["stop", "--all"]);
}

/// `--read-only` refuses every action; `NO_COLOR` draws without colour.
#[test]
fn read_only_acts_on_nothing_and_no_color_draws_without_colour() {
    let bpm = Bpm::new();
    bpm.ok(&["run", "--name", "kept", "--", "sleep", "300"]);
    let t = Tmux::new(&bpm, 80, 24, &[("NO_COLOR", "1")]);
    t.text(&format!("{} tui --read-only", support::BPM));
    t.keys(&["Enter"]);
    t.until("the list", |s| s.contains("kept"));
    t.keys(&["x"]);
    t.until("refused", |s| {
        s.contains("read-only: bpm tui --read-only changes nothing")
    });
    assert_eq!(state_of(&bpm, "kept"), "running");
    let painted = t.screen_with_escapes();
    assert!(
        !painted.contains("\u{1b}[32m") && !painted.contains("\u{1b}[38;5;"),
        "NO_COLOR, yet colour:\n{painted:?}"
    );
    t.keys(&["q"]);
    let colored = Tmux::new(&bpm, 80, 24, &[]);
    colored.text(&format!("{} tui", support::BPM));
    colored.keys(&["Enter"]);
    colored.until("the list", |s| s.contains("kept"));
    assert!(
        colored
            .screen_with_escapes()
            .contains("\u{1b}[38;5;2mrunning"),
        "a running state is green without NO_COLOR"
    );
    colored.keys(&["q"]);
    bpm.ok(&["stop", "--all"]);
}

/// `t` leaves the screen for a `--tty` process; its detach key comes back.
#[test]
fn attach_leaves_the_screen_and_detach_comes_back() {
    let bpm = Bpm::new();
    bpm.ok(&["run", "--name", "term", "--tty", "--", "sh"]);
    let t = Tmux::new(&bpm, 80, 24, &[]);
    t.text(&format!("{} tui", support::BPM));
    t.keys(&["Enter"]);
    t.until("the list", |s| s.contains("term"));
    t.keys(&["t"]);
    t.until("attached", |s| s.contains("[attached to"));
    t.text("echo typed-$((6*7))");
    t.keys(&["Enter"]);
    t.until("the shell answered", |s| s.contains("typed-42"));
    t.keys(&["C-]"]);
    t.until("back in the list", |s| {
        s.contains("term") && s.contains("NAME")
    });
    t.keys(&["q"]);
    bpm.ok(&["stop", "--all"]);
}

/// The keys that move and read: `j`/`k` and the arrows select, `o` picks
/// the streams, PgUp/PgDn/Home/End scroll, `w` wraps a long line, `n`
/// goes to the next match, `r` restarts the selected record.
#[test]
fn moving_reading_and_restarting_keys_do_what_the_help_says() {
    let bpm = Bpm::new();
    bpm.ok(&[
        "run",
        "--name",
        "alpha",
        "--",
        "sh",
        "-c",
        // Two pipes carry no order between them: stderr first, then
        // stdout, a pause apart, then one long line.
        "for i in $(seq 60); do echo \"err $i\" >&2; done; sleep 0.3; \
         for i in $(seq 60); do echo \"out $i\"; done; sleep 0.3; \
         printf '%0150d\\n' 7; exec sleep 300",
    ]);
    bpm.ok(&["run", "--name", "beta", "--", "sleep", "300"]);
    let t = Tmux::new(&bpm, 80, 24, &[]);
    t.text(&format!("{} tui", support::BPM));
    t.keys(&["Enter"]);
    t.until("alpha selected, its output to the end", |s| {
        s.contains(" alpha · stdout and stderr · following ") && s.contains("out 60")
    });

    // Selection: j and k, Down and Up.
    t.keys(&["j"]);
    t.until("beta selected", |s| s.contains(" beta · "));
    t.keys(&["k"]);
    t.until("alpha again", |s| s.contains(" alpha · "));
    t.keys(&["Down"]);
    t.until("beta by the arrow", |s| s.contains(" beta · "));
    t.keys(&["Up"]);
    t.until("alpha by the arrow", |s| {
        s.contains(" alpha · ") && s.contains("out 60")
    });

    // Streams: stdout, stderr, both.
    t.keys(&["o"]);
    t.until("stdout alone", |s| {
        s.contains(" alpha · stdout · ") && s.contains("out 60") && !s.contains("err 60")
    });
    t.keys(&["o"]);
    t.until("stderr alone", |s| {
        s.contains(" alpha · stderr · ") && s.contains("err 60") && !s.contains("out 60")
    });
    t.keys(&["o"]);
    t.until("both again", |s| {
        s.contains(" alpha · stdout and stderr · ")
    });

    // Scrolling.
    t.keys(&["PageUp"]);
    t.until("ten lines back", |s| s.contains("10 lines back"));
    t.keys(&["PageDown"]);
    t.until("following again", |s| s.contains(" · following "));
    t.keys(&["Home"]);
    let top = t.until("the oldest line", |s| s.contains("err 1 "));
    assert!(top.contains("lines back"), "{top}");
    t.keys(&["End"]);
    t.until("following from End", |s| s.contains(" · following "));

    // Wrap: the 151-character line's end shows only wrapped.
    let unwrapped = t.until("the long line, cut", |s| s.contains("0000000000"));
    assert!(!unwrapped.contains("0007"), "{unwrapped}");
    t.keys(&["w"]);
    t.until("wrapped", |s| s.contains("wrap on") && s.contains("0007"));
    t.keys(&["w"]);
    t.until("cut again", |s| {
        s.contains("wrap off") && !s.contains("0007")
    });

    // The next match is an older line.
    t.keys(&["f"]);
    t.text("out 5");
    t.keys(&["Enter"]);
    let line_of = |s: &str| -> Option<usize> {
        let at = s.find("\"out 5\" at line ")? + "\"out 5\" at line ".len();
        s[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let first = line_of(&t.until("the first match", |s| line_of(s).is_some())).expect("a line");
    t.keys(&["n"]);
    let next = line_of(&t.until("the next match", |s| line_of(s).is_some_and(|n| n < first)))
        .expect("a line");
    assert!(next < first, "{next} after {first}");

    // r: beta restarted, a new record that points back.
    let before = bpm.json(&["show", "beta", "--json"])["id"].clone();
    t.keys(&["j"]);
    t.until("beta selected again", |s| s.contains(" beta · "));
    t.keys(&["r"]);
    t.until("restarted", |s| s.contains("started beta again"));
    let after = bpm.json(&["show", "beta", "--json"]);
    assert_ne!(after["id"], before, "{after}");
    assert_eq!(after["state"], "running", "{after}");
    t.keys(&["q"]);
    bpm.ok(&["stop", "--all"]);
}
