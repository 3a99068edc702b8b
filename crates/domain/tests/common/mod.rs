//! Names the cluster tests share: ids, times and nodes from small numbers
//! and strings.

use bpm_domain::{
    CoreError, Effect, Input, Lease, NodeId, ProcessId, ProcessSpec, Span, Supervisor, Timestamp,
};

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

/// Submits `spec` as record `n` to `core` at `at` ms.
pub(crate) fn submit(
    core: &mut Supervisor,
    n: u128,
    spec: ProcessSpec,
    at: u64,
) -> Result<Vec<Effect>, CoreError> {
    core.handle(Input::Submit { id: id(n), spec }, t(at))
}

/// Tells `core` that record `n`'s process started with `pid` at `at` ms.
pub(crate) fn spawned(core: &mut Supervisor, n: u128, pid: u32, at: u64) {
    core.handle(Input::Spawned { id: id(n), pid }, t(at))
        .expect("spawned");
}

/// Node `b`'s lease (epoch 4, 2 s), last renewed at `renewed_at` ms.
#[allow(dead_code)]
pub(crate) fn lease_of_b(renewed_at: u64) -> Lease {
    Lease {
        node: node("b"),
        epoch: 4,
        host: "machine-b".into(),
        pid: 42,
        version: "0.1.0".into(),
        since: t(1_000),
        renewed_at: t(renewed_at),
        ttl: Span::from_secs(2),
        slots: 4,
        left: false,
        labels: std::collections::BTreeMap::default(),
        boot: String::new(),
    }
}
