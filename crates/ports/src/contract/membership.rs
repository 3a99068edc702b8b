//! The membership contract: leases on node names, their epochs, and the
//! errors each call MUST return. A subject is a fresh, empty membership
//! whose clock is real time: one case waits for a 2 s lease to expire.

use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{NodeId, NodeState, Span, Sweep};

use crate::{Candidate, Membership, MembershipError};

/// A fresh, empty membership on real time.
pub type Subject = Arc<dyn Membership>;

fn candidate(node: &str, pid: u32) -> Candidate {
    Candidate {
        node: NodeId::new(node).expect("a node name"),
        host: format!("host-of-{pid}"),
        pid,
        version: "test".into(),
        ttl: Span::from_secs(2),
        slots: 3,
        labels: [(
            bpm_domain::LabelKey::new("gpu").expect("a key"),
            bpm_domain::LabelValue::new("true").expect("a value"),
        )]
        .into(),
        boot: format!("boot-of-{pid}"),
        replaces: None,
    }
}

async fn state_of(m: &Subject, node: &str) -> NodeState {
    let nodes = m.nodes().await.expect("nodes");
    nodes
        .iter()
        .find(|n| n.lease.node.as_str() == node)
        .unwrap_or_else(|| panic!("{node} is not listed: {nodes:?}"))
        .state
}

/// A join gives an epoch, and the node is listed alive with its holder.
pub async fn join_gives_an_epoch_and_the_node_is_alive(m: Subject) {
    let epoch = m.join(&candidate("a", 10)).await.expect("join");
    assert!(epoch >= 1);
    let nodes = m.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let view = &nodes[0];
    assert_eq!(view.state, NodeState::Alive);
    assert_eq!(
        (view.lease.epoch, view.lease.pid, view.lease.host.as_str()),
        (epoch, 10, "host-of-10")
    );
    assert_eq!(view.lease.ttl, Span::from_secs(2));
    assert_eq!(view.lease.slots, 3);
    assert_eq!(
        view.lease.labels,
        candidate("a", 1).labels,
        "the labels the node carries"
    );
    assert!(view.lease_age_ms < 1_000, "{view:?}");
}

/// A second claim of a held node is refused, naming the holder.
pub async fn a_held_node_is_refused_naming_its_holder(m: Subject) {
    m.join(&candidate("a", 10)).await.expect("join");
    let e = m.join(&candidate("a", 11)).await.unwrap_err();
    match &e {
        MembershipError::Held(held) => {
            assert_eq!((held.host.as_str(), held.pid), ("host-of-10", 10));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    assert!(e.to_string().contains("pid 10"), "{e}");
    m.join(&candidate("b", 12))
        .await
        .expect("another node is free");
}

/// A daemon on the holder's own boot that saw the holder's daemon gone
/// takes the node over at once, with a newer epoch that fences the old;
/// a claim from another boot, or naming an epoch that no longer holds the
/// node, is refused as any other.
pub async fn a_gone_holder_on_the_same_boot_is_taken_over_at_once(m: Subject) {
    let node = NodeId::new("a").expect("node");
    let old = m.join(&candidate("a", 10)).await.expect("join");
    let other_boot = Candidate {
        replaces: Some(old),
        ..candidate("a", 11)
    };
    match m.join(&other_boot).await {
        Err(MembershipError::Held(held)) => {
            assert_eq!((held.epoch, held.boot.as_str()), (old, "boot-of-10"));
        }
        other => panic!("expected Held from another boot, got {other:?}"),
    }
    let stale = Candidate {
        boot: "boot-of-10".into(),
        replaces: Some(old + 7),
        ..candidate("a", 11)
    };
    assert!(
        matches!(m.join(&stale).await, Err(MembershipError::Held(_))),
        "an epoch that does not hold the node takes nothing over"
    );
    let same_boot = Candidate {
        boot: "boot-of-10".into(),
        replaces: Some(old),
        ..candidate("a", 11)
    };
    let new = m.join(&same_boot).await.expect("taken over");
    assert!(new > old);
    assert!(matches!(
        m.renew(&node, old).await,
        Err(MembershipError::Fenced { .. })
    ));
    m.renew(&node, new).await.expect("the new holder renews");
    let nodes = m.nodes().await.expect("nodes");
    assert_eq!(
        (nodes[0].lease.pid, nodes[0].lease.boot.as_str()),
        (11, "boot-of-10")
    );
}

/// Leaving frees the name; the next join fences the old epoch.
pub async fn leaving_frees_the_name_and_the_next_join_fences_the_old_epoch(m: Subject) {
    let node = NodeId::new("a").expect("node");
    let old = m.join(&candidate("a", 10)).await.expect("join");
    m.leave(&node, old).await.expect("leave");
    assert_eq!(state_of(&m, "a").await, NodeState::Left);
    let new = m
        .join(&candidate("a", 11))
        .await
        .expect("a left node is free");
    assert!(new > old);
    for result in [m.renew(&node, old).await, m.leave(&node, old).await] {
        assert_eq!(
            result,
            Err(MembershipError::Fenced {
                node: node.clone(),
                epoch: old,
                current: new
            })
        );
    }
    m.renew(&node, new).await.expect("the new epoch renews");
    assert_eq!(state_of(&m, "a").await, NodeState::Alive);
}

/// A node that never joined has no lease to renew.
pub async fn renewing_a_node_never_joined_is_fenced(m: Subject) {
    let node = NodeId::new("ghost").expect("node");
    assert_eq!(
        m.renew(&node, 1).await,
        Err(MembershipError::Fenced {
            node,
            epoch: 1,
            current: 0
        })
    );
}

/// Renewals keep a lease alive; without them it expires, is `lost`, is
/// taken over, and its renewal is refused as expired (then as fenced).
pub async fn a_lease_lives_by_renewals_and_expires_without_them(m: Subject) {
    let node = NodeId::new("a").expect("node");
    let old = m.join(&candidate("a", 10)).await.expect("join");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        m.renew(&node, old).await.expect("renew");
    }
    assert_eq!(state_of(&m, "a").await, NodeState::Alive);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(state_of(&m, "a").await, NodeState::Lost);
    assert_eq!(
        m.renew(&node, old).await,
        Err(MembershipError::Expired {
            node: node.clone(),
            epoch: old
        })
    );
    let new = m
        .join(&candidate("a", 11))
        .await
        .expect("a lost node is taken over");
    assert!(new > old);
    assert!(matches!(
        m.renew(&node, old).await,
        Err(MembershipError::Fenced { current, .. }) if current == new
    ));
}

/// A lapsed lease's sweeps: not while the node is alive; then exactly one
/// of many racing candidates; not again once finished; again by another if
/// its candidate never finished; the give-up only after `lost_after`; and
/// never for an epoch the node has moved past.
pub async fn a_lapsed_lease_is_swept_by_exactly_one_node(m: Subject) {
    let b = NodeId::new("b").expect("node");
    let (a, c) = (
        NodeId::new("a").expect("node"),
        NodeId::new("c").expect("node"),
    );
    let long = Duration::from_mins(1);
    let epoch = m.join(&candidate("b", 20)).await.expect("join");
    let bid = |m: Subject, sweep, by: NodeId, lost_after, hold| {
        let b = b.clone();
        async move {
            m.bid_for_sweep(&b, epoch, sweep, &by, lost_after, hold)
                .await
                .expect("bid")
        }
    };
    assert!(
        !bid(Arc::clone(&m), Sweep::Unreach, a.clone(), long, long).await,
        "alive"
    );
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let racing = (0..8).map(|i| {
        let m = Arc::clone(&m);
        let by = NodeId::new(format!("n{i}")).expect("node");
        tokio::spawn(async move {
            m.bid_for_sweep(
                &NodeId::new("b").expect("node"),
                epoch,
                Sweep::Unreach,
                &by,
                Duration::from_mins(1),
                Duration::from_mins(1),
            )
            .await
            .expect("claim")
        })
    });
    let mut won = 0;
    for r in racing {
        won += usize::from(r.await.expect("task"));
    }
    assert_eq!(won, 1, "exactly one sweeps");
    m.finish_sweep(&b, epoch, Sweep::Unreach)
        .await
        .expect("finish");
    assert!(!bid(Arc::clone(&m), Sweep::Unreach, a.clone(), long, long).await);
    // The give-up waits for lost_after; a candidate that never finishes
    // lets another take it once its hold is over.
    assert!(!bid(Arc::clone(&m), Sweep::GiveUp, a.clone(), long, long).await);
    let short = Duration::from_millis(1);
    assert!(
        bid(
            Arc::clone(&m),
            Sweep::GiveUp,
            a.clone(),
            short,
            Duration::from_millis(300)
        )
        .await
    );
    assert!(!bid(Arc::clone(&m), Sweep::GiveUp, c.clone(), short, long).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(bid(Arc::clone(&m), Sweep::GiveUp, c.clone(), short, long).await);
    // The node is back with a newer epoch: its old lease is swept no more.
    let new = m.join(&candidate("b", 21)).await.expect("back");
    assert!(new > epoch);
    let racing = m
        .bid_for_sweep(&b, epoch, Sweep::Unreach, &c, short, long)
        .await
        .expect("claim");
    assert!(!racing);
    assert!(
        !m.bid_for_sweep(&b, new, Sweep::Unreach, &c, short, long)
            .await
            .expect("claim"),
        "alive again"
    );
}

/// Of many daemons claiming one node at once, exactly one gets it.
pub async fn racing_claims_exactly_one_wins(m: Subject) {
    let claims = (0..8u32).map(|pid| {
        let m = Arc::clone(&m);
        tokio::spawn(async move { m.join(&candidate("contended", pid)).await })
    });
    let mut won = 0;
    for claim in claims {
        match claim.await.expect("task") {
            Ok(_) => won += 1,
            Err(MembershipError::Held(_)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 1);
}
