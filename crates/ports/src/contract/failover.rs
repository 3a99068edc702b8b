//! The failover contract: a lost node's record is given up and replaced at
//! once, only while its node is still lost and once the failover is due,
//! and only once. A subject's clock is real time: one case waits for a 2 s
//! lease to expire and the failover margin to pass.

use std::sync::Arc;
use std::time::Duration;

use bpm_domain::cluster::FAILOVER_MARGIN;
use bpm_domain::{
    Lease, NodeId, ProcessId, ProcessRecord, ProcessSpec, RestartMode, Span, StateName, Timestamp,
    Transition,
};

use crate::{Candidate, FailedOver, Failover, Membership, ProcessStore, StoreError};

/// A fresh, empty store with leases and failover on it, all on real time.
pub struct Subject {
    /// The leases.
    pub membership: Arc<dyn Membership>,
    /// The records.
    pub store: Arc<dyn ProcessStore>,
    /// The failover of lost nodes' records.
    pub failover: Arc<dyn Failover>,
}

fn candidate(node: &str) -> Candidate {
    Candidate {
        node: NodeId::new(node).expect("a node name"),
        host: "host".into(),
        pid: 1,
        version: "test".into(),
        ttl: Span::from_secs(2),
        slots: 4,
        labels: std::collections::BTreeMap::default(),
        boot: String::new(),
        replaces: None,
    }
}

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
    ))
}

/// A failover record `n` running on `node`, as the store holds it.
async fn running(s: &Subject, n: u128, node: &str) -> ProcessRecord {
    let mut spec = ProcessSpec::argv(["server"]);
    spec.restart.mode = RestartMode::Always;
    spec.failover = true;
    spec.stop.grace = Span::from_millis(0);
    let node = NodeId::new(node).expect("a node");
    let mut r = ProcessRecord::new(id(n), node, spec, Timestamp::from_millis(1));
    s.store.create(&r).await.expect("create");
    let v = r.version();
    r.apply(Transition::Start, Timestamp::from_millis(2))
        .expect("start");
    r.apply(Transition::Spawned { pid: 7 }, Timestamp::from_millis(3))
        .expect("spawned");
    s.store.update(&r, v).await.expect("update");
    r
}

async fn lease_of(s: &Subject, node: &str) -> Lease {
    s.membership
        .nodes()
        .await
        .expect("nodes")
        .into_iter()
        .find(|v| v.lease.node.as_str() == node)
        .expect("listed")
        .lease
}

/// What the failover writes: `record` given up, and `new` replacing it.
fn split(record: &ProcessRecord, new: u128) -> (ProcessRecord, ProcessRecord) {
    let mut old = record.clone();
    old.apply(
        Transition::Lose {
            reason: "failed over".into(),
        },
        Timestamp::from_millis(10),
    )
    .expect("lose");
    let replacement = ProcessRecord::failover_of(record, id(new), Timestamp::from_millis(10));
    (old, replacement)
}

/// Nothing fails over while the node holds its lease nor before the
/// failover is due; then the record is given up and replaced, once; a node
/// claimed again, or one that left, keeps its record.
pub async fn a_lost_nodes_record_is_replaced_once_and_only_while_lost(s: Subject) {
    let m = &s.membership;
    m.join(&candidate("b")).await.expect("join b");
    let c_epoch = m.join(&candidate("c")).await.expect("join c");
    let d_epoch = m.join(&candidate("d")).await.expect("join d");
    let on_b = running(&s, 1, "b").await;
    let on_c = running(&s, 2, "c").await;
    let on_d = running(&s, 3, "d").await;
    let (old_b, new_b) = split(&on_b, 11);
    let b_lease = lease_of(&s, "b").await;
    assert_eq!(
        s.failover
            .fail_over(&b_lease, &old_b, on_b.version(), &new_b)
            .await,
        Ok(FailedOver::NotLost),
        "an alive node keeps its record"
    );
    let c_lease = lease_of(&s, "c").await;
    let d_lease = lease_of(&s, "d").await;
    m.leave(&NodeId::new("d").expect("d"), d_epoch)
        .await
        .expect("leave");
    // The lease lapses (2 s), then the margin passes (grace 0).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        s.failover
            .fail_over(&b_lease, &old_b, on_b.version(), &new_b)
            .await,
        Ok(FailedOver::NotLost),
        "lost, but the failover is not due before the margin"
    );
    tokio::time::sleep(FAILOVER_MARGIN + Duration::from_millis(300)).await;
    let c_again = m.join(&candidate("c")).await.expect("c taken again");
    assert!(c_again > c_epoch);
    let (old_c, new_c) = split(&on_c, 12);
    assert_eq!(
        s.failover
            .fail_over(&c_lease, &old_c, on_c.version(), &new_c)
            .await,
        Ok(FailedOver::NotLost),
        "a node claimed again keeps its record"
    );
    let (old_d, new_d) = split(&on_d, 13);
    assert_eq!(
        s.failover
            .fail_over(&d_lease, &old_d, on_d.version(), &new_d)
            .await,
        Ok(FailedOver::NotLost),
        "a node that left is not lost"
    );
    for kept in [id(12), id(13)] {
        assert_eq!(s.store.get(kept).await, Err(StoreError::NotFound(kept)));
    }
    assert_eq!(
        s.store.get(id(2)).await.map(|r| r.state()),
        Ok(StateName::Running)
    );

    // The lost node's record: given up and replaced at once.
    assert_eq!(
        s.failover
            .fail_over(&b_lease, &old_b, on_b.version(), &new_b)
            .await,
        Ok(FailedOver::Replaced)
    );
    let given_up = s.store.get(id(1)).await.expect("old");
    assert_eq!(given_up.state(), StateName::Lost);
    let replacement = s.store.get(id(11)).await.expect("new");
    assert_eq!(replacement.restarted_from(), Some(id(1)));
    assert!(replacement.node().is_any());
    // Twice: the replacement exists, and nothing is written.
    assert_eq!(
        s.failover
            .fail_over(&b_lease, &old_b, on_b.version(), &new_b)
            .await,
        Err(StoreError::AlreadyExists(id(11)))
    );
    // Another sweeper, from the version it read before: changed.
    let (again, other) = split(&on_b, 14);
    assert_eq!(
        s.failover
            .fail_over(&b_lease, &again, on_b.version(), &other)
            .await,
        Ok(FailedOver::Changed)
    );
    assert_eq!(s.store.get(id(14)).await, Err(StoreError::NotFound(id(14))));
    assert_eq!(s.store.get(id(1)).await.expect("old"), given_up);
}
