//! Names the cluster tests share: ids, times and nodes from small numbers
//! and strings.

use bpm_domain::{NodeId, ProcessId, Timestamp};

/// The id whose 128 bits are `n`.
pub(crate) fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

/// The time `ms` milliseconds after the epoch.
pub(crate) fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// The node named `name`.
pub(crate) fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a node name")
}
