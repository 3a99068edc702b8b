//! One look at the other nodes' leases, as a sans-I/O state machine: which
//! lost nodes' records are failed over, which sweeps this node bids for, and what
//! a won sweep does. The daemon's sweeper and the cluster simulation drive
//! this same core, one effect at a time, so "when is a lost node's record
//! marked lost?" has one answer.
//!
//! A look, for each other node's lease, in this order:
//! 1. **Fail over**: once the node is lost and its earliest failover is
//!    past ([`ClusterTiming::earliest_failover`]), its failover records
//!    that are due are given up and replaced ([`super::failover`]) (a
//!    driver without a failover port answers that none was).
//! 2. **Sweep**: when a sweep is due ([`ClusterTiming::sweep_due`]), this
//!    node bids for it in the store, which lets exactly one node win it.
//!    The node that won it gives back the records the lost node claimed
//!    but never placed, applies [`super::sweep_record`] to each of its
//!    records, and marks the sweep finished, so that no one bids for it
//!    again.
//!
//! Every time here is the store's clock, as each lease's age says it.

use std::collections::VecDeque;

use super::lease::{ClusterTiming, Lease, NodeState};
use super::sweep::Sweep;
use crate::{NodeId, Timestamp};

/// A lease as read from the store, with the store's time when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenLease {
    /// The lease.
    pub lease: Lease,
    /// The store's clock at the read: the lease's renewal plus its age.
    pub now: Timestamp,
}

/// One thing a look did to a lost node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The lost node.
    pub node: NodeId,
    /// Its lapsed epoch.
    pub epoch: u64,
    /// Which sweep; `None` for a failover.
    pub sweep: Option<Sweep>,
    /// How many of its records it changed (or replaced).
    pub records: usize,
}

/// What the driver answers, for [`Look::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookInput {
    /// Begin the look.
    Begin,
    /// The leases, answering [`LookEffect::ReadLeases`].
    Leases(Vec<SeenLease>),
    /// How many records were replaced, answering [`LookEffect::FailOver`].
    FailedOver {
        /// Records given up and replaced.
        records: usize,
    },
    /// Whether this node won the sweep, answering [`LookEffect::BidForSweep`].
    Bid {
        /// It won.
        won: bool,
    },
    /// The sweep was applied, answering [`LookEffect::Sweep`].
    Swept {
        /// Records changed.
        records: usize,
    },
    /// The sweep was marked finished, answering [`LookEffect::FinishSweep`].
    Finished,
}

/// What to do, from [`Look::handle`]. Every effect but [`LookEffect::Done`]
/// wants its answer as the next [`LookInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookEffect {
    /// Read every node's lease; answer [`LookInput::Leases`].
    ReadLeases,
    /// Fail over each of `lease`'s node's records that is due at `now`
    /// ([`super::failover`]), while the node is still lost at that epoch;
    /// answer [`LookInput::FailedOver`].
    FailOver {
        /// The lost node's lease.
        lease: Lease,
        /// The store's clock.
        now: Timestamp,
    },
    /// Bid for `sweep` of `lease` for this node;
    /// answer [`LookInput::Bid`].
    BidForSweep {
        /// The lost node's lease.
        lease: Lease,
        /// The sweep due.
        sweep: Sweep,
    },
    /// Give back the records `lease`'s node claimed but never placed, then
    /// apply [`super::sweep_record`] to each of its records under way;
    /// answer [`LookInput::Swept`].
    Sweep {
        /// The lost node's lease.
        lease: Lease,
        /// The sweep won.
        sweep: Sweep,
    },
    /// Mark `sweep` of `lease` finished; answer [`LookInput::Finished`].
    FinishSweep {
        /// The lost node's lease.
        lease: Lease,
        /// The sweep carried out.
        sweep: Sweep,
    },
    /// The look is over: what it did, for the log.
    Done(Vec<Swept>),
}

/// What the look waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Start,
    Leases,
    FailOver(SeenLease),
    Bid(SeenLease, Sweep),
    Sweep(SeenLease, Sweep),
    Finish(SeenLease, Sweep, usize),
    Over,
}

/// One look at the leases by node `me`.
#[derive(Debug, Clone)]
pub struct Look {
    me: NodeId,
    timing: ClusterTiming,
    /// The leases still to look at.
    todo: VecDeque<SeenLease>,
    waiting: Waiting,
    done: Vec<Swept>,
}

impl Look {
    /// A look by node `me`, under `timing`. Hand it [`LookInput::Begin`].
    pub fn new(me: NodeId, timing: ClusterTiming) -> Look {
        Look {
            me,
            timing,
            todo: VecDeque::new(),
            waiting: Waiting::Start,
            done: Vec::new(),
        }
    }

    /// Takes the answer to the last effect (or [`LookInput::Begin`]) and
    /// returns what to do next: one effect to answer, or
    /// [`LookEffect::Done`].
    ///
    /// # Panics
    /// If `input` does not answer the effect asked for: a driver's bug.
    pub fn handle(&mut self, input: LookInput) -> LookEffect {
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Over);
        match (waiting, input) {
            (Waiting::Start, LookInput::Begin) => {
                self.waiting = Waiting::Leases;
                return LookEffect::ReadLeases;
            }
            (Waiting::Leases, LookInput::Leases(leases)) => {
                self.todo = leases
                    .into_iter()
                    .filter(|seen| seen.lease.node != self.me)
                    .collect();
            }
            (Waiting::FailOver(seen), LookInput::FailedOver { records }) => {
                if records > 0 {
                    self.done.push(Swept {
                        node: seen.lease.node.clone(),
                        epoch: seen.lease.epoch,
                        sweep: None,
                        records,
                    });
                }
                if let Some(effect) = self.bid(seen) {
                    return effect;
                }
            }
            (Waiting::Bid(seen, sweep), LookInput::Bid { won }) => {
                if won {
                    let lease = seen.lease.clone();
                    self.waiting = Waiting::Sweep(seen, sweep);
                    return LookEffect::Sweep { lease, sweep };
                }
            }
            (Waiting::Sweep(seen, sweep), LookInput::Swept { records }) => {
                let lease = seen.lease.clone();
                self.waiting = Waiting::Finish(seen, sweep, records);
                return LookEffect::FinishSweep { lease, sweep };
            }
            (Waiting::Finish(seen, sweep, records), LookInput::Finished) => {
                self.done.push(Swept {
                    node: seen.lease.node,
                    epoch: seen.lease.epoch,
                    sweep: Some(sweep),
                    records,
                });
            }
            (waiting, input) => {
                panic!("a look waiting for {waiting:?} was answered {input:?}")
            }
        }
        self.next()
    }

    /// The first effect for the next lease that wants one, or the end.
    fn next(&mut self) -> LookEffect {
        while let Some(seen) = self.todo.pop_front() {
            if Self::failover_may_be_due(&seen) {
                let (lease, now) = (seen.lease.clone(), seen.now);
                self.waiting = Waiting::FailOver(seen);
                return LookEffect::FailOver { lease, now };
            }
            if let Some(effect) = self.bid(seen) {
                return effect;
            }
        }
        self.waiting = Waiting::Over;
        LookEffect::Done(std::mem::take(&mut self.done))
    }

    /// Whether any record of `seen`'s node may be failed over now: it is
    /// lost, and its earliest failover has passed.
    fn failover_may_be_due(seen: &SeenLease) -> bool {
        let earliest = seen
            .lease
            .renewed_at
            .saturating_add(ClusterTiming::earliest_failover(&seen.lease));
        seen.lease.state_at(seen.now) == NodeState::Lost && seen.now > earliest
    }

    /// The bid for the sweep due for `seen`, if any.
    fn bid(&mut self, seen: SeenLease) -> Option<LookEffect> {
        let sweep = self.timing.sweep_due(&seen.lease, seen.now)?;
        let lease = seen.lease.clone();
        self.waiting = Waiting::Bid(seen, sweep);
        Some(LookEffect::BidForSweep { lease, sweep })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Span;

    fn lease(node: &str, renewed_at: u64) -> Lease {
        Lease {
            node: NodeId::new(node).expect("node"),
            epoch: 2,
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            since: Timestamp::from_millis(0),
            renewed_at: Timestamp::from_millis(renewed_at),
            ttl: Span::from_millis(2_000),
            slots: 1,
            left: false,
            labels: BTreeMap::default(),
            boot: "b".into(),
        }
    }

    fn seen(node: &str, renewed_at: u64, now: u64) -> SeenLease {
        SeenLease {
            lease: lease(node, renewed_at),
            now: Timestamp::from_millis(now),
        }
    }

    fn look() -> Look {
        let timing = ClusterTiming::new(Span::from_millis(2_000), Span::from_millis(60_000))
            .expect("timing");
        Look::new(NodeId::new("me").expect("node"), timing)
    }

    #[test]
    fn a_look_reads_the_leases_and_leaves_its_own_and_the_living_alone() {
        let mut l = look();
        assert_eq!(l.handle(LookInput::Begin), LookEffect::ReadLeases);
        let done = l.handle(LookInput::Leases(vec![
            seen("me", 0, 100_000),
            seen("alive", 9_000, 10_000),
        ]));
        assert_eq!(done, LookEffect::Done(Vec::new()));
    }

    #[test]
    fn a_lost_node_is_failed_over_then_its_sweep_claimed_applied_and_finished() {
        let mut l = look();
        l.handle(LookInput::Begin);
        let lost = seen("b", 0, 4_500);
        let LookEffect::FailOver { lease, now } = l.handle(LookInput::Leases(vec![lost.clone()]))
        else {
            panic!("a failover first")
        };
        assert_eq!((lease.node.as_str(), now.as_millis()), ("b", 4_500));
        assert_eq!(
            l.handle(LookInput::FailedOver { records: 1 }),
            LookEffect::BidForSweep {
                lease: lost.lease.clone(),
                sweep: Sweep::Unreach
            }
        );
        assert_eq!(
            l.handle(LookInput::Bid { won: true }),
            LookEffect::Sweep {
                lease: lost.lease.clone(),
                sweep: Sweep::Unreach
            }
        );
        assert_eq!(
            l.handle(LookInput::Swept { records: 3 }),
            LookEffect::FinishSweep {
                lease: lost.lease.clone(),
                sweep: Sweep::Unreach
            }
        );
        let LookEffect::Done(done) = l.handle(LookInput::Finished) else {
            panic!("the look ends")
        };
        assert_eq!(
            done.iter()
                .map(|s| (s.sweep, s.records))
                .collect::<Vec<_>>(),
            vec![(None, 1), (Some(Sweep::Unreach), 3)]
        );
    }

    #[test]
    fn a_sweep_another_node_won_is_not_applied() {
        let mut l = look();
        l.handle(LookInput::Begin);
        // Lost, and not yet past its earliest failover: the sweep is bid for.
        let effect = l.handle(LookInput::Leases(vec![seen("b", 0, 2_500)]));
        assert!(
            matches!(effect, LookEffect::BidForSweep { .. }),
            "{effect:?}"
        );
        assert_eq!(
            l.handle(LookInput::Bid { won: false }),
            LookEffect::Done(Vec::new())
        );
    }

    #[test]
    fn no_failover_is_asked_before_the_earliest_and_a_merely_suspect_node_is_not_swept() {
        let mut l = look();
        l.handle(LookInput::Begin);
        // Lost at 2 s; the earliest failover is a lease and the margin later.
        let effect = l.handle(LookInput::Leases(vec![
            seen("suspect", 0, 1_900),
            seen("b", 0, 2_100),
        ]));
        assert!(
            matches!(&effect, LookEffect::BidForSweep { lease, sweep: Sweep::Unreach } if lease.node.as_str() == "b"),
            "{effect:?}"
        );
    }

    #[test]
    #[should_panic(expected = "was answered")]
    fn an_answer_out_of_turn_is_a_drivers_bug() {
        look().handle(LookInput::Finished);
    }
}
