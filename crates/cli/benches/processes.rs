//! Real-process figures for the engine with the OS spawner, each beside a
//! baseline measured in the same run. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-cli --bench processes`

// Figures for printing: float conversions of counts and nanoseconds lose nothing that matters here.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bpm_domain::{EventKind, Limits, ProcessSpec, StateName};
use bpm_ports::{OutputQuery, ProcessManager, StopOptions};
use bpm_runtime::Engine;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

async fn engine(limits: Limits, dir: &std::path::Path) -> Engine {
    // Records in memory, output in capped files: what is measured is the
    // processes, not the record store.
    bpm_embed::builder()
        .file_output(dir.join("output"))
        .limits(limits)
        .start()
        .await
        .expect("engine")
}

/// Time from a process's last act (printing the clock) to its terminal event, in ms.
async fn exit_latency(bpm: &Engine, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut events = bpm.subscribe();
    let mut through_bpm = Vec::with_capacity(n);
    for _ in 0..n {
        let r = bpm
            .start(ProcessSpec::argv(["date", "+%s%N"]))
            .await
            .expect("start");
        let seen = loop {
            let e = events.recv().await.expect("event");
            if e.id == r.id() && e.state.is_terminal() {
                break now_ns();
            }
        };
        let text = bpm
            .read_output(r.id(), OutputQuery::default())
            .await
            .expect("output")
            .text();
        let printed: u128 = text.trim().parse().expect("a clock reading");
        through_bpm.push((seen.saturating_sub(printed)) as f64 / 1e6);
    }
    // Baseline: the same program awaited directly with tokio.
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let out = tokio::process::Command::new("date")
            .arg("+%s%N")
            .output()
            .await
            .expect("date");
        let seen = now_ns();
        let printed: u128 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("clock");
        direct.push((seen.saturating_sub(printed)) as f64 / 1e6);
    }
    (through_bpm, direct)
}

async fn spawn_latency(bpm: &Engine, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut through_bpm = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = bpm.start(ProcessSpec::argv(["true"])).await.expect("start");
        through_bpm.push(t.elapsed().as_secs_f64() * 1e3);
        ids.push(r.id());
        bpm.wait(r.id(), None).await.expect("ends");
    }
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut child = tokio::process::Command::new("true").spawn().expect("spawn");
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        child.wait().await.expect("wait");
    }
    (through_bpm, direct)
}

async fn throughput(dir: &std::path::Path, n: usize) -> (Duration, Duration) {
    let bpm = engine(
        Limits {
            max_running: 2,
            ..Limits::default()
        },
        dir,
    )
    .await;
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            bpm.start(ProcessSpec::argv(["true"]))
                .await
                .expect("start")
                .id(),
        );
    }
    for id in ids {
        assert_eq!(
            bpm.wait(id, None).await.expect("ends").state(),
            StateName::Completed
        );
    }
    let through_bpm = t.elapsed();
    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("seq {n} | xargs -P2 -n1 true")])
        .status()
        .expect("xargs");
    assert!(status.success());
    (through_bpm, t.elapsed())
}

/// One round of `BPM_BENCH=capture`: bpm's time and the redirect's, the
/// redirect first when `redirect_first` (rounds alternate, so neither always
/// meets the page cache the other left).
async fn capture(dir: &std::path::Path, bytes: u64, redirect_first: bool) -> (Duration, Duration) {
    let first = redirect_first.then(|| redirect(dir, bytes));
    let bpm = engine(Limits::default(), dir).await;
    let t = Instant::now();
    let r = bpm
        .start(ProcessSpec::argv([
            "head",
            "-c",
            &bytes.to_string(),
            "/dev/zero",
        ]))
        .await
        .expect("start");
    let end = bpm.wait(r.id(), None).await.expect("ends");
    assert_eq!(end.state(), StateName::Completed);
    let through_bpm = t.elapsed();
    let chunk = bpm
        .read_output(
            r.id(),
            OutputQuery {
                cursor: Some(bpm_ports::Cursor(0)),
                max_bytes: 128 << 20,
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read");
    assert_eq!(
        chunk.skipped + chunk.bytes().len() as u64,
        bytes,
        "every byte was counted"
    );
    drop(chunk);
    (through_bpm, first.unwrap_or_else(|| redirect(dir, bytes)))
}

/// `head -c BYTES /dev/zero` redirected to a file: capture's baseline.
fn redirect(dir: &std::path::Path, bytes: u64) -> Duration {
    let file = dir.join("direct.out");
    let t = Instant::now();
    let status = std::process::Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(std::fs::File::create(&file).expect("file"))
        .stderr(Stdio::null())
        .status()
        .expect("head");
    assert!(status.success());
    let direct = t.elapsed();
    let _ = std::fs::remove_file(file);
    direct
}

fn own_memory_kib() -> (u64, u64) {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// An engine with room for `n` processes at once.
async fn engine_for(n: usize, dir: &std::path::Path) -> Engine {
    engine(
        Limits {
            max_running: n,
            ..Limits::default()
        },
        dir,
    )
    .await
}

/// Starts `n` long `sleep`s and returns once every one has started.
async fn start_sleeps(bpm: &Engine, n: usize) -> Vec<bpm_domain::ProcessId> {
    let mut events = bpm.subscribe();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            bpm.start(ProcessSpec::argv(["sleep", "300"]))
                .await
                .expect("start")
                .id(),
        );
    }
    let mut started = 0;
    while started < n {
        if events.recv().await.expect("event").kind == EventKind::Started {
            started += 1;
        }
    }
    ids
}

async fn memory(dir: &std::path::Path, n: usize) -> (u64, u64) {
    let bpm = engine_for(n, dir).await;
    let before = own_memory_kib();
    let ids = start_sleeps(&bpm, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = own_memory_kib();
    for id in ids {
        bpm.stop(id, StopOptions::force()).await.expect("stop");
    }
    (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    )
}

/// CPU time this process's live threads have used, in nanoseconds (the
/// scheduler's own count: clock ticks are too coarse for a fraction of a
/// millisecond).
fn own_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| {
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    })
}

/// CPU milliseconds per call of `call`, over `n` calls spaced `gap` apart.
async fn cpu_ms_per_call<F, Fut>(n: u32, gap: Duration, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = own_cpu_ns();
    for _ in 0..n {
        call().await;
        tokio::time::sleep(gap).await;
    }
    own_cpu_ns().saturating_sub(before) as f64 / 1e6 / f64::from(n)
}

/// CPU milliseconds of `n` idle gaps alone: what the runtime costs meanwhile.
async fn idle_ms(n: u32, gap: Duration) -> f64 {
    cpu_ms_per_call(n, gap, || async {}).await
}

/// The cost of sampling what `n` running trees use, against listing them.
async fn sampling(dir: &std::path::Path, n: usize) -> (f64, f64, usize) {
    let bpm = engine_for(n, dir).await;
    let ids = start_sleeps(&bpm, n).await;
    let gap = Duration::from_millis(50);
    let rounds = 100;
    let sampled = bpm.resource_usage().await.expect("usage").len();
    let usage = cpu_ms_per_call(rounds, gap, || async {
        bpm.resource_usage().await.expect("usage");
    })
    .await;
    let list = cpu_ms_per_call(rounds, gap, || async {
        bpm.list(bpm_domain::ListFilter::default())
            .await
            .expect("list");
    })
    .await;
    // Each figure is net of what the waits between calls cost by themselves.
    let idle = idle_ms(rounds, gap).await;
    let (usage, list) = ((usage - idle).max(0.0), (list - idle).max(0.0));
    for id in ids {
        bpm.stop(id, StopOptions::force()).await.expect("stop");
    }
    (usage, list, sampled)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!("bpm with real processes (OS spawner, in-memory records, file output)");

    let only = std::env::var("BPM_BENCH").unwrap_or_default();
    let bpm = engine(Limits::default(), dir.path()).await;
    if only.is_empty() || only == "latency" {
        let (ours, direct) = exit_latency(&bpm, 1000).await;
        let ((p50, p99), (d50, d99)) = (summary(ours), summary(direct));
        println!("exit detection, process exit -> terminal event, 1000 exits:");
        println!(
            "  bpm:                     p50 {p50:.2} ms  p99 {p99:.2} ms   (target p50 <= 5 ms)"
        );
        println!("  tokio wait, no manager:  p50 {d50:.2} ms  p99 {d99:.2} ms   (baseline)");

        let (ours, direct) = spawn_latency(&bpm, 1000).await;
        let ((p50, p99), (d50, d99)) = (summary(ours), summary(direct));
        println!("spawn, start() returning a running record, 1000 spawns of `true`:");
        println!("  bpm:                     p50 {p50:.2} ms  p99 {p99:.2} ms");
        println!("  tokio spawn, no manager: p50 {d50:.2} ms  p99 {d99:.2} ms   (baseline)");
    }
    if only.is_empty() || only == "throughput" {
        let (ours, xargs) = throughput(dir.path(), 1000).await;
        println!("1000 x `true` at parallelism 2:");
        println!(
            "  bpm {:.2} s, xargs -P2 {:.2} s, ratio {:.2} (target <= 1.3)",
            ours.as_secs_f64(),
            xargs.as_secs_f64(),
            ours.as_secs_f64() / xargs.as_secs_f64()
        );
    }
    if only.is_empty() || only == "capture" {
        let gib = 1u64 << 30;
        // Each round times both, in turn first: the machine's swing between
        // rounds is larger than either's own.
        let rounds: usize = std::env::var("BPM_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5);
        println!("capture of 1 GiB written to stdout, {rounds} rounds:");
        let mut ratios = Vec::new();
        let (mut all_ours, mut all_direct) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (ours, direct) = capture(dir.path(), gib, round % 2 == 1).await;
            let (s_ours, s_direct) = (1024.0 / ours.as_secs_f64(), 1024.0 / direct.as_secs_f64());
            println!(
                "  bpm {s_ours:.0} MiB/s, redirect to a file {s_direct:.0} MiB/s, ratio {:.2}",
                s_ours / s_direct
            );
            ratios.push(s_ours / s_direct);
            all_ours.push(s_ours);
            all_direct.push(s_direct);
        }
        println!(
            "  median: bpm {:.0} MiB/s, redirect {:.0} MiB/s, ratio {:.2} (target >= 0.7)",
            median(&mut all_ours),
            median(&mut all_direct),
            median(&mut ratios)
        );
    }
    if only.is_empty() || only == "sampling" {
        let n = 200;
        let (usage, list, sampled) = sampling(dir.path(), n).await;
        println!("resource usage of {n} running `sleep` trees ({sampled} sampled), CPU per call:");
        println!(
            "  sample {usage:.2} ms = {:.2}% of one core at one sample every 2 s (target <= 1%)",
            usage / 2000.0 * 100.0
        );
        println!(
            "  list of the same records {list:.2} ms (baseline); ratio {:.1}",
            usage / list.max(0.01)
        );
    }
    if only.is_empty() || only == "memory" {
        let n = 1000;
        let (rss, pss) = memory(dir.path(), n).await;
        println!("manager memory with {n} running `sleep`s:");
        println!(
            "  +{rss} KiB RSS, +{pss} KiB PSS in all; {:.1} KiB RSS per process",
            rss as f64 / n as f64
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
