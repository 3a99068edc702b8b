//! The rules of nodes that share one store: how long a node's lease lasts
//! and how often it is renewed, what state a node is in from its lease's
//! age, who may take a node's name, which writes are fenced, and when a
//! daemon must stop writing.
//!
//! The store (Redis) holds the leases and the epochs and applies these
//! rules atomically; this module says what the numbers mean, so that they
//! can be property-tested and simulated. Every time here is the store's
//! clock, except [`ClusterTiming::may_write`], which a daemon asks of its
//! own clock, measured from when it *sent* its last renewal that succeeded:
//! a renewal's answer may come late, but never before it was sent.

pub mod claimer;
mod failover;
mod lease;
pub mod lease_watch;
pub mod look;
pub mod member;
pub mod placement;
pub mod slots;
mod sweep;

pub use failover::{failover, fails_over};
pub use lease::{
    ClusterTiming, DEFAULT_LEASE_TTL, DEFAULT_LOST_AFTER, FAILOVER_MARGIN, Holder,
    KEEPER_STAND_DOWN_LAG, Lease, MIN_LEASE_TTL, NOTICE_WITHIN, NameHeld, NodeState, OVERSLEPT,
    TakeOver, TimingError, accepts_write, keeper_hold, late_after, see_holder, take_name,
};
pub use sweep::{Sweep, sweep, sweep_record};

use crate::{NodeId, ProcessRecord};

/// The node that must carry out a call about `record` made on node `here`:
/// its owner, when that is another node (a node changes only its own
/// records; the others' calls are sent to it), or `None`.
pub fn owner_elsewhere<'a>(record: &'a ProcessRecord, here: &NodeId) -> Option<&'a NodeId> {
    (record.node() != here).then(|| record.node())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::{Span, Timestamp};
    use proptest::prelude::*;

    fn lease(renewed_at: u64, ttl_ms: u64) -> Lease {
        Lease {
            node: NodeId::new("b").expect("node"),
            epoch: 3,
            host: "machine-b".into(),
            pid: 42,
            version: "0.1.0".into(),
            since: Timestamp::from_millis(1_000),
            renewed_at: Timestamp::from_millis(renewed_at),
            ttl: Span::from_millis(ttl_ms),
            slots: 4,
            left: false,
            labels: BTreeMap::default(),
            boot: "boot-1".into(),
        }
    }

    fn timing(ttl_ms: u64) -> ClusterTiming {
        ClusterTiming::new(Span::from_millis(ttl_ms), Span::from_millis(ttl_ms * 3))
            .expect("timing")
    }

    #[test]
    fn a_lease_is_alive_then_suspect_then_lost_and_left_is_left() {
        let l = lease(10_000, 9_000);
        let at = |ms| l.state_at(Timestamp::from_millis(ms));
        assert_eq!(at(10_000), NodeState::Alive);
        assert_eq!(at(16_000), NodeState::Alive);
        assert_eq!(at(16_001), NodeState::Suspect);
        assert_eq!(at(19_000), NodeState::Suspect);
        assert_eq!(at(19_001), NodeState::Lost);
        let gone = Lease { left: true, ..l };
        assert_eq!(
            gone.state_at(Timestamp::from_millis(10_000)),
            NodeState::Left
        );
        assert_eq!(NodeState::Suspect.to_string(), "suspect");
    }

    #[test]
    fn the_timing_is_refused_by_name_when_too_short() {
        let e = ClusterTiming::new(Span::from_millis(1_500), Span::from_secs(60)).unwrap_err();
        assert!(e.to_string().contains("lease_ttl 1500ms"), "{e}");
        let e = ClusterTiming::new(Span::from_secs(10), Span::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("lost_after 5s"), "{e}");
        let d = ClusterTiming::default();
        assert_eq!(d.lease_ttl(), DEFAULT_LEASE_TTL);
        assert_eq!(d.lost_after(), DEFAULT_LOST_AFTER);
        assert_eq!(d.check_every(), NOTICE_WITHIN);
        assert_eq!(timing(2_000).check_every(), Duration::from_secs(2) / 3);
    }

    #[test]
    fn a_claim_of_a_held_node_names_the_holder() {
        let node = NodeId::new("b").expect("node");
        let held = lease(10_000, 9_000);
        let e = take_name(&node, Some(&held), 3, Timestamp::from_millis(12_000), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("machine-b") && text.contains("pid 42") && text.contains("2000 ms ago"),
            "{text}"
        );
        assert_eq!(take_name(&node, None, 0, Timestamp::EPOCH, None), Ok(1));
        assert_eq!(
            take_name(&node, Some(&held), 3, Timestamp::from_millis(30_000), None),
            Ok(4)
        );
    }

    #[test]
    fn a_live_lease_is_taken_over_only_from_a_gone_daemon_of_the_same_boot_and_epoch() {
        let node = NodeId::new("b").expect("node");
        let held = lease(10_000, 9_000);
        let now = Timestamp::from_millis(12_000);
        let refused = take_name(&node, Some(&held), 3, now, None).unwrap_err();
        assert_eq!((refused.epoch, refused.boot.as_str()), (3, "boot-1"));
        assert_eq!(see_holder(&refused, "boot-1", false), Holder::Gone);
        assert_eq!(
            see_holder(&refused, "boot-1", true),
            Holder::RunsHere,
            "its daemon runs"
        );
        assert_eq!(
            see_holder(&refused, "boot-2", false),
            Holder::Elsewhere,
            "another boot"
        );
        assert_eq!(
            see_holder(&refused, "", false),
            Holder::Elsewhere,
            "a boot unknown"
        );
        let over = |epoch, boot| Some(TakeOver { epoch, boot });
        assert_eq!(
            take_name(&node, Some(&held), 3, now, over(3, "boot-1")),
            Ok(4)
        );
        assert!(
            take_name(&node, Some(&held), 3, now, over(2, "boot-1")).is_err(),
            "the lease changed hands since it was looked at"
        );
        assert!(take_name(&node, Some(&held), 3, now, over(3, "boot-2")).is_err());
        let unknown = Lease {
            boot: String::new(),
            ..held
        };
        assert!(take_name(&node, Some(&unknown), 3, now, over(3, "")).is_err());
        for (holder, says) in [
            (Holder::Elsewhere, "cannot be seen from here"),
            (Holder::RunsHere, "still runs on this machine"),
        ] {
            let text = NameHeld {
                holder,
                ..refused.clone()
            }
            .to_string();
            assert!(text.contains(says) && text.contains("pid 42"), "{text}");
        }
    }

    #[test]
    fn records_are_given_up_a_wait_after_the_expiry() {
        let t = timing(9_000);
        let l = lease(10_000, 9_000);
        assert!(!t.gives_up(&l, Timestamp::from_millis(10_000 + 9_000 + 27_000)));
        assert!(t.gives_up(&l, Timestamp::from_millis(10_000 + 9_000 + 27_001)));
        let gone = Lease { left: true, ..l };
        assert!(!t.gives_up(&gone, Timestamp::from_millis(u64::MAX / 2)));
        assert!(accepts_write(3, 3) && accepts_write(3, 4) && !accepts_write(4, 3));
    }

    proptest! {
        /// A node's state only moves forward with time: alive, suspect, lost.
        #[test]
        fn states_move_forward(ttl in 2_000u64..60_000, renewed in 0u64..1_000_000, a in 0u64..200_000, b in 0u64..200_000) {
            let l = lease(renewed, ttl);
            let (early, late) = (renewed + a.min(b), renewed + a.max(b));
            let rank = |s: NodeState| s as u8;
            prop_assert!(rank(l.state_at(Timestamp::from_millis(early))) <= rank(l.state_at(Timestamp::from_millis(late))));
        }

        /// While a daemon may write, no one may take its node: the take
        /// needs its lease lost, which takes longer than the writing lasts.
        /// The renewal was sent at or before the store stamped it.
        #[test]
        fn no_two_epochs_write_at_once(ttl in 2_000u64..60_000, sent in 0u64..1_000_000, stamped_after in 0u64..5_000, now_after in 0u64..200_000) {
            let t = timing(ttl);
            let l = lease(sent + stamped_after, ttl);
            let now = Timestamp::from_millis(sent + now_after);
            if t.may_write(Timestamp::from_millis(sent), now) {
                prop_assert!(take_name(&l.node, Some(&l), l.epoch, now, None).is_err());
            }
        }

        /// A claim that is granted fences every older epoch.
        #[test]
        fn a_granted_claim_fences_the_old_epoch(epoch in 0u64..1_000, ttl in 2_000u64..60_000, renewed in 0u64..100_000, now in 0u64..400_000) {
            let l = Lease { epoch, ..lease(renewed, ttl) };
            if let Ok(new) = take_name(&l.node, Some(&l), epoch, Timestamp::from_millis(now), None) {
                prop_assert!(new > epoch && accepts_write(new, new) && !accepts_write(new, epoch));
            }
        }
    }
}
