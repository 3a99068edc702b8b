//! This daemon's part in a cluster, as a state machine: [`Member::handle`]
//! takes what happened (a timer, a renewal's answer, the keeper's, the
//! engine's) and the time on the daemon's own monotonic clock, and returns
//! what to do as [`MemberEffect`]s. A driver carries them out, one task
//! each, and hands each result back as a [`MemberInput`].
//!
//! The sequence it owns, in one place:
//! - **Renew** the lease every [`ClusterTiming::renew_every`], never two
//!   renewals at once. Each renewal that succeeded moves the store's write
//!   fence ([`MemberEffect::WriteWith`]) to when it was *sent*.
//! - **Stand down**: a whole lease after the last renewal that succeeded was
//!   sent ([`ClusterTiming::must_stand_down`]), the engine is told the lease is
//!   not held ([`MemberEffect::TellEngine`]): it stops this node's failover
//!   records, which another node may now run. That is the answer to "when
//!   does a daemon stop its failover records?". A timer is armed for that
//!   very moment, so a renewal stuck on the network does not delay it. The
//!   store's fence refuses writes from the same moment on its own.
//! - **Keeper**: every renewal is passed on to the keeper, which stops the
//!   failover records' processes by itself if it is not told in time.
//! - **Take again**: a renewal refused because the lease expired or a
//!   newer epoch holds the node takes the node again; once taken, the
//!   engine reconciles its records ([`MemberEffect::Reconcile`]) before the
//!   store writes with the new epoch, and only then is the lease held.
//! - **Look**: once an engine runs, the other nodes' leases are looked at
//!   every [`ClusterTiming::check_every`], one look at a time; what a look
//!   does (failover, sweeps) is its own core, [`Look`], whose effects the
//!   member passes on as [`MemberEffect::Look`].

use std::time::Duration;

use super::ClusterTiming;
use super::look::{Look, LookEffect, LookInput};
use crate::{NodeId, Span, Timestamp};

/// How soon a call to the keeper or the engine that failed is tried again.
pub const RETRY_AFTER: Duration = Duration::from_millis(100);

/// What happened, for [`Member::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberInput {
    /// Time passed: a timer armed by [`MemberEffect::WakeAt`] fired.
    Tick,
    /// The renewal sent at `sent` succeeded.
    Renewed {
        /// When it was sent, on the member's clock.
        sent: Timestamp,
    },
    /// The renewal failed.
    RenewFailed(RenewFailure),
    /// The node was taken again by a call sent at `sent`, for `epoch`.
    Taken {
        /// The new epoch.
        epoch: u64,
        /// When the take was sent.
        sent: Timestamp,
    },
    /// Taking the node again failed.
    TakeFailed(String),
    /// The engine reconciled its records for `epoch`; the store writes with
    /// it now.
    Reconciled {
        /// The new epoch.
        epoch: u64,
        /// When the take that holds it was sent.
        sent: Timestamp,
    },
    /// The engine could not reconcile its records.
    ReconcileFailed(String),
    /// A keeper holds the processes from now on; it was last told that
    /// the lease lapses at `told` (`None`: never told).
    KeeperAttached {
        /// The lapse it was told of.
        told: Option<Timestamp>,
    },
    /// The keeper took the lease that lapses at `lapses`.
    KeeperHeld {
        /// The lapse it was told of.
        lapses: Timestamp,
    },
    /// The keeper could not be told.
    KeeperFailed(String),
    /// An engine runs: it is told whether the lease holds, reconciles a
    /// node taken again, and sweeps.
    EngineAttached,
    /// The engine took `held`.
    EngineTold {
        /// What it was told.
        held: bool,
    },
    /// The engine could not be told.
    EngineFailed,
    /// The answer to the look's last effect ([`MemberEffect::Look`]).
    Look(LookInput),
    /// The look could not be carried out (the store did not answer); the
    /// next one comes at its time.
    LookFailed(String),
}

/// Why a renewal failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewFailure {
    /// The store did not answer.
    Unavailable(String),
    /// The lease expired, or a newer epoch holds the node: take it again.
    Lapsed(String),
    /// Another daemon holds the node.
    Held(String),
}

/// What to do, from [`Member::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEffect {
    /// Renew the lease of `epoch`, noting when the call is sent; answer
    /// with [`MemberInput::Renewed`] or [`MemberInput::RenewFailed`].
    Renew {
        /// The epoch held.
        epoch: u64,
    },
    /// Take the node again; answer with [`MemberInput::Taken`] or
    /// [`MemberInput::TakeFailed`].
    TakeAgain,
    /// Have the engine reconcile its records for `epoch`, and the store
    /// write with `epoch` (renewed at `sent`) once they are reconciled;
    /// answer with [`MemberInput::Reconciled`] or
    /// [`MemberInput::ReconcileFailed`].
    Reconcile {
        /// The new epoch.
        epoch: u64,
        /// When its take was sent.
        sent: Timestamp,
    },
    /// The store writes with `epoch`, until a lease after `sent`.
    WriteWith {
        /// The epoch.
        epoch: u64,
        /// When the renewal (or take) that holds it was sent.
        sent: Timestamp,
    },
    /// Tell the keeper the lease holds for `hold` more; answer with
    /// [`MemberInput::KeeperHeld`] (with `lapses`) or
    /// [`MemberInput::KeeperFailed`].
    HoldKeeper {
        /// How long the keeper holds the processes without another word.
        hold: Duration,
        /// When the lease lapses, on the member's clock.
        lapses: Timestamp,
    },
    /// Tell the engine whether the lease holds; answer with
    /// [`MemberInput::EngineTold`] or [`MemberInput::EngineFailed`].
    TellEngine {
        /// Whether it holds.
        held: bool,
    },
    /// A step of the look at the other nodes' leases ([`Look`]): carry
    /// it out and answer with [`MemberInput::Look`] (or
    /// [`MemberInput::LookFailed`]); [`LookEffect::Done`] wants no answer,
    /// and says what the look did, for the log.
    Look(LookEffect),
    /// The status's cluster line is now this.
    Status(String),
    /// A warning for the log and the status.
    Warn(String),
    /// A line for the log only.
    Log(Level, String),
    /// Send [`MemberInput::Tick`] at this time (replaces the last one).
    WakeAt(Timestamp),
}

/// How loud a [`MemberEffect::Log`] line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A detail, for whoever looks into the log.
    Debug,
    /// Something went as it should.
    Info,
    /// Something went wrong.
    Warn,
}

/// This daemon's membership of a cluster: its lease and what depends on it.
#[derive(Debug, Clone)]
pub struct Member {
    node: NodeId,
    timing: ClusterTiming,
    /// The epoch held.
    epoch: u64,
    /// When the last renewal (or take) that succeeded was sent.
    sent: Timestamp,
    /// When the next renewal (or take again) is due.
    next_renew: Timestamp,
    /// The call about the lease under way, if any: one at a time.
    under_way: Option<Call>,
    /// The lease lapsed: the next try takes the node again.
    must_take: bool,
    /// Since when renewals fail, if they do.
    failing_since: Option<Timestamp>,
    /// The lapse was warned of.
    lapsed_said: bool,
    engine: Option<Told>,
    keeper: Option<Keeper>,
    /// When the next look at the leases is due, and whether one is under way.
    next_look: Timestamp,
    look: Option<Look>,
}

/// A call about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Renew,
    Take,
    Reconcile,
}

/// What the engine was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Told {
    /// The engine knows the lease does not hold.
    stood_down: bool,
    /// A call is under way.
    telling: bool,
    /// After a failure: not before this.
    retry_at: Option<Timestamp>,
}

/// What the keeper was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keeper {
    /// The lapse it knows of.
    told: Option<Timestamp>,
    telling: bool,
    retry_at: Option<Timestamp>,
    /// A failure was logged (once, until it is told again).
    said: bool,
}

impl Member {
    /// A member that joined as `node` for `epoch`, by a take sent at `sent`.
    pub fn joined(node: NodeId, timing: ClusterTiming, epoch: u64, sent: Timestamp) -> Self {
        Member {
            node,
            timing,
            epoch,
            sent,
            next_renew: sent.saturating_add(timing.renew_every()),
            under_way: None,
            must_take: false,
            failing_since: None,
            lapsed_said: false,
            engine: None,
            keeper: None,
            next_look: sent,
            look: None,
        }
    }

    /// The epoch held (the one writes carry).
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The node.
    pub const fn node(&self) -> &NodeId {
        &self.node
    }

    /// Whether the daemon may write at `now`: less than a lease since the
    /// last renewal that succeeded was sent.
    pub fn holds(&self, now: Timestamp) -> bool {
        self.timing.may_write(self.sent, now)
    }

    /// When the lease lapses unless renewed first.
    pub fn lapses_at(&self) -> Timestamp {
        self.sent.saturating_add(self.timing.lease_ttl())
    }

    /// How long a keeper told at `now` is to hold the processes: until the
    /// lease lapses, and [`KEEPER_STAND_DOWN_LAG`](super::KEEPER_STAND_DOWN_LAG) more.
    pub fn keeper_hold(&self, now: Timestamp) -> Duration {
        super::keeper_hold(self.lapses_at().saturating_since(now))
    }

    /// The status's cluster line, `how` the lease stands.
    pub fn describe(&self, how: &str) -> String {
        let ttl = Span::new(self.timing.lease_ttl()).unwrap_or(Span::from_secs(0));
        format!("epoch {}, lease {ttl} ({how})", self.epoch)
    }

    /// Takes `input` at `now`, the member's own clock; returns what to do.
    pub fn handle(&mut self, input: MemberInput, now: Timestamp) -> Vec<MemberEffect> {
        let mut out = Vec::new();
        self.take(input, now, &mut out);
        self.step(now, &mut out);
        out
    }

    fn take(&mut self, input: MemberInput, now: Timestamp, out: &mut Vec<MemberEffect>) {
        match input {
            MemberInput::Tick => {}
            MemberInput::Renewed { sent } => self.renewed(sent, out),
            MemberInput::RenewFailed(RenewFailure::Unavailable(e)) => {
                self.renew_unavailable(&e, now, out);
            }
            MemberInput::RenewFailed(RenewFailure::Lapsed(e)) => {
                self.under_way = None;
                self.must_take = true;
                self.next_renew = now;
                out.push(MemberEffect::Warn(format!("{e}; taking the node again")));
            }
            MemberInput::RenewFailed(RenewFailure::Held(e)) => {
                self.under_way = None;
                out.push(MemberEffect::Warn(e));
            }
            MemberInput::Taken { epoch, sent } => {
                if self.engine.is_some() {
                    self.under_way = Some(Call::Reconcile);
                    out.push(MemberEffect::Reconcile { epoch, sent });
                } else {
                    self.under_way = None;
                    self.taken(epoch, sent, out);
                }
            }
            MemberInput::TakeFailed(e) => {
                self.under_way = None;
                out.push(MemberEffect::Status(self.describe(&format!("lapsed: {e}"))));
            }
            MemberInput::Reconciled { epoch, sent } => {
                self.under_way = None;
                self.taken(epoch, sent, out);
            }
            MemberInput::ReconcileFailed(e) => {
                self.under_way = None;
                out.push(MemberEffect::Warn(format!(
                    "took node {} again but could not reconcile its records: {e}; trying again",
                    self.node
                )));
            }
            MemberInput::KeeperAttached { told } => {
                self.keeper = Some(Keeper {
                    told,
                    telling: false,
                    retry_at: None,
                    said: false,
                });
            }
            MemberInput::KeeperHeld { lapses } => {
                if let Some(k) = &mut self.keeper {
                    k.telling = false;
                    k.told = Some(lapses);
                    k.retry_at = None;
                    k.said = false;
                }
            }
            MemberInput::KeeperFailed(e) => self.keeper_failed(&e, now, out),
            MemberInput::EngineAttached => {
                self.engine = Some(Told {
                    stood_down: false,
                    telling: false,
                    retry_at: None,
                });
                self.next_look = now;
            }
            MemberInput::EngineTold { held } => {
                if let Some(t) = &mut self.engine {
                    t.telling = false;
                    t.stood_down = !held;
                    t.retry_at = None;
                }
            }
            MemberInput::EngineFailed => {
                if let Some(t) = &mut self.engine {
                    t.telling = false;
                    t.retry_at = Some(now.saturating_add(RETRY_AFTER));
                }
            }
            MemberInput::Look(answer) => {
                if let Some(look) = &mut self.look {
                    let effect = look.handle(answer);
                    if matches!(effect, LookEffect::Done(_)) {
                        self.look = None;
                    }
                    out.push(MemberEffect::Look(effect));
                }
            }
            MemberInput::LookFailed(e) => {
                self.look = None;
                out.push(MemberEffect::Log(
                    Level::Debug,
                    format!("could not look at the other nodes' leases: {e}"),
                ));
            }
        }
    }

    /// The renewal sent at `sent` succeeded.
    fn renewed(&mut self, sent: Timestamp, out: &mut Vec<MemberEffect>) {
        self.under_way = None;
        self.held_since(sent);
        if self.failing_since.take().is_some() {
            out.push(MemberEffect::Log(
                Level::Info,
                format!(
                    "the lease of node {} is renewed again (epoch {})",
                    self.node, self.epoch
                ),
            ));
        }
        self.lapsed_said = false;
        out.push(MemberEffect::WriteWith {
            epoch: self.epoch,
            sent: self.sent,
        });
        out.push(MemberEffect::Status(self.describe("renewed")));
    }

    /// The store did not answer a renewal.
    fn renew_unavailable(&mut self, e: &str, now: Timestamp, out: &mut Vec<MemberEffect>) {
        self.under_way = None;
        let since = *self.failing_since.get_or_insert(now);
        let secs = now.saturating_since(since).as_secs();
        let holds = self.holds(now);
        let how = if holds {
            format!("not renewed for {secs} s: {e}")
        } else {
            format!(
                "lapsed: not renewed for {secs} s, so this daemon writes nothing until it holds the node again: {e}"
            )
        };
        out.push(MemberEffect::Status(self.describe(&how)));
        if !holds && !self.lapsed_said {
            self.lapsed_said = true;
            out.push(MemberEffect::Warn(format!(
                "the lease of node {} (epoch {}) was not renewed for a whole lease_ttl: this daemon writes nothing until it holds the node again",
                self.node, self.epoch
            )));
        }
        out.push(MemberEffect::Log(
            Level::Warn,
            format!(
                "cannot renew the lease of node {} (epoch {}): {e}",
                self.node, self.epoch
            ),
        ));
    }

    /// The keeper could not be told: try again soon, and say so once.
    fn keeper_failed(&mut self, e: &str, now: Timestamp, out: &mut Vec<MemberEffect>) {
        if let Some(k) = &mut self.keeper {
            k.telling = false;
            k.retry_at = Some(now.saturating_add(RETRY_AFTER));
            if !k.said {
                k.said = true;
                out.push(MemberEffect::Log(
                    Level::Warn,
                    format!(
                        "could not tell the keeper the lease holds ({e}); it will stop the failover processes if it is not told in time"
                    ),
                ));
            }
        }
    }

    /// The lease is held by a call sent at `sent` (answers can come out of
    /// order: the latest send counts).
    fn held_since(&mut self, sent: Timestamp) {
        self.sent = self.sent.max(sent);
    }

    /// The node is held again, for `epoch`.
    fn taken(&mut self, epoch: u64, sent: Timestamp, out: &mut Vec<MemberEffect>) {
        self.epoch = epoch;
        self.held_since(sent);
        self.must_take = false;
        self.failing_since = None;
        self.lapsed_said = false;
        out.push(MemberEffect::WriteWith {
            epoch,
            sent: self.sent,
        });
        out.push(MemberEffect::Status(self.describe("renewed")));
        out.push(MemberEffect::Log(
            Level::Info,
            format!(
                "took node {} again (epoch {epoch}) and reconciled its records",
                self.node
            ),
        ));
    }

    /// What is due at `now`, and when to look again.
    fn step(&mut self, now: Timestamp, out: &mut Vec<MemberEffect>) {
        if self.under_way.is_none() && now >= self.next_renew {
            self.next_renew = now.saturating_add(self.timing.renew_every());
            let (call, effect) = if self.must_take {
                (Call::Take, MemberEffect::TakeAgain)
            } else {
                (Call::Renew, MemberEffect::Renew { epoch: self.epoch })
            };
            self.under_way = Some(call);
            out.push(effect);
        }
        let holds = self.holds(now);
        let due = |retry_at: Option<Timestamp>| retry_at.is_none_or(|at| now >= at);
        if let Some(t) = &mut self.engine
            && !t.telling
            && t.stood_down == holds
            && due(t.retry_at)
        {
            t.telling = true;
            out.push(MemberEffect::Log(
                if holds { Level::Info } else { Level::Warn },
                if holds {
                    format!(
                        "the lease of node {} is held again: failover records may start",
                        self.node
                    )
                } else {
                    format!(
                        "the lease of node {} was not renewed for a whole lease_ttl: stopping this node's failover records, which another node may now run",
                        self.node
                    )
                },
            ));
            out.push(MemberEffect::TellEngine { held: holds });
        }
        let lapses = self.lapses_at();
        let hold = self.keeper_hold(now);
        if let Some(k) = &mut self.keeper
            && holds
            && !k.telling
            && k.told != Some(lapses)
            && due(k.retry_at)
        {
            k.telling = true;
            out.push(MemberEffect::HoldKeeper { hold, lapses });
        }
        if self.engine.is_some() && self.look.is_none() && now >= self.next_look {
            self.next_look = now.saturating_add(self.timing.check_every());
            let mut look = Look::new(self.node.clone(), self.timing);
            out.push(MemberEffect::Look(look.handle(LookInput::Begin)));
            self.look = Some(look);
        }
        out.push(MemberEffect::WakeAt(self.wake(now)));
    }

    /// The next time something is due without any answer coming.
    fn wake(&self, now: Timestamp) -> Timestamp {
        let mut at: Vec<Timestamp> = Vec::new();
        if self.under_way.is_none() {
            at.push(self.next_renew);
        }
        let holds = self.holds(now);
        if holds {
            at.push(self.lapses_at());
        }
        // A retry counts only while there is something to tell: one that is
        // past with nothing to tell would wake the driver at once, again
        // and again.
        if let Some(t) = &self.engine {
            if !t.telling && t.stood_down == holds {
                at.extend(t.retry_at);
            }
            if self.look.is_none() {
                at.push(self.next_look);
            }
        }
        if let Some(k) = &self.keeper
            && holds
            && !k.telling
            && k.told != Some(self.lapses_at())
        {
            at.extend(k.retry_at);
        }
        at.into_iter()
            .min()
            .unwrap_or(now.saturating_add(self.timing.renew_every()))
            .max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::KEEPER_STAND_DOWN_LAG;

    const TTL_MS: u64 = 3_000;

    fn member(at: u64) -> Member {
        let timing =
            ClusterTiming::new(Span::from_millis(TTL_MS), Span::from_secs(60)).expect("timing");
        Member::joined(
            NodeId::new("n1").expect("a node"),
            timing,
            1,
            Timestamp::from_millis(at),
        )
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn has(effects: &[MemberEffect], want: &MemberEffect) -> bool {
        effects.contains(want)
    }

    fn told_engine(effects: &[MemberEffect]) -> Option<bool> {
        effects.iter().find_map(|e| match e {
            MemberEffect::TellEngine { held } => Some(*held),
            _ => None,
        })
    }

    #[test]
    fn renews_every_third_of_a_lease_one_at_a_time() {
        let mut m = member(0);
        assert!(!has(
            &m.handle(MemberInput::Tick, at(999)),
            &MemberEffect::Renew { epoch: 1 }
        ));
        let fx = m.handle(MemberInput::Tick, at(1_000));
        assert!(has(&fx, &MemberEffect::Renew { epoch: 1 }));
        // Still under way a third later: no second renewal.
        let fx = m.handle(MemberInput::Tick, at(2_000));
        assert!(!has(&fx, &MemberEffect::Renew { epoch: 1 }));
        let fx = m.handle(MemberInput::Renewed { sent: at(1_000) }, at(2_100));
        assert!(has(
            &fx,
            &MemberEffect::WriteWith {
                epoch: 1,
                sent: at(1_000)
            }
        ));
        assert!(has(&fx, &MemberEffect::Renew { epoch: 1 }));
    }

    #[test]
    fn the_engine_stands_down_at_the_lapse_even_while_a_renewal_hangs() {
        let mut m = member(0);
        m.handle(MemberInput::EngineAttached, at(0));
        m.handle(MemberInput::EngineTold { held: true }, at(0));
        let fx = m.handle(MemberInput::Tick, at(1_000));
        assert!(has(&fx, &MemberEffect::Renew { epoch: 1 }));
        // The timer is armed for the lapse, not for the next renewal.
        let fx = m.handle(MemberInput::Tick, at(2_500));
        assert!(has(&fx, &MemberEffect::WakeAt(at(TTL_MS))));
        assert_eq!(told_engine(&fx), None);
        let fx = m.handle(MemberInput::Tick, at(TTL_MS));
        assert_eq!(told_engine(&fx), Some(false));
        m.handle(MemberInput::EngineTold { held: false }, at(TTL_MS));
        // A late answer to a renewal sent before the lapse ends the stand-down.
        let fx = m.handle(MemberInput::Renewed { sent: at(2_900) }, at(3_100));
        assert_eq!(told_engine(&fx), Some(true));
    }

    #[test]
    fn a_lapsed_lease_is_claimed_again_and_written_with_only_once_reconciled() {
        let mut m = member(0);
        m.handle(MemberInput::EngineAttached, at(0));
        m.handle(MemberInput::Tick, at(1_000));
        let fx = m.handle(
            MemberInput::RenewFailed(RenewFailure::Lapsed("expired".into())),
            at(1_050),
        );
        assert!(has(&fx, &MemberEffect::TakeAgain));
        let fx = m.handle(
            MemberInput::Taken {
                epoch: 2,
                sent: at(1_100),
            },
            at(1_150),
        );
        assert!(has(
            &fx,
            &MemberEffect::Reconcile {
                epoch: 2,
                sent: at(1_100)
            }
        ));
        assert!(
            !fx.iter()
                .any(|e| matches!(e, MemberEffect::WriteWith { .. })),
            "the store writes with the new epoch only once reconciled"
        );
        assert_eq!(m.epoch(), 1);
        let fx = m.handle(
            MemberInput::Reconciled {
                epoch: 2,
                sent: at(1_100),
            },
            at(1_200),
        );
        assert_eq!(m.epoch(), 2);
        assert!(has(
            &fx,
            &MemberEffect::WriteWith {
                epoch: 2,
                sent: at(1_100)
            }
        ));
    }

    #[test]
    fn a_failed_reconcile_claims_again_at_the_next_try() {
        let mut m = member(0);
        m.handle(MemberInput::EngineAttached, at(0));
        m.handle(MemberInput::Tick, at(1_000));
        m.handle(
            MemberInput::RenewFailed(RenewFailure::Lapsed("fenced".into())),
            at(1_000),
        );
        m.handle(
            MemberInput::Taken {
                epoch: 2,
                sent: at(1_000),
            },
            at(1_000),
        );
        m.handle(MemberInput::ReconcileFailed("store".into()), at(1_100));
        assert_eq!(m.epoch(), 1);
        let fx = m.handle(MemberInput::Tick, at(2_000));
        assert!(has(&fx, &MemberEffect::TakeAgain));
    }

    #[test]
    fn the_keeper_hears_of_every_renewal_while_the_lease_holds() {
        let mut m = member(0);
        let fx = m.handle(
            MemberInput::KeeperAttached {
                told: Some(at(TTL_MS)),
            },
            at(10),
        );
        assert!(
            !fx.iter()
                .any(|e| matches!(e, MemberEffect::HoldKeeper { .. }))
        );
        m.handle(MemberInput::Tick, at(1_000));
        let fx = m.handle(MemberInput::Renewed { sent: at(1_000) }, at(1_200));
        assert!(has(
            &fx,
            &MemberEffect::HoldKeeper {
                hold: Duration::from_millis(2_800) + KEEPER_STAND_DOWN_LAG,
                lapses: at(4_000)
            }
        ));
        // A failure is tried again soon, not at the next renewal.
        let fx = m.handle(MemberInput::KeeperFailed("gone".into()), at(1_300));
        assert!(has(&fx, &MemberEffect::WakeAt(at(1_400))));
        let fx = m.handle(MemberInput::Tick, at(1_400));
        assert!(
            fx.iter()
                .any(|e| matches!(e, MemberEffect::HoldKeeper { .. }))
        );
    }

    #[test]
    fn leases_are_looked_at_once_an_engine_runs_one_look_at_a_time() {
        let mut m = member(0);
        let read = MemberEffect::Look(LookEffect::ReadLeases);
        assert!(!has(&m.handle(MemberInput::Tick, at(500)), &read));
        let fx = m.handle(MemberInput::EngineAttached, at(600));
        assert!(has(&fx, &read));
        assert!(!has(&m.handle(MemberInput::Tick, at(5_000)), &read));
        let fx = m.handle(MemberInput::Look(LookInput::Leases(Vec::new())), at(5_001));
        assert!(has(&fx, &MemberEffect::Look(LookEffect::Done(Vec::new()))));
        assert!(has(&fx, &read), "the next look is due already: {fx:?}");
        // A look the store did not answer ends; the next comes at its time.
        let fx = m.handle(MemberInput::LookFailed("down".into()), at(5_002));
        assert!(!has(&fx, &read));
        assert!(has(&m.handle(MemberInput::Tick, at(7_000)), &read));
    }
}
