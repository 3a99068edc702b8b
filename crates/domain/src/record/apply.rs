//! The transition function: `Record::apply`, a transition and the time
//! in, the next version of the record (or a refusal) out.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Where a transition leads, before it is applied.
enum Next {
    To(Lifecycle),
    NoOp,
    Invalid,
}

/// A stopping record's state, taken out of its lifecycle.
struct Stop {
    started_at: Option<Timestamp>,
    pid: Option<u32>,
    requested_at: Timestamp,
    cause: StopCause,
    killed: bool,
}

impl Record {
    fn is_tracked(&self) -> bool {
        self.spec.is_tracked()
    }

    const fn state(&self) -> StateName {
        self.lifecycle.name()
    }

    pub(super) fn apply(
        &mut self,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Applied, InvalidTransition> {
        let invalid = InvalidTransition {
            from: self.state(),
            attempted: transition.kind(),
            tracked: self.is_tracked(),
        };
        if let Transition::LeaderExited { exit } = transition {
            return Ok(self.leader_exited(exit, now));
        }
        if let Transition::Health { healthy, detail } = transition {
            return Ok(self.health_changed(healthy, detail, now));
        }
        if let Transition::WatchFailed { reason } = transition {
            if self.lifecycle.is_terminal() || self.watch_error.as_deref() == Some(reason.as_str())
            {
                return Ok(Applied::NoOp);
            }
            self.watch_error = Some(reason.chars().take(1024).collect::<String>().into());
            self.updated_at = now;
            self.version += 1;
            return Ok(Applied::Changed);
        }
        if let Transition::Scheduled { state } = transition {
            if self.spec.schedule.is_none() || self.lifecycle.is_terminal() {
                return Err(invalid);
            }
            if self.schedule.as_deref() == Some(&state) {
                return Ok(Applied::NoOp);
            }
            self.schedule = Some(Box::new(state));
            self.updated_at = now;
            self.version += 1;
            return Ok(Applied::Changed);
        }
        let next = match (&self.lifecycle, transition) {
            (Lifecycle::Unreachable { was, .. }, t) => Self::leave_unreachable(was, t, now),
            (l, Transition::Unreach { reason }) => Self::unreach(l, reason, now),
            (_, Transition::Reach) => Next::NoOp,
            (_, transition) => self.next(transition, now),
        };
        let next = match next {
            Next::To(next) => next,
            Next::NoOp => return Ok(Applied::NoOp),
            Next::Invalid => return Err(invalid),
        };
        self.lifecycle = next;
        self.updated_at = now;
        self.version += 1;
        if self.state() == StateName::Starting {
            // A new attempt: its leader has not exited, nor its health
            // been checked.
            self.leader_exit = None;
            self.health = None;
        }
        if self.lifecycle.is_terminal()
            && let Some(p) = &mut self.progress
        {
            p.eta = None;
        }
        Ok(Applied::Changed)
    }

    /// Notes that the leader exited while the rest of the tree runs on: only
    /// while the record has a process (a record that ended, or waits to
    /// start again, has nothing running on).
    fn leader_exited(&mut self, mut exit: LeaderExit, now: Timestamp) -> Applied {
        let has_process = matches!(
            self.state(),
            StateName::Running | StateName::Paused | StateName::Stopping
        );
        if let Some(noted) = &self.leader_exit {
            // What runs on changed: the leader exited when first said.
            exit.at = noted.at;
        }
        if !has_process || self.leader_exit.as_deref() == Some(&exit) {
            return Applied::NoOp;
        }
        self.leader_exit = Some(Box::new(exit));
        self.updated_at = now;
        self.version += 1;
        Applied::Changed
    }

    /// Notes what the health check says, while the record has a process;
    /// the same again changes nothing.
    fn health_changed(&mut self, healthy: bool, detail: Option<String>, now: Timestamp) -> Applied {
        let has_process = matches!(self.state(), StateName::Running | StateName::Paused);
        if !has_process || self.health.as_ref().is_some_and(|h| h.healthy == healthy) {
            return Applied::NoOp;
        }
        let last_failure = detail
            .map(|d| d.chars().take(1024).collect())
            .or_else(|| self.health.as_ref().and_then(|h| h.last_failure.clone()));
        self.health = Some(Box::new(Health {
            healthy,
            since: now,
            last_failure,
        }));
        self.updated_at = now;
        self.version += 1;
        Applied::Changed
    }

    /// Where a record on an unreachable node goes: back to the state it
    /// was in when its node returns, `lost` when it is given up. Nothing
    /// else reaches it until then.
    fn leave_unreachable(was: &Lifecycle, t: Transition, now: Timestamp) -> Next {
        match t {
            Transition::Reach => Next::To(was.clone()),
            Transition::Unreach { .. } => Next::NoOp,
            Transition::Lose { reason } => Next::To(Lifecycle::Lost {
                started_at: was.started_at(),
                ended_at: now,
                reason,
                given_up_pid: was.pid(),
            }),
            _ => Next::Invalid,
        }
    }

    /// A record whose node was lost: unreachable if it was under way (a
    /// final or pending record stays as it is).
    fn unreach(l: &Lifecycle, reason: String, now: Timestamp) -> Next {
        if l.is_terminal() || l.name() == StateName::Pending {
            return Next::NoOp;
        }
        Next::To(Lifecycle::Unreachable {
            was: Box::new(l.clone()),
            since: now,
            reason,
        })
    }

    fn next(&mut self, transition: Transition, now: Timestamp) -> Next {
        match &self.lifecycle {
            l if l.is_terminal() => Self::after_the_end(&transition),
            Lifecycle::Pending { queued_at, .. } => {
                let queued_at = *queued_at;
                self.leave_pending(queued_at, transition, now)
            }
            Lifecycle::Starting { starting_at, .. } => {
                let starting_at = *starting_at;
                self.leave_starting(starting_at, transition, now)
            }
            Lifecycle::Running {
                started_at,
                pid,
                ready_at,
            } => {
                let (started_at, pid, ready_at) = (*started_at, *pid, *ready_at);
                self.leave_running(started_at, pid, ready_at, transition, now)
            }
            Lifecycle::Paused {
                started_at,
                pid,
                ready_at,
                ..
            } => {
                let (started_at, pid, ready_at) = (*started_at, *pid, *ready_at);
                self.leave_paused(started_at, pid, ready_at, transition, now)
            }
            Lifecycle::Stopping {
                started_at,
                pid,
                requested_at,
                cause,
                killed,
            } => {
                let stop = Stop {
                    started_at: *started_at,
                    pid: *pid,
                    requested_at: *requested_at,
                    cause: cause.clone(),
                    killed: *killed,
                };
                self.leave_stopping(stop, transition, now)
            }
            // The end states, which the first arm takes, and unreachable,
            // which `apply` takes.
            _ => Next::Invalid,
        }
    }

    /// A finished record: repeating an end is harmless, anything else is refused.
    fn after_the_end(t: &Transition) -> Next {
        match t {
            Transition::Complete { .. }
            | Transition::Fail { .. }
            | Transition::Stop { .. }
            | Transition::Lose { .. }
            | Transition::Exited { .. } => Next::NoOp,
            _ => Next::Invalid,
        }
    }

    fn leave_pending(&self, queued_at: Timestamp, t: Transition, now: Timestamp) -> Next {
        Next::To(match t {
            Transition::Start if !self.is_tracked() => Lifecycle::Starting {
                queued_at,
                starting_at: now,
            },
            // A schedule a node claimed: it runs there, with no process.
            Transition::Start if self.spec.schedule.is_some() => Lifecycle::Running {
                started_at: now,
                pid: None,
                ready_at: Some(now),
            },
            Transition::Stop { cause } => Lifecycle::Cancelled {
                started_at: None,
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Fail { error } => Lifecycle::Failed {
                started_at: None,
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: None,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_starting(&mut self, starting_at: Timestamp, t: Transition, now: Timestamp) -> Next {
        Next::To(match t {
            // The child can report before its spawn's answer is handled
            // (`bpm progress "$BPM_PROCESS_ID"` as its first command).
            Transition::Progress { percent, message } => {
                self.set_progress(starting_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::SpawnFailed { error } => Lifecycle::Failed {
                started_at: None,
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Spawned { pid } => Lifecycle::Running {
                started_at: now,
                pid: Some(pid),
                ready_at: None,
            },
            Transition::Exited { status, limit } => {
                Self::exit_state(Some(now), (status, self.spec.succeeded(status)), limit, now)
            }
            Transition::Stop { cause } => Self::begin_stop(None, None, cause, now),
            Transition::TimeOut => Self::begin_stop(None, None, StopCause::Timeout, now),
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: None,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_running(
        &mut self,
        started_at: Timestamp,
        pid: Option<u32>,
        ready_at: Option<Timestamp>,
        t: Transition,
        now: Timestamp,
    ) -> Next {
        let tracked = self.is_tracked();
        Next::To(match t {
            Transition::Exited { status, limit } if !tracked => Self::exit_state(
                Some(started_at),
                (status, self.spec.succeeded(status)),
                limit,
                now,
            ),
            Transition::Requeue { status, not_before } if !tracked => {
                self.push_attempt(Some(started_at), status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Pause if !tracked || self.spec.schedule.is_some() => Lifecycle::Paused {
                started_at,
                pid,
                ready_at,
                paused_at: now,
            },
            Transition::Stop { cause } if tracked => Lifecycle::Cancelled {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::TimeOut if tracked => Lifecycle::TimedOut {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
            },
            Transition::Stop { cause } => Self::begin_stop(Some(started_at), pid, cause, now),
            Transition::TimeOut => Self::begin_stop(Some(started_at), pid, StopCause::Timeout, now),
            Transition::Ready if ready_at.is_some() => return Next::NoOp,
            Transition::Ready if !tracked => Lifecycle::Running {
                started_at,
                pid,
                ready_at: Some(now),
            },
            Transition::Progress { percent, message } => {
                self.set_progress(started_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::Complete { result } if tracked => {
                self.result = result.map(Box::new);
                Lifecycle::Completed {
                    started_at,
                    ended_at: now,
                    exit: None,
                }
            }
            Transition::Fail { error } if tracked => Lifecycle::Failed {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                error,
            },
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: Some(started_at),
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_paused(
        &mut self,
        started_at: Timestamp,
        pid: Option<u32>,
        ready_at: Option<Timestamp>,
        t: Transition,
        now: Timestamp,
    ) -> Next {
        Next::To(match t {
            Transition::Resume => Lifecycle::Running {
                started_at,
                pid,
                ready_at,
            },
            // A paused schedule has no process to stop.
            Transition::Stop { cause } if self.spec.schedule.is_some() => Lifecycle::Cancelled {
                started_at: Some(started_at),
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Exited { status, limit } => Self::exit_state(
                Some(started_at),
                (status, self.spec.succeeded(status)),
                limit,
                now,
            ),
            Transition::Requeue { status, not_before } => {
                self.push_attempt(Some(started_at), status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Stop { cause } => Self::begin_stop(Some(started_at), pid, cause, now),
            Transition::TimeOut => Self::begin_stop(Some(started_at), pid, StopCause::Timeout, now),
            Transition::Ready if ready_at.is_some() => return Next::NoOp,
            Transition::Ready => Lifecycle::Paused {
                started_at,
                pid,
                ready_at: Some(now),
                paused_at: now,
            },
            Transition::Progress { percent, message } => {
                self.set_progress(started_at, percent, message, now);
                self.lifecycle.clone()
            }
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at: Some(started_at),
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    fn leave_stopping(&mut self, stop: Stop, t: Transition, now: Timestamp) -> Next {
        let Stop {
            started_at,
            pid,
            requested_at,
            cause,
            killed,
        } = stop;
        Next::To(match t {
            Transition::Stop { .. } | Transition::TimeOut => return Next::NoOp,
            Transition::Spawned { pid: new_pid } if pid.is_none() => Lifecycle::Stopping {
                started_at: Some(now),
                pid: Some(new_pid),
                requested_at,
                cause,
                killed,
            },
            Transition::SpawnFailed { .. } if pid.is_none() => Lifecycle::Cancelled {
                started_at: None,
                ended_at: now,
                exit: None,
                reason: cause.to_string(),
            },
            Transition::Escalate if killed => return Next::NoOp,
            Transition::Escalate => Lifecycle::Stopping {
                started_at,
                pid,
                requested_at,
                cause,
                killed: true,
            },
            Transition::Requeue { status, not_before }
                if matches!(cause, StopCause::StoodDown | StopCause::Unhealthy { .. }) =>
            {
                self.push_attempt(started_at, status, now);
                Lifecycle::Pending {
                    queued_at: now,
                    not_before: Some(not_before),
                }
            }
            Transition::Exited { status, .. } => {
                Self::stopped(started_at.or(Some(now)), Some(status), &cause, now)
            }
            Transition::Progress { percent, message } => {
                // Stopped while starting, it has no start yet: its progress
                // is kept all the same.
                self.set_progress(started_at.unwrap_or(requested_at), percent, message, now);
                self.lifecycle.clone()
            }
            // Asked to stop (by a caller, a cascade, a replacement or its
            // owner's end), and gone: stopped, though how it ended (its
            // exit code) is unknown. A stand-down is no one's request:
            // its record is given up as lost, as it would be had the
            // stand-down's write not reached the store.
            Transition::Lose { reason }
                if matches!(
                    cause,
                    StopCause::Requested
                        | StopCause::Cascade { .. }
                        | StopCause::Replaced { .. }
                        | StopCause::OwnerGone
                ) =>
            {
                Lifecycle::Cancelled {
                    started_at,
                    ended_at: now,
                    exit: None,
                    reason: format!("{cause}; {reason}"),
                }
            }
            Transition::Lose { reason } => Lifecycle::Lost {
                started_at,
                ended_at: now,
                reason,
                given_up_pid: None,
            },
            _ => return Next::Invalid,
        })
    }

    /// How a stopped process ended, by the cause of its stop.
    fn stopped(
        started_at: Option<Timestamp>,
        exit: Option<ExitStatus>,
        cause: &StopCause,
        now: Timestamp,
    ) -> Lifecycle {
        match cause {
            StopCause::Timeout => Lifecycle::TimedOut {
                started_at,
                ended_at: now,
                exit,
            },
            StopCause::NotReady { .. } | StopCause::Unhealthy { .. } => Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit,
                error: cause.to_string(),
            },
            StopCause::Requested
            | StopCause::Cascade { .. }
            | StopCause::Replaced { .. }
            | StopCause::StoodDown
            | StopCause::OwnerGone => Lifecycle::Cancelled {
                started_at,
                ended_at: now,
                exit,
                reason: cause.to_string(),
            },
        }
    }

    /// Where an exit with `status` leads: completed when it `succeeded`
    /// ([`crate::ProcessSpec::succeeded`]), failed otherwise.
    fn exit_state(
        started_at: Option<Timestamp>,
        (status, succeeded): (ExitStatus, bool),
        limit: Option<crate::LimitHit>,
        now: Timestamp,
    ) -> Lifecycle {
        if succeeded && let Some(limit) = limit {
            // The leader ended well, but a limit killed a process of its
            // tree (a shell's child): work was lost, and the record says so.
            return Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit: Some(status),
                error: format!("{limit} killed a process of its tree (its leader exited 0)"),
            };
        }
        if succeeded {
            Lifecycle::Completed {
                started_at: started_at.unwrap_or(now),
                ended_at: now,
                exit: Some(status),
            }
        } else {
            Lifecycle::Failed {
                started_at,
                ended_at: now,
                exit: Some(status),
                // A limit that ended it says more than the signal it sent.
                error: limit.map_or_else(|| status.to_string(), |l| l.to_string()),
            }
        }
    }

    fn begin_stop(
        started_at: Option<Timestamp>,
        pid: Option<u32>,
        cause: StopCause,
        now: Timestamp,
    ) -> Lifecycle {
        Lifecycle::Stopping {
            started_at,
            pid,
            requested_at: now,
            cause,
            killed: false,
        }
    }

    fn push_attempt(&mut self, started_at: Option<Timestamp>, exit: ExitStatus, now: Timestamp) {
        self.restarts = self.restarts.saturating_add(1);
        if self.attempts.len() == MAX_ATTEMPTS_KEPT {
            self.attempts.remove(0);
        }
        self.attempts.push(Attempt {
            started_at,
            ended_at: now,
            exit,
        });
    }

    fn set_progress(
        &mut self,
        started_at: Timestamp,
        percent: Percent,
        message: Option<String>,
        now: Timestamp,
    ) {
        let message = message.map(|mut m| {
            if m.len() > MAX_PROGRESS_MESSAGE {
                let mut cut = MAX_PROGRESS_MESSAGE;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            m
        });
        self.progress = Some(Box::new(Progress {
            percent,
            message,
            updated_at: now,
            eta: estimate_eta(started_at, percent, now),
        }));
    }
}
