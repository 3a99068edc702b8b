//! bpm's domain: the types of a background process manager, its lifecycle
//! rules, and the supervisor core that decides what should happen.
//!
//! Everything here is pure: no async, no I/O, no clock. Time comes in as a
//! [`Timestamp`] argument, and decisions go out as [`Effect`] values that a
//! driver carries out. That is what lets every rule be property-tested and
//! simulated without a process or a clock.
#![warn(missing_docs)]

pub mod cluster;
mod event;
mod filter;
mod id;
mod lifecycle;
mod names;
mod os_text;
mod owner;
pub mod port;
pub mod project;
mod record;
pub mod relay;
mod resources;
mod schedule;
mod spec;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod supervisor;
mod terminal;
mod time;

pub use cluster::{
    ClusterTiming, Holder, Lease, NameHeld, NodeState, Sweep, TakeOver, TimingError,
};
pub use event::{Event, EventKind};
pub use filter::ListFilter;
pub use id::{ProcessId, ProcessIdError};
pub use lifecycle::{ExitStatus, Lifecycle, StateName, StopCause};
pub use names::{GroupName, LabelKey, LabelValue, NameError, NodeId, ProcessName, SessionId};
pub use os_text::{Environment, OsText, env_serde, path_serde, paths_serde};
pub use owner::{DEFAULT_OWNER_GRACE, Owner, OwnerError, ProcessRef};
pub use port::{PortAsk, PortAskError, PortRefused};
pub use record::{
    Applied, Attempt, Health, InvalidTransition, LeaderExit, MAX_ATTEMPTS_KEPT,
    MAX_PROGRESS_MESSAGE, MAX_RUNNING_ON, Percent, PercentError, ProcessRecord, Progress,
    RecordUpdate, RunningOn, Transition, TransitionKind, estimate_eta,
};
pub use resources::{
    LimitHit, LimitsAsked, MAX_CPU_PERCENT, MIN_MEMORY, ResourceLimits, limit_word, parse_size,
    size_text,
};
pub use schedule::{
    Overlap, Schedule, ScheduleAsked, ScheduleError, ScheduleState, known_time_zone, run_id,
};
pub use spec::{
    Backoff, Command, DEFAULT_WATCH_DEBOUNCE_MS, FileWatch, HealthCheck, LogPattern,
    MAX_LOG_ARCHIVES, NameTaken, Pace, Placement, Probe, ProcessKind, ProcessSpec, Readiness,
    ReadinessCheck, RequestRef, RestartMode, RestartPolicy, Signal, SpecError, StdinMode,
    StopCommand, StopPolicy, Until, metadata_from_json,
};
pub use supervisor::{CoreError, Effect, Input, Limits, LimitsError, Supervisor, Timer, TimerKind};
pub use terminal::TtySize;
pub use time::{MAX_SPAN, Span, SpanError, Timestamp, TimestampError, until_time};
