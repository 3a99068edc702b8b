//! Resource limits: cgroups where the machine offers them, rlimits or a
//! refusal by name where it does not.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::io::Write as _;
use std::time::{Duration, Instant};

mod support;
use support::bpm::{Bpm, cgroups_of};
#[allow(clippy::wildcard_imports)]
use support::cli::*;

/// Limits that would leave bpm unusable are refused by key, with the
/// reason; a record that waits says what for.
#[test]
fn unworkable_limits_are_refused_and_a_waiting_record_says_what_it_waits_for() {
    for (text, says) in [
        ("[limits]\nmax_running = 0\n", "limits.max_running = 0"),
        (
            "[limits]\nretention = \"0s\"\n",
            "limits.retention = \"0s\"",
        ),
    ] {
        let bpm = Bpm::new();
        std::fs::write(bpm.home().join("config.toml"), text).expect("config");
        let err = bpm.fails(&["run", "--", "true"], 5);
        assert!(err.contains(says) && err.contains("must be"), "{err}");
    }
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 1\n[limits.group_limits]\nbuild = 1\n",
    )
    .expect("config");
    let first = bpm.ok(&["run", "--group", "build", "--", "sleep", "30"]);
    let first = first.trim();
    bpm.until_state(first, "running");
    let second = bpm.ok(&["run", "--", "true"]);
    let second = second.trim();
    let after = bpm.ok(&["run", "--after", second, "--", "true"]);
    let shown = bpm.json(&["show", second, "--json"]);
    assert_eq!(shown["state"], "pending", "{shown}");
    let waiting = shown["waiting"].as_str().unwrap_or_default();
    assert!(
        waiting.contains("a slot: 1 of limits.max_running = 1 are taken"),
        "{shown}"
    );
    let text = bpm.ok(&["show", second]);
    assert!(
        text.contains("waiting") && text.contains("limits.max_running"),
        "{text}"
    );
    let shown = bpm.json(&["show", after.trim(), "--json"]);
    assert!(
        shown["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("dependencies to complete") && w.contains(second)),
        "{shown}"
    );
    bpm.ok(&["stop", first]);
    bpm.ok(&["wait", "--timeout", "30", after.trim()]);
    let shown = bpm.json(&["show", after.trim(), "--json"]);
    assert!(shown.get("waiting").is_none(), "{shown}");
}

/// Whether bpm may put processes in cgroups on this machine, as it checks
/// itself before a limited start. Where it may not (a container, a chroot,
/// a read-only cgroup mount), the test named `test` says so loudly and
/// checks bpm's refusal instead: a CPU share nothing here can enforce is
/// refused by name, and nothing is started. (The rlimit fallbacks are
/// `without_cgroups_limits_fall_back_to_rlimits_or_are_refused_by_name`'s.)
fn cgroups_here_or_refusal_checked(bpm: &Bpm, test: &str) -> bool {
    let limits = bpm_domain::ResourceLimits {
        memory_max: Some(64 << 20),
        cpu_max: Some(20),
        pids_max: Some(20),
        nofile: None,
    };
    match bpm_adapters::os::check_limits(&limits, "--") {
        Ok(how) if how.iter().all(|(_, by)| by.starts_with("cgroup")) => true,
        other => {
            // Straight to the terminal, past the test harness's capture:
            // which form ran is said even when the test passes.
            let _ = writeln!(
                std::io::stderr().lock(),
                "NOTE {test}: this machine lets bpm write no cgroup ({other:?}); the test checks bpm's refusal instead. Its cgroup form runs where cgroups are writable (CI's machines)."
            );
            let err = bpm.fails(&["run", "--cpu-max", "20", "--", "true"], 4);
            assert!(err.contains("--cpu-max"), "{err}");
            assert_eq!(
                bpm.json(&["ps", "--all", "--json"])
                    .as_array()
                    .map(Vec::len),
                Some(0),
                "a refused start creates nothing"
            );
            false
        }
    }
}

/// Resource limits through a cgroup, as this machine (root, cgroup v1
/// writable) offers: a process that allocates past `--memory-max` ends
/// failed with the reason, `--pids-max` stops a fork bomb, `--cpu-max`
/// holds a busy loop to its share, `--nofile` is the process's rlimit;
/// `bpm show` says what enforces each, and no group is left behind.
#[test]
fn resource_limits_hold_a_process_tree_through_its_cgroups() {
    let bpm = Bpm::new();
    if !cgroups_here_or_refusal_checked(
        &bpm,
        "resource_limits_hold_a_process_tree_through_its_cgroups",
    ) {
        return;
    }
    let hog = bpm.ok(&[
        "run",
        "--memory-max",
        "64M",
        "--nofile",
        "64",
        "--",
        "python3",
        "-c",
        "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE), flush=True); x = bytearray(300 << 20); print('survived')",
    ]);
    let hog = hog.trim();
    let ended = ended_within(&bpm, hog, Duration::from_secs(20));
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["error"], "memory limit (64 MiB)", "{ended}");
    assert_eq!(bpm.ok(&["logs", hog]), "(64, 64)\n");
    let shown = bpm.ok(&["show", hog]);
    let limits = shown
        .lines()
        .find(|l| l.starts_with("limits"))
        .expect("a limits line");
    assert!(
        limits.contains("memory 64 MiB by cgroup v")
            && limits.contains("open files 64 by setrlimit RLIMIT_NOFILE"),
        "{limits}"
    );
    assert!(cgroups_of(hog).is_empty(), "{:?}", cgroups_of(hog));

    // What ps shows of a limited record's memory is what its group is
    // charged, the figure the limit counts.
    let holder = bpm.ok(&[
        "run",
        "--memory-max",
        "256M",
        "--",
        "python3",
        "-c",
        "import time; x = b'x' * (100 << 20); print('held', flush=True); time.sleep(60)",
    ]);
    let holder = holder.trim();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpm.ok(&["logs", holder]) != "held\n" {
        assert!(Instant::now() < deadline, "never held");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the group is charged: `memory.usage_in_bytes` on cgroup v1,
    // `memory.current` on v2.
    let charged: u64 = cgroups_of(holder)
        .into_iter()
        .flat_map(|d| [d.join("memory.usage_in_bytes"), d.join("memory.current")])
        .find_map(|f| std::fs::read_to_string(f).ok())
        .expect("a memory group")
        .trim()
        .parse()
        .expect("bytes");
    let shown = bpm.json(&["show", holder, "--json"])["rss_bytes"]
        .as_u64()
        .expect("rss_bytes");
    assert!(
        (100 << 20..256 << 20).contains(&shown) && shown.abs_diff(charged) < 16 << 20,
        "shown {shown}, charged {charged}"
    );
    bpm.ok(&["stop", holder]);

    a_fork_bomb_is_held_to_its_pids(&bpm);

    let busy = bpm.ok(&[
        "run",
        "--cpu-max",
        "20",
        "--",
        "python3",
        "-c",
        "import os, time\nt = time.time()\nwhile time.time() - t < 2: pass\nu = os.times()\nprint(u[0] + u[1])",
    ]);
    let busy = busy.trim();
    let ended = ended_within(&bpm, busy, Duration::from_secs(20));
    assert_eq!(ended["state"], "completed", "{ended}");
    let used: f64 = bpm.ok(&["logs", busy]).trim().parse().expect("seconds");
    assert!(
        used < 1.0,
        "2 s of a busy loop at 20% of a CPU used {used} s of CPU"
    );
    assert!(cgroups_of(busy).is_empty());

    // Bad values name their flag; nothing is created.
    for (flag, value) in [
        ("--memory-max", "lots"),
        ("--memory-max", "100K"),
        ("--cpu-max", "0"),
        ("--pids-max", "-1"),
        ("--nofile", "many"),
    ] {
        let err = bpm.fails(&["run", &format!("{flag}={value}"), "--", "true"], 4);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    assert_eq!(
        bpm.json(&["ps", "--all", "--json"])
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

/// A fork bomb, bounded (2^9 processes at most) should the limit fail:
/// each process that starts notes itself, then sleeps. Its live processes
/// are counted by bpm's mark in their environment.
fn a_fork_bomb_is_held_to_its_pids(bpm: &Bpm) {
    let dir = tempfile::tempdir().expect("dir");
    let started = dir.path().join("started");
    let bomb = format!(
        "b() {{ echo x >> {f}; if [ $1 -gt 0 ]; then b $(($1-1)) & b $(($1-1)) & fi; exec sleep 60; }}; b 8",
        f = started.display()
    );
    let bomb_id = bpm.ok(&["run", "--pids-max", "20", "--shell", "--", &bomb]);
    let bomb_id = bomb_id.trim();
    let mark = format!("{}={bomb_id}", bpm_adapters::os::PROCESS_ID_ENV);
    let live = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
            })
            .count()
    };
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(live());
        std::thread::sleep(Duration::from_millis(100));
    }
    let tried = std::fs::read_to_string(&started)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        (2..=20).contains(&most),
        "{most} processes of the bomb ran at once (limit 20; {tried} started in all)"
    );
    assert!(
        bpm.ok(&["logs", bomb_id, "--stream", "stderr"])
            .to_lowercase()
            .contains("fork"),
        "the shell says it cannot fork"
    );
    bpm.ok(&["stop", bomb_id]);
    ended_within(bpm, bomb_id, Duration::from_secs(20));
    assert!(cgroups_of(bomb_id).is_empty());
}

/// Where bpm may make no cgroup (`BPM_NO_CGROUPS=1` stands in for such a
/// machine): memory is an address-space rlimit, and a limit nothing can
/// enforce (a CPU share; processes, for root) is refused by name.
#[test]
fn without_cgroups_limits_fall_back_to_rlimits_or_are_refused_by_name() {
    let bpm = Bpm::new();
    let run = |args: &[&str]| {
        bpm.cmd(args)
            .env(bpm_adapters::os::NO_CGROUPS_ENV, "1")
            .output()
            .expect("bpm runs")
    };
    let out = run(&[
        "run",
        "--memory-max",
        "64M",
        "--",
        "python3",
        "-c",
        "x = bytearray(300 << 20); print('survived')",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).expect("utf-8");
    let id = id.trim();
    let ended = ended_within(&bpm, id, Duration::from_secs(20));
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        bpm.ok(&["logs", id, "--stream", "stderr"])
            .contains("MemoryError")
    );
    assert!(cgroups_of(id).is_empty());
    let out = run(&["show", id]);
    let shown = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        shown.contains("memory 64 MiB by setrlimit RLIMIT_AS"),
        "{shown}"
    );

    let out = run(&["run", "--cpu-max", "50", "--", "true"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cpu-max") && err.contains("cannot be enforced"),
        "{err}"
    );
    let out = run(&["run", "--pids-max", "50", "--", "true"]);
    if rustix::process::geteuid().is_root() {
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--pids-max"));
    } else {
        assert!(out.status.success(), "RLIMIT_NPROC stands in: {out:?}");
    }
}

/// A project's service takes `memory_max`, `cpu_max`, `pids_max` and
/// `nofile`, as text or numbers, and `tty_size`; its process runs under
/// them; an edit of
/// one is a change `up` applies; a bad value names the service and key.
#[test]
fn a_projects_service_runs_under_its_resource_limits() {
    let bpm = Bpm::new();
    if !cgroups_here_or_refusal_checked(&bpm, "a_projects_service_runs_under_its_resource_limits") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    let service = |nofile: u32| {
        format!(
            "[project]\nname = \"capped\"\n\n[services.api]\ncommand = \"python3 -c 'import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)'; exec sleep 300\"\nmemory_max = \"128M\"\ncpu_max = \"50%\"\npids_max = 16\nnofile = {nofile}\ntty_size = \"100x30\"\n"
        )
    };
    std::fs::write(&file, service(128)).expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let api = bpm.json(&["show", "capped/api", "--json"]);
    assert_eq!(
        api["spec"]["limits"],
        serde_json::json!({"memory_max": 128 << 20, "cpu_max": 50, "pids_max": 16, "nofile": 128}),
        "{api:#}"
    );
    let id = api["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        api["spec"]["tty"],
        serde_json::json!({"cols": 100, "rows": 30})
    );
    // On its terminal, a line ends with CR LF.
    while bpm.ok(&["logs", &id]) != "128\r\n" {
        assert!(Instant::now() < deadline, "{}", bpm.ok(&["logs", &id]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cgroups_of(&id).len(), 3, "memory, cpu and pids groups");
    std::fs::write(&file, service(256)).expect("file");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let again = bpm.json(&["show", "capped/api", "--json"]);
    assert_ne!(
        again["id"], api["id"],
        "a changed limit replaces the process"
    );
    bpm.ok(&["down", "-f", f]);
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));

    std::fs::write(
        &file,
        "[services.api]\ncommand = \"true\"\nmemory_max = \"huge\"\n",
    )
    .expect("file");
    let err = bpm.fails(&["up", "-f", f], 4);
    assert!(err.contains("api") && err.contains("memory_max"), "{err}");
}

/// A limited record's stop reaches, through its cgroup, a process that
/// left both its process group and its parent chain and cleared bpm's mark
/// (a double fork after `setsid env -i`): the gap the mark leaves for an
/// unlimited record.
#[test]
fn a_stop_reaches_through_the_cgroup_what_escaped_the_tree() {
    let bpm = Bpm::new();
    if !cgroups_here_or_refusal_checked(
        &bpm,
        "a_stop_reaches_through_the_cgroup_what_escaped_the_tree",
    ) {
        return;
    }
    let id = bpm.ok(&[
        "run",
        "--pids-max",
        "64",
        "--shell",
        "--",
        "(setsid env -i sleep 300 &); exec sleep 300",
    ]);
    let id = id.trim();
    // The record's pids group: under the v1 pids hierarchy, or its one
    // group on v2.
    let group = cgroups_of(id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids") || d.join("pids.max").exists())
        .expect("the record's pids group");
    let members = || -> Vec<u32> {
        std::fs::read_to_string(group.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let unmarked = |pids: &[u32]| -> Vec<u32> {
        pids.iter()
            .copied()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| !env.windows(14).any(|w| w == b"BPM_PROCESS_ID"))
            })
            .collect()
    };
    // Until the escapee has run `env -i` (the subshell that started it is gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (pids, escaped) = loop {
        let pids = members();
        let escaped = unmarked(&pids);
        if pids.len() == 2 && escaped.len() == 1 {
            break (pids, escaped);
        }
        assert!(Instant::now() < deadline, "{pids:?}, unmarked {escaped:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(escaped.len(), 1, "one process without the mark: {pids:?}");
    bpm.ok(&["stop", id]);
    ended_within(&bpm, id, Duration::from_secs(20));
    for pid in pids {
        until_gone(pid, "a process of the stopped record's cgroup");
    }
    assert!(cgroups_of(id).is_empty());
}
