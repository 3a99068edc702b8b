//! Leases on node names in Redis: a hash per node (`node:NAME`: epoch,
//! host, pid, version, since, renewed, ttl, left, slots, labels), a counter per node
//! (`epoch:NAME`) that only grows, and the set of node names (`nodes`).
//! Every call is one Lua script on Redis's own clock (`TIME`), so no two
//! daemons decide from different clocks, and a take is atomic: of two
//! daemons taking one node, exactly one gets it.

use async_trait::async_trait;
use std::time::Duration;

use bpm_domain::{Lease, NameHeld, NodeId, Span, Sweep, Timestamp};
use bpm_ports::{Candidate, Membership, MembershipError, NodeView};
use redis::Script;
use redis::aio::ConnectionManager;

/// The store's time in milliseconds, as the scripts below compute it.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: node hash, epoch counter, nodes set. ARGV: name, host, pid,
/// version, ttl (ms), slots, labels (`key=value` lines), boot id, the
/// epoch taken over ('' for none). The lease blocks a take while not left
/// and renewed within its ttl (alive or suspect: `Lease::state_at`),
/// unless the take takes over that very epoch, taken on the candidate's
/// boot (`cluster::take_name`).
const JOIN: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'left', 'renewed', 'ttl', 'host', 'pid', 'since', 'epoch', 'boot')
if cur[1] == '0' and (now - tonumber(cur[2])) <= tonumber(cur[3]) then
  local over = ARGV[9] ~= '' and ARGV[9] == cur[7] and ARGV[8] ~= '' and ARGV[8] == (cur[8] or '')
  if not over then
    return {'held', cur[4], cur[5], cur[6], tostring(now - tonumber(cur[2])), cur[7] or '0', cur[8] or '', cur[3]}
  end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'host', ARGV[2], 'pid', ARGV[3], 'version', ARGV[4],
  'since', now, 'renewed', now, 'ttl', ARGV[5], 'left', '0', 'slots', ARGV[6], 'labels', ARGV[7],
  'boot', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[1])
return {'ok', tostring(epoch)}
";

/// KEYS: node hash, epoch counter. ARGV: epoch, 'renew' or 'leave'.
const TOUCH: &str = r"
local current = redis.call('GET', KEYS[2]) or '0'
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'left', 'renewed', 'ttl')
if cur[1] ~= ARGV[1] or current ~= ARGV[1] or cur[2] ~= '0' then return {'fenced', current} end
if ARGV[2] == 'leave' then
  redis.call('HSET', KEYS[1], 'left', '1', 'renewed', now)
  return {'ok'}
end
if (now - tonumber(cur[3])) > tonumber(cur[4]) then return {'expired'} end
redis.call('HSET', KEYS[1], 'renewed', now)
return {'ok'}
";

/// KEYS: nodes set. ARGV: the key prefix. The time, then each node's name
/// and fields.
const NODES: &str = r"
local out = {tostring(now)}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', ARGV[1] .. 'node:' .. name,
    'epoch', 'host', 'pid', 'version', 'since', 'renewed', 'ttl', 'left', 'slots', 'labels', 'boot')
  out[#out + 1] = name
  for i = 1, 11 do out[#out + 1] = f[i] or '' end
end
return out
";

/// KEYS: node hash, epoch counter, the sweep's key. ARGV: epoch, sweep
/// (`unreach` or `give_up`), candidate, `lost_after` (ms), hold (ms). The
/// sweep is due once the lease expired (`give_up`: `lost_after` later),
/// as `ClusterTiming::sweep_due` says; the winning bid is the sweep's key, set
/// only if absent.
const CLAIM_SWEEP: &str = r"
local current = redis.call('GET', KEYS[2]) or '0'
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'left', 'renewed', 'ttl')
if current ~= ARGV[1] or cur[1] ~= ARGV[1] or cur[2] ~= '0' then return 0 end
local over = (now - tonumber(cur[3])) - tonumber(cur[4])
if ARGV[2] == 'give_up' then over = over - tonumber(ARGV[4]) end
if over <= 0 then return 0 end
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[5]) then return 1 end
return 0
";

/// How long a finished sweep is remembered: far longer than any
/// `lost_after`, after which the node's epoch has long moved on.
const SWEEP_DONE_MS: u64 = 30 * 24 * 3_600 * 1_000;

/// Leases on node names in Redis.
pub struct RedisMembership {
    conn: ConnectionManager,
    base: String,
    join: Script,
    touch: Script,
    nodes: Script,
    bid_for_sweep: Script,
}

fn unavailable(e: &redis::RedisError) -> MembershipError {
    MembershipError::Unavailable(format!("Redis: {e}"))
}

fn unexpected(answer: &[String]) -> MembershipError {
    MembershipError::Unavailable(format!("Redis: unexpected answer {answer:?}"))
}

impl RedisMembership {
    /// Connects to `url` for the deployment named `prefix` (the store's).
    ///
    /// # Errors
    /// [`MembershipError::Unavailable`] if Redis cannot be reached or the URL is invalid.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, MembershipError> {
        let conn = super::connect(url)
            .await
            .map_err(MembershipError::Unavailable)?;
        Ok(RedisMembership {
            conn,
            base: super::base(prefix),
            join: Script::new(&format!("{NOW}{JOIN}")),
            touch: Script::new(&format!("{NOW}{TOUCH}")),
            nodes: Script::new(&format!("{NOW}{NODES}")),
            bid_for_sweep: Script::new(&format!("{NOW}{CLAIM_SWEEP}")),
        })
    }

    fn sweep_key(&self, node: &NodeId, epoch: u64, sweep: Sweep) -> String {
        format!("{}sweep:{}:{node}:{epoch}", self.base, sweep.as_str())
    }

    fn node_key(&self, node: &NodeId) -> String {
        super::node_key(&self.base, node)
    }

    fn epoch_key(&self, node: &NodeId) -> String {
        super::epoch_key(&self.base, node)
    }

    async fn touch(&self, node: &NodeId, epoch: u64, what: &str) -> Result<(), MembershipError> {
        let mut conn = self.conn.clone();
        let answer: Vec<String> = self
            .touch
            .key(self.node_key(node))
            .key(self.epoch_key(node))
            .arg(epoch)
            .arg(what)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("expired") => Err(MembershipError::Expired {
                node: node.clone(),
                epoch,
            }),
            Some("fenced") => Err(MembershipError::Fenced {
                node: node.clone(),
                epoch,
                current: answer.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
            }),
            _ => Err(unexpected(&answer)),
        }
    }
}

/// A node's lease from the script's fields (epoch, host, pid, version,
/// since, renewed, ttl, left, slots, labels, boot); `None` if they are not a lease's.
fn lease_from(name: &str, f: &[String]) -> Option<Lease> {
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Lease {
        node: NodeId::new(name).ok()?,
        epoch: num(0)?,
        host: f.get(1)?.clone(),
        pid: u32::try_from(num(2)?).ok()?,
        version: f.get(3)?.clone(),
        since: Timestamp::from_millis(num(4)?),
        renewed_at: Timestamp::from_millis(num(5)?),
        ttl: Span::from_millis(num(6)?),
        left: f.get(7)? == "1",
        slots: f.get(8).and_then(|s| s.parse().ok()).unwrap_or_default(),
        labels: f.get(9).map(|l| labels_from(l)).unwrap_or_default(),
        boot: f.get(10).cloned().unwrap_or_default(),
    })
}

/// Labels as the lease keeps them: `key=value` lines.
fn labels_text(labels: &bpm_domain::cluster::placement::NodeLabels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The labels of [`labels_text`]; a line that is not a label is skipped.
fn labels_from(text: &str) -> bpm_domain::cluster::placement::NodeLabels {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

#[async_trait]
impl Membership for RedisMembership {
    async fn join(&self, candidate: &Candidate) -> Result<u64, MembershipError> {
        let mut conn = self.conn.clone();
        let answer: Vec<String> = self
            .join
            .key(self.node_key(&candidate.node))
            .key(self.epoch_key(&candidate.node))
            .key(format!("{}nodes", self.base))
            .arg(candidate.node.as_str())
            .arg(&candidate.host)
            .arg(candidate.pid)
            .arg(&candidate.version)
            .arg(candidate.ttl.as_millis())
            .arg(candidate.slots)
            .arg(labels_text(&candidate.labels))
            .arg(&candidate.boot)
            .arg(
                candidate
                    .replaces
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let field = |i: usize| answer.get(i).and_then(|v| v.parse::<u64>().ok());
        match answer.first().map(String::as_str) {
            Some("ok") => field(1).ok_or_else(|| unexpected(&answer)),
            Some("held") => Err(MembershipError::Held(NameHeld {
                node: candidate.node.clone(),
                host: answer.get(1).cloned().unwrap_or_default(),
                pid: field(2).and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                since: Timestamp::from_millis(field(3).unwrap_or(0)),
                renewed_ms_ago: field(4).unwrap_or(0),
                epoch: field(5).unwrap_or(0),
                boot: answer.get(6).cloned().unwrap_or_default(),
                ttl: Span::from_millis(field(7).unwrap_or(0)),
                holder: bpm_domain::Holder::Unchecked,
            })),
            _ => Err(unexpected(&answer)),
        }
    }

    async fn renew(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError> {
        self.touch(node, epoch, "renew").await
    }

    async fn leave(&self, node: &NodeId, epoch: u64) -> Result<(), MembershipError> {
        self.touch(node, epoch, "leave").await
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, MembershipError> {
        let mut conn = self.conn.clone();
        let answer: Vec<String> = self
            .nodes
            .key(format!("{}nodes", self.base))
            .arg(&self.base)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(now) = answer.first().and_then(|t| t.parse().ok()) else {
            return Err(unexpected(&answer));
        };
        let now = Timestamp::from_millis(now);
        let mut nodes: Vec<NodeView> = answer[1..]
            .chunks(12)
            .filter_map(|c| lease_from(c.first()?, &c[1..]))
            .map(|lease| NodeView {
                state: lease.state_at(now),
                lease_age_ms: u64::try_from(now.saturating_since(lease.renewed_at).as_millis())
                    .unwrap_or(u64::MAX),
                lease,
            })
            .collect();
        nodes.sort_by(|a, b| a.lease.node.as_str().cmp(b.lease.node.as_str()));
        Ok(nodes)
    }

    async fn bid_for_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
        by: &NodeId,
        lost_after: Duration,
        hold: Duration,
    ) -> Result<bool, MembershipError> {
        let mut conn = self.conn.clone();
        let won: i64 = self
            .bid_for_sweep
            .key(self.node_key(node))
            .key(self.epoch_key(node))
            .key(self.sweep_key(node, epoch, sweep))
            .arg(epoch)
            .arg(sweep.as_str())
            .arg(by.as_str())
            .arg(u64::try_from(lost_after.as_millis()).unwrap_or(u64::MAX))
            .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(won == 1)
    }

    async fn finish_sweep(
        &self,
        node: &NodeId,
        epoch: u64,
        sweep: Sweep,
    ) -> Result<(), MembershipError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.sweep_key(node, epoch, sweep))
            .arg("done")
            .arg("PX")
            .arg(SWEEP_DONE_MS)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| unavailable(&e))
    }
}
