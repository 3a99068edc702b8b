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

mod exit;
mod schedules;
mod shell;

use exit::exit_trace;
use schedules::{limits_and_terminals, schedules};
use shell::{daemon_capture, shell_costs};

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

impl Resident {
    /// Without the pages of files: what records, schedules and watches
    /// cost, whether or not the daemon has given its code's pages back
    /// yet (it does once quiet), which moves `all` by megabytes.
    fn anon(self) -> u64 {
        self.all.saturating_sub(self.files)
    }
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
        twice.anon().saturating_sub(filled.anon()) as f64 * 1024.0 / 10_000.0,
        twice.all as f64 / 1024.0,
    );
    println!(
        "  each record from 10,000 to 20,000 added {further:.0} bytes of anonymous memory ({twice_mib:.1} MiB resident with 20,000)"
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

    env_file_cost(src.path());
    watch_memory();
}

/// An env file read at each start, beside the same variables given inline.
fn env_file_cost(src: &std::path::Path) {
    let dir = home("");
    let env = src.join("app.env");
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
}

/// What a watch costs the daemon: 200 processes, then 200 more watching a
/// directory each.
fn watch_memory() {
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
        "daemon anonymous memory: {count} records +{:.0} bytes each; {count} watching a directory each +{:.0} bytes each",
        per(plain.anon(), before.anon()),
        per(watched.anon(), plain.anon())
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
        "daemon anonymous memory: {count} records without owners +{:.0} bytes each; {count} with an owner each +{:.0} bytes each (the owner's watch: pidfd, task, index)",
        per(plain.anon(), before.anon()),
        per(with_owners.anon(), plain.anon())
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
    let ours = round_trip_costs();
    ten_thousand_records(ours);
    queue_of_500_trues();
    memory_table();
    ps_with_running_trees();
}

/// `bpm run`'s round trip against `setsid -f`, and where its time goes; the
/// round trip, for the ratios that follow.
fn round_trip_costs() -> Duration {
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

    ours
}

/// 10,000 records (tracked operations, completed at once): the round trip
/// beside `ours` with none, `bpm ps --all`, and the daemon's memory.
fn ten_thousand_records(ours: Duration) {
    let n = 200;
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
}

/// 500 `true`s through bpm's queue at parallelism 2 against `xargs -P2`:
/// one `bpm run` each, then one `bpm run --from -` in alternating rounds.
fn queue_of_500_trues() {
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
}

/// The memory of bpm's own processes with 0 to 1,000 running sleeps.
fn memory_table() {
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
}
