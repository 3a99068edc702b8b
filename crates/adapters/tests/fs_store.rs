//! What the filesystem store promises beyond the contract: crash safety,
//! quarantine of corrupt files, one writer at a time, readers in other
//! processes, clear errors that leave it readable, and output tails that
//! read no further back than they need.

use bpm_adapters::fs::FsStore;
use bpm_domain::{
    ListFilter, NodeId, ProcessId, ProcessRecord, ProcessSpec, StateName, Timestamp, Transition,
};
use bpm_ports::{ProcessStore, StoreError, StoreWrite};

fn record(n: u128) -> ProcessRecord {
    ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
        NodeId::local(),
        ProcessSpec::argv(["sleep", "1"]),
        Timestamp::from_millis(1),
    )
}

#[tokio::test]
async fn records_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("open");
    let mut r = record(1);
    store.create(&r).await.expect("create");
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    store.update(&r, 1).await.expect("update");
    drop(store);
    let again = FsStore::open(dir.path()).expect("reopen");
    assert_eq!(again.get(r.id()).await.expect("get"), r);
}

#[tokio::test]
async fn corrupt_and_half_written_files_are_quarantined_not_fatal() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let store = FsStore::open(dir.path()).expect("open");
        store.create(&record(1)).await.expect("create");
        store.create(&record(2)).await.expect("create");
    }
    // A clean reopen leaves the journal empty: nothing can restore a file now.
    drop(FsStore::open(dir.path()).expect("reopen"));
    let victim = dir.path().join(format!("{}.json", record(2).id()));
    let full = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &full[..full.len() / 2]).expect("truncate");
    std::fs::write(
        dir.path().join(format!("{}.tmp", record(3).id())),
        b"{\"half",
    )
    .expect("tmp");
    std::fs::write(dir.path().join("garbage.json"), b"not json").expect("garbage");
    let store = FsStore::open(dir.path()).expect("a corrupt file never stops the store");
    let ids: Vec<_> = store
        .list(&ListFilter::default())
        .await
        .expect("list")
        .iter()
        .map(ProcessRecord::id)
        .collect();
    assert_eq!(ids, [record(1).id()], "the rest is kept");
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        !dir.path().join(format!("{}.tmp", record(3).id())).exists(),
        "unfinished writes are cleared"
    );
    // The quarantined id can be written again.
    store.create(&record(2)).await.expect("create again");
}

/// A closed writer's lock can stay taken for a moment: a child that another
/// thread is spawning holds a copy of the lock's descriptor until its `exec`.
/// Here a second open file description plays that child, letting go after
/// 100 ms; opening the store waits for it instead of refusing.
#[test]
fn a_lock_released_moments_later_is_waited_for() {
    let dir = tempfile::tempdir().expect("dir");
    drop(FsStore::open(dir.path()).expect("open"));
    let lingering = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(".writer.lock"))
        .expect("lock file");
    rustix::fs::flock(&lingering, rustix::fs::FlockOperation::LockExclusive).expect("hold");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(lingering);
    });
    FsStore::open(dir.path()).expect("the lock is released while open waits");
    release.join().expect("release");
}

#[tokio::test]
async fn a_second_writer_is_refused_and_readers_see_whole_records() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = FsStore::open(dir.path()).expect("open");
    let err = FsStore::open(dir.path())
        .err()
        .expect("a second writer must be refused");
    assert!(
        err.to_string()
            .contains("another process is writing to this store"),
        "{err}"
    );
    let mut r = record(5);
    writer.create(&r).await.expect("create");
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    writer.update(&r, 1).await.expect("update");
    assert!(matches!(
        FsStore::open_read_only(dir.path())
            .expect("reader")
            .create(&record(6))
            .await,
        Err(StoreError::Refused(_))
    ));
    // The files follow the journal within a second, and when the writer
    // closes (which releases the lock).
    drop(writer);
    let reader = FsStore::open_read_only(dir.path()).expect("reader");
    assert_eq!(reader.get(r.id()).await.expect("get"), r);
    let listed = reader
        .list(&ListFilter {
            states: vec![StateName::Starting],
            ..ListFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed, vec![r.clone()]);
    assert_eq!(
        reader.get(record(9).id()).await,
        Err(StoreError::NotFound(record(9).id()))
    );
    FsStore::open(dir.path()).expect("the lock goes with its writer");
}

#[tokio::test]
async fn a_failing_disk_gives_a_clear_error_and_the_store_stays_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let store_dir = dir.path().join("records");
    let store = FsStore::open(&store_dir).expect("open");
    let r = record(1);
    store.create(&r).await.expect("create");
    // Pull the folder from under the store (as a lost mount or a full disk would).
    std::fs::rename(&store_dir, dir.path().join("moved")).expect("move");
    std::fs::write(&store_dir, b"not a folder").expect("block the path");
    let err = store
        .create(&record(2))
        .await
        .expect_err("the write must fail");
    assert!(
        matches!(&err, StoreError::Refused(msg) if msg.contains(&record(2).id().to_string())),
        "{err}"
    );
    assert_eq!(store.get(r.id()).await.expect("still readable"), r);
    assert_eq!(
        store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len(),
        1,
        "nothing half-added"
    );
}

#[tokio::test]
async fn unflushed_versions_survive_a_reopen_even_without_their_files() {
    let dir = tempfile::tempdir().expect("dir");
    let file = |r: &ProcessRecord| dir.path().join(format!("{}.json", r.id()));
    let mut a = record(1);
    {
        let store = FsStore::open(dir.path()).expect("open");
        store.create(&a).await.expect("create");
        a.apply(Transition::Start, Timestamp::from_millis(2))
            .expect("start");
        store.update(&a, 1).await.expect("flushed update");
        a.apply(Transition::Spawned { pid: 40 }, Timestamp::from_millis(3))
            .expect("spawned");
        store
            .update_unflushed(&a, 2)
            .await
            .expect("unflushed update");
        assert_eq!(store.get(a.id()).await.expect("get"), a);
    }
    // A crash before the files were written: only the journal has it.
    std::fs::remove_file(file(&a)).expect("lose the file");
    let store = FsStore::open(dir.path()).expect("reopen");
    assert_eq!(store.get(a.id()).await.expect("restored"), a);
    assert_eq!(
        std::fs::read(file(&a)).expect("rewritten"),
        serde_json::to_vec(&a).expect("json")
    );
    let mut next = a.clone();
    next.apply(Transition::Pause, Timestamp::from_millis(4))
        .expect("pause");
    store.update_unflushed(&next, 3).await.expect("goes on");
}

#[tokio::test]
async fn the_journal_restores_what_a_power_cut_kept_from_the_files() {
    let dir = tempfile::tempdir().expect("dir");
    let file = |r: &ProcessRecord| dir.path().join(format!("{}.json", r.id()));
    let (mut a, b, c, last) = (record(1), record(2), record(3), record(4));
    let store = FsStore::open(dir.path()).expect("open");
    for r in [&a, &b, &c] {
        store.create(r).await.expect("create");
    }
    let old_a = serde_json::to_vec(&a).expect("json");
    a.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    store.update(&a, 1).await.expect("update");
    let b_file = serde_json::to_vec(&b).expect("json");
    store.delete(b.id()).await.expect("delete");
    let written = store
        .write_batch(&[bpm_ports::StoreWrite {
            record: last.clone(),
            expected_version: None,
            durable: true,
        }])
        .await;
    assert_eq!(written, [Ok(())]);
    drop(store);
    // The power cut: the newest record's file never reached the disk, a's
    // update was lost, c's file was torn, and b's file came back.
    std::fs::remove_file(file(&last)).expect("lose a file");
    std::fs::write(file(&a), old_a).expect("lose an update");
    std::fs::write(file(&c), b"{\"id\":").expect("tear a file");
    std::fs::write(file(&b), b_file).expect("undo a deletion");
    let store = FsStore::open(dir.path()).expect("reopen");
    assert_eq!(store.get(last.id()).await.expect("restored"), last);
    assert_eq!(store.get(a.id()).await.expect("a"), a);
    assert_eq!(store.get(c.id()).await.expect("restored"), c);
    assert_eq!(
        store.get(b.id()).await,
        Err(StoreError::NotFound(b.id())),
        "the deletion stands"
    );
    assert!(!file(&b).exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .expect("quarantine")
            .count(),
        0,
        "a file torn by the crash is restored from the journal, not quarantined"
    );
    assert_eq!(
        std::fs::read(file(&last)).expect("rewritten"),
        serde_json::to_vec(&last).expect("json"),
        "the restored record is on disk again"
    );
    store.create(&record(50)).await.expect("the store goes on");
}

#[tokio::test]
async fn records_outlive_many_turns_of_a_small_journal() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("open");
    let mut all = Vec::new();
    for n in 1..=120 {
        let mut r = record(n);
        store.create(&r).await.expect("create");
        r.apply(Transition::Start, Timestamp::from_millis(2))
            .expect("start");
        store.update(&r, 1).await.expect("update");
        all.push(r);
    }
    for r in &all[..10] {
        store.delete(r.id()).await.expect("delete");
    }
    drop(store);
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("reopen");
    let listed = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(listed, all[10..]);
}

#[tokio::test]
async fn record_files_follow_the_journal_once_the_writes_pause() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("open");
    let file = |r: &ProcessRecord| dir.path().join(format!("{}.json", r.id()));
    let on_disk = |r: &ProcessRecord| {
        std::fs::read(file(r))
            .ok()
            .and_then(|b| serde_json::from_slice::<ProcessRecord>(&b).ok())
    };
    let first = record(1);
    store.create(&first).await.expect("create");
    assert!(!file(&first).exists(), "a record's file follows later");
    // No further write is needed: the store's thread writes the files once
    // they have lagged a second and the writes have paused.
    let mut second = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if on_disk(&first).as_ref() == Some(&first) {
            let Some(second) = &second else {
                let r = record(2);
                store.create(&r).await.expect("create");
                second = Some(r);
                continue;
            };
            if on_disk(second).as_ref() == Some(second) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record files were not written within 5 s of the writes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_batch_larger_than_a_journal_file_is_written_in_parts_that_fit() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("open");
    // About 60 KB in all: three journal files' worth, and one record that no
    // journal file can hold.
    let mut records: Vec<ProcessRecord> = (1..=200).map(record).collect();
    records[100] = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(1000)),
        NodeId::local(),
        ProcessSpec::argv(vec!["x".repeat(30_000)]),
        Timestamp::from_millis(1),
    );
    let writes: Vec<StoreWrite> = records
        .iter()
        .map(|r| StoreWrite {
            record: r.clone(),
            expected_version: None,
            durable: true,
        })
        .collect();
    let results = store.write_batch(&writes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(store);
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("reopen");
    let mut listed = store.list(&ListFilter::default()).await.expect("list");
    listed.sort_by_key(ProcessRecord::id);
    records.sort_by_key(ProcessRecord::id);
    assert_eq!(listed, records);
}

/// Record files are caught up beside the writes while journal files turn
/// over: the files of records left alone for a while reach their newest
/// versions without a turn or a close, and a reopen finds every record's
/// newest version whatever interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_caught_up_beside_turning_journals_keep_every_newest_version() {
    use bpm_domain::Percent;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("dir");
    // About 1.7 s of this test's writes fill one journal file.
    let store = FsStore::open_with_journal(dir.path(), 200_000).expect("open");
    let mut records: Vec<ProcessRecord> = (1..=100)
        .map(|n| {
            let mut r = record(n);
            r.apply(Transition::Start, Timestamp::from_millis(2))
                .expect("start");
            r.apply(Transition::Spawned { pid: 9 }, Timestamp::from_millis(3))
                .expect("spawned");
            r
        })
        .collect();
    for r in &records {
        store.create(r).await.expect("create");
    }
    let mut round: u64 = 0;
    // All of them move on for 1.5 s, then only the first ten for 1.5 s more.
    for (busy, how_long) in [(100, 1500), (10, 1500)] {
        let until = Instant::now() + Duration::from_millis(how_long);
        while Instant::now() < until {
            round += 1;
            let start = usize::try_from(round * 5).expect("index") % busy;
            let writes: Vec<StoreWrite> = records[start..(start + 5).min(busy)]
                .iter_mut()
                .map(|r| {
                    let expected = r.version();
                    let percent = u8::try_from(round % 100).expect("percent");
                    r.apply(
                        Transition::Progress {
                            percent: Percent::new(percent).expect("percent"),
                            message: Some(format!("round {round}")),
                        },
                        Timestamp::from_millis(4 + round),
                    )
                    .expect("progress");
                    StoreWrite {
                        record: r.clone(),
                        expected_version: Some(expected),
                        durable: round.is_multiple_of(3),
                    }
                })
                .collect();
            let results = store.write_batch_unsynced(&writes).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            if round.is_multiple_of(3) {
                store.sync().await.expect("sync");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let on_disk = |r: &ProcessRecord| {
        std::fs::read(dir.path().join(format!("{}.json", r.id())))
            .ok()
            .and_then(|b| serde_json::from_slice::<ProcessRecord>(&b).ok())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while records[10..].iter().any(|r| on_disk(r).as_ref() != Some(r)) {
        assert!(
            Instant::now() < deadline,
            "the files of records left alone did not reach their newest versions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    let store = FsStore::open_with_journal(dir.path(), 200_000).expect("reopen");
    let mut listed = store.list(&ListFilter::default()).await.expect("list");
    listed.sort_by_key(ProcessRecord::id);
    assert_eq!(listed, records);
}

/// Files are rewritten in place: a shorter version must not keep the longer
/// one's tail, and a reader in another process must never see a record half
/// written, however often the writer rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rewritten_in_place_read_whole_beside_a_busy_writer() {
    use bpm_domain::Percent;
    let dir = tempfile::tempdir().expect("dir");
    let file = |r: &ProcessRecord| dir.path().join(format!("{}.json", r.id()));
    let mut r = record(7);
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    r.apply(Transition::Spawned { pid: 9 }, Timestamp::from_millis(3))
        .expect("spawned");
    let progress = |r: &mut ProcessRecord, n: u8, message: String| {
        r.apply(
            Transition::Progress {
                percent: Percent::new(n).expect("percent"),
                message: Some(message),
            },
            Timestamp::from_millis(4 + u64::from(n)),
        )
        .expect("progress");
    };
    {
        let store = FsStore::open(dir.path()).expect("open");
        store.create(&r).await.expect("create");
        let version = r.version();
        progress(&mut r, 1, "x".repeat(5_000));
        store.update(&r, version).await.expect("long");
    }
    let long = std::fs::metadata(file(&r)).expect("file").len();
    let store = FsStore::open(dir.path()).expect("reopen");
    let version = r.version();
    progress(&mut r, 2, "short".into());
    store.update(&r, version).await.expect("short");
    drop(store);
    assert_eq!(
        std::fs::metadata(file(&r)).expect("file").len(),
        long,
        "rewritten in place, padded to the old length"
    );
    let reader = FsStore::open_read_only(dir.path()).expect("reader");
    assert_eq!(reader.get(r.id()).await.expect("whole"), r);

    // A writer rewriting the file as fast as it can (a small journal turns
    // over every few updates, and each turn writes the files), and a reader
    // beside it.
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("reopen");
    let (writer_record, stop) = (
        r.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let writing = {
        let stop = stop.clone();
        let mut r = writer_record;
        tokio::spawn(async move {
            let mut n = 3u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let version = r.version();
                let message = if n.is_multiple_of(2) {
                    "y".repeat(3_000)
                } else {
                    "z".into()
                };
                progress(&mut r, n % 100, message);
                store.update_unflushed(&r, version).await.expect("update");
                n = n.wrapping_add(1);
                tokio::task::yield_now().await;
            }
            store
        })
    };
    let reader = FsStore::open_read_only(dir.path()).expect("reader");
    for _ in 0..2_000 {
        let seen = reader.get(r.id()).await.expect("a whole record every time");
        assert_eq!(seen.id(), r.id());
        assert_eq!(
            reader
                .list(&ListFilter::default())
                .await
                .expect("list")
                .len(),
            1
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(writing.await.expect("writer"));
}

/// Unsynced writes are journalled at once (a crash of the writer keeps
/// them), shown once flushed, and `sync` flushes them, across the
/// journal's turns too.
#[tokio::test]
async fn unsynced_writes_survive_a_reopen_and_sync_across_turns() {
    let dir = tempfile::tempdir().expect("dir");
    let mut all = Vec::new();
    {
        let store = FsStore::open_with_journal(dir.path(), 20_000).expect("open");
        for n in 1..=60 {
            let r = record(n);
            let written = store
                .write_batch_unsynced(&[bpm_ports::StoreWrite {
                    record: r.clone(),
                    expected_version: None,
                    durable: true,
                }])
                .await;
            assert_eq!(written, [Ok(())]);
            if n == 1 {
                assert_eq!(store.get(r.id()).await.as_ref(), Ok(&r), "get flushes it");
            }
            all.push(r);
            if n % 7 == 0 {
                store.sync().await.expect("sync");
            }
        }
        store.sync().await.expect("sync");
    }
    // A crash before the files were written: the journal alone restores the newest ones.
    for r in &all[50..] {
        std::fs::remove_file(dir.path().join(format!("{}.json", r.id()))).expect("lose a file");
    }
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("reopen");
    assert_eq!(store.list(&ListFilter::default()).await.expect("list"), all);
}

/// Syncs run beside writes (the engine flushes while it goes on): every
/// version is shown once a sync that began after it ends, none is lost
/// across the journal's turns, and a reopen finds the newest of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_beside_writes_lose_and_hide_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(FsStore::open_with_journal(dir.path(), 20_000).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (store.clone(), done.clone());
    let flusher = tokio::spawn(async move {
        let mut syncs = 0;
        while !d.load(Ordering::SeqCst) {
            s.sync().await.expect("sync");
            syncs += 1;
            tokio::task::yield_now().await;
        }
        syncs
    });
    let mut all = Vec::new();
    for n in 1..=150 {
        let created = record(n);
        let mut started = created.clone();
        started
            .apply(Transition::Start, Timestamp::from_millis(2))
            .expect("start");
        let mut running = started.clone();
        running
            .apply(Transition::Spawned { pid: 7 }, Timestamp::from_millis(3))
            .expect("spawned");
        let write = |record: &ProcessRecord, expected_version, durable| bpm_ports::StoreWrite {
            record: record.clone(),
            expected_version,
            durable,
        };
        let steps = [
            [write(&created, None, true)],
            [write(&started, Some(1), true)],
            [write(&running, Some(2), false)],
        ];
        for batch in steps {
            assert_eq!(store.write_batch_unsynced(&batch).await, [Ok(())]);
            tokio::task::yield_now().await;
        }
        all.push(running);
    }
    done.store(true, Ordering::SeqCst);
    assert!(flusher.await.expect("flusher") > 0);
    store.sync().await.expect("a last sync");
    assert_eq!(store.list(&ListFilter::default()).await.expect("list"), all);
    drop(store);
    let store = FsStore::open_with_journal(dir.path(), 20_000).expect("reopen");
    assert_eq!(store.list(&ListFilter::default()).await.expect("list"), all);
}

/// Records read back with equal environments share one map, those of one
/// node its name, and are otherwise the records written.
#[tokio::test]
async fn records_read_back_share_equal_environments() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("dir");
    let with_env = |n: u128, value: &str| {
        let mut spec = ProcessSpec::argv(["sleep", "1"]);
        spec.env = Arc::new(BTreeMap::from([
            ("HOME".into(), "/home/a".into()),
            ("PATH".into(), value.into()),
        ]));
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            NodeId::local(),
            spec,
            Timestamp::from_millis(1),
        )
    };
    // Each record built apart, so no two share a map when written.
    let written = vec![
        with_env(1, "/bin"),
        with_env(2, "/bin"),
        with_env(3, "/usr/bin"),
        with_env(4, "/bin"),
    ];
    for files_too in [false, true] {
        let store = FsStore::open(dir.path()).expect("open");
        if !files_too {
            for r in &written {
                store.create(r).await.expect("create");
            }
        }
        drop(store);
        let store = FsStore::open(dir.path()).expect("reopen");
        let read = store.list(&ListFilter::default()).await.expect("list");
        assert_eq!(read, written);
        let env = |i: usize| &read[i].spec().env;
        assert!(Arc::ptr_eq(env(0), env(1)) && Arc::ptr_eq(env(0), env(3)));
        assert!(!Arc::ptr_eq(env(0), env(2)));
        assert!(read.iter().all(|r| r.node().shares_text(read[0].node())));
    }
}

/// A folder where a record's file goes is moved to the quarantine, beside an
/// earlier one of the same name, and the store opens with every other
/// record. The folder's record comes back if the journal still holds it;
/// otherwise it is gone with its file, as a corrupt one is, and can be
/// written again.
#[tokio::test]
async fn a_folder_in_place_of_a_record_file_is_quarantined_and_the_store_opens() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("open");
    store.create(&record(1)).await.expect("create");
    store.create(&record(2)).await.expect("create");
    drop(store);
    for _ in 0..2 {
        let file = dir.path().join(format!("{}.json", record(2).id()));
        let _ = std::fs::remove_file(&file);
        std::fs::create_dir(&file).expect("mkdir");
        std::fs::write(file.join("inside"), b"x").expect("inside");
        std::fs::create_dir(dir.path().join("stray.json")).expect("mkdir");
        let store = FsStore::open(dir.path()).expect("a folder never stops the store");
        let ids: Vec<_> = store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .iter()
            .map(ProcessRecord::id)
            .collect();
        assert!(ids.contains(&record(1).id()), "{ids:?}");
        if !ids.contains(&record(2).id()) {
            store.create(&record(2)).await.expect("written again");
        }
        drop(store);
    }
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .expect("quarantine")
        .count();
    assert_eq!(quarantined, 4, "both folders, twice each");
}

/// A store's folder holding 40 records created one by one, as if the
/// writer died (or the power went) before any record's own file reached
/// the disk: only the journal has them.
async fn only_in_the_journal() -> (tempfile::TempDir, Vec<ProcessRecord>) {
    let dir = tempfile::tempdir().expect("dir");
    let records: Vec<ProcessRecord> = (1..=40).map(record).collect();
    let store = FsStore::open(dir.path()).expect("open");
    for r in &records {
        store.create(r).await.expect("create");
    }
    drop(store);
    for r in &records {
        std::fs::remove_file(dir.path().join(format!("{}.json", r.id()))).expect("lose a file");
    }
    (dir, records)
}

/// The ids of every record `store` holds, in order.
async fn sorted_ids(store: &FsStore) -> Vec<ProcessId> {
    let mut ids: Vec<ProcessId> = store
        .list(&ListFilter::default())
        .await
        .expect("list")
        .iter()
        .map(ProcessRecord::id)
        .collect();
    ids.sort();
    ids
}

/// Where `id` is first written in the journal files of `dir`: the file and
/// the offset of its text.
fn in_journal(dir: &std::path::Path, id: ProcessId) -> (std::path::PathBuf, usize) {
    let needle = id.to_string();
    for n in 0..2 {
        let path = dir.join(format!("journal.{n}"));
        let bytes = std::fs::read(&path).unwrap_or_default();
        if let Some(at) = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        {
            return (path, at);
        }
    }
    panic!("{id} is in no journal file");
}

/// Damage in the middle of the journal (bytes changed in one entry, the
/// length of another wiped) costs only the records those entries held:
/// every entry after them is replayed, the loss is named, and a copy of
/// the damaged file is kept.
#[tokio::test]
async fn damage_inside_the_journal_costs_only_its_own_records_and_is_reported() {
    let (dir, records) = only_in_the_journal().await;
    let (file, at) = in_journal(dir.path(), records[9].id());
    let mut bytes = std::fs::read(&file).expect("journal");
    bytes[at + 60..at + 70].copy_from_slice(b"##########");
    // `{"put":{"id":"` precedes the id; the entry's 20-byte head precedes that.
    let (_, at) = in_journal(dir.path(), records[19].id());
    bytes[at - 14 - 20 + 8..at - 14 - 20 + 12].copy_from_slice(&[0; 4]);
    std::fs::write(&file, &bytes).expect("damage");

    let store = FsStore::open(dir.path()).expect("damage never stops the store");
    let ids = sorted_ids(&store).await;
    let expected: Vec<ProcessId> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 9 && *i != 19)
        .map(|(_, r)| r.id())
        .collect();
    assert_eq!(ids, expected, "all but the two damaged records");
    let warnings = store.recovery_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains(&format!("records lost: {}", records[9].id())),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains("could not be read")
            && warnings[1].contains(&records[19].id().to_string()),
        "{warnings:#?}"
    );
    let kept: Vec<String> = std::fs::read_dir(dir.path().join("quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with(".damaged"), "{kept:?}");
    drop(store);
    // The next opening finds nothing wrong.
    let store = FsStore::open(dir.path()).expect("reopen");
    assert!(store.recovery_warnings().is_empty());
    assert_eq!(sorted_ids(&store).await, expected);
}

/// Damage to the head of a journal file (its header, and with it the
/// beginning of the first entry) costs only the entries it overwrote:
/// every entry that checks out is replayed, whatever the header says, and
/// the damage is reported with the records it cost, with a copy kept.
#[tokio::test]
async fn a_damaged_journal_header_costs_only_the_entries_it_overwrote() {
    for size in [8usize, 16, 64, 300] {
        let (dir, records) = only_in_the_journal().await;
        let (file, _) = in_journal(dir.path(), records[0].id());
        let mut bytes = std::fs::read(&file).expect("journal");
        // An entry's head (20 bytes) and `{"put":{"id":"` precede its id.
        let overwritten: Vec<(ProcessId, usize)> = records
            .iter()
            .map(|r| (r.id(), in_journal(dir.path(), r.id()).1))
            .filter(|(_, at)| at - 14 - 20 < size)
            .collect();
        bytes[..size].fill(0xA5);
        std::fs::write(&file, &bytes).expect("damage");

        let store = FsStore::open(dir.path()).expect("damage never stops the store");
        let ids = sorted_ids(&store).await;
        let expected: Vec<ProcessId> = records
            .iter()
            .map(ProcessRecord::id)
            .filter(|id| overwritten.iter().all(|(o, _)| o != id))
            .collect();
        assert_eq!(ids, expected, "{size} bytes: every entry that checks out");
        assert_eq!(expected.len(), 40 - overwritten.len());
        let warnings = store.recovery_warnings();
        assert_eq!(warnings.len(), 1, "{size} bytes: {warnings:#?}");
        assert!(
            warnings[0].contains("journal.0") && warnings[0].contains("at offset 0"),
            "{warnings:#?}"
        );
        let lost = warnings[0].split("records lost: ").nth(1).unwrap_or("");
        // Those whose id itself was overwritten cannot be named.
        for (id, _) in overwritten.iter().filter(|(_, at)| *at >= size) {
            assert!(
                lost.contains(&id.to_string()),
                "{size} bytes: {warnings:#?}"
            );
        }
        let kept = std::fs::read_dir(dir.path().join("quarantine"))
            .expect("quarantine")
            .count();
        assert_eq!(kept, 1, "{size} bytes: a copy of the damaged file");
        drop(store);
        let store = FsStore::open(dir.path()).expect("reopen");
        assert!(store.recovery_warnings().is_empty());
        assert_eq!(sorted_ids(&store).await, expected);
    }
}

/// A tail of long lines reads only the newest part of the output: with the
/// oldest segment's file gone, a tail of at most 1 KiB still answers, while
/// a tail without a bound, which must read back that far, cannot.
#[tokio::test]
async fn a_bounded_tail_reads_only_the_newest_segment() {
    use bpm_adapters::fs::FileOutput;
    use bpm_ports::{OutputStore, Stream, StreamSelect};
    let dir = tempfile::tempdir().expect("dir");
    // Segments of half the cap: 1 MiB of one line fills two.
    let output = FileOutput::new(dir.path(), 1 << 20).expect("output");
    let id = ProcessId::from_uuid(uuid::Uuid::from_u128(7));
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..16 {
        output
            .append(id, Stream::Stdout, &chunk)
            .await
            .expect("append");
    }
    let folder = dir.path().join(id.to_string());
    let mut data: Vec<_> = std::fs::read_dir(&folder)
        .expect("folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    data.sort();
    assert_eq!(data.len(), 2, "two segments: {data:?}");
    std::fs::remove_file(&data[0]).expect("remove the oldest segment");

    let tail = output
        .tail(id, StreamSelect::Both, 20, 1024)
        .await
        .expect("a bounded tail reads only the newest segment");
    assert_eq!(tail.text(), "x".repeat(1024));
    assert!(tail.truncated);
    assert!(
        output
            .tail(id, StreamSelect::Both, 20, usize::MAX)
            .await
            .is_err(),
        "an unbounded tail reads the removed segment"
    );
}

/// Output pushed out of a capped store is kept, gzip-compressed, when the
/// process asked for archives: the newest N, oldest first, exactly as
/// written; without the ask it is deleted as before. The memory store
/// refuses archives by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_keep_the_newest_pieces_of_old_output_compressed() {
    use bpm_adapters::fs::FileOutput;
    use bpm_ports::{OutputStore, Stream};
    let dir = tempfile::tempdir().expect("dir");
    let output = FileOutput::new(dir.path(), 1_000).expect("output");
    let (kept, plain) = (ProcessId::from_uuid(uuid::Uuid::now_v7()), record(9).id());
    output.keep_archives(kept, 2).await.expect("archives");
    // 300 lines of 10 bytes each: segments of 500 bytes roll out in turn.
    let lines: Vec<String> = (0..300).map(|i| format!("line {i:04}\n")).collect();
    for l in &lines {
        output
            .append(kept, Stream::Stdout, l.as_bytes())
            .await
            .expect("append");
        output
            .append(plain, Stream::Stdout, l.as_bytes())
            .await
            .expect("append");
    }
    // Compression runs beside the writer: wait for the two newest archives.
    let archive = dir.path().join(kept.to_string()).join("archive");
    let done = || {
        std::fs::read_dir(&archive).map_or(0, |e| {
            e.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "gz"))
                .count()
        })
    };
    for _ in 0..200 {
        if done() == 2 && std::fs::read_dir(&archive).map_or(0, Iterator::count) == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(done(), 2, "the two newest archives, the older deleted");
    let mut text = Vec::new();
    let n = FileOutput::archived(dir.path(), kept, &mut text).expect("read");
    assert_eq!(n, 2);
    let text = String::from_utf8(text).expect("utf-8");
    // The kept output starts where the archives end, with no gap.
    let all = lines.concat();
    assert!(
        all.contains(&text),
        "archives are contiguous output: {text:?}"
    );
    let live = output
        .read(kept, &bpm_ports::OutputQuery::default())
        .await
        .expect("read")
        .text();
    assert!(
        all.ends_with(&format!("{text}{live}")),
        "{text:?} then {live:?}"
    );
    assert_eq!(text.len(), 1_000);
    let mut none = Vec::new();
    assert_eq!(
        FileOutput::archived(dir.path(), plain, &mut none).expect("read"),
        0
    );
    assert!(!dir.path().join(plain.to_string()).join("archive").exists());

    let memory = bpm_adapters::memory::InMemoryOutput::new(1_000);
    let refused = memory
        .keep_archives(kept, 2)
        .await
        .expect_err("no archives");
    assert!(
        refused.to_string().contains("keeps no archives"),
        "{refused}"
    );
}
