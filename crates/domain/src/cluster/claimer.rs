//! A node's taking of records placed on any node, as a state machine:
//! `Claimer::handle(input, now) -> Vec<ClaimerEffect>`.
//!
//! A round gives back first what this node claimed and never placed (its
//! last daemon died in between), then asks the core for its room, claims
//! the best queued record that fits, places it, and asks again, until
//! there is no room, nothing fits, or a call fails. Between rounds it
//! rests, and starts again when a record is queued for any node, when one
//! of this node's records ends while the queue may hold what it had no room
//! for, or after [`LOOK_EVERY`] (for what a lost event or another node's
//! new labels would hide). One call is under way at a time; its answer is
//! the next input.

use std::time::Duration;

use crate::{Event, EventKind, NodeId, ProcessId, ProcessRecord, Timestamp};

use super::member::Level;
use super::placement::Room;

/// How often a resting claimer looks without an event.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What the claimer hears.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimerInput {
    /// Its wake-up came ([`ClaimerEffect::WakeAt`]).
    Tick,
    /// An event of the store's, any node's.
    Heard(Box<Event>),
    /// Events were missed: anything may have been queued.
    Missed,
    /// The answer to [`ClaimerEffect::GiveBack`]: how many went back.
    GaveBack(Result<usize, String>),
    /// The answer to [`ClaimerEffect::AskRoom`].
    Room(Room),
    /// The answer to [`ClaimerEffect::Claim`]: the record claimed, or none
    /// that fits.
    Claimed(Result<Option<ProcessRecord>, String>),
    /// The answer to [`ClaimerEffect::Place`].
    Placed {
        /// The record.
        id: ProcessId,
        /// Whether it was written placed here and the core took it.
        result: Result<(), String>,
    },
}

/// What the claimer asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimerEffect {
    /// Put back in the queue what this node claimed and never placed.
    GiveBack,
    /// Ask the core for its room.
    AskRoom,
    /// Claim the best queued record that fits `room`.
    Claim(Room),
    /// Write the record placed on this node and hand it to the core.
    Place(Box<ProcessRecord>),
    /// Wake the claimer with [`ClaimerInput::Tick`] at this time (the
    /// latest such effect replaces the earlier ones).
    WakeAt(Timestamp),
    /// A line for the log.
    Log(Level, String),
}

/// Where a node's taking of queued records stands.
#[derive(Debug, Clone)]
pub struct Claimer {
    node: NodeId,
    /// Claims this node made and never placed go back before it claims.
    owed: bool,
    /// The queue may hold records this node could take.
    queued: bool,
    /// The last call failed (said once, not at every round).
    failing: bool,
    round: Round,
}

/// Whether a round is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// A round is under way; `again`: something came meanwhile that calls
    /// for another.
    Working { again: bool },
    /// Between rounds, until the claimer looks by itself at `look_at`.
    Resting { look_at: Timestamp },
}

impl Claimer {
    /// The claimer of `node`, and its first round's effects: what its last
    /// daemon claimed and never placed goes back first.
    pub fn start(node: NodeId) -> (Self, Vec<ClaimerEffect>) {
        let mut claimer = Claimer {
            node,
            owed: true,
            queued: true,
            failing: false,
            round: Round::Working { again: false },
        };
        let effects = claimer.begin();
        (claimer, effects)
    }

    /// Whether a round is under way.
    pub fn working(&self) -> bool {
        matches!(self.round, Round::Working { .. })
    }

    /// Handles `input` at `now`.
    pub fn handle(&mut self, input: ClaimerInput, now: Timestamp) -> Vec<ClaimerEffect> {
        match input {
            ClaimerInput::Tick => {
                if !matches!(self.round, Round::Resting { look_at } if look_at <= now) {
                    return Vec::new();
                }
                self.queued = true;
                self.begin()
            }
            ClaimerInput::Heard(event) => {
                let queued = event.node.is_any() && event.kind == EventKind::Submitted;
                let room_freed = self.queued && event.node == self.node && event.kind.ends_record();
                if queued {
                    self.queued = true;
                }
                self.wake(queued || room_freed)
            }
            ClaimerInput::Missed => {
                self.queued = true;
                self.wake(true)
            }
            ClaimerInput::GaveBack(Ok(n)) => {
                self.owed = false;
                let mut effects = Vec::new();
                if n > 0 {
                    effects.push(ClaimerEffect::Log(
                        Level::Info,
                        format!("{n} records this node took but never placed are queued again"),
                    ));
                }
                effects.push(ClaimerEffect::AskRoom);
                effects
            }
            ClaimerInput::GaveBack(Err(e)) => self.failed(
                format!("cannot queue again what this node took and never placed: {e}; will retry"),
                now,
            ),
            ClaimerInput::Room(room) if room.free == 0 => self.rest(now),
            ClaimerInput::Room(room) => vec![ClaimerEffect::Claim(room)],
            ClaimerInput::Claimed(Ok(Some(record))) => {
                self.failing = false;
                vec![ClaimerEffect::Place(Box::new(record))]
            }
            ClaimerInput::Claimed(Ok(None)) => {
                self.queued = false;
                self.rest(now)
            }
            ClaimerInput::Claimed(Err(e)) => self.failed(
                format!("cannot take work queued for any node: {e}; will retry"),
                now,
            ),
            ClaimerInput::Placed { id, result: Ok(()) } => vec![
                ClaimerEffect::Log(
                    Level::Debug,
                    format!("took {id}, a record placed on any node"),
                ),
                ClaimerEffect::AskRoom,
            ],
            ClaimerInput::Placed { id, result: Err(e) } => {
                // Not placed: the claim goes back to the queue at the next
                // round (or by the sweep, if this node is lost).
                self.owed = true;
                let mut effects = vec![ClaimerEffect::Log(
                    Level::Warn,
                    format!(
                        "took {id}, a record placed on any node, but could not place it here: {e}; it goes back to the queue"
                    ),
                )];
                effects.extend(self.rest(now));
                effects
            }
        }
    }

    /// Starts a round now, or after the one under way if `now_or_after`.
    fn wake(&mut self, now_or_after: bool) -> Vec<ClaimerEffect> {
        if !now_or_after {
            return Vec::new();
        }
        if self.working() {
            self.round = Round::Working { again: true };
            return Vec::new();
        }
        self.begin()
    }

    fn begin(&mut self) -> Vec<ClaimerEffect> {
        self.round = Round::Working { again: false };
        vec![if self.owed {
            ClaimerEffect::GiveBack
        } else {
            ClaimerEffect::AskRoom
        }]
    }

    fn rest(&mut self, now: Timestamp) -> Vec<ClaimerEffect> {
        if self.round == (Round::Working { again: true }) {
            return self.begin();
        }
        let look_at = now.saturating_add(LOOK_EVERY);
        self.round = Round::Resting { look_at };
        vec![ClaimerEffect::WakeAt(look_at)]
    }

    fn failed(&mut self, warning: String, now: Timestamp) -> Vec<ClaimerEffect> {
        let mut effects = Vec::new();
        if !self.failing {
            self.failing = true;
            effects.push(ClaimerEffect::Log(Level::Warn, warning));
        }
        // A failing queue is not asked again at once: the next look is.
        self.round = Round::Working { again: false };
        effects.extend(self.rest(now));
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessSpec;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).expect("a node name")
    }

    fn room(free: usize) -> Room {
        Room {
            free,
            ..Room::default()
        }
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn record(n: u128, on: NodeId) -> ProcessRecord {
        let mut spec = ProcessSpec::argv(["true"]);
        spec.node = Some(on.clone());
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            on,
            spec,
            at(0),
        )
    }

    fn queued_record() -> ProcessRecord {
        record(1, NodeId::any())
    }

    #[test]
    fn a_round_gives_back_first_then_claims_while_there_is_room() {
        let (mut c, first) = Claimer::start(node("a"));
        assert_eq!(first, vec![ClaimerEffect::GiveBack]);
        assert_eq!(
            c.handle(ClaimerInput::GaveBack(Ok(0)), at(1)),
            vec![ClaimerEffect::AskRoom]
        );
        assert_eq!(
            c.handle(ClaimerInput::Room(room(1)), at(2)),
            vec![ClaimerEffect::Claim(room(1))]
        );
        let record = queued_record();
        let id = record.id();
        assert_eq!(
            c.handle(ClaimerInput::Claimed(Ok(Some(record.clone()))), at(3)),
            vec![ClaimerEffect::Place(Box::new(record))]
        );
        let placed = c.handle(ClaimerInput::Placed { id, result: Ok(()) }, at(4));
        assert_eq!(placed.last(), Some(&ClaimerEffect::AskRoom));
        // No room left: it rests, and looks again a second later.
        assert_eq!(
            c.handle(ClaimerInput::Room(room(0)), at(5)),
            vec![ClaimerEffect::WakeAt(at(1_005))]
        );
        assert!(!c.working());
        assert!(c.handle(ClaimerInput::Tick, at(1_000)).is_empty());
        assert_eq!(
            c.handle(ClaimerInput::Tick, at(1_005)),
            vec![ClaimerEffect::AskRoom]
        );
    }

    #[test]
    fn a_record_it_could_not_place_goes_back_before_the_next_claim() {
        let (mut c, _) = Claimer::start(node("a"));
        c.handle(ClaimerInput::GaveBack(Ok(0)), at(1));
        c.handle(ClaimerInput::Room(room(2)), at(2));
        let record = queued_record();
        let id = record.id();
        c.handle(ClaimerInput::Claimed(Ok(Some(record))), at(3));
        let failed = c.handle(
            ClaimerInput::Placed {
                id,
                result: Err("the store refused".into()),
            },
            at(4),
        );
        assert!(matches!(failed[0], ClaimerEffect::Log(Level::Warn, _)));
        assert_eq!(failed.last(), Some(&ClaimerEffect::WakeAt(at(1_004))));
        let queued = Event::new(EventKind::Submitted, &queued_record(), at(5));
        assert_eq!(
            c.handle(ClaimerInput::Heard(Box::new(queued)), at(5)),
            vec![ClaimerEffect::GiveBack]
        );
    }

    #[test]
    fn what_comes_during_a_round_makes_another_and_a_failing_queue_is_said_once() {
        let warnings = |effects: &[ClaimerEffect]| {
            effects
                .iter()
                .filter(|e| matches!(e, ClaimerEffect::Log(Level::Warn, _)))
                .count()
        };
        let (mut c, _) = Claimer::start(node("a"));
        c.handle(ClaimerInput::GaveBack(Ok(0)), at(1));
        // Events missed during the round: another round follows at once.
        assert!(c.handle(ClaimerInput::Missed, at(2)).is_empty());
        assert_eq!(
            c.handle(ClaimerInput::Room(room(0)), at(3)),
            vec![ClaimerEffect::AskRoom]
        );
        c.handle(ClaimerInput::Room(room(1)), at(4));
        let failed = c.handle(ClaimerInput::Claimed(Err("down".into())), at(5));
        assert_eq!(warnings(&failed), 1, "{failed:?}");
        assert_eq!(failed.last(), Some(&ClaimerEffect::WakeAt(at(1_005))));
        c.handle(ClaimerInput::Tick, at(1_005));
        c.handle(ClaimerInput::Room(room(1)), at(1_006));
        let again = c.handle(ClaimerInput::Claimed(Err("down".into())), at(1_007));
        assert_eq!(warnings(&again), 0, "said once: {again:?}");
        // Nothing fits now: an end of one of its own records does not wake
        // it (no room it had lacked), a record queued for any node does.
        c.handle(ClaimerInput::Tick, at(2_007));
        c.handle(ClaimerInput::Room(room(1)), at(2_008));
        c.handle(ClaimerInput::Claimed(Ok(None)), at(2_009));
        let mine = Event::new(EventKind::Completed, &record(2, node("a")), at(2_010));
        assert!(
            c.handle(ClaimerInput::Heard(Box::new(mine)), at(2_010))
                .is_empty()
        );
        let queued = Event::new(EventKind::Submitted, &queued_record(), at(2_011));
        assert_eq!(
            c.handle(ClaimerInput::Heard(Box::new(queued)), at(2_011)),
            vec![ClaimerEffect::AskRoom]
        );
    }
}
