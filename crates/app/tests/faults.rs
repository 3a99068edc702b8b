//! The fault campaign's findings (issue 60), each driven through the real
//! binary as a hostile user or a broken machine would: what must hold is
//! counted from the processes' own lines, not from bpm's word.

use std::time::{Duration, Instant};

mod support;
use support::bpm::Bpm;

/// The most copies alive at once in a log of `S id` (started) and `E id`
/// (ending) lines.
fn most_alive_at_once(log: &str) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for line in log.lines() {
        match line.split_whitespace().next() {
            Some("S") => now += 1,
            Some("E") => now = now.saturating_sub(1),
            _ => {}
        }
        most = most.max(now);
    }
    most
}

/// A shell line that logs its start and its end (on TERM) to `log`.
fn logging_copy(log: &std::path::Path) -> String {
    let log = log.display();
    format!(
        "echo S $BPM_PROCESS_ID >> {log}; trap 'echo E $BPM_PROCESS_ID >> {log}; exit' TERM; while :; do sleep 0.02; done"
    )
}

/// Item 4: ten concurrent `--replace` of one name, twenty rounds: never
/// two copies alive at once ("never lets both run at once").
#[test]
fn concurrent_replaces_of_a_name_never_run_two_copies() {
    let bpm = Bpm::new();
    let log = bpm.home().join("r.log");
    let copy = logging_copy(&log);
    bpm.ok(&["run", "--name", "X", "--shell", "--", &copy]);
    for _round in 0..20 {
        let racers: Vec<_> = (0..10)
            .map(|_| {
                bpm.cmd(&["run", "--name", "X", "--replace", "--shell", "--", &copy])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("bpm runs")
            })
            .collect();
        for mut r in racers {
            assert!(r.wait().expect("wait").success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last copy comes up, then stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let live = bpm.json(&["ps", "--json"]);
        if let Some(x) = live.as_array().and_then(|a| a.iter().find(|r| r["name"] == "X" && r["state"] == "running")) {
            break x["id"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "no copy of X runs: {live}");
        std::thread::sleep(Duration::from_millis(50));
    };
    bpm.ok(&["stop", &last]);
    let _ = bpm.run(&["wait", &last]); // exits with the copy's own code
    let text = std::fs::read_to_string(&log).expect("log");
    let started = text.lines().filter(|l| l.starts_with('S')).count();
    assert!(started >= 2, "the name was replaced at least once:\n{text}");
    assert_eq!(
        most_alive_at_once(&text),
        1,
        "two copies of X ran at once ({started} started):\n{text}"
    );
}
