//! Records in Redis: a hash per record (version, JSON, the index keys it is
//! in), a sorted set of all ids in id order, sets per filterable field, and a
//! sorted set of end times for retention, and the queue of records placed on
//! any node (`q:CLASS`, a sorted set per class of `placement::Queued`, the
//! set of classes `qclasses`, and the claims under way `claims`; see
//! `claims.rs`). Every write is one Lua script that
//! checks the version and moves the record between index sets atomically, so
//! the indexes never disagree with the records. Each change is published on a
//! channel (to wake listeners) and appended to a capped stream (durable).

use std::collections::BTreeSet;

use async_trait::async_trait;
use bpm_domain::{ClusterTiming, Lease};
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, StateName};
use bpm_ports::{FailedOver, Failover, ProcessStore, StoreError};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::store_unavailable as unavailable;

/// Refuses the write of a fenced epoch: A[N] is the writer's node's
/// epoch key ('' when the writer is not fenced), A[N + 1] its epoch.
const FENCED: &str = r"
local function fenced(A, n)
  if A[n] == '' then return nil end
  local current = tonumber(redis.call('GET', A[n]) or '0')
  if current > tonumber(A[n + 1]) then return {'fenced', tostring(current)} end
  return nil
end
";

/// One write of a record, as a function of its keys `K` (the record's
/// hash, `all`, `ended`, the events stream, then its index sets) and
/// arguments `A` (`RedisStore::put_call`).
const PUT_FN: &str = r"
local function put(K, A)
  local refused = fenced(A, 9)
  if refused then return refused end
  local cur = redis.call('HGET', K[1], 'v')
  local oldq = nil
  if A[1] == 'create' then
    if cur then return {'exists'} end
  else
    if not cur then return {'missing'} end
    if cur ~= A[2] then return {'conflict', cur} end
    local old = redis.call('HMGET', K[1], 'ix', 'q')
    if old[1] then for k in string.gmatch(old[1], '[^\n]+') do redis.call('SREM', k, A[5]) end end
    oldq = old[2]
  end
  local ix = {}
  for i = 5, #K do redis.call('SADD', K[i], A[5]); ix[#ix + 1] = K[i] end
  redis.call('HSET', K[1], 'v', A[3], 'j', A[4], 'ix', table.concat(ix, '\n'), 'fence', A[14])
  -- The queue of records placed on any node: a creation unplaced queues it
  -- in its class; the claimer's write (placed) ends its claim.
  if A[11] ~= '' then
    if A[1] == 'create' then
      redis.call('ZADD', A[13] .. 'q:' .. A[11], A[12], A[5])
      redis.call('SADD', A[13] .. 'qclasses', A[11])
      redis.call('HSET', K[1], 'q', A[11])
    end
  elseif oldq then
    redis.call('ZREM', A[13] .. 'q:' .. oldq, A[5])
    redis.call('HDEL', K[1], 'q')
    redis.call('HDEL', A[13] .. 'claims', A[5])
  end
  redis.call('ZADD', K[2], 0, A[5])
  if A[6] ~= '' then redis.call('ZADD', K[3], A[6], A[5]) else redis.call('ZREM', K[3], A[5]) end
  redis.call('XADD', K[4], 'MAXLEN', '~', '10000', '*', 'id', A[5], 'version', A[3], 'state', A[8])
  redis.call('PUBLISH', A[7], A[5] .. ' ' .. A[3] .. ' ' .. A[8])
  return {'ok'}
end
";

const PUT: &str = r"
return put(KEYS, ARGV)
";

/// KEYS: the lost node's hash and epoch counter, then the two writes'
/// keys. ARGV: its lapsed epoch, how long past its last renewal the
/// failover is due (ms), how many keys the first write has, then the two
/// writes' arguments (14 each). Both writes, or neither: only while the
/// node is still lost at that epoch and the failover due, on Redis's clock,
/// and the replacement does not exist yet.
const FAILOVER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('GET', KEYS[2]) or '0'
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'left', 'renewed')
if current ~= ARGV[1] or cur[1] ~= ARGV[1] or cur[2] ~= '0' then return {'held'} end
if (now - tonumber(cur[3])) <= tonumber(ARGV[2]) then return {'held'} end
local n = tonumber(ARGV[3])
local k1, k2, a1, a2 = {}, {}, {}, {}
for i = 3, 2 + n do k1[#k1 + 1] = KEYS[i] end
for i = 3 + n, #KEYS do k2[#k2 + 1] = KEYS[i] end
for i = 4, 17 do a1[#a1 + 1] = ARGV[i] end
for i = 18, 31 do a2[#a2 + 1] = ARGV[i] end
if redis.call('EXISTS', k2[1]) == 1 then return {'exists'} end
local first = put(k1, a1)
if first[1] ~= 'ok' then return first end
return put(k2, a2)
";

/// A creation (`put`'s keys and arguments) unless a live record carries
/// its name: ARGV[15] is the name's index set. Answers `{'named', ID}`
/// with the live one, and writes nothing then.
const NAMED: &str = r"
local ended = {completed = true, failed = true, timed_out = true, cancelled = true, lost = true}
for _, id in ipairs(redis.call('SMEMBERS', ARGV[15])) do
  if id ~= ARGV[5] then
    local j = redis.call('HGET', ARGV[13] .. 'r:' .. id, 'j')
    if j and not ended[cjson.decode(j).state] then return {'named', id} end
  end
end
return put(KEYS, ARGV)
";

const DELETE: &str = r"
local refused = fenced(ARGV, 3)
if refused then return refused end
local deleted = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. 'r:' .. id
  local ix = redis.call('HGET', key, 'ix')
  local q = redis.call('HGET', key, 'q')
  if q then
    redis.call('ZREM', ARGV[1] .. 'q:' .. q, id)
    redis.call('HDEL', ARGV[1] .. 'claims', id)
  end
  if ix then
    for k in string.gmatch(ix, '[^\n]+') do redis.call('SREM', k, id) end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', '10000', '*', 'id', id, 'version', '0', 'state', 'deleted')
    redis.call('PUBLISH', ARGV[2], id .. ' 0 deleted')
    deleted[#deleted + 1] = id
  end
end
return deleted
";

/// Records in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    base: String,
    put: Script,
    named: Script,
    failover: Script,
    delete: Script,
    fence: Option<super::Fence>,
}

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://`, with user and password if
    /// needed) for the deployment named `prefix`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if Redis cannot be reached or the URL is invalid.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let conn = super::connect(url).await.map_err(StoreError::Unavailable)?;
        Ok(RedisStore {
            conn,
            base: super::base(prefix),
            put: Script::new(&format!("{FENCED}{PUT_FN}{PUT}")),
            named: Script::new(&format!("{FENCED}{PUT_FN}{NAMED}")),
            failover: Script::new(&format!("{FENCED}{PUT_FN}{FAILOVER}")),
            delete: Script::new(&format!("{FENCED}{DELETE}")),
            fence: None,
        })
    }

    /// This store's writes carry `fence`'s epoch, and Redis refuses them
    /// ([`StoreError::Fenced`]) once a newer daemon has claimed the node.
    #[must_use]
    pub fn fenced(mut self, fence: super::Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The fence's two script arguments: the epoch key and the epoch, or
    /// nothing to check.
    fn fence_args(&self) -> (String, u64) {
        self.fence
            .as_ref()
            .map_or((String::new(), 0), |f| (f.key(&self.base), f.epoch()))
    }

    /// Refuses a write at once while the fence's lease is lapsed.
    fn check_lease(&self) -> Result<(), StoreError> {
        super::check_lease(self.fence.as_ref())
    }

    fn fenced_error(&self, epoch: u64, current: Option<&String>) -> StoreError {
        StoreError::Fenced {
            node: self
                .fence
                .as_ref()
                .map_or_else(bpm_domain::NodeId::local, |f| f.node().clone()),
            epoch,
            current: current.and_then(|c| c.parse().ok()).unwrap_or(0),
        }
    }

    /// How many of `node`'s records are in each state (states with none
    /// left out), from the index sets: no record is read.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if Redis does not answer.
    pub async fn counts_on(
        &self,
        node: &bpm_domain::NodeId,
    ) -> Result<std::collections::BTreeMap<StateName, usize>, StoreError> {
        let mut pipe = redis::pipe();
        for state in StateName::ALL {
            pipe.cmd("SINTERCARD")
                .arg(2)
                .arg(self.key(&format!("ix:node:{node}")))
                .arg(self.key(&format!("ix:state:{state}")));
        }
        let mut conn = self.conn.clone();
        let counts: Vec<usize> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(StateName::ALL
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    /// The pub/sub channel that carries `ID VERSION STATE` for every change.
    pub fn changes_channel(&self) -> String {
        format!("{}changes", self.base)
    }

    /// The capped stream of changes (fields `id`, `version`, `state`).
    pub fn events_stream(&self) -> String {
        format!("{}events", self.base)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base)
    }

    fn record_key(&self, id: ProcessId) -> String {
        self.key(&format!("r:{id}"))
    }

    /// The index sets a record belongs to.
    fn index_keys(&self, r: &ProcessRecord) -> Vec<String> {
        let mut keys = vec![
            self.key(&format!("ix:state:{}", r.state())),
            self.key(&format!("ix:node:{}", r.node())),
            self.key(&format!("ix:kind:{}", kind_name(r))),
        ];
        if let Some(s) = r.session() {
            keys.push(self.key(&format!("ix:session:{s}")));
        }
        if let Some(p) = r.parent() {
            keys.push(self.key(&format!("ix:parent:{p}")));
        }
        if let Some(g) = r.group() {
            keys.push(self.key(&format!("ix:group:{g}")));
        }
        if let Some(name) = &r.spec().name {
            keys.push(self.name_key(name));
        }
        // What takes no slot (tracked operations, agents' MCP servers): the
        // cluster-wide count (`RedisClaims`' `TAKE_SLOT`) leaves it out.
        if !r.takes_a_slot() {
            keys.push(self.key("ix:tracked"));
        }
        for (k, v) in &r.spec().labels {
            keys.push(self.key(&format!("ix:label:{k}={v}")));
        }
        keys
    }

    /// The index set of the records named `name`.
    fn name_key(&self, name: &bpm_domain::ProcessName) -> String {
        self.key(&format!("ix:name:{name}"))
    }

    /// The keys and arguments of one write of `record` (`PUT_FN`): a
    /// creation, or an update of the version `expected`.
    fn put_call(
        &self,
        record: &ProcessRecord,
        expected: Option<u64>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::Refused(format!("record {}: {e}", record.id())))?;
        let mut keys = vec![
            self.record_key(record.id()),
            self.key("all"),
            self.key("ended"),
            self.events_stream(),
        ];
        keys.extend(self.index_keys(record));
        let (fence_key, epoch) = self.fence_args();
        let (class, score) = bpm_domain::cluster::placement::Queued::of(record)
            .map_or((String::new(), "0".to_owned()), |q| {
                (q.class, q.score.to_string())
            });
        let args = vec![
            if expected.is_some() {
                "update"
            } else {
                "create"
            }
            .to_owned(),
            expected.unwrap_or(0).to_string(),
            record.version().to_string(),
            json,
            record.id().to_string(),
            record
                .lifecycle()
                .ended_at()
                .map_or(String::new(), |t| t.as_millis().to_string()),
            self.changes_channel(),
            record.state().as_str().to_owned(),
            fence_key,
            epoch.to_string(),
            class,
            score,
            self.base.clone(),
            // The token of the record's current attempt while it holds one,
            // for scripts that refuse a stale writer (0: none does).
            record.current_token().unwrap_or(0).to_string(),
        ];
        Ok((keys, args))
    }

    /// Runs `inv` with `keys` and `args` after those it has; its answer.
    async fn invoke(
        &self,
        mut inv: redis::ScriptInvocation<'_>,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn put(&self, record: &ProcessRecord, expected: Option<u64>) -> Result<(), StoreError> {
        self.check_lease()?;
        let (keys, args) = self.put_call(record, expected)?;
        let epoch = self.fence_args().1;
        let answer = self.invoke(self.put.prepare_invoke(), keys, args).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("fenced") => Err(self.fenced_error(epoch, answer.get(1))),
            Some("exists") => Err(StoreError::AlreadyExists(record.id())),
            Some("missing") => Err(StoreError::NotFound(record.id())),
            Some("conflict") => Err(StoreError::Conflict {
                id: record.id(),
                expected: expected.unwrap_or(0),
                actual: answer.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            }),
            other => Err(StoreError::Unavailable(format!(
                "Redis: unexpected answer {other:?}"
            ))),
        }
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<ProcessRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in batch {
                pipe.hget(format!("{}r:{id}", self.base), "j");
            }
            let jsons: Vec<Option<String>> = super::read!(self.conn, |c| pipe.query_async(&mut c))
                .map_err(|e| unavailable(&e))?;
            for json in jsons.into_iter().flatten() {
                let r: ProcessRecord = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Unavailable(format!("Redis holds an unreadable record: {e}"))
                })?;
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn delete_ids(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        self.check_lease()?;
        let mut inv = self.delete.prepare_invoke();
        inv.key(self.key("all"))
            .key(self.key("ended"))
            .key(self.events_stream());
        let (fence_key, epoch) = self.fence_args();
        inv.arg(&self.base)
            .arg(self.changes_channel())
            .arg(fence_key)
            .arg(epoch);
        for id in ids {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        let answer: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        if answer.first().map(String::as_str) == Some("fenced") {
            return Err(self.fenced_error(epoch, answer.get(1)));
        }
        Ok(answer)
    }
}

fn kind_name(r: &ProcessRecord) -> String {
    serde_json::to_value(r.spec().kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[async_trait]
impl Failover for RedisStore {
    async fn fail_over(
        &self,
        lease: &Lease,
        old: &ProcessRecord,
        expected: u64,
        replacement: &ProcessRecord,
    ) -> Result<FailedOver, StoreError> {
        self.check_lease()?;
        let (mut old_keys, mut old_args) = self.put_call(old, Some(expected))?;
        let (new_keys, new_args) = self.put_call(replacement, None)?;
        let due = ClusterTiming::failover_after(lease, old.spec().stop.grace);
        let mut inv = self.failover.prepare_invoke();
        inv.key(super::node_key(&self.base, &lease.node))
            .key(super::epoch_key(&self.base, &lease.node));
        inv.arg(lease.epoch)
            .arg(u64::try_from(due.as_millis()).unwrap_or(u64::MAX))
            .arg(old_keys.len());
        old_keys.extend(new_keys);
        old_args.extend(new_args);
        let answer = self.invoke(inv, old_keys, old_args).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(FailedOver::Replaced),
            Some("held") => Ok(FailedOver::NotLost),
            Some("conflict" | "missing") => Ok(FailedOver::Changed),
            Some("exists") => Err(StoreError::AlreadyExists(replacement.id())),
            Some("fenced") => Err(self.fenced_error(self.fence_args().1, answer.get(1))),
            other => Err(StoreError::Unavailable(format!(
                "Redis: unexpected answer {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl ProcessStore for RedisStore {
    /// The server's memory is its own to guard: a write it refuses (over
    /// `maxmemory`) comes back as that write's error.
    fn room(&self, _records: usize) -> Result<(), StoreError> {
        Ok(())
    }

    /// Redis keeps no journal of bpm's to repair at open.
    fn recovery_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    async fn reachable(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let down = |e: redis::RedisError| {
            StoreError::Unavailable(format!(
                "Redis does not answer ({e}): nothing was started; records already taken are written again when it does"
            ))
        };
        // One round trip either way: a fenced daemon takes no new work, nor
        // one whose lease lapsed (asked second: fenced says more).
        let Some(fence) = &self.fence else {
            return redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(down);
        };
        let current: Option<u64> = conn.get(fence.key(&self.base)).await.map_err(down)?;
        let epoch = fence.epoch();
        match current {
            Some(current) if current > epoch => {
                Err(self.fenced_error(epoch, Some(&current.to_string())))
            }
            _ => self.check_lease(),
        }
    }

    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        self.put(record, None).await
    }

    async fn live_named(
        &self,
        record: &ProcessRecord,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let Some(name) = &record.spec().name else {
            return Ok(None);
        };
        let key = self.name_key(name);
        let ids: Vec<String> =
            super::read!(self.conn, |c| c.smembers(&key)).map_err(|e| unavailable(&e))?;
        Ok(self
            .fetch(&ids)
            .await?
            .into_iter()
            .find(|r| r.id() != record.id() && !r.is_terminal()))
    }

    async fn create_named(
        &self,
        record: &ProcessRecord,
    ) -> Result<Option<ProcessRecord>, StoreError> {
        let Some(name) = &record.spec().name else {
            return self.create(record).await.map(|()| None);
        };
        self.check_lease()?;
        let (keys, mut args) = self.put_call(record, None)?;
        args.push(self.name_key(name));
        let epoch = self.fence_args().1;
        let answer = self.invoke(self.named.prepare_invoke(), keys, args).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(None),
            Some("named") => {
                let id = answer
                    .get(1)
                    .and_then(|id| id.parse::<ProcessId>().ok())
                    .ok_or_else(|| {
                        StoreError::Unavailable("Redis: a name's holder without an id".into())
                    })?;
                // Ended or deleted since: the name is free; try again.
                match self.get(id).await {
                    Ok(live) if !live.is_terminal() => Ok(Some(live)),
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        Box::pin(self.create_named(record)).await
                    }
                    Err(e) => Err(e),
                }
            }
            Some("fenced") => Err(self.fenced_error(epoch, answer.get(1))),
            Some("exists") => Err(StoreError::AlreadyExists(record.id())),
            other => Err(StoreError::Unavailable(format!(
                "Redis: unexpected answer {other:?}"
            ))),
        }
    }

    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        let key = self.record_key(id);
        let json: Option<String> =
            super::read!(self.conn, |c| c.hget(&key, "j")).map_err(|e| unavailable(&e))?;
        let json = json.ok_or(StoreError::NotFound(id))?;
        serde_json::from_str(&json).map_err(|e| {
            StoreError::Unavailable(format!("Redis holds an unreadable record {id}: {e}"))
        })
    }

    async fn update(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.put(record, Some(expected_version)).await
    }

    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        let gone = self.delete_ids(&[id.to_string()]).await?;
        if gone.is_empty() {
            Err(StoreError::NotFound(id))
        } else {
            Ok(())
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        let mut sets = Vec::new();
        if let Some(s) = &filter.session {
            sets.push(self.key(&format!("ix:session:{s}")));
        }
        if let Some(p) = filter.parent {
            sets.push(self.key(&format!("ix:parent:{p}")));
        }
        if let Some(n) = &filter.node {
            sets.push(self.key(&format!("ix:node:{n}")));
        }
        if let Some(g) = &filter.group {
            sets.push(self.key(&format!("ix:group:{g}")));
        }
        if let Some(k) = filter.kind {
            let name = serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            sets.push(self.key(&format!("ix:kind:{name}")));
        }
        for (k, v) in &filter.labels {
            sets.push(self.key(&format!("ix:label:{k}={v}")));
        }
        let limit = filter.limit.unwrap_or(usize::MAX);
        let ids: Vec<String> = if sets.is_empty() && filter.states.is_empty() {
            // Everything, in id order, paged by the server.
            let from = filter.after.map_or("-".to_owned(), |a| format!("({a}"));
            let count = isize::try_from(limit).unwrap_or(isize::MAX);
            let mut cmd = redis::cmd("ZRANGEBYLEX");
            cmd.arg(self.key("all"))
                .arg(from)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(if count == isize::MAX { -1 } else { count });
            super::read!(self.conn, |c| cmd.query_async(&mut c)).map_err(|e| unavailable(&e))?
        } else {
            let mut candidates: Option<BTreeSet<String>> = None;
            if !sets.is_empty() {
                let found: BTreeSet<String> =
                    super::read!(self.conn, |c| c.sinter(&sets)).map_err(|e| unavailable(&e))?;
                candidates = Some(found);
            }
            if !filter.states.is_empty() {
                let keys: Vec<String> = filter
                    .states
                    .iter()
                    .map(|s| self.key(&format!("ix:state:{s}")))
                    .collect();
                let in_states: BTreeSet<String> =
                    super::read!(self.conn, |c| c.sunion(&keys)).map_err(|e| unavailable(&e))?;
                candidates = Some(match candidates {
                    Some(c) => c.intersection(&in_states).cloned().collect(),
                    None => in_states,
                });
            }
            let after = filter.after.map(|a| a.to_string());
            candidates
                .unwrap_or_default()
                .into_iter()
                .filter(|id| after.as_ref().is_none_or(|a| id > a))
                .take(limit)
                .collect()
        };
        let mut records = self.fetch(&ids).await?;
        // The indexes are exact; checking again costs little and guards against a foreign writer.
        records.retain(|r| filter.matches(r));
        Ok(records)
    }
}
