//! `BPM_BENCH=shell` and `BPM_BENCH=capture`: `bpm run` as a shell pays
//! for it, and capture through the daemon.

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) fn shell_costs() {
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
pub(super) fn daemon_capture() {
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
