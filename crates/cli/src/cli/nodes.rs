//! `bpm nodes` and the reason `bpm show` gives for a record that waits for
//! a node: read from the leases and records of the cluster a home's store
//! is shared with.

use anyhow::{Result, anyhow};
use bpm_ports::Membership;
use bpm_redis::RedisMembership;

use crate::wiring::StoreChoice;

/// Why `record`, placed on any node, still waits for one, from the nodes
/// of the cluster `home`'s store is shared with (`None` if it does not
/// wait unplaced, or the nodes cannot be read: then `show` says nothing
/// more).
pub(super) async fn why_waiting(
    home: &crate::home::Home,
    record: &bpm_domain::ProcessRecord,
) -> Option<String> {
    bpm_domain::cluster::placement::Queued::of(record)?;
    let config = crate::config::Config::load(&home.dir).ok()?;
    let StoreChoice::Redis(url) = config.store_choice() else {
        return None;
    };
    let prefix = config.redis_prefix.clone().unwrap_or_else(|| "bpm".into());
    let membership = RedisMembership::connect(&url, &prefix).await.ok()?;
    let offers: Vec<bpm_domain::cluster::placement::Offer> = membership
        .nodes()
        .await
        .ok()?
        .into_iter()
        .map(|view| bpm_domain::cluster::placement::Offer {
            node: view.lease.node,
            state: view.state,
            labels: view.lease.labels,
        })
        .collect();
    bpm_domain::cluster::placement::why_waiting(record, &offers)
}

/// `bpm nodes`: every node of the cluster `home`'s store is shared with,
/// with its slots in use and free and its records by state.
///
/// # Errors
/// The home's store is not shared (not Redis), or Redis does not answer.
pub(super) async fn print_nodes(home: &crate::home::Home, json: bool) -> Result<()> {
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
    let store = bpm_redis::RedisStore::connect(&url, &prefix)
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
