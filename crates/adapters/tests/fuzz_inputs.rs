//! Byte fuzzing, driven by proptest, of what bpm reads from files and
//! sockets others can write: the filesystem store's journal, and the
//! keeper's protocol. Nothing may panic, and what can be kept is kept.
//!
//! Each property runs `PROPTEST_CASES` cases (64 by default, as in CI); a
//! long run is `PROPTEST_CASES=100000 cargo test -p bpm-adapters --test fuzz_inputs`.

use std::sync::Arc;
use std::time::Duration;

use bpm_adapters::fs::FsStore;
use bpm_adapters::keeper::serve_keeper;
use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_domain::{ListFilter, NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
use bpm_ports::ProcessStore;
use proptest::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

fn record(n: u128) -> ProcessRecord {
    ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
        NodeId::local(),
        ProcessSpec::argv(["true"]),
        Timestamp::from_millis(1),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A store folder whose journal holds `n` records (their files removed, so
/// the journal alone has them), and the journal file's bytes.
fn journalled(n: u128) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    runtime().block_on(async {
        let store = FsStore::open(dir.path()).expect("open");
        for i in 1..=n {
            store.create(&record(i)).await.expect("create");
        }
    });
    for i in 1..=n {
        let _ = std::fs::remove_file(dir.path().join(format!("{}.json", record(i).id())));
    }
    let file = (0..2)
        .map(|k| dir.path().join(format!("journal.{k}")))
        .find(|p| {
            std::fs::read(p).is_ok_and(|b| {
                b.windows(36)
                    .any(|w| w == record(1).id().to_string().as_bytes())
            })
        })
        .expect("a journal file holds the records");
    let bytes = std::fs::read(&file).expect("journal");
    (dir, file, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any bytes after a journal's header: the store opens (or refuses with
    /// an error), and never panics.
    #[test]
    fn any_journal_tail_opens_without_a_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (dir, file, bytes) = journalled(1);
        let mut damaged = bytes[..16].to_vec();
        damaged.extend(&tail);
        std::fs::write(&file, damaged).expect("write");
        if let Ok(store) = FsStore::open(dir.path()) {
            let listed = runtime().block_on(store.list(&ListFilter::default()));
            prop_assert!(listed.is_ok());
        }
    }

    /// Bytes changed anywhere in a journal of 20 records: the store opens,
    /// keeps at least the records whose entries were not touched, and
    /// reports the damage if a record was lost.
    #[test]
    fn a_damaged_journal_keeps_what_it_can(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let (dir, file, mut bytes) = journalled(20);
        let written = bytes.iter().rposition(|b| *b != 0).unwrap_or(0) + 1;
        let mut touched = Vec::new();
        for (at, byte) in flips {
            let at = 16 + at.index(written - 16);
            bytes[at] ^= byte | 1;
            touched.push(at);
        }
        std::fs::write(&file, &bytes).expect("write");
        let store = FsStore::open(dir.path()).expect("damage never stops the store");
        let kept = runtime().block_on(store.list(&ListFilter::default())).expect("list");
        if kept.len() < 20 {
            prop_assert!(
                !store.recovery_warnings().is_empty(),
                "{} records lost with no warning (bytes changed at {touched:?})",
                20 - kept.len()
            );
        }
        // Most entries are far from the bytes changed: at most one record per change is lost,
        // and the environments entry that others name (one more).
        prop_assert!(kept.len() + 2 * touched.len() >= 20, "kept {}", kept.len());
    }
}

/// Sends `lines` to a keeper as a daemon would, then a valid request, which
/// must be answered: the keeper read every line without dying.
async fn keeper_survives(lines: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("keeper.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let spawner = Arc::new(OsSpawner::new(
        Arc::new(InMemoryOutput::default()),
        OsSpawnerConfig {
            share_pipes: true,
            ..OsSpawnerConfig::default()
        },
    ));
    tokio::spawn(serve_keeper(listener, spawner, Duration::from_mins(1)));
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).lines();
    let _hello = reader.next_line().await.map_err(|e| e.to_string())?;
    write.write_all(lines).await.map_err(|e| e.to_string())?;
    write
        .write_all(b"\n{\"id\":424242,\"op\":\"withdraw\"}\n")
        .await
        .map_err(|e| e.to_string())?;
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = reader.next_line().await {
            if line.contains("424242") {
                return true;
            }
        }
        false
    })
    .await;
    match answered {
        Ok(true) => Ok(()),
        Ok(false) => Err("the keeper closed the connection".into()),
        Err(_) => Err("the keeper did not answer".into()),
    }
}

/// Lines shaped like the keeper's requests, with their values replaced.
fn keeper_lines() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z0-9\"{}\\[\\]:,]{0,40}".prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,60}",
    ];
    let op = prop_oneof![
        value.clone().prop_map(|v| format!("{{\"spawn\":{v}}}")),
        value
            .clone()
            .prop_map(|v| format!("{{\"signal\":{{\"id\":{v},\"pid\":1,\"signal\":\"term\"}}}}")),
        value
            .clone()
            .prop_map(|v| format!("{{\"reattach\":{{\"id\":{v},\"pid\":{v}}}}}")),
        value
            .clone()
            .prop_map(|v| format!("{{\"adopt\":{{\"id\":{v},\"pid\":1,\"pipes\":true}}}}")),
        value
            .clone()
            .prop_map(|v| format!("{{\"env\":{{\"slot\":{v},\"vars\":{{}}}}}}")),
        value.clone().prop_map(|v| format!("{{\"ack\":{v}}}")),
        value
            .clone()
            .prop_map(|v| format!("{{\"hand_over\":[{v}]}}")),
        value.clone(),
    ];
    let line = prop_oneof![
        (any::<u64>(), op).prop_map(|(id, op)| format!("{{\"id\":{id},\"op\":{op}}}")),
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).replace('\n', " ")),
    ];
    proptest::collection::vec(line, 1..20).prop_map(|lines| {
        let mut bytes = lines.join("\n").into_bytes();
        bytes.push(b'\n');
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Malformed and hostile requests: the keeper answers what it can, and
    /// goes on serving.
    #[test]
    fn the_keeper_survives_any_requests(lines in keeper_lines()) {
        let survived = runtime().block_on(keeper_survives(&lines));
        prop_assert!(survived.is_ok(), "{survived:?} after {:?}", String::from_utf8_lossy(&lines));
    }
}
