//! Store figures: transitions per second and the time to list 10,000 records
//! for each store; for Redis, beside `redis-benchmark -t set` against the same
//! server in the same run; for the filesystem, the cost of one transition at
//! 100 and at 10,000 records; for Redis, what a cluster-wide slot ask costs
//! beside the check before a start. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-tests --bench stores`

// Figures for printing: float conversions of counts lose nothing that matters here.
#![allow(clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_adapters::fs::FsStore;
use bpm_adapters::memory::InMemoryStore;
use bpm_domain::{
    GroupName, ListFilter, NodeId, ProcessId, ProcessName, ProcessRecord, ProcessSpec, StateName,
    Timestamp, Transition,
};
use bpm_ports::{ClusterSlots, ProcessStore};
use bpm_redis::{RedisClaims, RedisStore};
use bpm_tests::RedisServer;

fn record(n: u128) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["cargo", "test"]);
    spec.session = Some(format!("s{}", n % 10).parse().expect("session"));
    ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
        NodeId::local(),
        spec,
        Timestamp::from_millis(1),
    )
}

async fn fill(store: &Arc<dyn ProcessStore>, from: u128, count: u128) {
    for n in from..from + count {
        store.create(&record(n)).await.expect("create");
    }
}

/// Per-transition time: progress reports on one record (a version check and a write each).
async fn transitions(store: &Arc<dyn ProcessStore>, id_n: u128, count: u32) -> Duration {
    let mut r = store.get(record(id_n).id()).await.expect("get");
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    store.update(&r, r.version() - 1).await.expect("update");
    r.apply(Transition::Spawned { pid: 1 }, Timestamp::from_millis(3))
        .expect("spawned");
    store.update(&r, r.version() - 1).await.expect("update");
    let t = Instant::now();
    for i in 0..count {
        let pct = bpm_domain::Percent::new(u8::try_from(i % 100).expect("small")).expect("pct");
        r.apply(
            Transition::Progress {
                percent: pct,
                message: None,
            },
            Timestamp::from_millis(10 + u64::from(i)),
        )
        .expect("progress");
        store.update(&r, r.version() - 1).await.expect("update");
    }
    t.elapsed() / count
}

/// Per-creation time: `count` new records, one write each.
async fn creations(store: &Arc<dyn ProcessStore>, from: u128, count: u32) -> Duration {
    let t = Instant::now();
    fill(store, from, u128::from(count)).await;
    t.elapsed() / count
}

/// Per-call time of the check the engine makes before each start.
async fn checks(store: &Arc<dyn ProcessStore>, count: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..count {
        store.reachable().await.expect("reachable");
    }
    t.elapsed() / count
}

async fn list_time(store: &Arc<dyn ProcessStore>) -> Duration {
    let t = Instant::now();
    let all = store.list(&ListFilter::default()).await.expect("list");
    let took = t.elapsed();
    assert_eq!(all.len(), 10_000);
    took
}

/// Per-ask time of a cluster-wide slot of group `agents` (limit 8), on a
/// store holding `running` of its records running, 2 granted and pending,
/// and `tracked` of its tracked operations running: the ask a record of a
/// capped group makes before it starts (granted again while pending).
/// `store` and `slots` share a prefix no other call uses.
async fn slot_asks(
    store: &Arc<dyn ProcessStore>,
    slots: &RedisClaims,
    from: u128,
    running: u128,
    tracked: u128,
) -> Duration {
    let agents = GroupName::new("agents").expect("group");
    let node = NodeId::local();
    let at = Timestamp::from_millis(1);
    for n in from..from + running + 2 {
        let mut spec = ProcessSpec::argv(["agent"]);
        spec.group = Some(agents.clone());
        let mut r = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            node.clone(),
            spec,
            at,
        );
        store.create(&r).await.expect("create");
        if n < from + running {
            r.apply(Transition::Start, at).expect("start");
            store.update(&r, r.version() - 1).await.expect("update");
        }
    }
    for n in from + running + 2..from + running + 2 + tracked {
        let mut spec = ProcessSpec::tracked(ProcessName::new("op").expect("name"));
        spec.group = Some(agents.clone());
        let r = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            node.clone(),
            spec,
            at,
        );
        assert_eq!(r.state(), StateName::Running);
        store.create(&r).await.expect("create");
    }
    let asking = [from + running, from + running + 1]
        .map(|n| ProcessId::from_uuid(uuid::Uuid::from_u128(n)));
    for id in asking {
        // Refused by a store that counts tracked operations (as before
        // they were left out): the ask reads the same keys.
        let _ = slots.take(id, &agents, 8).await.expect("take");
    }
    let count: u32 = 2_000;
    let t = Instant::now();
    for i in 0..count {
        slots
            .take(asking[i as usize % 2], &agents, 8)
            .await
            .expect("take");
    }
    t.elapsed() / count
}

fn redis_benchmark(port: u16, clients: u32) -> Option<f64> {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set",
            "-n",
            "100000",
            "-q",
            "-c",
            &clients.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    text.lines()
        .rev()
        .find(|l| l.starts_with("SET:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

fn per_sec(d: Duration) -> f64 {
    1.0 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("stores: one transition = a compare-and-set write of one record; 2,000 in a row");
    let dir = tempfile::tempdir().expect("dir");

    let memory: Arc<dyn ProcessStore> = Arc::new(InMemoryStore::new());
    fill(&memory, 1, 10_000).await;
    let t = transitions(&memory, 5, 2_000).await;
    let l = list_time(&memory).await;
    println!(
        "memory:      {:>9.0} transitions/s ({:>7.1} µs each), list 10,000 in {:.1} ms",
        per_sec(t),
        t.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e3
    );

    filesystem(dir.path()).await;

    let server = RedisServer::start();
    let port: u16 = server
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let redis: Arc<dyn ProcessStore> = Arc::new(
        RedisStore::connect(&server.url(), "bench")
            .await
            .expect("connect"),
    );
    fill(&redis, 1, 10_000).await;
    let t = transitions(&redis, 5, 2_000).await;
    let l = list_time(&redis).await;
    println!(
        "redis:       {:>9.0} transitions/s ({:>7.1} µs each), list 10,000 in {:.1} ms",
        per_sec(t),
        t.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e3
    );
    // A start asks whether the store answers (a PING on Redis) before it
    // writes the new record: what that adds to the start's own write.
    let check = checks(&redis, 2_000).await;
    let create = creations(&redis, 100_000, 2_000).await;
    println!(
        "redis:       the check before a start (PING) {:.1} µs; a creation {:.1} µs; the check adds {:.0}% to the creation",
        check.as_secs_f64() * 1e6,
        create.as_secs_f64() * 1e6,
        check.as_secs_f64() / create.as_secs_f64() * 100.0
    );
    fenced_and_slots(&redis, &server.url()).await;
    for clients in [1, 50] {
        if let Some(sets) = redis_benchmark(port, clients) {
            println!(
                "redis:       redis-benchmark -t set -c {clients} on the same server: {sets:.0} SET/s; bpm's sequential transitions are {:.2}x that",
                per_sec(t) / sets
            );
        }
    }
}

/// The filesystem store: transitions at 100 and 10,000 records, a list,
/// and reopening 10,000 records, under `dir`.
async fn filesystem(dir: &std::path::Path) {
    let fs: Arc<dyn ProcessStore> = Arc::new(FsStore::open(dir.join("records")).expect("open"));
    fill(&fs, 1, 100).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let at_100 = transitions(&fs, 5, 2_000).await;
    fill(&fs, 101, 9_900).await;
    // Let the burst settle (record files follow the journal within a second;
    // a turned-over journal is flushed in the background), as at 100.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let at_10k = transitions(&fs, 6, 2_000).await;
    let l = list_time(&fs).await;
    println!(
        "filesystem:  {:>9.0} transitions/s ({:>7.1} µs each at 100 records, {:.1} µs at 10,000: ratio {:.2}, target <= 1.2), list 10,000 in {:.1} ms",
        per_sec(at_10k),
        at_100.as_secs_f64() * 1e6,
        at_10k.as_secs_f64() * 1e6,
        at_10k.as_secs_f64() / at_100.as_secs_f64(),
        l.as_secs_f64() * 1e3
    );
    drop(fs);
    let reopen = Instant::now();
    let reopened = FsStore::open(dir.join("records")).expect("reopen");
    println!(
        "filesystem:  reopening 10,000 records took {:.0} ms",
        reopen.elapsed().as_secs_f64() * 1e3
    );
    drop(reopened);
}

/// A daemon in a cluster writes fenced by its node's epoch, and asks for a
/// cluster-wide slot before a start of a limited group: each beside the
/// unfenced write and the check before a start, on the server at `url`.
async fn fenced_and_slots(redis: &Arc<dyn ProcessStore>, url: &str) {
    // A daemon in a cluster writes fenced by its node's epoch: the scripts
    // read the node's newest epoch first, and the check is a GET of it.
    let fence = bpm_redis::Fence::new(bpm_domain::NodeId::local(), 1);
    let fenced: Arc<dyn ProcessStore> = Arc::new(
        RedisStore::connect(url, "bench")
            .await
            .expect("connect")
            .fenced(fence),
    );
    for round in 0..2 {
        // Each run of transitions takes a pending record of its own.
        let plain = transitions(redis, 7 + round * 2, 2_000).await;
        let by_epoch = transitions(&fenced, 8 + round * 2, 2_000).await;
        let plain_check = checks(redis, 2_000).await;
        let epoch_check = checks(&fenced, 2_000).await;
        println!(
            "redis:       fenced by epoch: a transition {:.1} µs against {:.1} µs unfenced (ratio {:.2}); the check {:.1} µs (GET of the epoch) against {:.1} µs (PING)",
            by_epoch.as_secs_f64() * 1e6,
            plain.as_secs_f64() * 1e6,
            by_epoch.as_secs_f64() / plain.as_secs_f64(),
            epoch_check.as_secs_f64() * 1e6,
            plain_check.as_secs_f64() * 1e6
        );
    }
    // A record of a group with a cluster-wide limit asks for a slot (one
    // script) before it starts: beside the check, with the group's
    // running records and tracked operations on the store.
    let slots = RedisClaims::connect(url, "bench", NodeId::local())
        .await
        .expect("connect");
    let few = slot_asks(redis, &slots, 200_000, 5, 0).await;
    let slots = RedisClaims::connect(url, "bench-tracked", NodeId::local())
        .await
        .expect("connect");
    let in_tracked: Arc<dyn ProcessStore> = Arc::new(
        RedisStore::connect(url, "bench-tracked")
            .await
            .expect("connect"),
    );
    let with_tracked = slot_asks(&in_tracked, &slots, 300_000, 5, 1_000).await;
    let check = checks(redis, 2_000).await;
    println!(
        "redis:       a cluster-wide slot ask {:.1} µs (ratio {:.2} to the check before a start), {:.1} µs with 1,000 tracked operations of the group running (ratio {:.2})",
        few.as_secs_f64() * 1e6,
        few.as_secs_f64() / check.as_secs_f64(),
        with_tracked.as_secs_f64() * 1e6,
        with_tracked.as_secs_f64() / check.as_secs_f64()
    );
}
