//! A daemon's membership of a cluster: with a Redis store it claims its
//! node's name before it touches the node's records, renews the lease every
//! third of `lease_ttl`, and leaves when it stops. `bpm daemon status` shows
//! the lease; trouble goes to the log and the status's warnings.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::{Result, anyhow};
use bpm_adapters::redis::{Fence, RedisMembership, RedisStore};
use bpm_domain::{ClusterTiming, NodeId, Span};
use bpm_engine::Engine;
use bpm_ports::{Claimant, Failover, Membership, MembershipError, ProcessSpawner};

use crate::wiring::StoreChoice;

/// This daemon's lease on its node, and its part in sweeping lost nodes.
pub struct NodeLease {
    membership: Arc<dyn Membership>,
    fence: Fence,
    timing: ClusterTiming,
    /// The engine, once it runs: a node claimed again reconciles through it.
    engine: Arc<OnceLock<Engine>>,
    renewing: tokio::task::JoinHandle<()>,
    fencing: tokio::task::JoinHandle<()>,
    sweeping: Option<tokio::task::JoinHandle<()>>,
    /// Where lost nodes' failover records are run elsewhere: the store,
    /// writing with this daemon's epoch.
    failover: Arc<dyn Failover>,
    /// The keeper, told of every renewal.
    keeper: Keeper,
}

/// What `bpm daemon status` shows of the lease, and where warnings go.
#[derive(Clone)]
pub struct Shown {
    /// The status's cluster line.
    pub line: Arc<Mutex<Option<String>>>,
    /// The status's warnings.
    pub warnings: Arc<Mutex<Vec<String>>>,
}

impl Shown {
    fn set(&self, line: String) {
        *self.line.lock().unwrap_or_else(PoisonError::into_inner) = Some(line);
    }

    fn warn(&self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(warning);
    }
}

/// The claimant this daemon is for `node`, which runs `slots` processes at once.
fn claimant(
    node: &NodeId,
    timing: &ClusterTiming,
    slots: usize,
    labels: &bpm_domain::placement::NodeLabels,
) -> Claimant {
    Claimant {
        node: node.clone(),
        host: crate::config::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        ttl: Span::new(timing.lease_ttl()).expect("a lease is in range"),
        slots: u32::try_from(slots).unwrap_or(u32::MAX),
        labels: labels.clone(),
        boot: bpm_adapters::os::boot_id(),
        replaces: None,
    }
}

/// Claims the node for `who`. A holder that took it on this very boot of
/// this machine, and whose daemon is gone (killed: its lease has not
/// lapsed yet), is taken over at once; otherwise the refusal says which
/// case applies.
async fn claim(membership: &dyn Membership, who: &Claimant) -> Result<u64, MembershipError> {
    let mut refused = match membership.join(who).await {
        Err(MembershipError::Held(refused)) => refused,
        other => return other,
    };
    let runs = bpm_adapters::os::runs_bpm(refused.pid);
    refused.holder = bpm_domain::cluster::see_holder(&refused, &who.boot, runs);
    if refused.holder != bpm_domain::Holder::Gone {
        return Err(MembershipError::Held(refused));
    }
    let over = Claimant {
        replaces: Some(refused.epoch),
        ..who.clone()
    };
    let epoch = membership.join(&over).await?;
    tracing::warn!(
        node = %who.node,
        dead_pid = refused.pid,
        dead_epoch = refused.epoch,
        epoch,
        "took the node over from a daemon of this machine that is gone"
    );
    Ok(epoch)
}

/// Claims `node` in the cluster when `choice` is a shared store (Redis),
/// and keeps the lease renewed; `None` for a store of this node's own.
///
/// # Errors
/// Another daemon holds the node (naming its host, pid and since when), or
/// Redis does not answer.
pub async fn join(
    choice: &StoreChoice,
    prefix: &str,
    node: &NodeId,
    timing: ClusterTiming,
    slots: usize,
    labels: &bpm_domain::placement::NodeLabels,
    shown: Shown,
) -> Result<Option<NodeLease>> {
    let StoreChoice::Redis(url) = choice else {
        return Ok(None);
    };
    let who = claimant(node, &timing, slots, labels);
    let membership: Arc<dyn Membership> = Arc::new(
        RedisMembership::connect(url, prefix)
            .await
            .map_err(|e| anyhow!("cannot join the cluster: {e}"))?,
    );
    let sent = Instant::now();
    let epoch = claim(membership.as_ref(), &who)
        .await
        .map_err(|e| anyhow!("cannot join the cluster: {e}"))?;
    tracing::info!(%node, epoch, lease_ttl = ?timing.lease_ttl(), "joined the cluster");
    shown.set(describe(epoch, &timing, "renewed"));
    let fence = Fence::with_lease(node.clone(), epoch, timing, sent);
    let failover: Arc<dyn Failover> = Arc::new(
        RedisStore::connect(url, prefix)
            .await
            .map_err(|e| anyhow!("cannot join the cluster: {e}"))?
            .fenced(fence.clone()),
    );
    let engine = Arc::new(OnceLock::new());
    let keeper: Keeper = Arc::new(OnceLock::new());
    let fencing = tokio::spawn(self_fence(
        fence.clone(),
        Arc::clone(&engine),
        Arc::clone(&keeper),
    ));
    let renewing = tokio::spawn(
        Renewal {
            membership: Arc::clone(&membership),
            timing,
            fence: fence.clone(),
            who,
            shown,
            engine: Arc::clone(&engine),
        }
        .run(),
    );
    Ok(Some(NodeLease {
        membership,
        fence,
        timing,
        engine,
        renewing,
        fencing,
        sweeping: None,
        failover,
        keeper,
    }))
}

/// The spawner (the keeper) that holds this node's processes, once the
/// daemon has one.
type Keeper = Arc<OnceLock<Arc<dyn ProcessSpawner>>>;

/// How long the keeper is to hold the processes with a fence, for a lease
/// that lapses at `at`.
fn keeper_holds(at: Instant) -> std::time::Duration {
    at.saturating_duration_since(Instant::now()) + bpm_domain::cluster::KEEPER_FENCE_LAG
}

/// How often the fence looks whether the lease was renewed (or, fenced,
/// whether it is held again).
const FENCE_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// Fences the engine's failover records the moment the daemon may no
/// longer write (a whole lease after the last renewal that succeeded was
/// sent, `ClusterTiming::must_fence`), and lifts the fence once it holds
/// its lease again (renewed, or claimed again and reconciled). Each
/// renewal is passed on to the keeper, which fences those records' processes
/// itself if this daemon stops passing them on (it died or stalled).
async fn self_fence(fence: Fence, engine: Arc<OnceLock<Engine>>, keeper: Keeper) {
    let mut fenced = false;
    let mut passed_on: Option<Instant> = None;
    let mut keeper_said = false;
    loop {
        let held = fence.may_write();
        if let (true, Some(keeper), Some(at)) = (held, keeper.get(), fence.lapses_at())
            && passed_on != Some(at)
        {
            match keeper.hold_lease(keeper_holds(at)).await {
                Ok(()) => {
                    passed_on = Some(at);
                    keeper_said = false;
                }
                // The keeper fences by itself meanwhile: said once.
                Err(e) if !keeper_said => {
                    keeper_said = true;
                    tracing::warn!(error = %e, "could not tell the keeper the lease holds; it will stop the failover processes if it is not told in time");
                }
                Err(_) => {}
            }
        }
        if held == fenced
            && let Some(engine) = engine.get()
        {
            if held {
                tracing::info!(node = %fence.node(), "the lease is held again: failover records may start");
            } else {
                tracing::warn!(node = %fence.node(), "the lease was not renewed for a whole lease_ttl: stopping this node's failover records, which another node may now run");
            }
            if engine.lease(held).await.is_ok() {
                fenced = !held;
            }
        }
        let look = Instant::now() + FENCE_LOOK;
        let wake = match fence.lapses_at() {
            Some(at) if held => at.min(look),
            _ => look,
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
    }
}

fn describe(epoch: u64, timing: &ClusterTiming, how: &str) -> String {
    format!(
        "epoch {epoch}, lease {} ({how})",
        Span::new(timing.lease_ttl()).expect("a lease is in range")
    )
}

/// The task that keeps the lease.
struct Renewal {
    membership: Arc<dyn Membership>,
    timing: ClusterTiming,
    fence: Fence,
    who: Claimant,
    shown: Shown,
    engine: Arc<OnceLock<Engine>>,
}

impl Renewal {
    /// Renews the lease every third of it. Once a whole lease has passed
    /// since the last renewal that succeeded was sent, the store writes
    /// nothing (the fence says so); an expired or fenced lease is claimed
    /// again, for a new epoch, once no other daemon holds the node, and
    /// the engine reconciles its records before it writes again.
    async fn run(self) {
        let node = self.fence.node().clone();
        let mut tick = tokio::time::interval(self.timing.renew_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing_since: Option<Instant> = None;
        let mut lapsed_said = false;
        loop {
            tick.tick().await;
            let held = self.fence.epoch();
            let sent = Instant::now();
            match self.membership.renew(&node, held).await {
                Ok(()) => {
                    self.fence.renewed(sent);
                    if failing_since.take().is_some() {
                        tracing::info!(%node, epoch = held, "the lease is renewed again");
                    }
                    lapsed_said = false;
                    self.shown.set(describe(held, &self.timing, "renewed"));
                }
                Err(MembershipError::Unavailable(e)) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let how = if self.fence.may_write() {
                        format!("not renewed for {} s: {e}", since.elapsed().as_secs())
                    } else {
                        format!(
                            "lapsed: not renewed for {} s, so this daemon writes nothing until it holds the node again: {e}",
                            since.elapsed().as_secs()
                        )
                    };
                    self.shown.set(describe(held, &self.timing, &how));
                    if !self.fence.may_write() && !lapsed_said {
                        lapsed_said = true;
                        self.shown.warn(format!(
                            "the lease of node {node} (epoch {held}) was not renewed for a whole lease_ttl: this daemon writes nothing until it holds the node again"
                        ));
                    }
                    tracing::warn!(%node, epoch = held, error = %e, "cannot renew the lease");
                }
                Err(
                    lapsed @ (MembershipError::Expired { .. } | MembershipError::Fenced { .. }),
                ) => {
                    self.shown
                        .warn(format!("{lapsed}; claiming the node again"));
                    if self.claim_again(held).await {
                        failing_since = None;
                        lapsed_said = false;
                    }
                }
                Err(MembershipError::Held(e)) => self.shown.warn(e.to_string()),
            }
        }
    }

    /// Claims the node again after its lease lapsed; the new epoch is
    /// written with only once the engine has reconciled its records.
    async fn claim_again(&self, held: u64) -> bool {
        let node = self.fence.node().clone();
        let sent = Instant::now();
        let new = match claim(self.membership.as_ref(), &self.who).await {
            Ok(new) => new,
            Err(e) => {
                self.shown
                    .set(describe(held, &self.timing, &format!("lapsed: {e}")));
                return false;
            }
        };
        let fence = self.fence.clone();
        let open = move || {
            fence.set(new);
            fence.renewed(sent);
        };
        match self.engine.get() {
            Some(engine) => {
                if let Err(e) = engine.rejoin(Box::new(open)).await {
                    self.shown.warn(format!(
                        "claimed node {node} again (epoch {new}) but could not reconcile its records: {e}; trying again"
                    ));
                    return false;
                }
            }
            None => open(),
        }
        self.shown.set(describe(new, &self.timing, "renewed"));
        tracing::info!(%node, epoch = new, "claimed the node again and reconciled its records");
        true
    }
}

impl NodeLease {
    /// The epoch this daemon's writes carry, for its store.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Tells `keeper` the lease holds, before any process starts, and of
    /// every renewal from now on: a keeper that is not told in time stops
    /// the failover records' processes by itself
    /// (`ProcessSpawner::hold_lease`).
    ///
    /// # Errors
    /// The keeper cannot be reached.
    pub async fn pass_renewals_to(&self, keeper: Arc<dyn ProcessSpawner>) -> Result<()> {
        if let Some(at) = self.fence.lapses_at() {
            keeper
                .hold_lease(keeper_holds(at))
                .await
                .map_err(|e| anyhow!("cannot tell bpm's keeper the lease holds: {e}"))?;
        }
        let _ = self.keeper.set(keeper);
        Ok(())
    }

    /// Hands the lease the running engine: a node claimed again reconciles
    /// its records through it, and this daemon now sweeps the nodes that
    /// stop renewing their leases.
    pub fn attach(&mut self, engine: &Engine) {
        let _ = self.engine.set(engine.clone());
        let sweeper = engine.sweeper(
            Arc::clone(&self.membership),
            self.timing,
            Arc::clone(&self.failover),
        );
        self.sweeping = Some(tokio::spawn(sweeper.run()));
    }

    /// Stops renewing and leaves the cluster: the node is `left`, and no
    /// other node takes it for lost.
    pub async fn leave(self) {
        self.renewing.abort();
        self.fencing.abort();
        if let Some(sweeping) = self.sweeping {
            sweeping.abort();
        }
        let (node, epoch) = (self.fence.node(), self.fence.epoch());
        match self.membership.leave(node, epoch).await {
            Ok(()) => tracing::info!(%node, epoch, "left the cluster"),
            Err(e) => tracing::warn!(%node, error = %e, "could not leave the cluster"),
        }
    }
}

/// Why `record`, placed on any node, still waits for one, from the nodes
/// of the cluster `home`'s store is shared with (`None` if it does not
/// wait unplaced, or the nodes cannot be read: then `show` says nothing
/// more).
pub async fn why_waiting(
    home: &crate::home::Home,
    record: &bpm_domain::ProcessRecord,
) -> Option<String> {
    bpm_domain::placement::Queued::of(record)?;
    let config = crate::config::Config::load(&home.dir).ok()?;
    let StoreChoice::Redis(url) = config.store_choice() else {
        return None;
    };
    let prefix = config.redis_prefix.clone().unwrap_or_else(|| "bpm".into());
    let membership = RedisMembership::connect(&url, &prefix).await.ok()?;
    let offers: Vec<bpm_domain::placement::Offer> = membership
        .nodes()
        .await
        .ok()?
        .into_iter()
        .map(|view| bpm_domain::placement::Offer {
            node: view.lease.node,
            state: view.state,
            labels: view.lease.labels,
        })
        .collect();
    bpm_domain::placement::why_waiting(record, &offers)
}

/// `bpm nodes`: every node of the cluster `home`'s store is shared with,
/// with its slots in use and free and its records by state.
///
/// # Errors
/// The home's store is not shared (not Redis), or Redis does not answer.
pub async fn print_nodes(home: &crate::home::Home, json: bool) -> Result<()> {
    let config = crate::config::Config::load(&home.dir).map_err(|e| anyhow!(e))?;
    let StoreChoice::Redis(url) = config.store_choice() else {
        return Err(anyhow!(
            "nodes share a Redis store, and this home's store is its own ({}): set store = \"redis://...\" in {}",
            config.store.as_deref().unwrap_or("fs"),
            home.dir.join("config.toml").display()
        ));
    };
    let prefix = config.redis_prefix.clone().unwrap_or_else(|| "bpm".into());
    let membership = RedisMembership::connect(&url, &prefix)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let store = bpm_adapters::redis::RedisStore::connect(&url, &prefix)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut rows = Vec::new();
    for view in membership.nodes().await.map_err(|e| anyhow!("{e}"))? {
        let counts = store
            .counts_on(&view.lease.node)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let in_use: usize = counts
            .iter()
            .filter(|(state, _)| state.is_active())
            .map(|(_, n)| n)
            .sum();
        rows.push((view, in_use, counts));
    }
    if json {
        let nodes: Vec<serde_json::Value> = rows
            .iter()
            .map(|(view, in_use, counts)| {
                let mut v = serde_json::to_value(view).unwrap_or_default();
                v["slots_in_use"] = (*in_use).into();
                v["slots_free"] = (view.lease.slots as usize).saturating_sub(*in_use).into();
                v["records"] = counts
                    .iter()
                    .map(|(state, n)| (state.to_string(), serde_json::Value::from(*n)))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:>9} {:>6}  {:<16} {:>8} {:<8} {:>7}  RECORDS [LABELS]",
        "NODE", "STATE", "LEASE AGE", "EPOCH", "HOST", "PID", "VERSION", "SLOTS"
    );
    for (n, in_use, counts) in &rows {
        #[allow(clippy::cast_precision_loss)]
        let age = format!("{:.1}s", n.lease_age_ms as f64 / 1000.0);
        let records: Vec<String> = counts.iter().map(|(s, c)| format!("{s} {c}")).collect();
        let labels: Vec<String> = n
            .lease
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!(" [{}]", labels.join(" "))
        };
        println!(
            "{:<20} {:<8} {:>9} {:>6}  {:<16} {:>8} {:<8} {:>7}  {}{labels}",
            n.lease.node.as_str(),
            n.state.as_str(),
            age,
            n.lease.epoch,
            n.lease.host,
            n.lease.pid,
            n.lease.version,
            format!("{in_use}/{}", n.lease.slots),
            if records.is_empty() {
                "none".to_owned()
            } else {
                records.join(", ")
            }
        );
    }
    Ok(())
}
