//! What survives a restart of the engine, slow spawners and disks, batches,
//! hand-overs through the OS, and the store's conflicts.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A record the store holds as `starting`, as a daemon killed during its
/// spawn leaves it, and that record's spawn request.
async fn starting_in(store: &InMemoryStore, spec: ProcessSpec) -> (ProcessRecord, SpawnRequest) {
    let mut core = bpm_domain::Supervisor::new(bpm_domain::NodeId::local(), Limits::default());
    let id = ProcessId::from_uuid(uuid_from(7));
    let effects = core
        .handle(
            bpm_domain::Input::Submit { id, spec },
            Timestamp::from_millis(1),
        )
        .expect("submit");
    let record = effects
        .into_iter()
        .find_map(|e| match e {
            bpm_domain::Effect::Persist { record, .. } => Some(record),
            _ => None,
        })
        .expect("written");
    assert_eq!(record.state(), StateName::Starting);
    let written = store
        .write_batch(&[StoreWrite {
            record: record.clone(),
            expected_version: None,
            durable: true,
        }])
        .await;
    assert!(written.iter().all(Result::is_ok));
    let request = SpawnRequest::for_record(&record).expect("a command");
    (record, request)
}

#[tokio::test]
async fn a_spawn_cut_short_by_a_restart_is_asked_again_and_answered_with_its_process() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (record, request) = starting_in(&store, fake(&["forever"])).await;
    let (ports, spawner) = ports_with(&clock, store.clone());
    // The spawner started it; the manager died before it heard.
    let pid = spawner.spawn(request).await.expect("started").pid;
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let r = engine.get(record.id()).await.expect("record");
    assert_eq!(r.state(), StateName::Running, "not lost: its process runs");
    assert_eq!(r.pid(), Some(pid), "the process it had, not a second one");
    spawner.exit(record.id(), ExitStatus::Code(4));
    let done = engine.wait(record.id(), None).await.expect("wait");
    assert_eq!(done.lifecycle().exit(), Some(ExitStatus::Code(4)));
}

#[tokio::test]
async fn a_spawn_cut_short_before_it_reached_the_spawner_runs_once() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (record, _) = starting_in(&store, fake(&["exit=2"])).await;
    let (ports, _spawner) = ports_with(&clock, store.clone());
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let done = engine.wait(record.id(), None).await.expect("wait");
    assert_eq!(done.state(), StateName::Failed);
    assert_eq!(done.lifecycle().exit(), Some(ExitStatus::Code(2)));
}

#[tokio::test]
async fn a_store_that_refuses_writes_delays_persistence_without_stopping_supervision() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let (mut ports, spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    let real = Arc::new(InMemoryStore::new());
    let mut store = bpm_ports::MockProcessStore::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let (r1, r2, r3, r4) = (real.clone(), real.clone(), real.clone(), failures.clone());
    store.expect_list().returning(|_| Ok(Vec::new()));
    store.expect_room().returning(|_| Ok(()));
    store.expect_reachable().returning(|| Ok(()));
    // The store is down for the first three updates, after it took the
    // creation (a creation it does not take is refused: see
    // a_record_the_store_did_not_take_is_never_started_nor_acknowledged).
    store.expect_sync().returning(|| Ok(()));
    store
        .expect_write_batch_unsynced()
        .returning(move |writes| {
            writes
                .iter()
                .map(|w| match w.expected_version {
                    None => futures_lite(r1.create(&w.record)),
                    Some(_) if r4.fetch_add(1, Ordering::SeqCst) < 3 => {
                        Err(StoreError::Unavailable("injected".into()))
                    }
                    Some(v) => futures_lite(r2.update(&w.record, v)),
                })
                .collect()
        });
    store
        .expect_get()
        .returning(move |id| futures_lite(r3.get(id)));
    ports.store = Arc::new(store);
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine");
    let r = engine
        .start(fake(&["forever"]))
        .await
        .expect("supervision goes on while the store is down");
    assert_eq!(r.state(), StateName::Running);
    assert!(spawner.is_running(r.id()));
    eventually("the newest version reaches the store", || async {
        real.get(r.id()).await.is_ok_and(|s| s == r)
    })
    .await;
    assert!(
        failures.load(Ordering::SeqCst) >= 3,
        "the refused writes were written again"
    );
    spawner.exit(r.id(), ExitStatus::Code(0));
    eventually("later writes go through", || async {
        real.get(r.id())
            .await
            .is_ok_and(|s| s.state() == StateName::Completed)
    })
    .await;
}

/// Runs a future that completes at once (the in-memory store never waits) to its result.
fn futures_lite<T>(f: impl Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the in-memory store does not wait"),
    }
}

#[tokio::test]
async fn the_last_lines_can_be_read_within_a_byte_cap() {
    let h = harness(Limits::default()).await;
    let r = h
        .engine
        .start(fake(&["stdout=one", "stdout=two", "stderr=three"]))
        .await
        .expect("start");
    h.until_state(r.id(), StateName::Completed).await;
    let q = |lines, max_bytes| OutputQuery {
        tail_lines: Some(lines),
        max_bytes,
        ..OutputQuery::default()
    };
    let last2 = h
        .engine
        .read_output(r.id(), q(2, 1 << 20))
        .await
        .expect("tail");
    assert_eq!(last2.text(), "two\nthree\n");
    assert!(!last2.truncated);
    let capped = h.engine.read_output(r.id(), q(2, 7)).await.expect("tail");
    assert_eq!(capped.text(), "\nthree\n", "the newest bytes are kept");
    assert!(capped.truncated);
}

#[tokio::test]
async fn a_batch_writes_the_records_it_starts_first_and_the_waiting_ones_after() {
    use StateName::{Pending, Starting};
    let store = Arc::new(TestDisk::new(false));
    let (engine, _, _) = engine_on(&store, 2).await;
    store.batches.lock().expect("lock").clear();
    let results = engine
        .start_many((0..5).map(|_| fake(&["forever"])).collect())
        .await
        .expect("started");
    assert!(results.iter().all(Result::is_ok));
    let batches = store.batches.lock().expect("lock").clone();
    assert_eq!(
        batches[..2],
        [vec![Starting, Starting], vec![Pending, Pending, Pending]],
        "the two it starts, then the three left waiting"
    );
}

#[tokio::test]
async fn many_starts_are_one_step_with_one_result_each() {
    let h = harness(Limits {
        max_running: 1,
        ..Limits::default()
    })
    .await;
    let mut unknown_dependency = fake(&["forever"]);
    unknown_dependency.dependencies = vec![ProcessId::from_uuid(uuid::Uuid::from_u128(77))];
    let results = h
        .engine
        .start_many(vec![
            fake(&["forever"]),
            unknown_dependency,
            fake(&["forever"]),
            fake(&["forever"]),
        ])
        .await
        .expect("the engine answers");
    assert_eq!(results.len(), 4);
    assert!(
        matches!(&results[1], Err(e @ ManagerError::Refused(_)) if e.to_string().contains("dependency")),
        "{:?}",
        results[1]
    );
    let started: Vec<ProcessRecord> = results.into_iter().filter_map(Result::ok).collect();
    let states: Vec<StateName> = started.iter().map(ProcessRecord::state).collect();
    assert_eq!(
        states,
        [StateName::Running, StateName::Pending, StateName::Pending],
        "one slot: the first runs, the others queue in order"
    );
    for r in &started {
        assert_eq!(
            &h.ports.store.get(r.id()).await.expect("stored"),
            r,
            "each answer is what the store holds"
        );
    }
    // The queue moves on as usual.
    h.spawner.exit(started[0].id(), ExitStatus::Code(0));
    h.until_state(started[1].id(), StateName::Running).await;
    assert!(
        h.engine
            .start_many(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
}

/// A spawner whose spawns of `stdout=gated` scripts answer only once the
/// process's exit has reached the engine and the test opens the gate: the
/// exit overtakes the spawn's own answer, as it can with a real keeper.
/// A `stdout=panic` script makes it panic.
struct GatedSpawner {
    inner: Arc<ScriptedSpawner>,
    gate: tokio::sync::Semaphore,
    exited: Arc<std::sync::Mutex<std::collections::HashSet<ProcessId>>>,
    forwarded: Arc<tokio::sync::Notify>,
    notices:
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<bpm_ports::ProcessNotice>>>,
}

impl GatedSpawner {
    fn new(inner: Arc<ScriptedSpawner>) -> Self {
        let mut from = inner.notices().expect("notices");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let exited = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let forwarded = Arc::new(tokio::sync::Notify::new());
        let (seen, told) = (exited.clone(), forwarded.clone());
        tokio::spawn(async move {
            while let Some(notice) = from.recv().await {
                let exit = match &notice {
                    bpm_ports::ProcessNotice::Exited { id, .. } => Some(*id),
                    _ => None,
                };
                let _ = tx.send(notice);
                if let Some(id) = exit {
                    seen.lock().expect("lock").insert(id);
                    told.notify_waiters();
                }
            }
        });
        GatedSpawner {
            inner,
            gate: tokio::sync::Semaphore::new(0),
            exited,
            forwarded,
            notices: std::sync::Mutex::new(Some(rx)),
        }
    }
}

#[async_trait::async_trait]
impl bpm_ports::ProcessSpawner for GatedSpawner {
    async fn spawn(
        &self,
        request: bpm_ports::SpawnRequest,
    ) -> Result<bpm_ports::Spawned, bpm_ports::SpawnError> {
        assert!(
            !request.argv.iter().any(|a| a == "stdout=panic"),
            "a spawner bug"
        );
        if request.argv.iter().any(|a| a == "stdout=unknown") {
            return Err(bpm_ports::SpawnError::Unknown(
                "the spawner died as it started this".into(),
            ));
        }
        let (id, gated) = (request.id, request.argv.iter().any(|a| a == "stdout=gated"));
        let spawned = self.inner.spawn(request).await?;
        if gated {
            loop {
                let told = self.forwarded.notified();
                if self.exited.lock().expect("lock").contains(&id) {
                    break;
                }
                told.await;
            }
            self.gate.acquire().await.expect("gate").forget();
        }
        Ok(spawned)
    }
    async fn signal(
        &self,
        id: ProcessId,
        pid: u32,
        s: Signal,
    ) -> Result<(), bpm_ports::SpawnError> {
        self.inner.signal(id, pid, s).await
    }
    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), bpm_ports::SpawnError> {
        self.inner.write_input(id, data).await
    }
    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, bpm_ports::SpawnError> {
        self.inner.reattach(id, pid).await
    }
    fn notices(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<bpm_ports::ProcessNotice>> {
        self.notices.lock().expect("lock").take()
    }
}

/// An engine on the in-memory adapters whose spawner is a [`GatedSpawner`].
async fn gated_engine() -> (Engine, Arc<GatedSpawner>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let (mut ports, scripted) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    let gated = Arc::new(GatedSpawner::new(scripted));
    ports.spawner = gated.clone();
    let engine = Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits: Limits::default(),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    (engine, gated)
}

#[tokio::test]
async fn a_slow_spawn_holds_up_neither_other_processes_nor_its_own_exit() {
    let (engine, gated) = gated_engine().await;
    let slow = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.start(fake(&["stdout=gated", "exit=3"])).await })
    };
    // While that spawn waits, other processes start and end.
    let quick = engine.start(fake(&["exit=0"])).await.expect("start");
    let ended = engine
        .wait(quick.id(), Some(Duration::from_secs(5)))
        .await
        .expect("the quick one ends while the slow spawn is under way");
    assert_eq!(ended.state(), StateName::Completed);
    let starting = engine
        .list(bpm_domain::ListFilter {
            states: vec![StateName::Starting],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(starting.len(), 1, "the slow one is still starting");
    assert!(
        !slow.is_finished(),
        "its caller still waits for the spawn's answer"
    );
    gated.gate.add_permits(1);
    let answered = slow.await.expect("task").expect("start");
    // The exit that overtook the spawn's answer was held, not lost, and
    // handled right after it: the caller learns the whole story at once.
    assert_eq!(answered.state(), StateName::Failed);
    assert_eq!(answered.lifecycle().exit(), Some(ExitStatus::Code(3)));
    assert!(answered.lifecycle().started_at().is_some());
    let done = engine
        .wait(answered.id(), Some(Duration::from_secs(5)))
        .await
        .expect("wait");
    assert_eq!(done, answered);
}

#[tokio::test]
async fn a_spawner_that_panics_fails_the_record_instead_of_leaving_it_starting() {
    let (engine, _gated) = gated_engine().await;
    let r = engine
        .start(fake(&["stdout=panic"]))
        .await
        .expect("the caller is answered");
    assert_eq!(r.state(), StateName::Failed);
    assert_eq!(
        r.lifecycle().error().as_deref(),
        Some("the spawner failed unexpectedly")
    );
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(
        engine
            .wait(next.id(), Some(Duration::from_secs(5)))
            .await
            .expect("wait")
            .state(),
        StateName::Completed,
        "the engine goes on"
    );
}

#[tokio::test]
async fn a_start_the_spawner_cannot_vouch_for_is_lost_and_its_slot_freed() {
    let (engine, _gated) = gated_engine().await;
    let r = engine
        .start(fake(&["stdout=unknown"]))
        .await
        .expect("the caller is answered");
    assert_eq!(
        r.state(),
        StateName::Lost,
        "neither failed nor started again"
    );
    assert_eq!(
        r.lifecycle().error().as_deref(),
        Some("the spawner died as it started this")
    );
    assert_eq!(r.lifecycle().exit(), None);
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(
        engine
            .wait(next.id(), Some(Duration::from_secs(5)))
            .await
            .expect("wait")
            .state(),
        StateName::Completed,
        "the engine goes on"
    );
}

/// An in-memory store that notes the states in each batch written and,
/// when `slow`, lets each flush through only when the test does (a slow disk).
struct TestDisk {
    inner: InMemoryStore,
    batches: std::sync::Mutex<Vec<Vec<StateName>>>,
    flushes: Option<tokio::sync::Semaphore>,
    /// While set, the store answers the check before new work but takes
    /// no creation: it stopped answering in between.
    refuse_creations: std::sync::atomic::AtomicBool,
}

impl TestDisk {
    fn new(slow: bool) -> Self {
        TestDisk {
            inner: InMemoryStore::new(),
            batches: std::sync::Mutex::default(),
            flushes: slow.then(|| tokio::sync::Semaphore::new(0)),
            refuse_creations: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn let_flush(&self, n: usize) {
        self.flushes.as_ref().expect("a slow disk").add_permits(n);
    }
}

/// An engine with `max_running` slots on `disk`, its spawner and its clock.
async fn engine_on(
    disk: &Arc<TestDisk>,
    max_running: usize,
) -> (Engine, Arc<ScriptedSpawner>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let (mut ports, spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    ports.store = disk.clone();
    (engine_with_slots(ports, max_running).await, spawner, clock)
}

/// An engine on `ports` with `max_running` slots.
async fn engine_with_slots(ports: Ports, max_running: usize) -> Engine {
    let limits = Limits {
        max_running,
        ..Limits::default()
    };
    Engine::launch(
        ports,
        EngineConfig {
            node: None,
            limits,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts")
}

#[async_trait::async_trait]
impl ProcessStore for TestDisk {
    fn room(&self, records: usize) -> Result<(), StoreError> {
        self.inner.room(records)
    }
    async fn reachable(&self) -> Result<(), StoreError> {
        self.inner.reachable().await
    }
    fn recovery_warnings(&self) -> Vec<String> {
        self.inner.recovery_warnings()
    }
    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        self.inner.get(id).await
    }
    async fn update(&self, record: &ProcessRecord, expected: u64) -> Result<(), StoreError> {
        self.inner.update(record, expected).await
    }
    async fn update_unflushed(
        &self,
        record: &ProcessRecord,
        expected: u64,
    ) -> Result<(), StoreError> {
        self.inner.update_unflushed(record, expected).await
    }
    async fn write_batch_unsynced(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        self.batches
            .lock()
            .expect("lock")
            .push(writes.iter().map(|w| w.record.state()).collect());
        if self
            .refuse_creations
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let mut out = Vec::new();
            for w in writes {
                out.push(if w.expected_version.is_none() {
                    Err(StoreError::Unavailable("the test's store is gone".into()))
                } else {
                    self.inner
                        .write_batch_unsynced(std::slice::from_ref(w))
                        .await
                        .remove(0)
                });
            }
            return out;
        }
        self.inner.write_batch_unsynced(writes).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        if let Some(flushes) = &self.flushes {
            flushes.acquire().await.expect("open").forget();
        }
        Ok(())
    }
    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        self.inner.list(filter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_holds_back_answers_and_events_but_not_the_next_start() {
    let disk = Arc::new(TestDisk::new(true));
    let (engine, spawner, clock) = engine_on(&disk, 1).await;
    let mut events = engine.subscribe();
    let records = || async {
        disk.inner
            .list(&bpm_domain::ListFilter::default())
            .await
            .expect("list")
    };
    let e1 = engine.clone();
    let first = tokio::spawn(async move { e1.start(fake(&["after=1s"])).await });
    eventually("the first is written", || async {
        records().await.len() == 1
    })
    .await;
    let e2 = engine.clone();
    let second = tokio::spawn(async move { e2.start(fake(&["forever"])).await });
    eventually("the second is written", || async {
        records().await.len() == 2
    })
    .await;
    let (a, b) = {
        let all = records().await;
        (all[0].id(), all[1].id())
    };
    assert_eq!(
        disk.inner.get(b).await.expect("b").state(),
        StateName::Pending
    );
    // The first starts while its creation is still being flushed.
    eventually("the first runs", || async { spawner.is_running(a) }).await;
    clock.advance(Duration::from_secs(1));
    // Its exit is recorded and the second started, still before any flush ended.
    eventually("the second runs", || async { spawner.is_running(b) }).await;
    assert_eq!(
        disk.inner.get(a).await.expect("a").state(),
        StateName::Completed
    );
    assert!(
        !first.is_finished() && !second.is_finished(),
        "no answer before the disk"
    );
    assert!(events.try_recv().is_err(), "no event before the disk");
    disk.let_flush(1_000);
    let a_answer = first.await.expect("task").expect("start");
    assert_eq!(a_answer.id(), a);
    assert_eq!(second.await.expect("task").expect("start").id(), b);
    let mut seen = Vec::new();
    while !seen.contains(&(b, EventKind::Started)) {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("event");
        seen.push((e.id, e.kind));
    }
    let of = |id| -> Vec<EventKind> {
        seen.iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, k)| *k)
            .collect()
    };
    assert_eq!(
        of(a),
        [
            EventKind::Submitted,
            EventKind::Started,
            EventKind::Ready,
            EventKind::Exited,
            EventKind::Completed
        ],
        "in order, once on disk"
    );
    assert_eq!(of(b), [EventKind::Submitted, EventKind::Started]);
}

/// An engine on real processes (the OS spawner), which hands records over.
async fn os_engine(max_running: usize) -> Engine {
    os_engine_with(max_running).await.0
}

/// The OS spawner, noting which records the engine hands over and takes back.
struct Watched {
    os: bpm_adapters::os::OsSpawner,
    handed: std::sync::Mutex<Vec<ProcessId>>,
    withdrawn: std::sync::Mutex<Vec<ProcessId>>,
}

#[async_trait::async_trait]
impl ProcessSpawner for Watched {
    async fn spawn(&self, request: SpawnRequest) -> Result<bpm_ports::Spawned, SpawnError> {
        self.os.spawn(request).await
    }
    async fn signal(&self, id: ProcessId, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        self.os.signal(id, pid, signal).await
    }
    async fn write_input(&self, id: ProcessId, data: Vec<u8>) -> Result<(), SpawnError> {
        self.os.write_input(id, data).await
    }
    async fn reattach(&self, id: ProcessId, pid: u32) -> Result<bool, SpawnError> {
        self.os.reattach(id, pid).await
    }
    fn notices(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ProcessNotice>> {
        self.os.notices()
    }
    fn hands_over(&self) -> bool {
        self.os.hands_over()
    }
    async fn hand_over(&self, requests: Vec<SpawnRequest>) -> Result<(), SpawnError> {
        self.handed
            .lock()
            .expect("lock")
            .extend(requests.iter().map(|r| r.id));
        self.os.hand_over(requests).await
    }
    async fn withdraw(&self) -> Result<Vec<ProcessId>, SpawnError> {
        let ids = self.os.withdraw().await?;
        self.withdrawn.lock().expect("lock").extend(&ids);
        Ok(ids)
    }
}

/// [`os_engine`], with the spawner it runs on.
async fn os_engine_with(max_running: usize) -> (Engine, Arc<Watched>) {
    let clock = Arc::new(bpm_adapters::clock::SystemClock::new());
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(Watched {
        os: bpm_adapters::os::OsSpawner::new(
            output.clone(),
            bpm_adapters::os::OsSpawnerConfig::default(),
        ),
        handed: std::sync::Mutex::default(),
        withdrawn: std::sync::Mutex::default(),
    });
    let ports = Ports {
        store: Arc::new(InMemoryStore::new()),
        output,
        events: Arc::new(BroadcastBus::default()),
        spawner: spawner.clone(),
        clock,
        ids: Arc::new(UuidV7Ids::new()),
        usage: Arc::new(bpm_adapters::os::ProcSampler::new()),
        host: Arc::new(bpm_adapters::os::OsHost::new()),
    };
    (engine_with_slots(ports, max_running).await, spawner)
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::argv(["sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_started_on_exits_keep_the_limit_their_order_and_their_exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let (live, log) = (dir.path().join("live"), dir.path().join("log"));
    std::fs::create_dir(&live).expect("dir");
    let engine = os_engine(2).await;
    // Each process marks itself live, logs how many are, then unmarks itself
    // before it exits: the count can never pass the limit.
    let script = format!(
        "touch {live}/$BPM_PROCESS_ID; echo \"$1 $(ls {live} | wc -l)\" >> {log}; \
         rm {live}/$BPM_PROCESS_ID; exit $(($1 % 4))",
        live = live.display(),
        log = log.display()
    );
    let mut ids = Vec::new();
    for n in 0..40 {
        let spec = ProcessSpec::argv(["sh", "-c", &script, "sh", &n.to_string()]);
        ids.push(engine.start(spec).await.expect("start").id());
    }
    engine.wait_many(&ids, None).await.expect("wait");
    for (n, id) in ids.iter().enumerate() {
        let r = engine.get(*id).await.expect("record");
        let code = i32::try_from(n % 4).expect("small");
        assert_eq!(
            r.lifecycle().exit(),
            Some(ExitStatus::Code(code)),
            "record {n}: {r:?}"
        );
        let want = if code == 0 {
            StateName::Completed
        } else {
            StateName::Failed
        };
        assert_eq!(r.state(), want);
    }
    let lines = std::fs::read_to_string(&log).expect("log");
    let seen: Vec<(usize, usize)> = lines
        .lines()
        .map(|l| {
            let (n, live) = l.split_once(' ').expect("two fields");
            (n.parse().expect("n"), live.trim().parse().expect("count"))
        })
        .collect();
    assert_eq!(seen.len(), 40);
    assert!(
        seen.iter().all(|(_, live)| *live <= 2),
        "more than 2 ran at once: {seen:?}"
    );
    // Equal priorities start in submission order: none starts before one
    // submitted two places earlier (two lanes may swap neighbours). The
    // records' start times say it; the log's order is the processes' own
    // scheduling, which may put a later start's line first.
    let mut started = Vec::new();
    for id in &ids {
        let r = engine.get(*id).await.expect("record");
        started.push(r.lifecycle().started_at().expect("started"));
    }
    for (n, at) in started.iter().enumerate() {
        for (m, later) in started.iter().enumerate().skip(n + 3) {
            assert!(
                later >= at,
                "{m} started before {n}: {:?}",
                started.iter().enumerate().collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_handed_over_and_then_stopped_never_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("ran");
    let (engine, spawner) = os_engine_with(1).await;
    let first = engine.start(sh("sleep 0.5")).await.expect("start");
    let queued = engine
        .start(sh(&format!("touch {}", marker.display())))
        .await
        .expect("start");
    assert_eq!(queued.state(), StateName::Pending);
    eventually("the queued record is handed to the spawner", || async {
        spawner.handed.lock().expect("lock").contains(&queued.id())
    })
    .await;
    let stopped = engine
        .stop(queued.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(stopped.state(), StateName::Cancelled);
    assert!(
        spawner
            .withdrawn
            .lock()
            .expect("lock")
            .contains(&queued.id()),
        "the stop took the record back from the spawner"
    );
    let first = engine.wait(first.id(), None).await.expect("wait");
    assert_eq!(first.state(), StateName::Completed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "a cancelled record ran");
    assert_eq!(
        engine.get(queued.id()).await.expect("record").state(),
        StateName::Cancelled
    );
    // The queue goes on: the next record starts when the slot frees.
    let next = engine.start(sh("exit 0")).await.expect("start");
    let next = engine.wait(next.id(), None).await.expect("wait");
    assert_eq!(next.state(), StateName::Completed);
}

#[tokio::test]
async fn a_store_conflict_is_reconciled_not_dropped() {
    let h = harness(Limits::default()).await;
    let store = h.ports.store.clone();
    let op = h
        .engine
        .track(ProcessSpec::tracked("migration".parse().expect("name")))
        .await
        .expect("track");
    let id = op.id();
    // Another writer changes the record behind the engine's back.
    let mut theirs = store.get(id).await.expect("stored");
    let before = theirs.version();
    theirs
        .apply(
            bpm_domain::Transition::Progress {
                percent: bpm_domain::Percent::new(10).expect("percent"),
                message: Some("someone else".into()),
            },
            h.clock_now(),
        )
        .expect("progress");
    store.update(&theirs, before).await.expect("their write");
    // The engine's next write meets their version: it writes its own view
    // over it instead of dropping it.
    h.engine
        .progress(id, bpm_domain::Percent::new(50).expect("percent"), None)
        .await
        .expect("progress");
    eventually("the engine's progress is stored over theirs", || async {
        store.get(id).await.is_ok_and(|r| {
            r.version() > theirs.version() && r.progress().map(|p| p.percent.get()) == Some(50)
        })
    })
    .await;
    // Someone deletes it from the store: the engine's next write creates it again.
    store.delete(id).await.expect("their delete");
    let done = h.engine.complete(id, None).await.expect("complete");
    assert_eq!(done.record.state(), StateName::Completed);
    eventually("the completed record is stored again", || async {
        store
            .get(id)
            .await
            .is_ok_and(|r| r.state() == StateName::Completed)
    })
    .await;
}

/// The store answers the check before new work, then does not take the
/// record: the caller is told nothing was started, nothing runs, no event
/// says otherwise, and the queue and slots are as before, alone or in a
/// batch, with a free slot or queued behind a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_did_not_take_is_never_started_nor_acknowledged() {
    let disk = Arc::new(TestDisk::new(false));
    let (engine, spawner, _clock) = engine_on(&disk, 1).await;
    let refuse = |on: bool| {
        disk.refuse_creations
            .store(on, std::sync::atomic::Ordering::SeqCst);
    };
    let is_gone = |e: &ManagerError| matches!(e, ManagerError::Store(StoreError::Unavailable(m)) if m.contains("nothing was started"));
    let mut events = engine.subscribe();

    // A free slot: it would have been spawned at once.
    refuse(true);
    let e = engine.start(fake(&["forever"])).await.unwrap_err();
    assert!(is_gone(&e), "{e}");
    assert!(
        engine
            .list(ListFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = events.try_recv();
    assert!(seen.is_err(), "no event for it: {seen:?}");

    // Queued behind a busy slot, and in a batch.
    refuse(false);
    let busy = engine.start(fake(&["forever"])).await.expect("start");
    eventually("it runs", || async { spawner.is_running(busy.id()) }).await;
    refuse(true);
    let e = engine.start(fake(&["exit=0"])).await.unwrap_err();
    assert!(is_gone(&e), "{e}");
    let batch = engine
        .start_many(vec![fake(&["exit=0"]), fake(&["exit=0"])])
        .await
        .expect("answered");
    assert!(
        batch.iter().all(|r| r.as_ref().is_err_and(is_gone)),
        "{batch:?}"
    );
    refuse(false);
    let next = engine.start(fake(&["exit=0"])).await.expect("start");
    assert_eq!(next.state(), StateName::Pending);
    engine
        .stop(busy.id(), StopOptions::default())
        .await
        .expect("stop");
    let done = engine
        .wait(next.id(), Some(Duration::from_secs(5)))
        .await
        .expect("wait");
    assert_eq!(done.state(), StateName::Completed);
    let stored = disk.inner.list(&ListFilter::default()).await.expect("list");
    let mut ids: Vec<_> = stored.iter().map(ProcessRecord::id).collect();
    ids.sort();
    let mut expected = vec![busy.id(), next.id()];
    expected.sort();
    assert_eq!(ids, expected, "only what was acknowledged is stored");
}

/// At its start the engine reads the other nodes' records that its
/// records name: a record waiting for one that completed there starts, and
/// one waiting for a record the store no longer holds fails and says why.
#[tokio::test]
async fn a_restart_reads_the_other_nodes_records_its_records_wait_for() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let here = bpm_domain::NodeId::new("a").expect("node");
    let there = bpm_domain::NodeId::new("b").expect("node");
    let now = bpm_ports::Clock::now(&*clock);
    let mut done = ProcessRecord::new(fresh(1), there, fake(&["ok"]), now);
    for step in [
        bpm_domain::Transition::Start,
        bpm_domain::Transition::Spawned { pid: 4242 },
        bpm_domain::Transition::Exited {
            status: ExitStatus::Code(0),
            limit: None,
        },
    ] {
        done.apply(step, now).expect("a step");
    }
    let waits_for = |n: u128, dep: ProcessId| {
        let mut spec = fake(&["next"]);
        spec.dependencies = vec![dep];
        ProcessRecord::new(fresh(n), here.clone(), spec, now)
    };
    let released = waits_for(2, done.id());
    let orphaned = waits_for(3, fresh(4));
    let writes: Vec<StoreWrite> = [done, released.clone(), orphaned.clone()]
        .into_iter()
        .map(|record| StoreWrite {
            record,
            expected_version: None,
            durable: true,
        })
        .collect();
    assert!(store.write_batch(&writes).await.iter().all(Result::is_ok));
    let (ports, _spawner) = ports_with(&clock, store);
    let config = EngineConfig {
        node: Some(here),
        limits: Limits::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::launch(ports, config).await.expect("engine starts");
    let failed = engine.get(orphaned.id()).await.expect("kept");
    assert_eq!(failed.state(), StateName::Failed);
    let error = failed.lifecycle().error().expect("a reason");
    assert!(error.contains("gone from the store"), "{error}");
    let started = engine.get(released.id()).await.expect("kept");
    assert_ne!(
        started.state(),
        StateName::Pending,
        "{:?}",
        started.lifecycle()
    );
}
