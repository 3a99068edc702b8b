//! Output in Redis, capped per process, in the same layout as the file store:
//! segments of raw bytes (`o:ID:d:START`), their run indexes (`o:ID:i:START`),
//! a sorted set of segment starts, and the end offset. One Lua script appends,
//! rotates and trims atomically.
//!
//! While Redis is out of reach, output is held in memory, in order, and
//! replayed once Redis answers, so an outage delays output rather than
//! losing it. What is held is bounded (a process's cap, and [`HELD_MAX`] in
//! all); what goes past the bound, or is held by a process that dies, is
//! lost, and the first is counted in `o:ID:dropped` for readers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::ProcessId;
use bpm_ports::{
    Cursor, OutputChunk, OutputError, OutputPiece, OutputQuery, OutputStore, Stream, StreamSelect,
};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use bpm_adapters::segments::{
    Segment, SegmentedLog, parse_runs, plan_read, stream_byte, tail_windows,
};

const APPEND: &str = r"
local base, stream, data, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- An append that timed out may still land, and then be replayed: its token
-- says it was taken already.
if redis.call('LPOS', KEYS[3], ARGV[5]) then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, 63)
local segmax = math.max(math.floor(cap / 2), 1)
local len = #data
local e = tonumber(redis.call('GET', KEYS[2]) or '0')
if len > segmax then
  -- Only the newest part fits a segment; its front is dropped, so all older
  -- output goes too, and what is kept has no gap.
  data = string.sub(data, len - segmax + 1)
  e = e + (len - segmax)
  len = segmax
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    redis.call('DEL', base .. 'd:' .. old, base .. 'i:' .. old)
  end
  redis.call('DEL', KEYS[1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1)
local start, seglen = nil, 0
if #last > 0 then
  start = tonumber(last[1])
  seglen = redis.call('STRLEN', base .. 'd:' .. last[1])
end
if start == nil or start + seglen ~= e or seglen + len > segmax then
  start = e
  redis.call('ZADD', KEYS[1], start, tostring(start))
end
local s = tostring(start)
redis.call('APPEND', base .. 'd:' .. s, data)
local ikey = base .. 'i:' .. s
local ilen = redis.call('STRLEN', ikey)
local extended = false
if ilen >= 5 then
  local run = redis.call('GETRANGE', ikey, ilen - 5, ilen - 1)
  if string.sub(run, 1, 1) == stream then
    local n = struct.unpack('<I4', string.sub(run, 2)) + len
    if n <= 4294967295 then
      redis.call('SETRANGE', ikey, ilen - 4, struct.pack('<I4', n))
      extended = true
    end
  end
end
if not extended then redis.call('APPEND', ikey, stream .. struct.pack('<I4', len)) end
e = e + len
redis.call('SET', KEYS[2], e)
while redis.call('ZCARD', KEYS[1]) > 1 do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if e - tonumber(first) <= cap then break end
  redis.call('DEL', base .. 'd:' .. first, base .. 'i:' .. first)
  redis.call('ZREM', KEYS[1], first)
end
return e
";

/// The most output held in memory, over all processes, while Redis is out of reach.
pub(crate) const HELD_MAX: u64 = 64 << 20;

/// How often a replay tries Redis again.
const RETRY: Duration = Duration::from_millis(250);

/// Adds ARGV[2] to a process's count of dropped bytes, once per token
/// (ARGV[1]): not at all if an append with that token was taken.
const DROPPED: &str = r"
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, 63)
redis.call('INCRBY', KEYS[2], ARGV[2])
return 1
";

/// Output in Redis.
pub struct RedisOutput {
    out: Arc<Sender>,
    held: Arc<Mutex<Held>>,
}

/// Output waiting for Redis: while any is held, every append joins it (so
/// order is kept, and no append waits for a Redis that does not answer),
/// and one task replays it.
#[derive(Default)]
struct Held {
    processes: HashMap<ProcessId, HeldOutput>,
    bytes: u64,
    replaying: bool,
}

#[derive(Default)]
struct HeldOutput {
    runs: VecDeque<HeldRun>,
    bytes: u64,
    /// Bytes dropped past the bounds, to add to the process's count, each
    /// with the token that makes the addition happen once: a run that was
    /// tried keeps its own token (it may have landed, and then it is not
    /// lost); the runs never tried share one.
    drops: Vec<(String, u64)>,
}

struct HeldRun {
    stream: Stream,
    data: Vec<u8>,
    token: String,
    /// Whether it was sent once, and may have landed though the send failed.
    tried: bool,
}

impl Held {
    /// Holds `data`, dropping the process's oldest held output past its
    /// `cap` (Redis would rotate it away too), or `data` itself past
    /// [`HELD_MAX`].
    fn hold(&mut self, id: ProcessId, run: HeldRun, cap: u64, fresh: impl Fn() -> String) {
        let n = run.data.len() as u64;
        let process = self.processes.entry(id).or_default();
        if self.bytes + n > HELD_MAX {
            process.drop_run(run, &fresh);
            return;
        }
        process.runs.push_back(run);
        process.bytes += n;
        self.bytes += n;
        while process.bytes > cap
            && let Some(old) = process.runs.pop_front()
        {
            let len = old.data.len() as u64;
            process.bytes -= len;
            self.bytes -= len;
            process.drop_run(old, &fresh);
        }
    }
}

impl HeldOutput {
    fn drop_run(&mut self, run: HeldRun, fresh: impl Fn() -> String) {
        let len = run.data.len() as u64;
        if run.tried {
            self.drops.push((run.token, len));
        } else if let Some((_, shared)) =
            self.drops.iter_mut().find(|(t, _)| t.ends_with(":shared"))
        {
            *shared += len;
        } else {
            self.drops.push((format!("{}:shared", fresh()), len));
        }
    }
}

fn unavailable(e: &redis::RedisError) -> OutputError {
    OutputError::Unavailable(format!("Redis: {e}"))
}

impl RedisOutput {
    /// Connects to `url` for the deployment `prefix`, keeping at most `cap` bytes per process.
    ///
    /// # Errors
    /// [`OutputError::Unavailable`] if Redis cannot be reached or the URL is invalid.
    pub async fn connect(url: &str, prefix: &str, cap: u64) -> Result<Self, OutputError> {
        let conn = super::connect(url)
            .await
            .map_err(OutputError::Unavailable)?;
        Ok(RedisOutput {
            out: Arc::new(Sender {
                conn,
                base: super::base(prefix),
                cap: cap.max(2),
                append: Script::new(APPEND),
                dropped: Script::new(DROPPED),
                writer: uuid::Uuid::new_v4(),
                next: std::sync::atomic::AtomicU64::new(0),
            }),
            held: Arc::new(Mutex::new(Held::default())),
        })
    }

    /// How many bytes wait in memory for Redis.
    pub fn held_bytes(&self) -> u64 {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Starts the replay of held output, unless one runs.
    fn replay(&self) {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.replaying {
                return;
            }
            held.replaying = true;
        }
        let (sender, held) = (self.out.clone(), self.held.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY).await;
                if sender.replay(&held).await {
                    return;
                }
            }
        });
    }

    fn process(&self, id: ProcessId) -> String {
        format!("{}o:{id}:", self.out.base)
    }

    async fn load(&self, id: ProcessId) -> Result<SegmentedLog, OutputError> {
        let base = self.process(id);
        let mut heads = redis::pipe();
        heads
            .zrange(format!("{base}segs"), 0, -1)
            .get(format!("{base}end"))
            .get(format!("{base}dropped"));
        let (starts, end, dropped): (Vec<u64>, Option<u64>, Option<u64>) =
            super::read!(self.out.conn, |c| heads.query_async(&mut c))
                .map_err(|e| unavailable(&e))?;
        let mut log = SegmentedLog {
            segments: Vec::with_capacity(starts.len()),
            end: end.unwrap_or(0),
            dropped: dropped.unwrap_or(0),
            dropped_unsaved: false,
        };
        if starts.is_empty() {
            return Ok(log);
        }
        let mut pipe = redis::pipe();
        for s in &starts {
            pipe.get(format!("{base}i:{s}"))
                .strlen(format!("{base}d:{s}"));
        }
        let parts: Vec<redis::Value> = super::read!(self.out.conn, |c| pipe.query_async(&mut c))
            .map_err(|e| unavailable(&e))?;
        for (i, start) in starts.iter().enumerate() {
            let idx: Vec<u8> = redis::from_redis_value(parts[2 * i].clone()).unwrap_or_default();
            let data_len: u64 = redis::from_redis_value(parts[2 * i + 1].clone()).unwrap_or(0);
            log.segments.push(Segment {
                start: *start,
                runs: parse_runs(&idx, data_len),
            });
        }
        Ok(log)
    }

    async fn read_log(
        &self,
        id: ProcessId,
        log: &SegmentedLog,
        query: &OutputQuery,
    ) -> Result<OutputChunk, OutputError> {
        let plan = plan_read(log, query);
        let base = self.process(id);
        let mut pipe = redis::pipe();
        for f in &plan.fetches {
            let end = isize::try_from(f.at + f.len).unwrap_or(isize::MAX) - 1;
            pipe.getrange(
                format!("{base}d:{}", f.segment),
                isize::try_from(f.at).unwrap_or(isize::MAX),
                end,
            );
        }
        let datas: Vec<Vec<u8>> = if plan.fetches.is_empty() {
            Vec::new()
        } else {
            super::read!(self.out.conn, |c| pipe.query_async(&mut c))
                .map_err(|e| unavailable(&e))?
        };
        let pieces = plan
            .fetches
            .iter()
            .zip(datas)
            .map(|(f, data)| OutputPiece {
                stream: f.stream,
                offset: f.offset,
                data,
            })
            .collect();
        Ok(OutputChunk {
            pieces,
            next: plan.next,
            skipped: plan.skipped,
            truncated: plan.truncated,
            dropped: log.dropped,
        })
    }
}

/// What an append needs, apart from the store, for the replay task.
struct Sender {
    conn: ConnectionManager,
    base: String,
    cap: u64,
    append: Script,
    dropped: Script,
    /// This writer, in the tokens of its appends.
    writer: uuid::Uuid,
    /// The number of its next append.
    next: std::sync::atomic::AtomicU64,
}

impl Sender {
    /// A token no other append carries.
    fn token(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.writer.simple())
    }

    async fn send(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
        token: &str,
    ) -> redis::RedisResult<u64> {
        let base = format!("{}o:{id}:", self.base);
        let mut inv = self.append.prepare_invoke();
        inv.key(format!("{base}segs"))
            .key(format!("{base}end"))
            .key(format!("{base}taken"))
            .arg(&base)
            .arg(vec![stream_byte(stream)])
            .arg(data)
            .arg(self.cap)
            .arg(token);
        inv.invoke_async(&mut self.conn.clone()).await
    }

    /// Sends held output in order until none is left (`true`), or Redis
    /// fails again (`false`: what was not sent stays first in line).
    async fn replay(&self, held: &Mutex<Held>) -> bool {
        enum Next {
            Drop(ProcessId, String, u64),
            Run(ProcessId, HeldRun),
            Done(ProcessId),
        }
        let lock = || held.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let next = {
                let mut held = lock();
                let Some((&id, process)) = held.processes.iter_mut().next() else {
                    held.replaying = false;
                    return true;
                };
                // Drops first: a tried run's token is looked for among the
                // latest appends Redis took, before more push it out.
                if let Some((token, len)) = process.drops.first().cloned() {
                    Next::Drop(id, token, len)
                } else if let Some(run) = process.runs.pop_front() {
                    process.bytes -= run.data.len() as u64;
                    held.bytes -= run.data.len() as u64;
                    Next::Run(id, run)
                } else {
                    Next::Done(id)
                }
            };
            match next {
                Next::Drop(id, token, len) => {
                    let base = format!("{}o:{id}:", self.base);
                    let mut inv = self.dropped.prepare_invoke();
                    inv.key(format!("{base}taken"))
                        .key(format!("{base}dropped"))
                        .arg(&token)
                        .arg(len);
                    let counted: redis::RedisResult<i64> =
                        inv.invoke_async(&mut self.conn.clone()).await;
                    if counted.is_err() {
                        return false;
                    }
                    if let Some(process) = lock().processes.get_mut(&id) {
                        process.drops.retain(|(t, _)| *t != token);
                    }
                }
                Next::Run(id, mut run) => {
                    if self
                        .send(id, run.stream, &run.data, &run.token)
                        .await
                        .is_err()
                    {
                        let mut held = lock();
                        held.bytes += run.data.len() as u64;
                        let process = held.processes.entry(id).or_default();
                        process.bytes += run.data.len() as u64;
                        run.tried = true;
                        process.runs.push_front(run);
                        return false;
                    }
                }
                Next::Done(id) => {
                    let mut held = lock();
                    if held
                        .processes
                        .get(&id)
                        .is_some_and(|p| p.runs.is_empty() && p.drops.is_empty())
                    {
                        held.processes.remove(&id);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl OutputStore for RedisOutput {
    /// While Redis is out of reach (or output held from an outage still
    /// waits), `data` is held in memory and `Ok` returns the cursor of the
    /// output Redis has taken so far, which the held output will follow.
    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError> {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.replaying {
                let run = HeldRun {
                    stream,
                    data: data.to_vec(),
                    token: self.out.token(),
                    tried: false,
                };
                held.hold(id, run, self.out.cap, || self.out.token());
                return Ok(Cursor(0));
            }
        }
        let token = self.out.token();
        match self.out.send(id, stream, data, &token).await {
            Ok(end) => Ok(Cursor(end)),
            // Out of reach, or refusing (out of memory, read only): held
            // either way, and tried again.
            Err(e) => {
                tracing::warn!(%id, error = %e, "Redis did not take output: it is held in memory until Redis takes it");
                self.held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .hold(
                        id,
                        HeldRun {
                            stream,
                            data: data.to_vec(),
                            token,
                            tried: true,
                        },
                        self.out.cap,
                        || self.out.token(),
                    );
                self.replay();
                Ok(Cursor(0))
            }
        }
    }

    async fn read(&self, id: ProcessId, query: &OutputQuery) -> Result<OutputChunk, OutputError> {
        let log = self.load(id).await?;
        self.read_log(id, &log, query).await
    }

    async fn tail(
        &self,
        id: ProcessId,
        stream: StreamSelect,
        lines: usize,
        max_bytes: usize,
    ) -> Result<OutputChunk, OutputError> {
        let log = self.load(id).await?;
        let mut tail = Vec::new();
        for start in tail_windows(&log) {
            let q = OutputQuery {
                stream,
                cursor: Some(Cursor(start)),
                max_bytes: usize::MAX,
                tail_lines: None,
            };
            let chunk = self.read_log(id, &log, &q).await?;
            let pieces: Vec<&OutputPiece> = chunk.pieces.iter().collect();
            let (last, found) = bpm_adapters::tail::last_lines(&pieces, lines);
            tail = last;
            // Past `max_bytes` of the lines, no wider window can change the answer.
            if found || bpm_adapters::tail::bytes(&tail) >= max_bytes {
                break;
            }
        }
        let truncated = bpm_adapters::tail::keep_newest(&mut tail, max_bytes);
        Ok(OutputChunk {
            pieces: tail,
            next: Cursor(log.end),
            dropped: log.dropped,
            truncated,
            ..OutputChunk::default()
        })
    }

    async fn remove(&self, id: ProcessId) -> Result<(), OutputError> {
        let base = self.process(id);
        let mut conn = self.out.conn.clone();
        let starts: Vec<u64> = conn
            .zrange(format!("{base}segs"), 0, -1)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut keys = vec![
            format!("{base}segs"),
            format!("{base}end"),
            format!("{base}dropped"),
            format!("{base}taken"),
        ];
        for s in starts {
            keys.push(format!("{base}d:{s}"));
            keys.push(format!("{base}i:{s}"));
        }
        let () = conn.del(keys).await.map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
