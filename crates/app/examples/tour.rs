//! A tour of bpm's engine through the `ProcessManager` API, embedded in
//! memory: queue three jobs under a group limit, track an operation, wait, stop.
//!
//! Run: `cargo run -p bpm --example tour`
//!
//! It runs the scripted spawner (no OS process) until the OS spawner lands;
//! the API and the supervision are the real ones.

use std::time::Duration;

use bpm::EngineConfig;
use bpm::wiring::in_memory_engine;
use bpm_domain::{GroupName, Limits, ListFilter, Percent, ProcessName, ProcessSpec};
use bpm_ports::{ProcessManager, StopOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut limits = Limits::default();
    limits.group_limits.insert(GroupName::new("tests")?, 2);
    let bpm = in_memory_engine(EngineConfig { node: None, limits }).await?;
    let mut events = bpm.subscribe();

    let mut ids = Vec::new();
    for (i, secs) in [1, 1, 1].iter().enumerate() {
        let mut spec = ProcessSpec::argv([
            "fake",
            &format!("after={secs}s"),
            &format!("stdout=suite {i} passed"),
        ]);
        spec.name = Some(ProcessName::new(format!("suite {i}"))?);
        spec.group = Some(GroupName::new("tests")?);
        let r = bpm.start(spec).await?;
        println!(
            "started {} ({}) -> {}",
            r.id().short(),
            r.spec().name.as_ref().map_or("", |n| n.as_str()),
            r.state()
        );
        ids.push(r.id());
    }
    let op = bpm
        .track(ProcessSpec::tracked(ProcessName::new("migrate db")?))
        .await?;
    bpm.progress(op.id(), Percent::new(50)?, Some("half the tables".into()))
        .await?;
    let server = bpm
        .start(ProcessSpec::argv([
            "fake",
            "forever",
            "stdout=listening on :8080",
        ]))
        .await?;

    for id in &ids {
        let done = bpm.wait(*id, Some(Duration::from_secs(10))).await?;
        println!(
            "{} ended {} ({:?})",
            id.short(),
            done.state(),
            done.lifecycle().exit()
        );
    }
    bpm.complete(op.id(), Some(serde_json::json!({"tables": 12})))
        .await?;
    let stopped = bpm.stop(server.id(), StopOptions::default()).await?;
    println!("server {} -> {}", server.id().short(), stopped.state());

    for r in bpm.list(ListFilter::default()).await? {
        println!(
            "  {}  {:<10} {:<10}",
            r.id().short(),
            r.state(),
            r.spec().name.as_ref().map_or("-", |n| n.as_str())
        );
    }
    let mut n = 0;
    while events.try_recv().is_ok() {
        n += 1;
    }
    println!("{n} events published");
    Ok(())
}
