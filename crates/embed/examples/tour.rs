//! A tour of bpm's engine through the `ProcessManager` API, embedded, with
//! real processes: three test suites under a group limit of 2, a tracked
//! migration, a dev server that becomes ready on a log line, a wait, output,
//! and a stop of the server's whole tree.
//!
//! Run: `cargo run -p bpm-embed --example tour`

use std::time::Duration;

use bpm_domain::{
    GroupName, Limits, LogPattern, Percent, ProcessName, ProcessSpec, ReadinessCheck,
};
use bpm_ports::{OutputQuery, ProcessManager, StopOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut limits = Limits::default();
    limits.group_limits.insert(GroupName::new("tests")?, 2);
    let bpm = bpm_embed::builder()
        .fs_store(dir.path())
        .limits(limits)
        .start()
        .await?;

    let mut suites = Vec::new();
    for i in 1..=3 {
        let mut spec = ProcessSpec::shell(format!(
            "echo suite {i} starting; sleep 0.3; echo suite {i}: 42 passed"
        ));
        spec.name = Some(ProcessName::new(format!("suite {i}"))?);
        spec.group = Some(GroupName::new("tests")?);
        let r = bpm.start(spec).await?;
        println!(
            "started {}  {:<8} {}",
            r.id().short(),
            format!("suite {i}"),
            r.state()
        );
        suites.push(r.id());
    }

    let migration = bpm
        .track(ProcessSpec::tracked(ProcessName::new("migrate db")?))
        .await?;
    bpm.progress(
        migration.id(),
        Percent::new(50)?,
        Some("6 of 12 tables".into()),
    )
    .await?;

    let mut server = ProcessSpec::shell(
        "echo compiling; sleep 0.2; echo 'listening on :8080'; sleep 600 & sleep 600 & wait",
    );
    server.name = Some(ProcessName::new("dev server")?);
    server.readiness.check = ReadinessCheck::LogPattern {
        pattern: LogPattern::new("listening on")?,
    };
    let server = bpm.start(server).await?;

    for id in &suites {
        let done = bpm.wait(*id, Some(Duration::from_secs(10))).await?;
        let out = bpm.read_output(*id, OutputQuery::default()).await?;
        println!(
            "{} ended {} ({}): {}",
            id.short(),
            done.state(),
            done.lifecycle()
                .exit()
                .map_or("-".into(), |e| e.to_string()),
            out.text().lines().last().unwrap_or("")
        );
    }
    bpm.complete(migration.id(), Some(serde_json::json!({"tables": 12})))
        .await?;

    while bpm.get(server.id()).await?.lifecycle().ready_at().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "dev server {} is ready (pid {})",
        server.id().short(),
        server.pid().unwrap_or(0)
    );
    let stopped = bpm.stop(server.id(), StopOptions::default()).await?;
    println!(
        "dev server stopped: {} ({})",
        stopped.state(),
        stopped
            .lifecycle()
            .exit()
            .map_or("-".into(), |e| e.to_string())
    );

    println!("\n  id        state      name");
    for r in bpm.list(bpm_domain::ListFilter::default()).await? {
        println!(
            "  {}  {:<10} {}",
            r.id().short(),
            r.state(),
            r.spec().name.as_ref().map_or("-", |n| n.as_str())
        );
    }
    Ok(())
}
