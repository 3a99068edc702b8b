//! Several nodes on one `redis-server` (the bench's own, on loopback), each
//! a daemon with its own state directory: what a call about another node's
//! process costs against the same call on its own node, how soon a lost
//! node is noticed against `lease_ttl`, a batch spread over three nodes
//! against the same on one, Redis commands per started process, and
//! records placed on any node (`--node any`): their throughput over one,
//! two and three nodes against the same records run on one node without
//! the queue, and the Redis commands a claim costs.
//! Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-cli --bench cluster`

// Figures for printing: float conversions of counts lose nothing that matters here.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bpm_tests::RedisServer;

const BPM: &str = env!("CARGO_BIN_EXE_bpm");
/// Samples per latency figure.
const SAMPLES: usize = 15;
/// The lease the nodes hold (the shortest allowed).
const LEASE_TTL: Duration = Duration::from_secs(2);

struct Node {
    home: tempfile::TempDir,
}

impl Node {
    fn new(url: &str, prefix: &str, name: &str) -> Node {
        Node::with_slots(url, prefix, name, 10)
    }

    /// A node that runs `slots` processes at once.
    fn with_slots(url: &str, prefix: &str, name: &str, slots: usize) -> Node {
        let home = tempfile::tempdir().expect("home");
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "store = \"{url}\"\nredis_prefix = \"{prefix}\"\nnode = \"{name}\"\nlease_ttl = \"2s\"\nlost_after = \"60s\"\n[limits]\nmax_running = {slots}\n"
            ),
        )
        .expect("config");
        let node = Node { home };
        node.bpm(&["ps"]);
        node
    }

    fn path(&self) -> &Path {
        self.home.path()
    }

    fn bpm(&self, args: &[&str]) -> String {
        bpm_in(self.path(), args, None)
    }

    fn show(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.bpm(&["show", id, "--json"])).expect("JSON")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(BPM)
            .args(["daemon", "stop", "--kill-all"])
            .env("BPM_HOME", self.path())
            .output();
    }
}

fn bpm_in(home: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(BPM)
        .args(args)
        .env("BPM_HOME", home)
        .env_remove("BPM_NODE")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpm");
    if let Some(text) = input {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("bpm");
    assert!(
        out.status.success(),
        "bpm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_millis(),
    )
    .expect("in range")
}

fn until_state(node: &Node, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.show(id)["state"] != state {
        assert!(Instant::now() < deadline, "{id} never {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `bpm stop` of a running `sleep` on `owner`, called on `caller`.
fn stop_round_trip(owner: &Node, caller: &Node) -> Duration {
    let id = owner.bpm(&["run", "--", "sleep", "300"]);
    until_state(owner, &id, "running");
    let t = Instant::now();
    caller.bpm(&["stop", &id]);
    t.elapsed()
}

/// How long after a process on `owner` ended a `bpm wait` on `caller` returned.
fn exit_noticed(owner: &Node, caller: &Node) -> Duration {
    let id = owner.bpm(&["run", "--", "sleep", "0.3"]);
    until_state(owner, &id, "running");
    let out = Command::new(BPM)
        .args(["wait", &id])
        .env("BPM_HOME", caller.path())
        .stdin(Stdio::null())
        .output()
        .expect("wait");
    let returned = wall_ms();
    assert!(out.status.success(), "wait: {out:?}");
    let ended = owner.show(&id)["ended_at"]
        .as_str()
        .map(parse_rfc3339_ms)
        .expect("ended_at");
    Duration::from_millis(returned.saturating_sub(ended))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as bpm prints it
/// (`2026-11-25T08:00:00.123Z`).
fn parse_rfc3339_ms(text: &str) -> u64 {
    text.parse::<bpm_domain::Timestamp>()
        .expect("a time as bpm prints it")
        .as_millis()
}

/// Runs `count` × `true` through `targets` (one `run --from -` per node,
/// all at once, from `caller`), and waits until all ended.
fn spread(caller: &Node, targets: &[Option<&str>], count: usize) -> Duration {
    let t = Instant::now();
    let per = count / targets.len();
    let submits: Vec<_> = targets
        .iter()
        .map(|target| {
            let mut args = vec!["run".to_owned()];
            if let Some(node) = target {
                args.extend(["--node".to_owned(), (*node).to_owned()]);
            }
            args.extend(["--from", "-", "--", "true"].map(str::to_owned));
            let home = caller.path().to_owned();
            let lines = (0..per)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                bpm_in(&home, &args, Some(&lines))
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in submits {
        ids.extend(s.join().expect("submit").lines().map(str::to_owned));
    }
    let mut args = vec!["wait"];
    args.extend(ids.iter().map(String::as_str));
    caller.bpm(&args);
    t.elapsed()
}

/// The calls Redis has served by command, from `INFO commandstats` (a
/// script's own calls count too).
fn redis_calls(port: u16) -> BTreeMap<String, u64> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .expect("redis-cli (from Debian's redis-tools, installed with redis-server)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// What `after` adds to `before`, by command.
fn added(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// How many records each `--node any` run starts.
const ANY: usize = 240;

/// `ANY` records of `sleep 0.05` submitted on the first of `nodes` nodes
/// (four slots each, a deployment of their own), placed on any node if
/// `any`, until all ended; and the Redis commands by command while they
/// ran, less those of an idle window as long.
fn placed(url: &str, port: u16, nodes: usize, any: bool) -> (Duration, BTreeMap<String, u64>) {
    let prefix = format!("any{}x{nodes}{any}", std::process::id());
    let names = ["p1", "p2", "p3"];
    let nodes: Vec<Node> = names[..nodes]
        .iter()
        .map(|n| Node::with_slots(url, &prefix, n, 4))
        .collect();
    let lines = "0.05\n".repeat(ANY);
    let mut args = vec!["run"];
    if any {
        args.extend(["--node", "any"]);
    }
    args.extend(["--from", "-", "--", "sleep"]);
    let before = redis_calls(port);
    let t = Instant::now();
    let ids = bpm_in(nodes[0].path(), &args, Some(&lines));
    let mut wait = vec!["wait"];
    wait.extend(ids.lines());
    nodes[0].bpm(&wait);
    let took = t.elapsed();
    let busy = added(&before, &redis_calls(port));
    let idle_start = redis_calls(port);
    std::thread::sleep(took);
    let idle = added(&idle_start, &redis_calls(port));
    let calls = busy
        .into_iter()
        .filter(|(k, _)| k.as_str() != "info")
        .map(|(k, v)| {
            let quiet = idle.get(&k).copied().unwrap_or(0);
            (k, v.saturating_sub(quiet))
        })
        .collect();
    (took, calls)
}

fn main() {
    let redis = RedisServer::start();
    let url = redis.url();
    let port: u16 = url.rsplit(':').next().expect("port").parse().expect("port");
    let prefix = format!("bench{}", std::process::id());
    let alpha = Node::new(&url, &prefix, "alpha");
    let beta = Node::new(&url, &prefix, "beta");
    let gamma = Node::new(&url, &prefix, "gamma");
    println!("three nodes on one loopback redis-server, lease_ttl {LEASE_TTL:?}");

    calls_across_nodes(&alpha, &beta);
    let one = spread(&alpha, &[None], 999);
    let three = spread(&alpha, &[None, Some("beta"), Some("gamma")], 999);
    println!(
        "999 x true, one run --from - per node from alpha, until all ended: on alpha alone {:.2} s; over three nodes (333 each, 666 sent with --node) {:.2} s; ratio {:.2}",
        one.as_secs_f64(),
        three.as_secs_f64(),
        three.as_secs_f64() / one.as_secs_f64()
    );

    redis_per_process(&beta, port);
    placed_on_any_node(&url, port);
    node_loss_and_failover(&alpha, &gamma);
}

/// A stop's round trip and an exit noticed by `bpm wait`, on the owning
/// node and from another.
fn calls_across_nodes(alpha: &Node, beta: &Node) {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        local.push(stop_round_trip(beta, beta));
        remote.push(stop_round_trip(beta, alpha));
    }
    let (l, r) = (median(local), median(remote));
    println!(
        "stop round trip (median of {SAMPLES}): on the owning node {:.1} ms; from another node {:.1} ms; ratio {:.2}",
        ms(l),
        ms(r),
        r.as_secs_f64() / l.as_secs_f64()
    );

    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        local.push(exit_noticed(beta, beta));
        remote.push(exit_noticed(beta, alpha));
    }
    let (l, r) = (median(local), median(remote));
    println!(
        "exit noticed by bpm wait (median of {SAMPLES}, ms clock): on the owning node {:.0} ms; on another node {:.0} ms; ratio {:.2}",
        ms(l),
        ms(r),
        r.as_secs_f64() / l.as_secs_f64().max(0.001)
    );
}

/// Redis commands per started process: the calls while 200 processes
/// start and end on one node, less those of an idle window as long.
fn redis_per_process(beta: &Node, port: u16) {
    let before = redis_calls(port);
    let batch = spread(beta, &[None], 200);
    let busy = added(&before, &redis_calls(port));
    let idle_start = redis_calls(port);
    std::thread::sleep(batch);
    let idle = added(&idle_start, &redis_calls(port));
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let scripts = busy.get("evalsha").copied().unwrap_or(0);
    let by_command = busy
        .iter()
        .filter(|(k, _)| k.as_str() != "info")
        .map(|(k, v)| format!("{k} {:.1}", *v as f64 / 200.0))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "Redis commands per process (200 x true run and ended on one node, {:.2} s): {:.1} in all, of which {:.1} scripts (EVALSHA; the rest are mostly the scripts' own calls), less {} in an idle window as long (leases, sweeps, blocking reads)",
        batch.as_secs_f64(),
        total(&busy).saturating_sub(total(&idle)) as f64 / 200.0,
        scripts as f64 / 200.0,
        total(&idle)
    );
    println!("  by command, per process: {by_command}");
}

/// Records placed on any node: throughput as nodes are added, against
/// the same records on one node without the queue, and Redis commands.
fn placed_on_any_node(url: &str, port: u16) {
    let (local, local_calls) = placed(url, port, 1, false);
    let mut any_calls = BTreeMap::new();
    let mut took = Vec::new();
    for n in 1..=3 {
        let (t, calls) = placed(url, port, n, true);
        if n == 1 {
            any_calls = calls;
        }
        took.push(t);
    }
    let rate = |t: Duration| ANY as f64 / t.as_secs_f64();
    println!(
        "{ANY} x sleep 0.05, four slots a node, submitted on one node until all ended: on that node without --node any {:.2} s ({:.0}/s); --node any over 1 node {:.2} s ({:.0}/s, ratio {:.2}), 2 nodes {:.2} s ({:.0}/s, ratio {:.2}), 3 nodes {:.2} s ({:.0}/s, ratio {:.2})",
        local.as_secs_f64(),
        rate(local),
        took[0].as_secs_f64(),
        rate(took[0]),
        took[0].as_secs_f64() / local.as_secs_f64(),
        took[1].as_secs_f64(),
        rate(took[1]),
        took[1].as_secs_f64() / local.as_secs_f64(),
        took[2].as_secs_f64(),
        rate(took[2]),
        took[2].as_secs_f64() / local.as_secs_f64(),
    );
    let per =
        |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0) as f64 / ANY as f64;
    let all = |m: &BTreeMap<String, u64>| m.values().sum::<u64>() as f64 / ANY as f64;
    println!(
        "Redis commands per record on one node (idle window subtracted): without --node any {:.1} ({:.1} scripts); with it {:.1} ({:.1} scripts): a claim and its placing cost {:.1} scripts more, {:.1} commands in all",
        all(&local_calls),
        per(&local_calls, "evalsha"),
        all(&any_calls),
        per(&any_calls, "evalsha"),
        per(&any_calls, "evalsha") - per(&local_calls, "evalsha"),
        all(&any_calls) - all(&local_calls),
    );
}

/// Node loss (kill -9 of gamma's daemon, keeper and processes together)
/// seen from alpha, then the failover of gamma's `--failover` record.
fn node_loss_and_failover(alpha: &Node, gamma: &Node) {
    // Node loss: kill -9 of gamma's daemon, keeper and processes together.
    let id = gamma.bpm(&["run", "--", "sleep", "300"]);
    until_state(alpha, &id, "running");
    let moving = gamma.bpm(&[
        "run",
        "--failover",
        "--restart",
        "always",
        "--grace",
        "1",
        "--",
        "sleep",
        "300",
    ]);
    until_state(alpha, &moving, "running");
    let moving_pid = alpha.show(&moving)["pid"].to_string();
    let status = gamma.bpm(&["daemon", "status"]);
    let keeper = status
        .lines()
        .find_map(|l| l.strip_prefix("keeper   pid "))
        .and_then(|l| l.split(' ').next())
        .expect("keeper pid")
        .to_owned();
    let daemon = std::fs::read_to_string(gamma.path().join("daemon.pid")).expect("pid");
    let pid = alpha.show(&id)["pid"].to_string();
    let killed = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", daemon.trim(), &keeper, &pid, &moving_pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alpha.show(&id)["state"] != "unreachable" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let noticed = killed.elapsed();
    println!(
        "node loss noticed (gamma killed, its record unreachable on alpha): {:.2} s; lease_ttl {:.0} s; ratio {:.2} (the issue's bound: lease_ttl + 1 s)",
        noticed.as_secs_f64(),
        LEASE_TTL.as_secs_f64(),
        noticed.as_secs_f64() / LEASE_TTL.as_secs_f64()
    );

    // Failover: the --failover record of gamma runs again elsewhere.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replacement = loop {
        let shown = alpha.show(&moving);
        if let Some(to) = shown["error"]
            .as_str()
            .and_then(|e| e.split("failed over to ").nth(1))
            .and_then(|rest| rest.split(' ').next())
        {
            break to.to_owned();
        }
        assert!(Instant::now() < deadline, "never failed over: {shown}");
        std::thread::sleep(Duration::from_millis(25));
    };
    let given_up = killed.elapsed();
    until_state(alpha, &replacement, "running");
    let moved = killed.elapsed();
    let node = alpha.show(&replacement)["node"].clone();
    let bound = LEASE_TTL + Duration::from_secs(1) + bpm_domain::cluster::FAILOVER_MARGIN;
    println!(
        "failover (gamma killed; its --failover record, grace 1 s, running again on {node}): given up and replaced {:.2} s after the kill, running {:.2} s after it; lease_ttl {:.0} s, ratio {:.2}; the cluster waits lease_ttl + grace + margin = {:.0} s from gamma's last renewal, which came up to a third of a lease before the kill",
        given_up.as_secs_f64(),
        moved.as_secs_f64(),
        LEASE_TTL.as_secs_f64(),
        moved.as_secs_f64() / LEASE_TTL.as_secs_f64(),
        bound.as_secs_f64()
    );
    alpha.bpm(&["stop", &replacement]);
}
