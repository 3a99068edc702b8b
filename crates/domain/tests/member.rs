//! `Member` under any order of answers: a driver that carries out each
//! effect and answers it after any delay, with any outcome, while time
//! passes. After every step:
//! - at most one call about the lease (renew, claim, reconcile) is under way;
//! - once the lease has lapsed, the engine knows it or is being told (or,
//!   the last word to it failed, is told again within `RETRY_AFTER`);
//! - the driver is never woken for nothing to do (no busy loop);
//! - the store's write fence never moves back: its epoch and its renewal
//!   only grow, and a new epoch is written with only once the engine
//!   reconciled its records for it;
//! - the keeper is told only while the lease holds, and never a hold that
//!   outlasts the lapse by more than `KEEPER_STAND_DOWN_LAG`.

use std::time::Duration;

use bpm_domain::cluster::KEEPER_STAND_DOWN_LAG;
use bpm_domain::cluster::look::{LookEffect, LookInput};
use bpm_domain::cluster::member::{Member, MemberEffect, MemberInput, RETRY_AFTER, RenewFailure};
use bpm_domain::{ClusterTiming, NodeId, Span, Timestamp};
use proptest::prelude::*;

/// What the driver does next.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes, and the timer fires if it is due.
    Advance(u64),
    /// The k-th call under way is answered, well (true) or not.
    Answer(usize, bool, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1..1_500u64).prop_map(Step::Advance),
        3 => (0..4usize, prop::bool::weighted(0.7), 0..3u8).prop_map(|(k, ok, how)| Step::Answer(k, ok, how)),
    ]
}

#[derive(Debug, Clone)]
struct Call {
    effect: MemberEffect,
    sent: Timestamp,
}

struct World {
    member: Member,
    now: Timestamp,
    wake: Timestamp,
    under_way: Vec<Call>,
    /// What the engine last took: the lease holds.
    engine_holds: bool,
    /// When the last word to the engine failed, if the one after has not
    /// come yet: it is tried again within `RETRY_AFTER`.
    engine_failed: Option<Timestamp>,
    /// The store's write fence.
    fence: (u64, Timestamp),
    /// Epochs the engine reconciled its records for.
    reconciled: Vec<u64>,
    next_epoch: u64,
}

impl World {
    fn new() -> World {
        let timing = ClusterTiming::new(Span::from_secs(3), Span::from_secs(30)).expect("timing");
        let now = Timestamp::from_millis(0);
        let mut world = World {
            member: Member::joined(NodeId::new("n").expect("a name"), timing, 1, now),
            now,
            wake: now,
            under_way: Vec::new(),
            engine_holds: true,
            engine_failed: None,
            fence: (1, now),
            reconciled: vec![1],
            next_epoch: 2,
        };
        world.feed(MemberInput::KeeperAttached { told: None });
        world.feed(MemberInput::EngineAttached);
        world
    }

    fn feed(&mut self, input: MemberInput) {
        for effect in self.member.handle(input, self.now) {
            match effect {
                MemberEffect::WakeAt(at) => self.wake = at,
                MemberEffect::WriteWith { epoch, sent } => {
                    assert!(
                        epoch >= self.fence.0 && sent >= self.fence.1,
                        "the write fence moves back: {:?} then {:?}",
                        self.fence,
                        (epoch, sent)
                    );
                    assert!(
                        self.reconciled.contains(&epoch),
                        "epoch {epoch} written with before its records were reconciled"
                    );
                    self.fence = (epoch, sent);
                }
                MemberEffect::HoldKeeper { hold, lapses } => {
                    assert!(
                        self.member.holds(self.now),
                        "the keeper told a lapsed lease holds"
                    );
                    let until = self.now.saturating_add(hold);
                    assert!(
                        until <= lapses.saturating_add(KEEPER_STAND_DOWN_LAG),
                        "the keeper holds past the lapse"
                    );
                    self.under_way.push(Call {
                        effect: MemberEffect::HoldKeeper { hold, lapses },
                        sent: self.now,
                    });
                }
                MemberEffect::Status(_)
                | MemberEffect::Warn(_)
                | MemberEffect::Log(..)
                | MemberEffect::Look(LookEffect::Done(_)) => {}
                other => self.under_way.push(Call {
                    effect: other,
                    sent: self.now,
                }),
            }
        }
        self.check();
    }

    /// The answer to `call`, good or not.
    fn answer(&mut self, call: &Call, ok: bool, how: u8) -> MemberInput {
        match call.effect {
            MemberEffect::Renew { .. } if ok => MemberInput::Renewed { sent: call.sent },
            MemberEffect::Renew { .. } => MemberInput::RenewFailed(match how {
                0 => RenewFailure::Unavailable("down".into()),
                1 => RenewFailure::Lapsed("expired".into()),
                _ => RenewFailure::Held("held".into()),
            }),
            MemberEffect::TakeAgain if ok => {
                self.next_epoch += 1;
                MemberInput::Taken {
                    epoch: self.next_epoch,
                    sent: call.sent,
                }
            }
            MemberEffect::TakeAgain => MemberInput::TakeFailed("held".into()),
            MemberEffect::Reconcile { epoch, sent } if ok => {
                // The engine opens the store to the new epoch as it
                // reconciles, before it answers.
                self.reconciled.push(epoch);
                self.fence = (epoch, sent.max(self.fence.1));
                MemberInput::Reconciled { epoch, sent }
            }
            MemberEffect::Reconcile { .. } => MemberInput::ReconcileFailed("store".into()),
            MemberEffect::HoldKeeper { lapses, .. } if ok => MemberInput::KeeperHeld { lapses },
            MemberEffect::HoldKeeper { .. } => MemberInput::KeeperFailed("gone".into()),
            MemberEffect::TellEngine { held } if ok => {
                self.engine_holds = held;
                self.engine_failed = None;
                MemberInput::EngineTold { held }
            }
            MemberEffect::TellEngine { .. } => {
                self.engine_failed = Some(self.now);
                MemberInput::EngineFailed
            }
            // The other nodes' leases: none here, so the look ends.
            MemberEffect::Look(LookEffect::ReadLeases) => {
                MemberInput::Look(LookInput::Leases(Vec::new()))
            }
            ref other => panic!("not a call: {other:?}"),
        }
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Advance(ms) => {
                let to = self.now.saturating_add(Duration::from_millis(ms));
                // The timer fires at its time, as often as it is re-armed.
                let mut at_once = 0;
                while self.wake <= to {
                    let before = (self.now, self.wake);
                    self.now = self.now.max(self.wake);
                    self.feed(MemberInput::Tick);
                    if (self.now, self.wake) == before || self.wake <= self.now {
                        at_once += 1;
                        assert!(at_once < 4, "woken again and again at {:?}", self.now);
                    } else {
                        at_once = 0;
                    }
                }
                self.now = to;
            }
            Step::Answer(k, ok, how) => {
                if self.under_way.is_empty() {
                    return;
                }
                let call = self.under_way.remove(k % self.under_way.len());
                let input = self.answer(&call, ok, how);
                self.feed(input);
            }
        }
    }

    fn check(&self) {
        let lease_calls = self
            .under_way
            .iter()
            .filter(|c| {
                matches!(
                    c.effect,
                    MemberEffect::Renew { .. }
                        | MemberEffect::TakeAgain
                        | MemberEffect::Reconcile { .. }
                )
            })
            .count();
        assert!(lease_calls <= 1, "{lease_calls} lease calls at once");
        let retrying = self
            .engine_failed
            .is_some_and(|at| self.now < at.saturating_add(RETRY_AFTER));
        if !self.member.holds(self.now) && self.engine_holds && !retrying {
            assert!(
                self.under_way
                    .iter()
                    .any(|c| matches!(c.effect, MemberEffect::TellEngine { .. })),
                "the lease lapsed at {:?} and the engine still runs the failover records at {:?}",
                self.member.lapses_at(),
                self.now
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_lease_sequence_holds_under_any_answers(steps in prop::collection::vec(step(), 1..120)) {
        let mut world = World::new();
        for s in &steps {
            world.step(s);
        }
    }
}
