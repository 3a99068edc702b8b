//! The keeper's dead-man timeline for the node's lease, sans I/O: the
//! daemon passes each renewal on; while renewals are late the keeper
//! freezes the failover processes; once the lease lapses it stops them;
//! and when it finds itself far past the lapse (the machine was paused)
//! it kills them at once. The keeper's watch thread feeds it the time
//! and carries out what it returns.
//!
//! Times are offsets from an origin the caller picks (a monotonic clock's
//! reading when the watch began): the domain reads no clock.

use std::time::Duration;

use super::{OVERSLEPT, late_after};

/// What the watch must do to the failover processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAct {
    /// Renewals are late: stop them (SIGSTOP) until the next renewal.
    Freeze,
    /// A renewal came after a freeze: let them continue.
    Thaw,
    /// The lease lapsed: stop them for good (their signal, then KILL
    /// after their grace), for another node may run them now.
    StandDown,
    /// The lease lapsed long before the watch looked (more than
    /// [`OVERSLEPT`]): another node may run them already, so KILL at once.
    KillNow,
}

/// When the watch looks next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextLook {
    /// At this time (or at once, if it has passed).
    At(Duration),
    /// Never: no lease is held; the watch ends until the next renewal.
    Done,
}

/// The lease as the keeper knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseWatch {
    /// When it lapses, unless a renewal comes before.
    until: Option<Duration>,
    /// When its renewals count as late ([`late_after`]).
    late_at: Option<Duration>,
    /// Whether the failover processes are frozen for lateness.
    frozen: bool,
}

impl LeaseWatch {
    /// A renewal passed on at `now`, holding the lease for `within` more:
    /// the lease never shortens (a renewal that arrives out of order
    /// cannot pull its lapse earlier), and a freeze ends ([`LeaseAct::Thaw`]).
    pub fn renewed(&mut self, now: Duration, within: Duration) -> Option<LeaseAct> {
        let until = now + within;
        self.until = Some(self.until.map_or(until, |held| held.max(until)));
        self.late_at = Some(now + late_after(within));
        std::mem::take(&mut self.frozen).then_some(LeaseAct::Thaw)
    }

    /// The watch looks at `now`: what to do, and when to look next.
    pub fn look(&mut self, now: Duration) -> (Option<LeaseAct>, NextLook) {
        let Some(until) = self.until else {
            return (None, NextLook::Done);
        };
        if until <= now {
            *self = LeaseWatch::default();
            let act = if now.saturating_sub(until) > OVERSLEPT {
                LeaseAct::KillNow
            } else {
                LeaseAct::StandDown
            };
            return (Some(act), NextLook::Done);
        }
        let late_at = self.late_at.unwrap_or(until);
        if !self.frozen && late_at <= now {
            self.frozen = true;
            return (Some(LeaseAct::Freeze), NextLook::At(until));
        }
        let next = if self.frozen {
            until
        } else {
            late_at.min(until)
        };
        (None, NextLook::At(next))
    }

    /// Whether the failover processes are frozen now.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// A renewal after this many ms, holding the lease this many ms.
        Renew(u64, u64),
        /// A look after this many ms.
        Look(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3_000u64, 1..5_000u64).prop_map(|(a, w)| Step::Renew(a, w)),
            (0..3_000u64).prop_map(Step::Look),
        ]
    }

    proptest! {
        /// Nothing stands down before the latest lapse any renewal set; a
        /// look past it stands down (killing when far past); a freeze comes
        /// only after the renewals are late, and a thaw only after a
        /// freeze; the next look is never after the lapse.
        #[test]
        fn the_timeline_holds_whatever_the_renewals_and_looks(steps in prop::collection::vec(step(), 1..60)) {
            let mut w = LeaseWatch::default();
            let (mut now, mut lapse, mut late): (Duration, Option<Duration>, Option<Duration>) =
                (Duration::ZERO, None, None);
            let mut frozen = false;
            for s in steps {
                match s {
                    Step::Renew(after, within) => {
                        now += Duration::from_millis(after);
                        let within = Duration::from_millis(within);
                        let act = w.renewed(now, within);
                        prop_assert_eq!(act.is_some(), frozen, "a thaw exactly when frozen");
                        frozen = false;
                        lapse = Some(lapse.map_or(now + within, |l| l.max(now + within)));
                        late = Some(now + late_after(within));
                    }
                    Step::Look(after) => {
                        now += Duration::from_millis(after);
                        let (act, next) = w.look(now);
                        match (act, lapse) {
                            (Some(LeaseAct::StandDown), Some(l)) => {
                                prop_assert!(now >= l && now.saturating_sub(l) <= OVERSLEPT);
                                lapse = None;
                                frozen = false;
                            }
                            (Some(LeaseAct::KillNow), Some(l)) => {
                                prop_assert!(now.saturating_sub(l) > OVERSLEPT);
                                lapse = None;
                                frozen = false;
                            }
                            (Some(LeaseAct::Freeze), Some(l)) => {
                                prop_assert!(!frozen, "one freeze until a renewal");
                                prop_assert!(now < l && late.is_some_and(|t| now >= t));
                                frozen = true;
                            }
                            (None, Some(l)) => prop_assert!(now < l),
                            (None, None) => prop_assert_eq!(next, NextLook::Done),
                            (act, lapse) => prop_assert!(false, "{act:?} with lapse {lapse:?}"),
                        }
                        if let (NextLook::At(at), Some(l)) = (next, lapse) {
                            prop_assert!(at <= l, "the next look is never after the lapse");
                            prop_assert!(at >= now || frozen, "the next look is not in the past");
                        }
                        prop_assert_eq!(w.is_frozen(), frozen);
                    }
                }
            }
        }
    }

    #[test]
    fn a_late_renewal_freezes_a_lapse_stops_and_a_long_sleep_kills() {
        let ms = Duration::from_millis;
        let mut w = LeaseWatch::default();
        assert_eq!(w.renewed(ms(0), ms(1_000)), None);
        assert_eq!(w.look(ms(100)), (None, NextLook::At(ms(500))));
        assert_eq!(
            w.look(ms(500)),
            (Some(LeaseAct::Freeze), NextLook::At(ms(1_000)))
        );
        assert_eq!(w.renewed(ms(600), ms(1_000)), Some(LeaseAct::Thaw));
        assert_eq!(
            w.look(ms(1_600)),
            (Some(LeaseAct::StandDown), NextLook::Done)
        );
        assert_eq!(w.look(ms(1_700)), (None, NextLook::Done));
        w.renewed(ms(2_000), ms(1_000));
        assert_eq!(w.look(ms(3_500)), (Some(LeaseAct::KillNow), NextLook::Done));
    }
}
