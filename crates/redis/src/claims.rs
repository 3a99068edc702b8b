//! The claim queue in Redis. The store's writes keep the queue
//! (`store.rs`): creating an unplaced record adds it to the sorted set of
//! its class (`q:CLASS`, scored by `placement::Queued`, ties in id order)
//! and the class to `qclasses`; the claimer's write, which places it, ends
//! its claim. A claim is one script: it looks at the first record of each
//! class the node fits, takes the best of them, and notes the claim in
//! `claims` (id → node, epoch, score, class), so that a claim never
//! written can go back. Looking at each class's first keeps a claim's cost
//! to the number of classes, not of records.
//!
//! Cluster-wide slots are counted in the same store: a group's records in
//! a state that holds a slot, from the index sets, plus the grants of
//! records not yet started (`cslots:GROUP`, each bound to its record's
//! version). So a lost node's slots free
//! as its records become `unreachable`, and a record that comes back is
//! counted once, by its state. The rule is
//! [`bpm_domain::cluster::slots`]'s, which the in-memory twin and the
//! simulations call; the script below applies it atomically in the store.

use async_trait::async_trait;
use bpm_domain::cluster::placement::{NodeLabels, Room};
use bpm_domain::{NodeId, ProcessId, ProcessRecord};
use bpm_ports::{ClaimQueue, ClaimedOne, StoreError};
use redis::Script;
use redis::aio::ConnectionManager;

use super::store_unavailable as unavailable;

/// Refuses the claim of a fenced epoch: ARGV[2] is the claimer's epoch
/// key ('' when not fenced), ARGV[3] its epoch.
const FENCED: &str = r"
if ARGV[2] ~= '' then
  local current = tonumber(redis.call('GET', ARGV[2]) or '0')
  if current > tonumber(ARGV[3]) then return {'fenced', tostring(current)} end
end
local function lines(s)
  local t = {}
  for l in string.gmatch(s, '[^\n]+') do t[l] = true end
  return t
end
local function note(id, score, class)
  redis.call('HSET', ARGV[1] .. 'claims', id, ARGV[4] .. '\n' .. ARGV[3] .. '\n' .. score .. '\n' .. class)
end
";

/// ARGV: base, epoch key, epoch, node, labels (`key=value` lines), full
/// groups (lines), '1' if groups without a limit of their own are full,
/// groups with a limit of their own (lines). `placement::takes` as a
/// script: a class fits when its group has room and the node carries
/// every label it names.
const CLAIM: &str = r"
local labels, full, limited = lines(ARGV[5]), lines(ARGV[6]), lines(ARGV[8])
local best, best_score, best_class
for _, class in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'qclasses')) do
  local group = string.match(class, '^@([^\n]*)') or ''
  local fits = group == '' or not (full[group] or (ARGV[7] == '1' and not limited[group]))
  if fits then
    for label in string.gmatch(string.sub(class, #group + 3), '[^\n]+') do
      if not labels[label] then fits = false end
    end
  end
  if fits then
    local head = redis.call('ZRANGE', ARGV[1] .. 'q:' .. class, 0, 0, 'WITHSCORES')
    if #head == 0 then
      redis.call('SREM', ARGV[1] .. 'qclasses', class)
    else
      local score = tonumber(head[2])
      if not best or score < best_score or (score == best_score and head[1] < best) then
        best, best_score, best_class = head[1], score, class
      end
    end
  end
end
if not best then return {'none'} end
redis.call('ZREM', ARGV[1] .. 'q:' .. best_class, best)
note(best, best_score, best_class)
return {'ok', redis.call('HGET', ARGV[1] .. 'r:' .. best, 'j')}
";

/// ARGV: base, epoch key, epoch, node, id.
const CLAIM_ONE: &str = r"
local id = ARGV[5]
local class = redis.call('HGET', ARGV[1] .. 'r:' .. id, 'q')
if not class then return {'none'} end
local score = redis.call('ZSCORE', ARGV[1] .. 'q:' .. class, id)
if not score then
  local claim = redis.call('HGET', ARGV[1] .. 'claims', id)
  if claim then return {'claimed', string.match(claim, '^[^\n]*')} end
  return {'none'}
end
redis.call('ZREM', ARGV[1] .. 'q:' .. class, id)
note(id, score, class)
return {'ok', redis.call('HGET', ARGV[1] .. 'r:' .. id, 'j')}
";

/// ARGV: base, node. A claim of `node` whose record still holds the class
/// field (never written by its claimer) goes back to its class.
const GIVE_BACK: &str = r"
local back = 0
local claims = redis.call('HGETALL', ARGV[1] .. 'claims')
for i = 1, #claims, 2 do
  local id = claims[i]
  local node, score, class = string.match(claims[i + 1], '^([^\n]*)\n[^\n]*\n([^\n]*)\n(.*)$')
  if node == ARGV[2] then
    redis.call('HDEL', ARGV[1] .. 'claims', id)
    if redis.call('HGET', ARGV[1] .. 'r:' .. id, 'q') then
      redis.call('ZADD', ARGV[1] .. 'q:' .. class, score, id)
      redis.call('SADD', ARGV[1] .. 'qclasses', class)
      back = back + 1
    end
  end
end
return back
";

/// ARGV: base, id, group, limit, the states that hold a slot (lines), the
/// asking daemon's epoch key ('' when unfenced) and epoch. A group's slots
/// taken: its records in those states (from the index sets, on every
/// node) but tracked operations (`ix:tracked`), and its grants
/// (`cslots:GROUP`, id → the record's version when granted, then the
/// granting daemon's epoch key and epoch) whose records are still pending
/// at that version and whose daemon still holds its node at that epoch. A
/// grant whose record was written since is dropped: started, the index
/// counts it; stopped or queued again after a run, it holds no slot
/// (queued again, it asks anew). So is a grant of a daemon that has
/// restarted since (it took a new epoch): the grant's answer died with
/// the daemon that asked, and the record asks anew. A grant of an older
/// bpm (id → node) holds none.
const TAKE_SLOT: &str = r"
local base, id, group = ARGV[1], ARGV[2], ARGV[3]
local grants = base .. 'cslots:' .. group
local taken = 0
local members = base .. 'ix:group:' .. group
for state in string.gmatch(ARGV[5], '[^\n]+') do
  local in_state = base .. 'ix:state:' .. state
  taken = taken + redis.call('SINTERCARD', 2, members, in_state)
    - redis.call('SINTERCARD', 3, members, in_state, base .. 'ix:tracked')
end
local function holds(other, grant)
  local at, key, epoch = string.match(grant, '^([^\n]*)\n([^\n]*)\n([^\n]*)$')
  -- An older bpm's grant (it named the node) holds none: its record asks anew.
  if not at then return false end
  return redis.call('SISMEMBER', base .. 'ix:state:pending', other) == 1
    and redis.call('HGET', base .. 'r:' .. other, 'v') == at
    and (key == '' or (redis.call('GET', key) or '0') == epoch)
end
local mine = false
local held = redis.call('HGETALL', grants)
for i = 1, #held, 2 do
  local other = held[i]
  if holds(other, held[i + 1]) then
    taken = taken + 1
    if other == id then mine = true end
  else
    redis.call('HDEL', grants, other)
  end
end
if mine then return 1 end
if taken < tonumber(ARGV[4]) then
  -- A record the store does not hold (yet) gets a grant that holds no slot.
  local at = redis.call('HGET', base .. 'r:' .. id, 'v') or ''
  redis.call('HSET', grants, id, at .. '\n' .. ARGV[6] .. '\n' .. ARGV[7])
  return 1
end
return 0
";

/// The claim queue in Redis, for one node.
pub struct RedisClaims {
    conn: ConnectionManager,
    base: String,
    node: NodeId,
    fence: Option<super::Fence>,
    claim: Script,
    claim_one: Script,
    give_back: Script,
    take_slot: Script,
}

fn lines<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

impl RedisClaims {
    /// Connects to `url` for the deployment named `prefix` (the store's),
    /// claiming for `node`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if Redis cannot be reached or the URL is invalid.
    pub async fn connect(url: &str, prefix: &str, node: NodeId) -> Result<Self, StoreError> {
        let conn = super::connect(url).await.map_err(StoreError::Unavailable)?;
        Ok(RedisClaims {
            conn,
            base: super::base(prefix),
            node,
            fence: None,
            claim: Script::new(&format!("{FENCED}{CLAIM}")),
            claim_one: Script::new(&format!("{FENCED}{CLAIM_ONE}")),
            give_back: Script::new(GIVE_BACK),
            take_slot: Script::new(TAKE_SLOT),
        })
    }

    /// Claims carry `fence`'s epoch, and Redis refuses them
    /// ([`StoreError::Fenced`]) once a newer daemon holds the node.
    #[must_use]
    pub fn fenced(mut self, fence: super::Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Runs a claim script with its first four arguments (base, fence,
    /// node) and `rest`; the record claimed, or the script's other answer.
    async fn run(
        &self,
        script: &Script,
        rest: &[String],
    ) -> Result<Result<ProcessRecord, Vec<String>>, StoreError> {
        super::check_lease(self.fence.as_ref())?;
        let (fence_key, epoch) = self
            .fence
            .as_ref()
            .map_or((String::new(), 0), |f| (f.key(&self.base), f.epoch()));
        let mut inv = script.prepare_invoke();
        inv.arg(&self.base)
            .arg(fence_key)
            .arg(epoch)
            .arg(self.node.as_str());
        for a in rest {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let answer: Vec<Option<String>> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let answer: Vec<String> = answer.into_iter().map(Option::unwrap_or_default).collect();
        match answer.first().map(String::as_str) {
            Some("fenced") => Err(StoreError::Fenced {
                node: self.node.clone(),
                epoch,
                current: answer.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
            }),
            Some("ok") => {
                let json = answer.get(1).map_or("", String::as_str);
                serde_json::from_str(json).map(Ok).map_err(|e| {
                    StoreError::Unavailable(format!("Redis holds an unreadable queued record: {e}"))
                })
            }
            _ => Ok(Err(answer)),
        }
    }
}

#[async_trait]
impl ClaimQueue for RedisClaims {
    fn node(&self) -> &NodeId {
        &self.node
    }

    async fn claim(
        &self,
        room: &Room,
        labels: &NodeLabels,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        if room.free == 0 {
            return Ok(None);
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rest = [
            lines(labels.iter().map(String::as_str)),
            lines(room.full_groups.iter().map(bpm_domain::GroupName::as_str)),
            if room.others_full { "1" } else { "0" }.to_owned(),
            lines(
                room.limited_groups
                    .iter()
                    .map(bpm_domain::GroupName::as_str),
            ),
        ];
        match self.run(&self.claim, &rest).await? {
            Ok(record) => Ok(Some(record)),
            Err(answer) if answer.first().is_some_and(|a| a == "none") => Ok(None),
            Err(answer) => Err(StoreError::Unavailable(format!(
                "Redis: unexpected answer {answer:?}"
            ))),
        }
    }

    async fn claim_one(&self, id: ProcessId) -> Result<ClaimedOne, StoreError> {
        match self.run(&self.claim_one, &[id.to_string()]).await? {
            Ok(record) => Ok(ClaimedOne::Taken(record)),
            Err(answer) => match answer.first().map(String::as_str) {
                Some("none") => Ok(ClaimedOne::NotWaiting),
                Some("claimed") => answer
                    .get(1)
                    .and_then(|n| NodeId::new(n.as_str()).ok())
                    .map(ClaimedOne::ClaimedBy)
                    .ok_or_else(|| {
                        StoreError::Unavailable(format!("Redis: unexpected answer {answer:?}"))
                    }),
                _ => Err(StoreError::Unavailable(format!(
                    "Redis: unexpected answer {answer:?}"
                ))),
            },
        }
    }

    async fn give_back(&self, node: &NodeId) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        self.give_back
            .arg(&self.base)
            .arg(node.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))
    }
}

#[async_trait]
impl bpm_ports::ClusterSlots for RedisClaims {
    async fn take(
        &self,
        id: ProcessId,
        group: &bpm_domain::GroupName,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let holding = lines(
            bpm_domain::StateName::ALL
                .into_iter()
                .filter(|s| s.is_active())
                .map(bpm_domain::StateName::as_str),
        );
        let (fence_key, epoch) = self
            .fence
            .as_ref()
            .map_or((String::new(), 0), |f| (f.key(&self.base), f.epoch()));
        let mut conn = self.conn.clone();
        let granted: i64 = self
            .take_slot
            .arg(&self.base)
            .arg(id.to_string())
            .arg(group.as_str())
            .arg(limit)
            .arg(holding)
            .arg(fence_key)
            .arg(epoch)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(granted == 1)
    }
}
