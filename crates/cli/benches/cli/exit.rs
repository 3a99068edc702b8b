//! `BPM_BENCH=exit`: an exit's way to `bpm wait`, hop by hop.

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) fn exit_trace() {
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
    print_exits(&rows, &hops);
    println!();
    print_starts(&rows, &hops, &received);
}

/// The samples of each process life: its seconds, and each sample's record
/// id and nine times (see `EXIT_SAMPLE`).
type Rows = [(String, Vec<(String, [f64; 9])>)];

/// The table of an exit's way to `bpm wait`, hop by hop.
fn print_exits(rows: &Rows, hops: &std::collections::HashMap<(String, &'static str), f64>) {
    println!(
        "an exit's way to `bpm wait`, from bash (ms; medians; floor: `P & wait $!`; hop times are from the process's own last moment)"
    );
    println!(
        "| lives | samples | excess over the floor | worst | over 5 ms | of it, start side | of it, end side | floor: end to shell | reaped | exit sent | exit received | exit stored | end announced | wait answered | shell has it |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (secs, samples) in rows {
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
}

/// The table of a start's way to the process, hop by hop.
fn print_starts(
    rows: &Rows,
    hops: &std::collections::HashMap<(String, &'static str), f64>,
    received: &[f64],
) {
    println!(
        "a start's way to the process, from bash (ms; medians; floor: `P &`; hop times are from the shell's start of `bpm run`)"
    );
    println!(
        "| lives | floor: to P's first moment | run received | spawn asked | spawned | P's first moment | run answered | shell has the id |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (secs, samples) in rows {
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
