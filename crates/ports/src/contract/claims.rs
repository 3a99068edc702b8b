//! The claim queue's contract: unplaced records are claimed once each, in
//! priority then submission order, by a node they fit; a claim whose record
//! was never written goes back.

use std::sync::Arc;

use bpm_domain::cluster::placement::{NodeLabels, Room, unplaced};
use bpm_domain::{
    GroupName, LabelKey, LabelValue, NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp,
};

use crate::{ClaimQueue, ClaimedOne, ClusterSlots, ProcessStore};

/// A store with two nodes' claim queues and cluster-wide slots on it:
/// `alpha` and `beta`.
pub struct Subject {
    /// The shared store.
    pub store: Arc<dyn ProcessStore>,
    /// Node `alpha`'s claims.
    pub alpha: Arc<dyn ClaimQueue>,
    /// Node `beta`'s claims.
    pub beta: Arc<dyn ClaimQueue>,
    /// Node `alpha`'s cluster-wide slots.
    pub alpha_slots: Arc<dyn ClusterSlots>,
    /// Node `beta`'s cluster-wide slots.
    pub beta_slots: Arc<dyn ClusterSlots>,
}

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
    ))
}

fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                LabelKey::new(*k).expect("a key"),
                LabelValue::new(*v).expect("a value"),
            )
        })
        .collect()
}

fn room(free: usize) -> Room {
    Room {
        free,
        ..Room::default()
    }
}

/// Creates an unplaced record `n` in `store`, shaped by `shape`.
async fn queue(s: &Subject, n: u128, shape: impl FnOnce(&mut ProcessSpec)) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["true"]);
    spec.node = Some(NodeId::any());
    shape(&mut spec);
    let record = unplaced(id(n), spec, Timestamp::from_millis(1_000)).expect("a valid spec");
    s.store.create(&record).await.expect("create");
    record
}

async fn claimed(q: &Arc<dyn ClaimQueue>) -> Option<ProcessId> {
    q.claim(&room(4), &NodeLabels::new())
        .await
        .expect("claim")
        .map(|r| r.id())
}

/// An empty queue has nothing to claim.
pub async fn nothing_to_claim_is_none(s: Subject) {
    assert_eq!(claimed(&s.alpha).await, None);
    assert_eq!(s.alpha.node().as_str(), "alpha");
}

/// Records are claimed by priority, then in submission order, across
/// groups, and each once; the record comes back as the store holds it.
pub async fn claims_in_priority_then_submission_order(s: Subject) {
    let group = |g: &str| {
        let g = GroupName::new(g).expect("a group");
        move |spec: &mut ProcessSpec| spec.group = Some(g)
    };
    queue(&s, 1, group("a")).await;
    queue(&s, 2, |_| {}).await;
    let urgent = queue(&s, 3, |spec| spec.priority = 5).await;
    queue(&s, 4, group("b")).await;
    let first = s
        .alpha
        .claim(&room(4), &NodeLabels::new())
        .await
        .expect("claim");
    assert_eq!(
        first.as_ref(),
        Some(&urgent),
        "the highest priority, as stored"
    );
    assert_eq!(claimed(&s.beta).await, Some(id(1)));
    assert_eq!(claimed(&s.alpha).await, Some(id(2)));
    assert_eq!(claimed(&s.alpha).await, Some(id(4)));
    assert_eq!(claimed(&s.beta).await, None, "each is claimed once");
}

/// Of many nodes claiming one record at once, exactly one gets it.
pub async fn racing_claims_take_each_record_once(s: Subject) {
    for n in 0..20 {
        queue(&s, n, |_| {}).await;
    }
    let mut tasks = Vec::new();
    for q in [&s.alpha, &s.beta, &s.alpha, &s.beta] {
        let q = Arc::clone(q);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(id) = claimed(&q).await {
                got.push(id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a claimer"));
    }
    all.sort_unstable();
    let expected: Vec<ProcessId> = (0..20).map(id).collect();
    assert_eq!(all, expected, "every record claimed, none twice");
}

/// A node takes only what fits its labels, its free slots and its groups'
/// room; what it cannot take waits for a node that can.
pub async fn labels_slots_and_groups_decide(s: Subject) {
    queue(&s, 1, |spec| spec.node_labels = labels(&[("gpu", "true")])).await;
    let gpu = labels(&[("gpu", "true"), ("os", "linux")]);
    assert_eq!(
        s.alpha
            .claim(&room(4), &NodeLabels::new())
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        s.alpha
            .claim(&room(4), &labels(&[("gpu", "false")]))
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        s.beta.claim(&room(0), &gpu).await.expect("claim"),
        None,
        "no free slot"
    );
    let got = s.beta.claim(&room(1), &gpu).await.expect("claim");
    assert_eq!(got.map(|r| r.id()), Some(id(1)));
    queue(&s, 2, |spec| {
        spec.group = Some(GroupName::new("builds").expect("group"));
    })
    .await;
    let full = Room {
        free: 3,
        full_groups: [GroupName::new("builds").expect("group")].into(),
        ..Room::default()
    };
    assert_eq!(
        s.alpha
            .claim(&full, &NodeLabels::new())
            .await
            .expect("claim"),
        None
    );
    let default_zero = Room {
        free: 3,
        others_full: true,
        ..Room::default()
    };
    assert_eq!(
        s.alpha
            .claim(&default_zero, &NodeLabels::new())
            .await
            .expect("claim"),
        None
    );
    let own_limit = Room {
        limited_groups: [GroupName::new("builds").expect("group")].into(),
        ..default_zero
    };
    let got = s
        .alpha
        .claim(&own_limit, &NodeLabels::new())
        .await
        .expect("claim");
    assert_eq!(
        got.map(|r| r.id()),
        Some(id(2)),
        "a group with its own limit has room"
    );
}

/// A claim whose record the claimer wrote is over; one it never wrote goes
/// back to the queue when its node's claims are given back.
pub async fn unwritten_claims_are_given_back(s: Subject) {
    let first = queue(&s, 1, |_| {}).await;
    queue(&s, 2, |_| {}).await;
    let alpha = NodeId::new("alpha").expect("a node");
    let got = s
        .alpha
        .claim(&room(4), &NodeLabels::new())
        .await
        .expect("claim");
    assert_eq!(got.as_ref(), Some(&first));
    let placed = first
        .placed_on(&alpha, Timestamp::from_millis(2_000))
        .expect("unplaced");
    s.store
        .update(&placed, first.version())
        .await
        .expect("the claimer writes it");
    assert_eq!(
        claimed(&s.alpha).await,
        Some(id(2)),
        "claimed, never written"
    );
    assert_eq!(claimed(&s.beta).await, None);
    assert_eq!(s.beta.give_back(&alpha).await.expect("give back"), 1);
    assert_eq!(claimed(&s.beta).await, Some(id(2)), "back in the queue");
    assert_eq!(
        s.beta.give_back(&alpha).await.expect("give back"),
        0,
        "given back once"
    );
    let stored = s.store.get(id(1)).await.expect("get");
    assert_eq!(stored.node(), &alpha, "a written claim stays its node's");
}

/// A record can be claimed by id (to stop it where the call came); a
/// record another node claimed names it; a placed one does not wait.
pub async fn one_record_is_claimed_by_id(s: Subject) {
    let first = queue(&s, 1, |spec| spec.node_labels = labels(&[("gpu", "true")])).await;
    queue(&s, 2, |_| {}).await;
    assert_eq!(
        s.alpha.claim_one(id(1)).await.expect("claim one"),
        ClaimedOne::Taken(first),
        "whatever its labels"
    );
    assert_eq!(
        s.beta.claim_one(id(1)).await.expect("claim one"),
        ClaimedOne::ClaimedBy(NodeId::new("alpha").expect("a node"))
    );
    assert_eq!(claimed(&s.beta).await, Some(id(2)));
    assert_eq!(
        s.alpha.claim_one(id(9)).await.expect("claim one"),
        ClaimedOne::NotWaiting
    );
}

/// A deleted unplaced record leaves the queue.
pub async fn a_deleted_record_leaves_the_queue(s: Subject) {
    queue(&s, 1, |_| {}).await;
    s.store.delete(id(1)).await.expect("delete");
    assert_eq!(claimed(&s.alpha).await, None);
    assert_eq!(
        s.alpha.claim_one(id(1)).await.expect("claim one"),
        ClaimedOne::NotWaiting
    );
}

/// Creates record `n` of group `agents` on `node`, pending.
async fn agent(s: &Subject, n: u128, node: &str) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["agent"]);
    spec.group = Some(GroupName::new("agents").expect("a group"));
    let node = NodeId::new(node).expect("a node");
    let record = ProcessRecord::new(id(n), node, spec, Timestamp::from_millis(1_000));
    s.store.create(&record).await.expect("create");
    record
}

/// Moves `record` through `steps` in the store.
async fn step(s: &Subject, record: &mut ProcessRecord, steps: &[bpm_domain::Transition]) {
    for t in steps {
        let before = record.version();
        record
            .apply(t.clone(), Timestamp::from_millis(2_000))
            .expect("a step");
        s.store.update(record, before).await.expect("update");
    }
}

/// Slots are granted while the group's records holding one on every node,
/// and those granted one that are still pending, are fewer than the limit;
/// an end, or a grant whose record ended unstarted, frees one.
pub async fn cluster_slots_count_every_node(s: Subject) {
    use bpm_domain::{ExitStatus, Transition};
    let agents = GroupName::new("agents").expect("a group");
    let mut a1 = agent(&s, 1, "alpha").await;
    let mut b1 = agent(&s, 2, "beta").await;
    let b2 = agent(&s, 3, "beta").await;
    let mut a2 = agent(&s, 4, "alpha").await;
    assert!(s.alpha_slots.take(a1.id(), &agents, 2).await.expect("take"));
    assert!(
        s.alpha_slots.take(a1.id(), &agents, 2).await.expect("take"),
        "granted again while pending"
    );
    assert!(s.beta_slots.take(b1.id(), &agents, 2).await.expect("take"));
    assert!(
        !s.beta_slots.take(b2.id(), &agents, 2).await.expect("take"),
        "two granted, both pending"
    );
    // Started: counted from the store, on either node.
    step(
        &s,
        &mut a1,
        &[Transition::Start, Transition::Spawned { pid: 7 }],
    )
    .await;
    step(&s, &mut b1, &[Transition::Start]).await;
    assert!(!s.alpha_slots.take(a2.id(), &agents, 2).await.expect("take"));
    assert!(
        s.alpha_slots.take(a2.id(), &agents, 3).await.expect("take"),
        "another limit, another answer"
    );
    // a2 is granted and pending: three taken.
    assert!(!s.beta_slots.take(b2.id(), &agents, 3).await.expect("take"));
    step(
        &s,
        &mut a1,
        &[Transition::Exited {
            status: ExitStatus::Code(0),
            limit: None,
        }],
    )
    .await;
    assert!(
        s.beta_slots.take(b2.id(), &agents, 3).await.expect("take"),
        "an end frees a slot"
    );
    // A granted record stopped before it started frees its grant.
    let stop = Transition::Stop {
        cause: bpm_domain::StopCause::Requested,
    };
    step(&s, &mut a2, &[stop]).await;
    let mut c = agent(&s, 5, "alpha").await;
    assert!(s.alpha_slots.take(c.id(), &agents, 3).await.expect("take"));
    // Unreachable (its node stopped renewing): its slot is free.
    step(&s, &mut b1, &[Transition::Spawned { pid: 8 }]).await;
    let d = agent(&s, 6, "alpha").await;
    assert!(!s.alpha_slots.take(d.id(), &agents, 3).await.expect("take"));
    let unreach = Transition::Unreach {
        reason: "node beta stopped renewing".into(),
    };
    step(&s, &mut b1, &[unreach]).await;
    assert!(
        s.alpha_slots.take(d.id(), &agents, 3).await.expect("take"),
        "an unreachable record holds no slot"
    );
    // A tracked operation of the group (the caller's own work) holds none.
    let mut op = ProcessSpec::tracked(bpm_domain::ProcessName::new("op").expect("a name"));
    op.group = Some(agents.clone());
    let node = NodeId::new("alpha").expect("a node");
    let tracked = ProcessRecord::new(id(7), node, op, Timestamp::from_millis(1_000));
    assert!(
        tracked.state().is_active(),
        "a tracked operation starts running"
    );
    s.store.create(&tracked).await.expect("create");
    // b2, c and d hold grants: a fourth slot is free.
    let fifth = agent(&s, 8, "beta").await;
    assert!(
        s.beta_slots
            .take(fifth.id(), &agents, 4)
            .await
            .expect("take"),
        "a tracked operation holds no slot"
    );
    a_grant_lapses_once_its_record_is_written_again(&s, &agents).await;
    // Other groups are counted apart.
    let builds = GroupName::new("builds").expect("a group");
    assert!(s.beta_slots.take(id(99), &builds, 1).await.expect("take"));
    step(&s, &mut c, &[Transition::Start]).await;
}

/// A grant lapses once its record is written again: a record granted,
/// started and queued again after a run (pending once more) holds nothing
/// until it asks anew. Five slots; b2, c and d hold grants already.
async fn a_grant_lapses_once_its_record_is_written_again(s: &Subject, agents: &GroupName) {
    use bpm_domain::{ExitStatus, Transition};
    let mut rerun = agent(s, 9, "alpha").await;
    assert!(
        s.alpha_slots
            .take(rerun.id(), agents, 5)
            .await
            .expect("take")
    );
    let waiting = agent(s, 10, "beta").await;
    assert!(
        !s.beta_slots
            .take(waiting.id(), agents, 5)
            .await
            .expect("take"),
        "b2, c, d and the two just granted hold the five"
    );
    let requeue = Transition::Requeue {
        status: ExitStatus::Code(1),
        not_before: Timestamp::from_millis(3_000),
    };
    step(
        s,
        &mut rerun,
        &[Transition::Start, Transition::Spawned { pid: 9 }, requeue],
    )
    .await;
    assert_eq!(rerun.state(), bpm_domain::StateName::Pending);
    assert!(
        s.beta_slots
            .take(waiting.id(), agents, 5)
            .await
            .expect("take"),
        "a record queued again after its run holds no slot"
    );
    assert!(
        !s.alpha_slots
            .take(rerun.id(), agents, 5)
            .await
            .expect("take"),
        "it asks anew, and waits like any other"
    );
}
