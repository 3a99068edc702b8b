//! The keeper: one small process per node that is the parent of every process
//! bpm runs. It holds their pipes, captures their output, reaps them and keeps
//! each exit until a daemon has recorded it, so the daemon can crash, be killed
//! or be upgraded while processes run, and a new daemon adopts them with their
//! real exit codes.
//!
//! The daemon talks to it through [`KeeperSpawner`], a `ProcessSpawner`; the
//! keeper side is [`serve_keeper`]. Protocol: newline-delimited JSON on
//! `keeper.sock` (mode 0600, same user only). The keeper speaks first:
//! `{"hello":{"protocol":P,"version":"...","pid":N}}`, since a keeper
//! outlives the daemon that started it and an upgraded daemon may meet an
//! older one; the daemon refuses a protocol it does not speak, naming both.
//! Then the daemon sends `{"id":N,"op":{...}}`; the keeper answers
//! `{"id":N,"ok":...}` or `{"id":N,"err":...}` (a request it cannot read but
//! whose id it can gets an `invalid` error) and pushes
//! `{"seq":S,"notice":{...}}`; the daemon acknowledges each with
//! `{"id":0,"op":{"ack":S}}`, an exit only once its engine has recorded it.
//! A request with id 0 gets no answer. Unacknowledged notices are sent again
//! to the next daemon that connects; a keeper that has nothing running and
//! no daemon for a while writes them to a file and exits, and the next
//! keeper reads them back (`serve_keeper_keeping`). `{"hand_over":[request...]}` (sent with
//! id 0) queues starts that the keeper makes by itself, one on each exit of
//! a process that hands over its slot, reporting `handed_over` instead of
//! `exited`; `"withdraw"` takes the queue back and answers with the ids it
//! held. `{"hold_lease":{"ms":N}}` (id 0, sent on every renewal of the
//! node's lease) says the lease holds for N ms more: if no such line comes
//! in time (the daemon died, stalled or was cut off), the keeper stops the
//! processes whose start carried a `stand_down` policy itself, so that no failover
//! record runs on past the time another node may start it (protocol 5).
//! A spawn of a record the keeper started already is answered with
//! that process. The queue belongs to the connection that
//! filled it: a new connection, or the end of this one, empties it.
//!
//! The output pipes outlive the keeper: for every process it runs, the
//! keeper sends the daemon copies of the reading ends of its stdout and
//! stderr (`{"pipes":ID}`, the two descriptors attached with `SCM_RIGHTS`)
//! before it reports the start, and for every running process when a
//! daemon connects. A process whose keeper dies therefore never meets a
//! broken pipe; the daemon hands the pipes to the next keeper with
//! `{"adopt":{"id":ID,"pid":P,"pipes":true}}` (the descriptors attached;
//! with `"fence"`, its stand-down policy, for a failover record's process,
//! so that the new keeper stands it down too), which goes on copying the output and watches the process
//! by pidfd.
//!
//! `{"wait_output":{"id":ID,"after":N,"within_ms":MS}}` is answered once
//! the process has written past position N of its output, has ended, or
//! MS have passed: a reader following the output waits on it instead of
//! reading on a timer (a keeper before this op refuses it, and the daemon
//! then looks again after a short while).
//!
//! Starts (`spawn`, `hand_over`) name their environment by a slot number:
//! `{"env":{"slot":N,"vars":{...}}}` (id 0) defines slot N for the requests
//! that follow on the connection, so an environment that hundreds of
//! records share crosses the socket, is parsed and is turned into `execve`'s
//! strings once, not once per process. Slots belong to the connection too.

mod client;
mod fds;
mod lasting;
mod server;

pub use client::KeeperSpawner;
pub use lasting::{KeeperReport, LastingKeeper, StartKeeper};
pub use server::{serve_keeper, serve_keeper_keeping};

use std::sync::Arc;

use bpm_domain::{ProcessId, Signal};
use bpm_ports::{ProcessNotice, SpawnError, SpawnRequest, Spawned};
use serde::{Deserialize, Serialize};

/// The keeper protocol this build speaks (see the module's documentation).
pub const KEEPER_PROTOCOL: u32 = 5;

/// How many environment slots a connection may define.
const ENV_SLOTS: u32 = 16;

/// What a keeper says first to a daemon that connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperHello {
    /// The keeper protocol it speaks.
    pub protocol: u32,
    /// The bpm version it runs.
    pub version: String,
    /// Its pid.
    pub pid: u32,
}

impl KeeperHello {
    fn ours() -> Self {
        KeeperHello {
            protocol: KEEPER_PROTOCOL,
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Spawn(Box<Start>),
    Signal {
        id: ProcessId,
        pid: u32,
        signal: Signal,
    },
    WriteInput {
        id: ProcessId,
        data: Vec<u8>,
    },
    Reattach {
        id: ProcessId,
        pid: u32,
    },
    /// Take over process `pid` of record `id` from a keeper that died; with
    /// `pipes`, the line carries the reading ends of its stdout and stderr.
    Adopt {
        id: ProcessId,
        pid: u32,
        pipes: bool,
        /// How it is stood down when the lease lapses, if it is a
        /// failover record's. The wire keeps the field's first name,
        /// `fence`, so that a keeper of an earlier build understands it.
        #[serde(default, rename = "fence", skip_serializing_if = "Option::is_none")]
        stand_down: Option<bpm_domain::StopPolicy>,
    },
    Ack(u64),
    /// Arm again the checks of a process taken over before it was ready
    /// ([`ProcessSpawner::watch_again`](bpm_ports::ProcessSpawner::watch_again)),
    /// its environment inline. A keeper before this op answers that it
    /// cannot read it, and the process's readiness stays unknown.
    WatchAgain(Box<Start>),
    /// Run a record's stop command for its process
    /// ([`ProcessSpawner::run_stop_command`](bpm_ports::ProcessSpawner::run_stop_command)).
    /// A keeper before this op answers that it cannot read it; the
    /// process is then stopped by its signal alone.
    StopCommand {
        start: Box<Start>,
        command: String,
        within_ms: u64,
    },
    /// Answer once record `id`'s process has written past `after`, has
    /// ended, or `within_ms` has passed
    /// ([`ProcessSpawner::wait_output`](bpm_ports::ProcessSpawner::wait_output)).
    /// A keeper before this op answers that it cannot read it; the daemon
    /// then looks again after a short while.
    WaitOutput {
        id: ProcessId,
        after: u64,
        within_ms: u64,
    },
    HandOver(Vec<Start>),
    Withdraw,
    /// The node's lease is held for `ms` more: unless told again, the
    /// keeper stops the processes started with a `stand_down` policy when it lapses.
    HoldLease {
        ms: u64,
    },
    /// Defines environment slot `slot` for the starts that follow.
    Env {
        slot: u32,
        #[serde(with = "bpm_domain::env_serde")]
        vars: Arc<bpm_domain::Environment>,
    },
}

/// A request to start a process on the wire: its environment, when it has
/// one, is the slot `env` names and not the request's own (sent empty).
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<u32>,
    request: SpawnRequest,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeeperRequest {
    id: u64,
    op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeeperReply {
    Spawned(Spawned),
    Done,
    Held(bool),
    Withdrawn(Vec<ProcessId>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum KeeperLine {
    Hello {
        hello: KeeperHello,
    },
    Notice {
        seq: u64,
        notice: ProcessNotice,
    },
    /// The line carries the reading ends of the stdout and stderr pipes of
    /// record `pipes`'s process.
    Pipes {
        pipes: ProcessId,
    },
    Reply {
        id: u64,
        ok: Option<KeeperReply>,
        err: Option<SpawnError>,
    },
}
