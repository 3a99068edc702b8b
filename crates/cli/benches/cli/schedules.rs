//! `BPM_BENCH=schedules` and `BPM_BENCH=limits`: how late a schedule's
//! runs start, and what limits and terminals cost.

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) fn schedules() {
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
    // 21 seconds: at least 100 runs of the five schedules.
    for _ in 0..21 {
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
        "{n} schedules waiting: the daemon holds {:.1} MiB ({:.1} MiB with none); {:.0} bytes of anonymous memory each; daemon and keeper CPU over 10 s: {busy_cpu:.2}% of a core, {idle_cpu:.2}% with none",
        full.all as f64 / 1024.0,
        empty.all as f64 / 1024.0,
        full.anon().saturating_sub(empty.anon()) as f64 * 1024.0 / n as f64,
    );
    bpm(dir.path(), &["daemon", "stop", "--kill-all"]);
}

/// `BPM_BENCH=limits`: `id=$(bpm run -- true); bpm wait $id` as a shell
/// pays for it (start to exit seen), plain, with limits (cgroups made,
/// joined between fork and exec, removed at the end) and on a terminal,
/// 40 of each, interleaved on one daemon.
pub(super) fn limits_and_terminals() {
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
