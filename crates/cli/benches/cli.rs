//! The `bpm` command and its daemon, beside baselines measured in the same
//! run. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-cli --bench cli` (`BPM_BENCH=memory` for only what
//! retained records cost the daemon, `BPM_BENCH=ps` for `ps` over running trees,
//! `BPM_BENCH=fence` for `bpm fence check`, `BPM_BENCH=takeover` for the
//! next command after kill -9 of a daemon on Redis, `BPM_BENCH=ensure` for
//! `run --ensure` beside a plain `run`, `BPM_BENCH=up` for `bpm up` of 50
//! services, `READY=1` to `up --wait`, and health checks' cost,
//! `BPM_BENCH=owners` for an owner's
//! death to its record's end and the memory an owner costs,
//! `BPM_BENCH=idle` for `ps` while 2,500 silent connections are held,
//! `BPM_BENCH=watch` for a save to the watched process's restart, beside
//! `bpm restart`, and what a watch and an env file cost,
//! `BPM_BENCH=schedule` for a schedule's lateness beside a timed sleep
//! that starts the same command, and what 1,000 schedules cost the daemon,
//! `BPM_BENCH=exit` for where an exit's time goes on its way to `bpm wait`,
//! `BPM_BENCH=shell` for `bpm run` from bash beside `setsid -f`, and its parts,
//! `BPM_BENCH=limits` for what resource limits and a terminal add to a
//! start, beside a plain one, `BPM_BENCH=capture` for 1 GiB of output
//! captured by the daemon, beside a redirect to a file).
//!
//! `BPM_BENCH_BIN=PATH` runs another build of `bpm` under the same harness,
//! for comparing two builds run by run.

// Figures for printing: float conversions of counts lose nothing that matters here.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `bpm` this bench runs: `BPM_BENCH_BIN`, or the one Cargo built.
static BPM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("BPM_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bpm").to_owned())
});

fn bpm(home: &Path, args: &[&str]) -> String {
    let out = Command::new(&*BPM)
        .args(args)
        .env("BPM_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("bpm");
    assert!(
        out.status.success(),
        "bpm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn home(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("home");
    std::fs::write(dir.path().join("config.toml"), config).expect("config");
    bpm(dir.path(), &["ps"]);
    dir
}

/// Rounds of the queue of 500 `true`s submitted in one request.
const ROUNDS: usize = 7;

/// Submits 500 `true`s with one `bpm run --from -` and waits for them with one
/// `bpm wait`; returns the whole time and the submission's.
fn queue_of_trues(home: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    let mut submit = Command::new(&*BPM)
        .args(["run", "--from", "-", "--", "true"])
        .env("BPM_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bpm run --from");
    {
        use std::io::Write as _;
        // 500 lines, each adding one argument to `true`.
        let mut stdin = submit.stdin.take().expect("stdin");
        for i in 0..500 {
            writeln!(stdin, "{i}").expect("write");
        }
    }
    let out = submit.wait_with_output().expect("bpm run --from");
    assert!(out.status.success(), "bpm run --from failed");
    let submitted = t.elapsed();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 500);
    let mut args = vec!["wait"];
    args.extend(ids.iter().map(String::as_str));
    bpm(home, &args);
    (t.elapsed(), submitted)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of `n` runs of `bpm ARGS`.
fn timed(home: &Path, args: &[&str], n: usize) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                bpm(home, args);
                t.elapsed()
            })
            .collect(),
    )
}

fn round_trips(home: &Path, n: usize) -> Duration {
    timed(home, &["run", "--", "sleep", "1"], n)
}

fn setsid_baseline(n: usize) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let s = Command::new("setsid")
                    .args(["-f", "sleep", "1"])
                    .status()
                    .expect("setsid");
                assert!(s.success());
                t.elapsed()
            })
            .collect(),
    )
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A figure in KiB from `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The daemon's resident memory, in KiB: all of it, and the part that is
/// pages of files (its own code, shared with every bpm process), which
/// grows with the code a daemon has run rather than with its records.
#[derive(Clone, Copy)]
struct Resident {
    all: u64,
    files: u64,
}

fn daemon_resident(home: &Path) -> Resident {
    let pid = std::fs::read_to_string(home.join("daemon.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    Resident {
        all: status_kib(pid, "VmRSS:"),
        files: status_kib(pid, "RssFile:"),
    }
}

/// The daemon's and the keeper's pids for a home.
fn own_pids(home: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p: &u32| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            (cmd.ends_with(b"daemon\0") || cmd.ends_with(b"keeper\0"))
                && env
                    .split(|b| *b == 0)
                    .any(|v| v == format!("BPM_HOME={}", home.display()).as_bytes())
        })
        .collect()
}

/// PSS of the daemon and keeper with `n` running sleeps, started with `bpm run FLAGS`.
fn memory_with(n: usize, flags: &str) -> (u64, usize) {
    let dir = home(&format!("[limits]\nmax_running = {}\n", n.max(1)));
    let mut args: Vec<&str> = vec!["run"];
    args.extend(flags.split_whitespace());
    args.extend(["--", "sleep", "600"]);
    for _ in 0..n {
        bpm(dir.path(), &args);
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    while serde_json::from_str::<serde_json::Value>(&bpm(
        dir.path(),
        &["ps", "--state", "running", "--json"],
    ))
    .ok()
    .and_then(|v| v.as_array().map(Vec::len))
    .unwrap_or(0)
        < n
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids = own_pids(dir.path());
    let total = pids.iter().map(|p| pss_kib(*p)).sum();
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
    (total, pids.len())
}

/// `bpm ps` (the table, which samples resource usage beside the list)
/// with 200 running shell trees, against `ps --json` (no sampling).
fn ps_with_running_trees() {
    let n = 200;
    let dir = home("[limits]\nmax_running = 250\n");
    let lines: String = (0..n).map(|_| "sleep 300\n").collect();
    let mut child = Command::new(&*BPM)
        .args(["run", "--from", "-", "--shell"])
        .env("BPM_HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("bpm run");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), lines.as_bytes())
        .expect("write");
    drop(child.stdin.take());
    child.wait().expect("submitted");
    while bpm(dir.path(), &["ps", "--state", "running", "--json"])
        .matches("\"pid\"")
        .count()
        < n
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = timed(dir.path(), &["ps"], 40);
    let json = timed(dir.path(), &["ps", "--json"], 40);
    println!(
        "bpm ps with {n} running shell trees (median of 40): table with CPU and MEM {:.1} ms; --json (no sampling) {:.1} ms; ratio {:.2}",
        table.as_secs_f64() * 1e3,
        json.as_secs_f64() * 1e3,
        table.as_secs_f64() / json.as_secs_f64()
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// 10,000 records: tracked operations, completed at once, through the
/// client library; `round` numbers their names.
fn fill_tracked(home: &Path, round: usize) {
    let t = Instant::now();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            use bpm_ports::ProcessManager;
            let client =
                bpm_adapters::control::DaemonClient::connect(&home.join("bpm.sock"), "bench")
                    .await
                    .expect("connect");
            for i in round * 10_000..(round + 1) * 10_000 {
                let spec =
                    bpm_domain::ProcessSpec::tracked(format!("op{i}").parse().expect("name"));
                let r = client.track(spec).await.expect("track");
                client.complete(r.id(), None).await.expect("complete");
            }
        });
    // Let the burst of 20,000 writes settle (the record files follow the
    // journal within a second, and a turned-over journal is flushed in the
    // background): the figure is about living with 10,000 records, not about
    // the aftermath of writing them.
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "  (filled 10,000 records in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

/// Prints what the records of `home` cost its daemon, over an empty
/// daemon's memory: now (`filled`, with 10,000), and after a restart, which
/// reads them all back from the store.
fn report_memory(home: &Path, empty: Resident, filled: Resident, count: usize) {
    bpm(home, &["daemon", "stop"]);
    bpm(home, &["ps"]);
    std::thread::sleep(Duration::from_secs(1));
    let restarted = daemon_resident(home);
    #[allow(clippy::cast_precision_loss)]
    let per = |kib: u64, over: u64, records: usize| {
        kib.saturating_sub(over) as f64 * 1024.0 / records.max(1) as f64
    };
    #[allow(clippy::cast_precision_loss)]
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "daemon RSS with 10,000 finished records: {:.1} MiB ({:.0} bytes per record over an empty daemon's {:.1} MiB); after a restart, with {count}: {:.1} MiB ({:.0} bytes per record) (target <= 1024)",
        mib(filled.all),
        per(filled.all, empty.all, 10_000),
        mib(empty.all),
        mib(restarted.all),
        per(restarted.all, empty.all, count)
    );
    let anonymous = |r: Resident| r.all.saturating_sub(r.files);
    println!(
        "  the same without the pages of bpm's code (shared with every bpm process, and more of it run after a restart): {:.0} and {:.0} bytes per record",
        per(anonymous(filled), anonymous(empty), 10_000),
        per(anonymous(restarted), anonymous(empty), count)
    );
}

/// `BPM_BENCH=memory`: only what retained records cost the daemon, and
/// what each one past the first 10,000 adds (by then the daemon's bounded
/// buffers, such as its ring of recent events, are full).
fn memory_alone() {
    let big = home("");
    bpm(big.path(), &["ps"]);
    let empty = daemon_resident(big.path());
    fill_tracked(big.path(), 0);
    let filled = daemon_resident(big.path());
    fill_tracked(big.path(), 1);
    let twice = daemon_resident(big.path());
    #[allow(clippy::cast_precision_loss)]
    let (further, twice_mib) = (
        twice.all.saturating_sub(filled.all) as f64 * 1024.0 / 10_000.0,
        twice.all as f64 / 1024.0,
    );
    println!(
        "  each record from 10,000 to 20,000 added {further:.0} bytes ({twice_mib:.1} MiB with 20,000)"
    );
    report_memory(big.path(), empty, filled, 20_000);
    bpm(big.path(), &["daemon", "stop", "--kill-all"]);
}

/// The median of `samples`, in ms.
fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// What `bpm fence check` costs a process that guards its writes with it,
/// from bash inside a bpm process (as such a process pays), beside `true`
/// started the same way (the cost of any command) in the same run,
/// alternating; on the filesystem store, and on Redis.
fn fence_checks() {
    let redis = bpm_tests::RedisServer::start();
    for (what, config) in [
        ("fs store", String::new()),
        (
            "Redis store",
            format!(
                "store = \"{}\"\nredis_prefix = \"fence-bench\"\nnode = \"n1\"\n",
                redis.url()
            ),
        ),
    ] {
        let dir = home(&config);
        let n = 100;
        let bin = &*BPM;
        let script = format!(
            "for round in 1 2 3 4 5; do \
               s=$EPOCHREALTIME; for i in $(seq {n}); do {bin} fence check || exit 9; done; e=$EPOCHREALTIME; echo \"fence $s $e\"; \
               s=$EPOCHREALTIME; for i in $(seq {n}); do /bin/true; done; e=$EPOCHREALTIME; echo \"true $s $e\"; \
             done"
        );
        let id = bpm(dir.path(), &["run", "--", "bash", "-c", &script]);
        let out = bpm(dir.path(), &["wait", "--timeout", "600", id.trim()]);
        let _ = out;
        let logs = bpm(dir.path(), &["logs", id.trim()]);
        let (mut fence, mut base) = (Vec::new(), Vec::new());
        for line in logs.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            let (Some(s), Some(e)) = (
                w.get(1).and_then(|v| v.parse::<f64>().ok()),
                w.get(2).and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let per = (e - s) * 1e3 / f64::from(n);
            if w[0] == "fence" {
                fence.push(per);
            } else {
                base.push(per);
            }
        }
        assert_eq!(fence.len(), 5, "{logs}");
        let (f, b) = (median_ms(&mut fence), median_ms(&mut base));
        println!(
            "bpm fence check from bash, {what} (median of 5 rounds of {n}): {f:.2} ms; /bin/true: {b:.2} ms; ratio {:.2}",
            f / b
        );
        bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
    }
}

/// What `bpm run --name web --ensure` costs when `web` already runs (an
/// agent saying "make sure it is up" again), and when it starts it, beside
/// a plain `bpm run` of the same command, alternating, medians of `n`.
fn ensure_cost() {
    let dir = home("");
    let n = 200;
    bpm(dir.path(), &["run", "--name", "web", "--", "sleep", "300"]);
    let (mut ensured, mut started, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        bpm(
            dir.path(),
            &["run", "--name", "web", "--ensure", "--", "sleep", "300"],
        );
        ensured.push(t.elapsed());
        let name = format!("new{i}");
        let t = Instant::now();
        bpm(
            dir.path(),
            &["run", "--name", &name, "--ensure", "--", "sleep", "1"],
        );
        started.push(t.elapsed());
        let t = Instant::now();
        bpm(dir.path(), &["run", "--", "sleep", "1"]);
        plain.push(t.elapsed());
    }
    let (e, s, p) = (median(ensured), median(started), median(plain));
    println!(
        "bpm run --name web --ensure (median of {n}): {:.2} ms when it runs, {:.2} ms when it starts it; plain bpm run {:.2} ms; ratios {:.2} and {:.2} (target <= 1.2)",
        e.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        e.as_secs_f64() / p.as_secs_f64(),
        s.as_secs_f64() / p.as_secs_f64()
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// Starts `bpm wait ID` in the background (to return when `id` ends).
fn waiter(home: &Path, id: &str) -> std::process::Child {
    Command::new(&*BPM)
        .args(["wait", id])
        .env("BPM_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpm wait")
}

/// A `sleep 300` to own records or be killed.
fn sleeper() -> std::process::Child {
    Command::new("sleep")
        .arg("300")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep")
}

/// `BPM_BENCH=owners`: the time from an owner's `kill -9` to `bpm wait`
/// on its record returning, less the grace (target: grace + 100 ms),
/// beside the time from a record's own process's `kill -9` to the same
/// (the floor, measured alternating); and what the daemon's memory grows
/// by per owner watched, against records without owners.
/// Waits (up to 10 s) until `mark` holds other text than `before`;
/// returns it, as the nanoseconds since the epoch a process wrote there.
fn next_mark(mark: &Path, before: &str) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(mark).unwrap_or_default();
        let now = now.trim();
        if now != before && !now.is_empty() {
            return now.parse().expect("nanoseconds");
        }
        assert!(Instant::now() < deadline, "no restart");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn epoch_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// A save under a watched directory to the new process's start, less the
/// debounce, beside `bpm restart` from a shell to the new process's start;
/// then what an env file adds to `bpm run`, and a watch to the daemon.
fn watches() {
    const DEBOUNCE_MS: u128 = 50;
    let dir = home("");
    let src = tempfile::tempdir().expect("src");
    let mark = src.path().join("started");
    let line = format!("date +%s%N > '{}'; exec sleep 300", mark.display());
    let watched = src.path().join("watched");
    std::fs::create_dir(&watched).expect("dir");
    let id = bpm(
        dir.path(),
        &[
            "run",
            "--name",
            "watched",
            "--watch",
            &watched.display().to_string(),
            "--watch-debounce",
            &format!("{DEBOUNCE_MS}ms"),
            "--",
            "sh",
            "-c",
            &line,
        ],
    );
    let mut seen = next_mark(&mark, "").to_string();
    let n = 20;
    let (mut saved, mut restarted) = (Vec::new(), Vec::new());
    let mut current = id.trim().to_owned();
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(150));
        let t = epoch_nanos();
        std::fs::write(watched.join("file.txt"), format!("{i}")).expect("write");
        let started = next_mark(&mark, &seen);
        seen = started.to_string();
        saved.push(Duration::from_nanos(
            u64::try_from(started.saturating_sub(t + DEBOUNCE_MS * 1_000_000)).unwrap_or(0),
        ));
        std::thread::sleep(Duration::from_millis(150));
        let listed = bpm(dir.path(), &["ps", "--json"]);
        current = serde_json::from_str::<serde_json::Value>(&listed)
            .expect("JSON")
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == "watched"))
            .and_then(|r| r["id"].as_str())
            .unwrap_or(&current)
            .to_owned();
        let t = epoch_nanos();
        let said = bpm(dir.path(), &["restart", &current]);
        said.trim().clone_into(&mut current);
        let started = next_mark(&mark, &seen);
        seen = started.to_string();
        restarted.push(Duration::from_nanos(
            u64::try_from(started.saturating_sub(t)).unwrap_or(0),
        ));
    }
    let (on_save, on_restart) = (median(saved), median(restarted));
    println!(
        "a save to the watched process's new start, less the {DEBOUNCE_MS} ms debounce (median of {n}): {:.2} ms; bpm restart from a shell to the new start: {:.2} ms; ratio {:.2}",
        on_save.as_secs_f64() * 1e3,
        on_restart.as_secs_f64() * 1e3,
        on_save.as_secs_f64() / on_restart.as_secs_f64()
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    // An env file read at each start, beside the same variables given inline.
    let dir = home("");
    let env = src.path().join("app.env");
    let vars: String = (0..20).fold(String::new(), |mut all, i| {
        let _ = writeln!(all, "VAR_{i}=value-{i}");
        all
    });
    std::fs::write(&env, &vars).expect("env file");
    let inline: Vec<String> = (0..20).map(|i| format!("VAR_{i}=value-{i}")).collect();
    let mut with_file = vec!["run", "--env-file"];
    let env_arg = env.display().to_string();
    with_file.push(&env_arg);
    with_file.extend(["--", "true"]);
    let mut with_env = vec!["run"];
    for kv in &inline {
        with_env.extend(["--env", kv]);
    }
    with_env.extend(["--", "true"]);
    let (mut files, mut flags) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        bpm(dir.path(), &with_file);
        files.push(t.elapsed());
        let t = Instant::now();
        bpm(dir.path(), &with_env);
        flags.push(t.elapsed());
    }
    let (by_file, by_flag) = (median(files), median(flags));
    println!(
        "bpm run with a 20-variable env file (median of 50, alternating): {:.2} ms; the same 20 as --env: {:.2} ms; ratio {:.2}",
        by_file.as_secs_f64() * 1e3,
        by_flag.as_secs_f64() * 1e3,
        by_file.as_secs_f64() / by_flag.as_secs_f64()
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    // What a watch costs the daemon: 200 processes, then 200 more watching a directory each.
    let count: usize = 200;
    let dir = home("[limits]\nmax_running = 1000\n");
    let before = daemon_resident(dir.path());
    for _ in 0..count {
        bpm(dir.path(), &["run", "--", "sleep", "300"]);
    }
    let plain = daemon_resident(dir.path());
    let trees = tempfile::tempdir().expect("trees");
    for i in 0..count {
        let d = trees.path().join(i.to_string());
        std::fs::create_dir(&d).expect("dir");
        bpm(
            dir.path(),
            &[
                "run",
                "--watch",
                &d.display().to_string(),
                "--",
                "sleep",
                "300",
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let watched = daemon_resident(dir.path());
    let per = |a: u64, b: u64| (a.saturating_sub(b) as f64) * 1024.0 / count as f64;
    println!(
        "daemon resident memory: {count} records +{:.0} bytes each; {count} watching a directory each +{:.0} bytes each",
        per(plain.all, before.all),
        per(watched.all, plain.all)
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

fn owners() {
    const GRACE_MS: u64 = 200;
    let dir = home("[limits]\nmax_running = 1000\n");
    let n = 20;
    let (mut owned, mut own_exit) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut owner = sleeper();
        let id = bpm(
            dir.path(),
            &[
                "run",
                "--owner",
                &format!("pid:{}", owner.id()),
                "--owner-grace",
                &format!("{GRACE_MS}ms"),
                "--",
                "sleep",
                "300",
            ],
        );
        let mut wait = waiter(dir.path(), id.trim());
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        owner.kill().expect("kill");
        owner.wait().expect("reaped");
        wait.wait().expect("bpm wait");
        owned.push(t.elapsed().saturating_sub(Duration::from_millis(GRACE_MS)));

        let id = bpm(dir.path(), &["run", "--", "sleep", "300"]);
        let shown = bpm(dir.path(), &["show", id.trim(), "--json"]);
        let pid = serde_json::from_str::<serde_json::Value>(&shown).expect("JSON")["pid"]
            .as_u64()
            .unwrap_or(0);
        let mut wait = waiter(dir.path(), id.trim());
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        wait.wait().expect("bpm wait");
        own_exit.push(t.elapsed());
    }
    let (o, e) = (median(owned), median(own_exit));
    println!(
        "owner kill -9 to bpm wait returning, less the {GRACE_MS} ms grace (median of {n}): {:.1} ms; a record's own process killed: {:.1} ms (target: grace + 100 ms)",
        o.as_secs_f64() * 1e3,
        e.as_secs_f64() * 1e3
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    // Memory: records without owners, then as many each with an owner of its own.
    let count: usize = 200;
    let dir = home("[limits]\nmax_running = 1000\n");
    let before = daemon_resident(dir.path());
    for _ in 0..count {
        bpm(dir.path(), &["run", "--", "sleep", "300"]);
    }
    let plain = daemon_resident(dir.path());
    let mut sleepers = Vec::new();
    for _ in 0..count {
        let owner = sleeper();
        bpm(
            dir.path(),
            &[
                "run",
                "--owner",
                &format!("pid:{}", owner.id()),
                "--",
                "sleep",
                "300",
            ],
        );
        sleepers.push(owner);
    }
    let with_owners = daemon_resident(dir.path());
    let per = |a: u64, b: u64| (a.saturating_sub(b) as f64) * 1024.0 / count as f64;
    println!(
        "daemon resident memory: {count} records without owners +{:.0} bytes each; {count} with an owner each +{:.0} bytes each (the owner's watch: pidfd, task, index)",
        per(plain.all, before.all),
        per(with_owners.all, plain.all)
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
    for mut s in sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// CPU ticks (user and system) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The daemon's and the keeper's CPU over `window`, in percent of one core.
fn cpu_percent_over(home: &Path, window: Duration) -> f64 {
    let pids = own_pids(home);
    let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(window);
    let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    // Linux counts in USER_HZ, 100 per second.
    (after - before) as f64 / window.as_secs_f64()
}

/// `BPM_BENCH=up`: `bpm up` of 50 services, cold (all start) and warm
/// (nothing to do), beside `bpm ps` in the same run; the time from a
/// service's `READY=1` to `bpm up --wait` returning; and what health checks
/// of 200 processes every 2 s cost the daemon and keeper, beside the same
/// 200 processes without checks.
fn projects() {
    let dir = home("[limits]\nmax_running = 1000\n");
    let project = tempfile::tempdir().expect("project");
    let services = (0..50).fold(String::new(), |mut all, i| {
        use std::fmt::Write as _;
        let _ = write!(all, "[services.s{i}]\ncommand = \"exec sleep 300\"\n");
        all
    });
    let file = format!("[project]\nname = \"bench\"\n{services}");
    let path = project.path().join("bpm.toml");
    std::fs::write(&path, file).expect("file");
    let f = path.to_str().expect("utf-8");
    let t = Instant::now();
    bpm(dir.path(), &["up", "-f", f]);
    let cold = t.elapsed();
    let n = 20;
    let (mut warm, mut ps) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        bpm(dir.path(), &["up", "-f", f]);
        warm.push(t.elapsed());
        let t = Instant::now();
        bpm(dir.path(), &["ps"]);
        ps.push(t.elapsed());
    }
    let (warm, ps) = (median(warm), median(ps));
    println!(
        "bpm up of 50 services: cold {:.1} ms; warm (nothing to do, median of {n}) {:.1} ms (target < 50 ms); bpm ps with them {:.1} ms; ratio {:.2}",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        ps.as_secs_f64() * 1e3,
        warm.as_secs_f64() / ps.as_secs_f64()
    );
    bpm(dir.path(), &["down", "-f", f]);

    // READY=1 to `up --wait` returning.
    let marks = project.path().join("sent");
    let notify = format!(
        "[project]\nname = \"ready\"\n[services.s]\nargv = [\"python3\", \"-c\", \"import os, socket, time; time.sleep(0.3); s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); open('{}', 'w').write(str(time.time_ns())); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(300)\"]\nready = {{ notify = true }}\n",
        marks.display()
    );
    std::fs::write(&path, notify).expect("file");
    let mut lags = Vec::new();
    for _ in 0..10 {
        bpm(dir.path(), &["up", "-f", f, "--wait"]);
        let returned = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos();
        let sent: u128 = std::fs::read_to_string(&marks)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(returned);
        lags.push(Duration::from_nanos(
            u64::try_from(returned - sent).unwrap_or(0),
        ));
        bpm(dir.path(), &["down", "-f", f]);
    }
    println!(
        "READY=1 to bpm up --wait returning (median of 10): {:.1} ms",
        median(lags).as_secs_f64() * 1e3
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    // Health checks of 200 processes every 2 s.
    let count = 200;
    let window = Duration::from_secs(20);
    let dir = home("[limits]\nmax_running = 1000\n");
    for _ in 0..count {
        bpm(dir.path(), &["run", "--", "sleep", "300"]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let plain = cpu_percent_over(dir.path(), window);
    bpm(dir.path(), &["stop", "--all"]);
    // Each checks that a port accepts connections: one the bench listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port().to_string();
    std::thread::spawn(move || for _ in listener.incoming() {});
    for _ in 0..count {
        bpm(
            dir.path(),
            &[
                "run",
                "--health-port",
                &port,
                "--health-every",
                "2s",
                "--",
                "sleep",
                "300",
            ],
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let checked = cpu_percent_over(dir.path(), window);
    println!(
        "daemon and keeper CPU with {count} running processes: {plain:.1}% of one core; with a port health check each every 2 s: {checked:.1}% (over {} s each)",
        window.as_secs()
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// The time from kill -9 of a daemon on a Redis store to the next command
/// answered (a new daemon takes the node over from its dead predecessor),
/// beside the same command against a running daemon.
fn takeover() {
    let redis = bpm_tests::RedisServer::start();
    let config = format!(
        "store = \"{}\"\nredis_prefix = \"takeover-bench\"\nnode = \"n1\"\nlease_ttl = \"10s\"\n",
        redis.url()
    );
    let dir = home(&config);
    let (mut after_kill, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let t = Instant::now();
        bpm(dir.path(), &["ps"]);
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        let pid = std::fs::read_to_string(dir.path().join("daemon.pid")).expect("pid");
        let pid = pid.trim();
        Command::new("kill")
            .args(["-9", pid])
            .status()
            .expect("kill");
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        bpm(dir.path(), &["ps"]);
        after_kill.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "kill -9 of the daemon on Redis (lease 10 s) to the next bpm ps answered (median of 10): {:.1} ms; bpm ps to a running daemon: {:.1} ms",
        median_ms(&mut after_kill),
        median_ms(&mut warm)
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// `bpm ps` while 2,500 silent connections are held open (more than the
/// daemon's 1,024), beside `bpm ps` to the same daemon with none.
fn idle_connections() {
    let dir = home("");
    let ps = |n: usize| {
        let mut samples: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                bpm(dir.path(), &["ps"]);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median_ms(&mut samples)
    };
    let quiet = ps(20);
    let mut held = Vec::new();
    for _ in 0..2_500 {
        match std::os::unix::net::UnixStream::connect(dir.path().join("bpm.sock")) {
            Ok(s) => held.push(s),
            Err(e) => {
                println!("  (stopped opening connections at {}: {e})", held.len());
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let crowded = ps(20);
    println!(
        "bpm ps with {} silent connections held (median of 20): {crowded:.2} ms; with none: {quiet:.2} ms; ratio {:.2}",
        held.len(),
        crowded / quiet
    );
    drop(held);
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// The time from a due time to the start of its run's process, as the
/// process sees it (`date +%s%N`, its first command), for a run's id
/// carries its due time in its first 48 bits.
fn lateness_of_runs(home: &Path, schedule: &str) -> Vec<f64> {
    let listed = bpm(home, &["ps", "--all", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("JSON");
    all.iter()
        .filter(|r| r["scheduled_from"] == schedule && r["state"] == "completed")
        .filter_map(|r| {
            let id = r["id"].as_str()?;
            let due_ms = u64::from_str_radix(&id.replace('-', "")[..12], 16).ok()?;
            let logs = bpm(home, &["logs", id]);
            let started_ns: u128 = logs.trim().parse().ok()?;
            Some((started_ns as f64 / 1e6) - due_ms as f64)
        })
        .collect()
}

/// The p99 (the nearest rank) of `samples`, in ms.
fn p99_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples[rank - 1]
}

/// `BPM_BENCH=schedule`: the lateness of schedules' runs (due time to the
/// process's start; five schedules every second, 100 runs), beside a
/// thread that sleeps until each whole second and starts the same command
/// (the floor: a timer and a fork); then the daemon's memory and CPU with
/// 1,000 schedules waiting, beside the same daemon with none.
fn schedules() {
    let dir = home("");
    let ids: Vec<String> = (0..5)
        .map(|_| {
            bpm(
                dir.path(),
                &["run", "--every", "1s", "--", "sh", "-c", "date +%s%N"],
            )
            .trim()
            .to_owned()
        })
        .collect();
    // The floor, meanwhile: sleep to the next whole second, start the command.
    let mut floor = Vec::new();
    for _ in 0..20 {
        let now = epoch_nanos();
        let due = (now / 1_000_000_000 + 1) * 1_000_000_000;
        std::thread::sleep(Duration::from_nanos(u64::try_from(due - now).unwrap_or(0)));
        let out = Command::new("sh")
            .args(["-c", "date +%s%N"])
            .output()
            .expect("sh");
        let started: u128 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(due);
        floor.push((started.saturating_sub(due)) as f64 / 1e6);
    }
    std::thread::sleep(Duration::from_millis(500));
    for id in &ids {
        bpm(dir.path(), &["stop", id]);
    }
    let mut late: Vec<f64> = ids
        .iter()
        .flat_map(|id| lateness_of_runs(dir.path(), id))
        .collect();
    let runs = late.len();
    let (median, p99) = (median_ms(&mut late), p99_ms(&mut late));
    let (floor_median, floor_p99) = (median_ms(&mut floor), p99_ms(&mut floor));
    println!(
        "a schedule's due time to its process's start, over {runs} runs: median {median:.2} ms, p99 {p99:.2} ms; a thread's sleep to the second, then sh: median {floor_median:.2} ms, p99 {floor_p99:.2} ms; ratio of medians {:.2}",
        median / floor_median
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    let dir = home("");
    bpm(dir.path(), &["ps"]);
    let idle_cpu = cpu_percent_over(dir.path(), Duration::from_secs(10));
    let empty = daemon_resident(dir.path());
    let n: usize = 1000;
    for _ in 0..n {
        bpm(dir.path(), &["run", "--every", "1h", "--", "true"]);
    }
    let full = daemon_resident(dir.path());
    let busy_cpu = cpu_percent_over(dir.path(), Duration::from_secs(10));
    println!(
        "{n} schedules waiting: the daemon holds {:.1} MiB ({:.0} bytes each over {:.1} MiB with none); daemon and keeper CPU over 10 s: {busy_cpu:.2}% of a core, {idle_cpu:.2}% with none",
        full.all as f64 / 1024.0,
        full.all.saturating_sub(empty.all) as f64 * 1024.0 / n as f64,
        empty.all as f64 / 1024.0,
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// `BPM_BENCH=limits`: `id=$(bpm run -- true); bpm wait $id` as a shell
/// pays for it (start to exit seen), plain, with limits (cgroups made,
/// joined between fork and exec, removed at the end) and on a terminal,
/// 40 of each, interleaved on one daemon.
fn limits_and_terminals() {
    let dir = home("");
    let kinds: [(&str, &str); 3] = [
        ("plain", ""),
        (
            "--memory-max 256M --pids-max 64 --nofile 1024",
            "--memory-max 256M --pids-max 64 --nofile 1024",
        ),
        ("--tty", "--tty"),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..40 {
        for (i, (_, flags)) in kinds.iter().enumerate() {
            let bin = &*BPM;
            let script = format!("id=$({bin} run {flags} -- true) && {bin} wait $id");
            let t = Instant::now();
            let status = Command::new("sh")
                .args(["-c", &script])
                .env("BPM_HOME", dir.path())
                .stdout(Stdio::null())
                .status()
                .expect("sh");
            samples[i].push(t.elapsed().as_secs_f64() * 1e3);
            assert!(status.success(), "{script}");
        }
    }
    let plain = median_ms(&mut samples[0].clone());
    for (i, (name, _)) in kinds.iter().enumerate() {
        let m = median_ms(&mut samples[i]);
        println!(
            "id=$(bpm run ... -- true); bpm wait $id, {name}, median of 40: {m:.2} ms (ratio to plain {:.2})",
            m / plain
        );
    }
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// One sample of `BPM_BENCH=exit`, run by bash: `$1` is bpm, `$2` how long
/// the process lives, `$3` a scratch file, `$4` `floor-first` to run the
/// floor before bpm (after it otherwise). The process (bash, sleeping)
/// notes the time as it begins (in `$3.0`) and just before it exits; the
/// floor is the same process started with `&` and waited for with `wait
/// $!`. Prints the record's id; then start, the process's end and the
/// shell's return for bpm; the same three for the floor; the process's
/// beginning for bpm, then for the floor; and when `bpm run` returned
/// (seconds, from `$EPOCHREALTIME`).
const EXIT_SAMPLE: &str = r#"
S=$3; P="printf %s \$EPOCHREALTIME > $S.0; sleep $2; printf %s \$EPOCHREALTIME > $S"
floor() { u0=$EPOCHREALTIME; bash -c "$P" & wait $!; u2=$EPOCHREALTIME; f=$(<"$S"); fs=$(<"$S.0"); }
if [ "$4" = floor-first ]; then floor; fi
t0=$EPOCHREALTIME; id=$("$1" run -- bash -c "$P") || exit 1; t1=$EPOCHREALTIME
"$1" wait "$id" >/dev/null || exit 1; t2=$EPOCHREALTIME; e=$(<"$S"); es=$(<"$S.0")
if [ "$4" != floor-first ]; then floor; fi
echo "$id $t0 $e $t2 $u0 $f $u2 $es $fs $t1"
"#;

/// The hops an exit takes from the process's end to the waiting client's
/// return, as `BPM_LOG=bpm::hop=trace` makes the keeper and the daemon log them.
const HOPS: [&str; 6] = [
    "reaped",
    "exit sent",
    "exit received",
    "exit stored",
    "end announced",
    "wait answered",
];

/// The hops of a start, logged the same way: the daemon asks its keeper to
/// spawn, the keeper's `posix_spawn` returns (the child has called `exec`),
/// the daemon answers `bpm run` (the record is on disk too).
const START_HOPS: [&str; 3] = ["spawn asked", "spawned", "run answered"];

/// `BPM_BENCH=exit`: where an exit's time goes, for processes that live
/// 50 ms, 1 s, 10 s and 60 s (`BPM_BENCH_LIVES="0.05:8 1:8"` to choose,
/// as seconds:samples). Each sample is `id=$(bpm run -- P); bpm wait $id`
/// from bash beside `P & wait $!`, where P is a bash that notes the time
/// as it begins, sleeps, and notes it again just before it exits. Prints,
/// per lifetime, the median excess over the floor (start to return), the
/// worst excess and how many samples passed 5 ms (the issue's target), the
/// median split into a start side (to P's first moment) and an end side
/// (from P's last), and the median time of each hop: the
/// keeper reaps the process (pidfd), sends the exit, the daemon receives
/// it, has stored it (journal flushed), announces the record's end (after
/// reading its output's tail for the event), answers `bpm wait`, and the
/// shell has `bpm wait`'s exit.
fn exit_trace() {
    let dir = tempfile::tempdir().expect("home");
    let start = Command::new(&*BPM)
        .arg("ps")
        .env("BPM_HOME", dir.path())
        .env("BPM_LOG", "warn,bpm=info,bpm::hop=trace")
        .stdout(Stdio::null())
        .status()
        .expect("bpm");
    assert!(start.success());
    let lives = std::env::var("BPM_BENCH_LIVES").unwrap_or_else(|_| "0.05:8 1:8 10:4 60:2".into());
    let scratch = dir.path().join("ended");
    let mut rows = Vec::new();
    for life in lives.split_whitespace() {
        let (secs, n) = life.split_once(':').expect("seconds:samples");
        let n: usize = n.parse().expect("a number of samples");
        let mut samples = Vec::new();
        for i in 0..n {
            // Which runs first alternates: on this machine the first
            // command after a long quiet pays more (bench/NOTEBOOK.md, "A
            // minute of quiet"), and that should fall on each side alike.
            let order = if i % 2 == 1 {
                "floor-first"
            } else {
                "bpm-first"
            };
            let out = Command::new("bash")
                .args(["-c", EXIT_SAMPLE, "sample", BPM.as_str(), secs])
                .arg(&scratch)
                .arg(order)
                .env("BPM_HOME", dir.path())
                .stderr(Stdio::inherit())
                .output()
                .expect("bash");
            assert!(out.status.success(), "a sample failed");
            let line = String::from_utf8(out.stdout).expect("utf-8");
            let f: Vec<&str> = line.split_whitespace().collect();
            let t = |i: usize| f[i].parse::<f64>().expect("a time");
            samples.push((
                f[0].to_owned(),
                [t(1), t(2), t(3), t(4), t(5), t(6), t(7), t(8), t(9)],
            ));
        }
        rows.push((secs.to_owned(), samples));
    }
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
    let (hops, received) = hop_times(dir.path());
    println!(
        "an exit's way to `bpm wait`, from bash (ms; medians; floor: `P & wait $!`; hop times are from the process's own last moment)"
    );
    println!(
        "| lives | samples | excess over the floor | worst | over 5 ms | of it, start side | of it, end side | floor: end to shell | reaped | exit sent | exit received | exit stored | end announced | wait answered | shell has it |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (secs, samples) in &rows {
        let mut excess: Vec<f64> = samples
            .iter()
            .map(|(_, t)| ((t[2] - t[0]) - (t[5] - t[3])) * 1e3)
            .collect();
        // The start side: from the command's start to P's first moment,
        // less the floor's; the end side: from P's last moment to the
        // shell's return, less the floor's. Their sum is the excess but
        // for the two sleeps' own difference.
        let mut start: Vec<f64> = samples
            .iter()
            .map(|(_, t)| ((t[6] - t[0]) - (t[7] - t[3])) * 1e3)
            .collect();
        let mut end: Vec<f64> = samples
            .iter()
            .map(|(_, t)| ((t[2] - t[1]) - (t[5] - t[4])) * 1e3)
            .collect();
        let mut floor: Vec<f64> = samples.iter().map(|(_, t)| (t[5] - t[4]) * 1e3).collect();
        let mut cells = vec![
            format!("{secs} s"),
            samples.len().to_string(),
            format!("{:.2}", median_ms(&mut excess)),
            // The target is 5 ms at every age, not in the median alone.
            format!("{:.2}", excess.iter().copied().fold(f64::MIN, f64::max)),
            excess.iter().filter(|e| **e > 5.0).count().to_string(),
            format!("{:.2}", median_ms(&mut start)),
            format!("{:.2}", median_ms(&mut end)),
            format!("{:.2}", median_ms(&mut floor)),
        ];
        for hop in HOPS {
            let mut at: Vec<f64> = samples
                .iter()
                .filter_map(|(id, t)| Some((hops.get(&(id.clone(), hop))? - t[1]) * 1e3))
                .collect();
            cells.push(if at.is_empty() {
                "-".into()
            } else {
                format!("{:.2}", median_ms(&mut at))
            });
        }
        let mut back: Vec<f64> = samples.iter().map(|(_, t)| (t[2] - t[1]) * 1e3).collect();
        cells.push(format!("{:.2}", median_ms(&mut back)));
        println!("| {} |", cells.join(" | "));
    }
    println!();
    println!(
        "a start's way to the process, from bash (ms; medians; floor: `P &`; hop times are from the shell's start of `bpm run`)"
    );
    println!(
        "| lives | floor: to P's first moment | run received | spawn asked | spawned | P's first moment | run answered | shell has the id |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (secs, samples) in &rows {
        let mut floor: Vec<f64> = samples.iter().map(|(_, t)| (t[7] - t[3]) * 1e3).collect();
        let mut cells = vec![format!("{secs} s"), format!("{:.2}", median_ms(&mut floor))];
        let hop = |name: &'static str| -> String {
            let mut at: Vec<f64> = samples
                .iter()
                .filter_map(|(id, t)| Some((hops.get(&(id.clone(), name))? - t[0]) * 1e3))
                .collect();
            if at.is_empty() {
                "-".into()
            } else {
                format!("{:.2}", median_ms(&mut at))
            }
        };
        // The first start the daemon received after the shell began this one.
        let mut got: Vec<f64> = samples
            .iter()
            .filter_map(|(_, t)| Some((received.iter().find(|at| **at >= t[0])? - t[0]) * 1e3))
            .collect();
        cells.push(if got.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", median_ms(&mut got))
        });
        cells.push(hop(START_HOPS[0]));
        cells.push(hop(START_HOPS[1]));
        let mut begins: Vec<f64> = samples.iter().map(|(_, t)| (t[6] - t[0]) * 1e3).collect();
        cells.push(format!("{:.2}", median_ms(&mut begins)));
        cells.push(hop(START_HOPS[2]));
        let mut has: Vec<f64> = samples.iter().map(|(_, t)| (t[8] - t[0]) * 1e3).collect();
        cells.push(format!("{:.2}", median_ms(&mut has)));
        println!("| {} |", cells.join(" | "));
    }
}

/// What [`hop_times`] reads: the time of each hop by record and hop, and
/// those of the start requests received, in order.
type Hops = (
    std::collections::HashMap<(String, &'static str), f64>,
    Vec<f64>,
);

/// The time of each hop of each record, from the keeper's and the daemon's
/// logs: lines such as `2026-11-26T15:30:01.123456Z TRACE bpm::hop: reaped
/// id=…`; and when the daemon received each start request (`run received`
/// names no record: the engine makes the id).
fn hop_times(home: &Path) -> Hops {
    let (mut times, mut received) = (std::collections::HashMap::new(), Vec::new());
    for log in ["keeper.log", "daemon.log"] {
        let text = std::fs::read_to_string(home.join(log)).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("bpm::hop")) {
            let Some(at) = line.split_whitespace().next().and_then(rfc3339_seconds) else {
                continue;
            };
            if line.contains("bpm::hop: run received") {
                received.push(at);
                continue;
            }
            let Some(id) = line.split("id=").nth(1).map(|r| r.trim().to_owned()) else {
                continue;
            };
            if let Some(hop) = HOPS
                .iter()
                .chain(&START_HOPS)
                .find(|h| line.contains(&format!(": {h} ")))
            {
                times.entry((id, *hop)).or_insert(at);
            }
        }
    }
    received.sort_by(f64::total_cmp);
    (times, received)
}

/// Seconds since the epoch, to the microsecond, of a log line's UTC time
/// such as `2026-11-26T15:30:01.123456Z`: the whole seconds as the domain's
/// [`Timestamp`](bpm_domain::Timestamp) reads them, the fraction as written.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    let body = text.strip_suffix('Z')?;
    let (whole, fraction) = body.split_once('.').unwrap_or((body, "0"));
    let at: bpm_domain::Timestamp = format!("{whole}Z").parse().ok()?;
    let fraction: f64 = format!("0.{fraction}").parse().ok()?;
    Some(at.as_millis() as f64 / 1e3 + fraction)
}

/// `BPM_BENCH=shell`'s rounds, run by bash: `$1` is bpm, `$2` the number of
/// rounds, `$3` an id to show. Each round times, with `$EPOCHREALTIME`, in
/// turn: `id=$(bpm run -- sleep 30)`, `setsid -f sleep 30`, `x=$(bpm
/// --version)` (the command's own start), `x=$(bpm show ID)` (start,
/// connect and one answer, nothing started) and `x=$(true)` (the shell's
/// fork, exec and read of a command's output). Prints one line of five
/// times in microseconds per round. `setsid`'s sleep writes to /dev/null:
/// holding the rounds' output pipe, it would keep the reader waiting 30 s.
const SHELL_ROUNDS: &str = r#"
for _ in $(seq "$2"); do
  a=$EPOCHREALTIME; id=$("$1" run -- sleep 30.5) || exit 1; b=$EPOCHREALTIME
  setsid -f sleep 30.6 >/dev/null 2>&1; c=$EPOCHREALTIME
  x=$("$1" --version); d=$EPOCHREALTIME
  x=$("$1" show "$3") || exit 1; e=$EPOCHREALTIME
  x=$(true); f=$EPOCHREALTIME
  echo $(( ${b/./} - ${a/./} )) $(( ${c/./} - ${b/./} )) $(( ${d/./} - ${c/./} )) $(( ${e/./} - ${d/./} )) $(( ${f/./} - ${e/./} ))
done
"#;

/// `BPM_BENCH=shell`'s rounds on the daemon of home `dir`: the medians of
/// [`SHELL_ROUNDS`]' five columns, in milliseconds.
fn shell_medians(dir: &Path, rounds: usize) -> Vec<f64> {
    let id = bpm(dir, &["run", "--", "true"]).trim().to_owned();
    bpm(dir, &["wait", &id]);
    let out = Command::new("bash")
        .args(["-c", SHELL_ROUNDS, "rounds", BPM.as_str()])
        .arg(rounds.to_string())
        .arg(&id)
        .env("BPM_HOME", dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash");
    let _ = Command::new("pkill").args(["-f", "sleep 30.6"]).status();
    bpm(dir, &["stop", "--all"]);
    assert!(out.status.success(), "the rounds failed");
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        for (i, v) in line.split_whitespace().enumerate() {
            columns[i].push(v.parse::<f64>().expect("a time") / 1e3);
        }
    }
    columns.iter_mut().map(|c| median_ms(c)).collect()
}

/// `BPM_BENCH=shell`: `bpm run` as a shell pays for it, beside `setsid -f`
/// and the parts of its cost (see [`SHELL_ROUNDS`]), on the default file
/// store and on `store = "memory"`, which writes nothing to disk: the
/// difference is what the file store's durable write (its journal's flush,
/// which the answer waits for) costs a start. Four turns of 10 rounds each,
/// the two daemons taking turns; per store, the median of its four turns'
/// medians.
fn shell_costs() {
    let (file, memory) = (home(""), home("store = \"memory\"\n"));
    let (mut on_file, mut on_memory) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        on_file.push(shell_medians(file.path(), 10));
        on_memory.push(shell_medians(memory.path(), 10));
    }
    for dir in [&file, &memory] {
        bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
    }
    // The median of each column over the four turns' medians.
    let column = |turns: &[Vec<f64>], i: usize| {
        let mut v: Vec<f64> = turns.iter().map(|t| t[i]).collect();
        median_ms(&mut v)
    };
    let m: Vec<f64> = (0..5).map(|i| column(&on_file, i)).collect();
    let (run, setsid, version, show, subst) = (m[0], m[1], m[2], m[3], m[4]);
    println!(
        "from bash, 4 turns of 10 rounds: id=$(bpm run -- sleep 30) {run:.2} ms; setsid -f sleep 30 {setsid:.2} ms; ratio {:.2} (target <= 2)",
        run / setsid
    );
    println!(
        "  where it goes: x=$(true) {subst:.2} ms; x=$(bpm --version) {version:.2} ms; x=$(bpm show ID) {show:.2} ms (start, connect, one answer)"
    );
    let (m_run, m_setsid) = (column(&on_memory, 0), column(&on_memory, 1));
    println!(
        "  with store = \"memory\" (no journal, no flush), in turn: id=$(bpm run -- sleep 30) {m_run:.2} ms; setsid -f {m_setsid:.2} ms; ratio {:.2}; the file store's durable write costs a start {:.2} ms",
        m_run / m_setsid,
        run - m_run
    );
}

/// `BPM_BENCH=capture`: `head -c 1G /dev/zero` started with `bpm run` and
/// waited for with `bpm wait`, its output captured by the daemon into the
/// file store (default caps), beside the same command redirected to a file
/// in the same folder. `BPM_BENCH_ROUNDS` rounds (5 by default) on one
/// daemon, the two taking turns going first; every round, the first round's
/// ratio (a daemon's first capture) and the median are printed, then the
/// daemon's resident memory after the rounds. bpm keeps the newest 64 MiB
/// (the default cap) and deletes older segments, often before the disk
/// wrote them; the redirect keeps the whole 1 GiB.
fn daemon_capture() {
    const BYTES: u64 = 1 << 30;
    let rounds: usize = std::env::var("BPM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = home("");
    let size = BYTES.to_string();
    let mib = (BYTES >> 20) as f64;
    let before = daemon_resident(dir.path());
    let through_bpm = || {
        let t = Instant::now();
        let id = bpm(dir.path(), &["run", "--", "head", "-c", &size, "/dev/zero"]);
        bpm(dir.path(), &["wait", id.trim()]);
        let took = t.elapsed();
        let shown = bpm(dir.path(), &["show", "--json", id.trim()]);
        assert!(
            shown.contains("\"completed\""),
            "the capture ended: {shown}"
        );
        took
    };
    let redirect = || {
        let file = dir.path().join("direct.out");
        let t = Instant::now();
        let status = Command::new("head")
            .args(["-c", &size, "/dev/zero"])
            .stdout(std::fs::File::create(&file).expect("file"))
            .status()
            .expect("head");
        let took = t.elapsed();
        assert!(status.success());
        let _ = std::fs::remove_file(file);
        took
    };
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (ours, direct) = if round % 2 == 0 {
            let direct = redirect();
            (through_bpm(), direct)
        } else {
            let ours = through_bpm();
            (ours, redirect())
        };
        let (ours, direct) = (mib / ours.as_secs_f64(), mib / direct.as_secs_f64());
        ratios.push(ours / direct);
        println!(
            "round {round}: 1 GiB through the daemon {ours:.0} MiB/s; redirect to a file {direct:.0} MiB/s; ratio {:.2}",
            ours / direct
        );
    }
    let first = ratios[0];
    println!(
        "capture through the daemon, ratio to a redirect: first round {first:.2}; median of {rounds} {:.2} (target >= 0.7)",
        median_ms(&mut ratios)
    );
    let after = daemon_resident(dir.path());
    println!(
        "daemon resident memory: {:.1} MiB before the rounds, {:.1} MiB after",
        before.all as f64 / 1024.0,
        after.all as f64 / 1024.0
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

fn main() {
    match std::env::var("BPM_BENCH").as_deref() {
        Ok("shell") => return shell_costs(),
        Ok("capture") => return daemon_capture(),
        Ok("exit") => return exit_trace(),
        Ok("limits") => return limits_and_terminals(),
        Ok("idle") => return idle_connections(),
        Ok("ps") => return ps_with_running_trees(),
        Ok("memory") => return memory_alone(),
        Ok("fence") => return fence_checks(),
        Ok("takeover") => return takeover(),
        Ok("ensure") => return ensure_cost(),
        Ok("owners") => return owners(),
        Ok("up") => return projects(),
        Ok("watch") => return watches(),
        Ok("schedule") => return schedules(),
        _ => {}
    }
    println!("the bpm command and its daemon (fs store, keeper)");
    let dir = home("");
    let n = 200;
    let ours = round_trips(dir.path(), n);
    let base = setsid_baseline(n);
    println!(
        "bpm run round trip (median of {n}): {:.2} ms; setsid -f sleep 1: {:.2} ms; ratio {:.2} (target <= 2)",
        ours.as_secs_f64() * 1e3,
        base.as_secs_f64() * 1e3,
        ours.as_secs_f64() / base.as_secs_f64()
    );
    // On a quiet, empty home: the sleeps above still end and queue meanwhile.
    let quiet = home("");
    let version = timed(quiet.path(), &["--version"], n);
    let ps = timed(quiet.path(), &["ps"], n);
    bpm(quiet.path(), &["daemon", "stop"]);
    println!(
        "  where it goes: bpm --version (no daemon) {:.2} ms; bpm ps (connect, handshake, an empty list) {:.2} ms",
        version.as_secs_f64() * 1e3,
        ps.as_secs_f64() * 1e3
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);

    // 10,000 records: tracked operations, completed at once, through the client library.
    let big = home("");
    bpm(big.path(), &["ps"]);
    let empty = daemon_resident(big.path());
    fill_tracked(big.path(), 0);
    // What a retained finished record costs the daemon (and, below, after
    // a restart, which reads them all back from the store).
    let filled = daemon_resident(big.path());
    let at_10k = round_trips(big.path(), n);
    println!(
        "bpm run round trip with 10,000 records: {:.2} ms; ratio to 0 records {:.2} (target <= 1.2)",
        at_10k.as_secs_f64() * 1e3,
        at_10k.as_secs_f64() / ours.as_secs_f64()
    );
    let t = Instant::now();
    let listed = bpm(big.path(), &["ps", "--all", "--json"]);
    let count = serde_json::from_str::<serde_json::Value>(&listed)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    println!(
        "bpm ps --all --json with {count} records: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    report_memory(big.path(), empty, filled, count);
    bpm(big.path(), &["daemon", "stop", "--kill-all"]);

    let par = home("[limits]\nmax_running = 2\n");
    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..500 {
        ids.push(bpm(par.path(), &["run", "--", "true"]).trim().to_owned());
    }
    let mut args = vec!["wait"];
    args.extend(ids.iter().map(String::as_str));
    bpm(par.path(), &args);
    let ours = t.elapsed();
    let t = Instant::now();
    Command::new("sh")
        .args(["-c", "seq 500 | xargs -P2 -n1 true"])
        .status()
        .expect("xargs");
    let xargs = t.elapsed();
    println!(
        "500 x true through bpm's queue at parallelism 2 (bpm run each, one bpm wait): {:.2} s; xargs -P2: {:.2} s; ratio {:.1} (500 client processes; the target is measured by the rounds below)",
        ours.as_secs_f64(),
        xargs.as_secs_f64(),
        ours.as_secs_f64() / xargs.as_secs_f64()
    );
    bpm(par.path(), &["daemon", "stop", "--kill-all"]);

    // The same, submitted by one `bpm run --from -` (one request, the records
    // written together), in rounds that alternate with xargs, each on a
    // fresh daemon: one run of each swings by a fifth from run to run here.
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let par = home("[limits]\nmax_running = 2\n");
        let xargs_first = round % 2 == 1;
        let baseline = || {
            let t = Instant::now();
            Command::new("sh")
                .args(["-c", "seq 500 | xargs -P2 -n1 true"])
                .status()
                .expect("xargs");
            t.elapsed()
        };
        let before = if xargs_first { Some(baseline()) } else { None };
        let (ours, submitted) = queue_of_trues(par.path());
        let xargs = before.unwrap_or_else(baseline);
        let ratio = ours.as_secs_f64() / xargs.as_secs_f64();
        println!(
            "  round {}: {:.3} s (submission {:.0} ms); xargs -P2 {:.3} s; ratio {ratio:.2}",
            round + 1,
            ours.as_secs_f64(),
            submitted.as_secs_f64() * 1e3,
            xargs.as_secs_f64(),
        );
        ratios.push(ratio);
        bpm(par.path(), &["daemon", "stop", "--kill-all"]);
        drop(par);
        // Let the filesystem finish with the last round's files.
        std::thread::sleep(Duration::from_secs(1));
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "the same, submitted by one bpm run --from - (one request), {ROUNDS} rounds alternating with xargs -P2: ratio median {:.2} (lowest {:.2}, highest {:.2}; target <= 1.3)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );

    for (n, flags) in [(0, ""), (200, ""), (200, "--clean-env"), (1000, "")] {
        let (kib, procs) = memory_with(n, flags);
        println!(
            "memory of bpm's own processes ({procs}: daemon and keeper) with {n} running sleeps{}: {:.1} MiB PSS{}",
            if flags.is_empty() {
                String::new()
            } else {
                format!(" (bpm run {flags})")
            },
            kib as f64 / 1024.0,
            if n == 200 && flags.is_empty() {
                " (target <= 20 MiB)"
            } else {
                ""
            }
        );
    }
    ps_with_running_trees();
}
