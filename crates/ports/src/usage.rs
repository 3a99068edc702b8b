use async_trait::async_trait;
use bpm_domain::ProcessId;
use serde::{Deserialize, Serialize};

/// What one record's process tree uses now: the leader and every process of
/// its tree (descendants, and processes that left the tree but carry its mark).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// The record.
    pub id: ProcessId,
    /// CPU time of the whole tree per second of wall time, in percent of one
    /// core (200 is two cores busy). Measured over the time since the
    /// previous sample of this tree when that is recent, else over the
    /// leader's life, as `ps(1)` measures it.
    pub cpu_percent: f64,
    /// Resident memory of the whole tree, in bytes (shared pages count in
    /// each process that maps them, as `ps(1)` counts them); for a record
    /// in a memory cgroup (one with `memory_max`), what the cgroup is
    /// charged, page cache included: the figure its limit is measured
    /// against.
    pub rss_bytes: u64,
    /// TCP ports that processes of the tree listen on, ascending, without repeats.
    pub listening_ports: Vec<u16>,
    /// How many processes the tree has.
    pub processes: u32,
}

/// One tree to sample: a record and the pid of its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleTarget {
    /// The record.
    pub id: ProcessId,
    /// Its process (the tree's leader), as the spawner reported it.
    pub pid: u32,
}

/// Reads what the process trees of running records use. Sampling reads the
/// operating system's view and changes nothing; a tree whose processes are
/// all gone is left out of the answer.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ResourceSampler: Send + Sync + 'static {
    /// The usage of each target's tree that still has a live process, in
    /// the order given. Never fails: what cannot be read (a process that
    /// ended, a file another user owns) is counted as absent.
    async fn sample(&self, targets: Vec<SampleTarget>) -> Vec<ResourceUsage>;
}
