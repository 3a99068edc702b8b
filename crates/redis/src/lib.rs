//! Redis adapters: records and output shared by many nodes.
//!
//! Every key of a deployment starts with `bpm:{PREFIX}:`; the braces make
//! `PREFIX` the hash tag, so all keys one operation touches live in one Redis
//! Cluster slot, and several deployments can share one Redis under different
//! prefixes. Connections go through a reconnecting `ConnectionManager` with
//! bounded timeouts: with Redis down, calls fail as "unavailable" within a few
//! seconds, and work again by themselves once it is back. AUTH, ACL users and
//! TLS (`rediss://`) come from the URL.

mod claims;
mod commands;
mod events;
mod membership;
mod output;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bpm_domain::{ClusterTiming, NodeId, Timestamp};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use claims::RedisClaims;
pub use commands::RedisCommands;
pub use events::RedisEvents;
pub use membership::RedisMembership;
pub use output::RedisOutput;
pub use store::RedisStore;

/// How long one command may take, and how long a connection attempt may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a reconnecting connection to `url`.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, String> {
    if url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; installing one twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(TIMEOUT))
        .set_connection_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(
        TIMEOUT * 3,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| format!("no answer from Redis within {}s", (TIMEOUT * 3).as_secs()))?
    .map_err(|e| format!("cannot connect to Redis: {e}"))
}

/// Whether a call failed because its connection was found broken (Redis
/// restarted since it was made), not because Redis is slow or refused it.
pub(crate) fn broken(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error())
}

/// Sends a read (anything that changes nothing, so it is safe to send
/// twice) on a clone of `$conn` as `$c`, and when that connection was found
/// [`broken`], sends it once more on the connection the manager makes in
/// its place: otherwise the first reads after Redis came back fail though
/// Redis answers. A timeout is not retried.
macro_rules! read {
    ($conn:expr, |$c:ident| $query:expr) => {{
        let mut $c = $conn.clone();
        match $query.await {
            Err(e) if crate::broken(&e) => {
                tracing::debug!(error = %e, "a read found its Redis connection broken: sent again");
                let mut $c = $conn.clone();
                $query.await
            }
            answer => answer,
        }
    }};
}
pub(crate) use read;

/// A store call Redis did not answer.
pub(crate) fn store_unavailable(e: &redis::RedisError) -> bpm_ports::StoreError {
    bpm_ports::StoreError::Unavailable(format!("Redis: {e}"))
}

/// Refuses a write (or a claim) at once while `fence`'s lease is lapsed.
pub(crate) fn check_lease(fence: Option<&Fence>) -> Result<(), bpm_ports::StoreError> {
    match fence {
        Some(f) if !f.may_write() => Err(bpm_ports::StoreError::Lapsed {
            node: f.node().clone(),
            epoch: f.epoch(),
        }),
        _ => Ok(()),
    }
}

/// The key prefix of a deployment, with its hash tag.
pub(crate) fn base(prefix: &str) -> String {
    format!("bpm:{{{prefix}}}:")
}

/// The epoch a daemon writes with, for its node: shared by its lease, which
/// changes it when the node is claimed again, and its store, which sends it
/// with every write so that Redis refuses the writes of an older epoch.
///
/// A fence made [`with_lease`](Fence::with_lease) also stops its store
/// writing, without asking Redis, once a whole lease has passed since the
/// last renewal that succeeded was sent ([`ClusterTiming::may_write`]):
/// by then another daemon may hold the node.
#[derive(Debug, Clone)]
pub struct Fence {
    node: NodeId,
    epoch: Arc<AtomicU64>,
    lease: Option<FenceLease>,
}

#[derive(Debug, Clone)]
struct FenceLease {
    timing: ClusterTiming,
    start: Instant,
    /// When the last renewal that succeeded was sent, in ms since `start`.
    sent: Arc<AtomicU64>,
}

impl bpm_ports::WriteFence for Fence {
    fn write_with(&self, epoch: u64, sent: Instant) {
        self.set(epoch);
        self.renewed(sent);
    }
}

impl Fence {
    /// `node` written with `epoch`.
    pub fn new(node: NodeId, epoch: u64) -> Self {
        Fence {
            node,
            epoch: Arc::new(AtomicU64::new(epoch)),
            lease: None,
        }
    }

    /// `node` written with `epoch` while its lease under `timing` holds,
    /// taken (or last renewed) by a call sent at `sent`.
    pub fn with_lease(node: NodeId, epoch: u64, timing: ClusterTiming, sent: Instant) -> Self {
        let fence = Fence {
            lease: Some(FenceLease {
                timing,
                start: sent,
                sent: Arc::new(AtomicU64::new(0)),
            }),
            ..Fence::new(node, epoch)
        };
        fence.renewed(sent);
        fence
    }

    /// The lease was renewed (or claimed again) by a call sent at `sent`.
    pub fn renewed(&self, sent: Instant) {
        if let Some(l) = &self.lease {
            let ms = u64::try_from(sent.saturating_duration_since(l.start).as_millis())
                .unwrap_or(u64::MAX);
            l.sent.fetch_max(ms, Ordering::SeqCst);
        }
    }

    /// Whether the daemon may write now: always without a lease; with one,
    /// until a whole lease has passed since the last renewal was sent.
    pub fn may_write(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            l.timing.may_write(
                Timestamp::from_millis(l.sent.load(Ordering::SeqCst)),
                Timestamp::from_millis(ms(l.start.elapsed())),
            )
        })
    }

    /// When the daemon stops writing unless it renews first (a lease
    /// after the last renewal that succeeded was sent); `None` without a
    /// lease.
    pub fn lapses_at(&self) -> Option<Instant> {
        self.lease.as_ref().map(|l| {
            l.start + Duration::from_millis(l.sent.load(Ordering::SeqCst)) + l.timing.lease_ttl()
        })
    }

    /// The node.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The epoch writes carry now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Writes carry `epoch` from now on (the node was claimed again).
    pub fn set(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The key of the node's newest epoch under `base`.
    pub(crate) fn key(&self, base: &str) -> String {
        epoch_key(base, &self.node)
    }
}

/// The key of `node`'s lease under `base`.
pub(crate) fn node_key(base: &str, node: &NodeId) -> String {
    format!("{base}node:{node}")
}

/// The key of `node`'s newest epoch under `base`.
pub(crate) fn epoch_key(base: &str, node: &NodeId) -> String {
    format!("{base}epoch:{node}")
}
