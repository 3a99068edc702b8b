//! Other nodes' records: what waits for them, placement on any node,
//! failover, cluster-wide slots, and a watch the host refuses.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A record placed on any node: queued unplaced, taken by this node's
/// claimer (woken by its event), placed here and started; one whose
/// labels no node carries waits and is cancelled where its stop came; one
/// naming a record that does not exist is refused at once.
/// One look at the leases by node `me`, each effect carried out by
/// `sweeper` as the daemon's cluster driver would: what it did.
async fn look(
    sweeper: &bpm_runtime::Sweeper,
    me: &bpm_domain::NodeId,
    timing: bpm_domain::ClusterTiming,
) -> Vec<bpm_runtime::Swept> {
    use bpm_domain::cluster::look::{Look, LookEffect, LookInput};
    let mut look = Look::new(me.clone(), timing);
    let mut input = LookInput::Begin;
    loop {
        input = match look.handle(input) {
            LookEffect::Done(swept) => return swept,
            effect => sweeper.carry_out(effect).await.expect("the store answers"),
        };
    }
}

#[tokio::test]
async fn a_record_placed_on_any_node_is_taken_here_or_waits_and_is_stopped() {
    let h = harness(Limits::default()).await;
    let node = bpm_domain::NodeId::local();
    let claims =
        bpm_adapters::memory::InMemoryClaims::new(Arc::clone(&h.ports.store), node.clone());
    h.engine.claim_through(
        Arc::new(claims),
        bpm_domain::cluster::placement::NodeLabels::new(),
    );
    let any = |shape: &dyn Fn(&mut ProcessSpec)| {
        let mut spec = fake(&["forever"]);
        spec.node = Some(bpm_domain::NodeId::any());
        shape(&mut spec);
        spec
    };

    let missing = ProcessId::from_uuid(uuid::Uuid::from_u128(9));
    let refused = h
        .engine
        .start(any(&|s| s.dependencies = vec![missing]))
        .await;
    assert!(
        matches!(refused, Err(ManagerError::Refused(CoreError::UnknownDependency(id))) if id == missing),
        "{refused:?}"
    );

    let queued = h.engine.start(any(&|_| {})).await.expect("queued");
    assert!(queued.node().is_any(), "unplaced when answered: {queued:?}");
    let mut taken = queued.clone();
    for _ in 0..200 {
        taken = h.engine.get(queued.id()).await.expect("stored");
        if taken.state() == StateName::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        (taken.node(), taken.state()),
        (&node, StateName::Running),
        "{taken:?}"
    );

    let gpu = h
        .engine
        .start(any(&|s| {
            s.node_labels.insert(
                bpm_domain::LabelKey::new("gpu").expect("key"),
                bpm_domain::LabelValue::new("true").expect("value"),
            );
        }))
        .await
        .expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.engine
            .get(gpu.id())
            .await
            .expect("stored")
            .node()
            .is_any(),
        "no node carries gpu=true"
    );
    let stopped = h
        .engine
        .stop(gpu.id(), StopOptions::default())
        .await
        .expect("stopped");
    assert_eq!(
        (stopped.node(), stopped.state()),
        (&node, StateName::Cancelled)
    );
    assert!(
        stopped.lifecycle().started_at().is_none(),
        "it never ran: {stopped:?}"
    );
}

/// The sweep of a lost node's failover record, on the in-memory adapters:
/// nothing moves before a lease, its grace and the margin have passed
/// since the node's last renewal; then the record is given up, its
/// replacement queued and announced, and this node's claimer takes it and
/// runs it (after the first restart's backoff). A second look replaces
/// nothing more.
#[tokio::test]
async fn a_lost_nodes_failover_record_runs_here_once() {
    use bpm_adapters::memory::{InMemoryClaims, InMemoryFailover, InMemoryMembership};
    use bpm_ports::{Candidate, Clock, Membership};
    let h = harness(Limits::default()).await;
    let here = bpm_domain::NodeId::local();
    let beta = bpm_domain::NodeId::new("beta").expect("a node");
    h.engine.claim_through(
        Arc::new(InMemoryClaims::new(
            Arc::clone(&h.ports.store),
            here.clone(),
        )),
        bpm_domain::cluster::placement::NodeLabels::new(),
    );
    let membership = Arc::new(InMemoryMembership::new(h.clock.clone()));
    let candidate = |node: &bpm_domain::NodeId| Candidate {
        node: node.clone(),
        host: "host".into(),
        pid: 1,
        version: "test".into(),
        ttl: Span::from_secs(2),
        slots: 4,
        labels: bpm_domain::cluster::placement::NodeLabels::new(),
        boot: String::new(),
        replaces: None,
    };
    membership
        .join(&candidate(&beta))
        .await
        .expect("beta joins");
    let mut spec = fake(&["forever"]);
    spec.restart.mode = RestartMode::Always;
    spec.failover = true;
    spec.stop.grace = Span::from_secs(1);
    let mut on_beta = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        beta.clone(),
        spec,
        h.clock.now(),
    );
    h.ports.store.create(&on_beta).await.expect("create");
    let created = on_beta.version();
    on_beta
        .apply(bpm_domain::Transition::Start, h.clock.now())
        .expect("start");
    on_beta
        .apply(bpm_domain::Transition::Spawned { pid: 77 }, h.clock.now())
        .expect("spawned");
    h.ports
        .store
        .update(&on_beta, created)
        .await
        .expect("update");
    let timing =
        bpm_domain::ClusterTiming::new(Span::from_secs(2), Span::from_secs(60)).expect("timing");
    let failover = Arc::new(InMemoryFailover::new(
        Arc::clone(&membership),
        Arc::clone(&h.ports.store),
    ));
    let sweeper = h.engine.sweeper(membership.clone(), timing, failover);

    // Lost (2 s) but not due (2 s + 1 s grace + 2 s margin): only unreachable.
    h.advance(Duration::from_millis(4_900)).await;
    let swept = look(&sweeper, &here, timing).await;
    assert!(swept.iter().all(|s| s.sweep.is_some()), "{swept:?}");
    assert_eq!(h.state(on_beta.id()).await, StateName::Unreachable);

    h.advance(Duration::from_millis(200)).await;
    let swept = look(&sweeper, &here, timing).await;
    assert_eq!(
        swept.iter().find(|s| s.sweep.is_none()).map(|s| s.records),
        Some(1),
        "{swept:?}"
    );
    let given_up = h.engine.get(on_beta.id()).await.expect("stored");
    assert_eq!(given_up.state(), StateName::Lost);
    let replacement = h
        .engine
        .list(ListFilter::default())
        .await
        .expect("list")
        .into_iter()
        .find(|r| r.restarted_from() == Some(on_beta.id()))
        .expect("a replacement");
    assert_eq!(replacement.restarts(), 1);
    assert!(
        look(&sweeper, &here, timing)
            .await
            .iter()
            .all(|s| s.sweep.is_some())
    );
    // Taken here, and started once its backoff (0.5 s) has passed.
    eventually("the replacement is placed here", || async {
        h.engine
            .get(replacement.id())
            .await
            .is_ok_and(|r| r.node() == &here)
    })
    .await;
    h.advance(Duration::from_secs(1)).await;
    let running = h.until_state(replacement.id(), StateName::Running).await;
    assert_eq!(running.node(), &here);
    let all = h.engine.list(ListFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2, "one replacement: {all:?}");
}

/// A store that grants cluster-wide slots, but whose first answer is lost
/// on the way back (the grant is made all the same).
struct FirstAnswerLost {
    slots: bpm_adapters::memory::InMemoryClaims,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl bpm_ports::ClusterSlots for FirstAnswerLost {
    async fn take(
        &self,
        id: ProcessId,
        group: &GroupName,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let granted = self.slots.take(id, group, limit).await?;
        if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the answer was lost".into()));
        }
        Ok(granted)
    }
}

/// An ask for a cluster-wide slot that got no answer is asked again, not
/// taken for a refusal: its grant, if made, holds while its record waits,
/// and a record of higher priority asking first would be refused for ever.
#[tokio::test]
async fn a_cluster_slot_ask_without_an_answer_is_asked_again() {
    let agents = GroupName::new("agents").expect("group");
    let mut limits = Limits {
        max_running: 4,
        ..Limits::default()
    };
    limits.cluster_groups.insert(agents.clone(), 1);
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let store = Arc::new(InMemoryStore::new());
    let (ports, spawner) = ports_with(&clock, store.clone());
    let slots = FirstAnswerLost {
        slots: bpm_adapters::memory::InMemoryClaims::new(store, bpm_domain::NodeId::local()),
        lost: true.into(),
    };
    let engine = Engine::launch(
        ports.clone(),
        EngineConfig {
            node: None,
            limits,
            slots: Some(Arc::new(slots)),
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine starts");
    let h = Harness {
        engine,
        clock,
        spawner,
        ports,
    };
    let agent = |priority| {
        let mut spec = fake(&["forever"]);
        spec.group = Some(agents.clone());
        spec.priority = priority;
        spec
    };
    let first = h.engine.start(agent(0)).await.expect("queued");
    let urgent = h.engine.start(agent(5)).await.expect("queued");
    h.until_state(first.id(), StateName::Running).await;
    assert_eq!(
        h.state(urgent.id()).await,
        StateName::Pending,
        "one slot across the cluster"
    );
    h.spawner.exit(first.id(), ExitStatus::Code(0));
    h.until_state(urgent.id(), StateName::Running).await;
}

/// The machine's host, whose file watches cannot be set up (as when the
/// user's inotify watches are used up): failure injection for the record's
/// note of it.
struct WatchesRefused(bpm_adapters::os::OsHost);

#[async_trait::async_trait]
impl bpm_ports::Host for WatchesRefused {
    fn free_ports(&self, ask: bpm_domain::PortAsk) -> Vec<u16> {
        self.0.free_ports(ask)
    }

    fn start_of(&self, pid: u32) -> Option<u64> {
        self.0.start_of(pid)
    }

    async fn until_gone(&self, process: bpm_domain::ProcessRef) {
        self.0.until_gone(process).await;
    }

    fn watch_files(
        &self,
        watch: &bpm_domain::FileWatch,
    ) -> Result<tokio::sync::mpsc::Receiver<()>, bpm_ports::WatchError> {
        Err(bpm_ports::WatchError::Os {
            path: watch.paths[0].clone(),
            reason: "No space left on device (os error 28)".into(),
        })
    }
}

/// Issue 60, item 13: a watch the daemon cannot set up is said on the
/// record (`show` names it), and the process runs on unwatched.
#[tokio::test]
async fn a_watch_that_cannot_be_set_up_is_noted_on_its_record() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
    let (mut ports, _spawner) = ports_with(&clock, Arc::new(InMemoryStore::new()));
    ports.host = Arc::new(WatchesRefused(bpm_adapters::os::OsHost::new()));
    let engine = Engine::launch(ports, EngineConfig::default())
        .await
        .expect("engine starts");
    let dir = std::env::temp_dir();
    let mut spec = fake(&["forever"]);
    spec.watch = Some(Box::new(bpm_domain::FileWatch::new(
        vec![dir.clone()],
        Vec::new(),
        None,
    )));
    let id = engine.start(spec).await.expect("start").id();
    eventually("the record notes its watch's failure", || async {
        engine
            .get(id)
            .await
            .is_ok_and(|r| r.watch_error().is_some_and(|e| e.contains("No space left")))
    })
    .await;
    assert!(
        !engine.get(id).await.expect("record").is_terminal(),
        "it runs on"
    );
}
