//! Output in Redis, capped per process, in the same layout as the file store:
//! segments of raw bytes (`o:ID:d:START`), their run indexes (`o:ID:i:START`),
//! a sorted set of segment starts, and the end offset. One Lua script appends,
//! rotates and trims atomically.

use async_trait::async_trait;
use bpm_domain::ProcessId;
use bpm_ports::{
    Cursor, OutputChunk, OutputError, OutputPiece, OutputQuery, OutputStore, Stream, StreamSelect,
};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::segments::{Segment, SegmentedLog, parse_runs, plan_read, stream_byte, tail_windows};

const APPEND: &str = r"
local base, stream, data, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
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

/// Output in Redis.
pub struct RedisOutput {
    conn: ConnectionManager,
    base: String,
    cap: u64,
    append: Script,
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
            conn,
            base: super::base(prefix),
            cap: cap.max(2),
            append: Script::new(APPEND),
        })
    }

    fn process(&self, id: ProcessId) -> String {
        format!("{}o:{id}:", self.base)
    }

    async fn load(&self, id: ProcessId) -> Result<SegmentedLog, OutputError> {
        let base = self.process(id);
        let mut conn = self.conn.clone();
        let (starts, end): (Vec<u64>, Option<u64>) = redis::pipe()
            .zrange(format!("{base}segs"), 0, -1)
            .get(format!("{base}end"))
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut log = SegmentedLog {
            segments: Vec::with_capacity(starts.len()),
            end: end.unwrap_or(0),
        };
        if starts.is_empty() {
            return Ok(log);
        }
        let mut pipe = redis::pipe();
        for s in &starts {
            pipe.get(format!("{base}i:{s}"))
                .strlen(format!("{base}d:{s}"));
        }
        let parts: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
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
        let mut conn = self.conn.clone();
        let datas: Vec<Vec<u8>> = if plan.fetches.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn)
                .await
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
        })
    }
}

#[async_trait]
impl OutputStore for RedisOutput {
    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError> {
        let base = self.process(id);
        let mut inv = self.append.prepare_invoke();
        inv.key(format!("{base}segs"))
            .key(format!("{base}end"))
            .arg(&base)
            .arg(vec![stream_byte(stream)])
            .arg(data)
            .arg(self.cap);
        let mut conn = self.conn.clone();
        let end: u64 = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Cursor(end))
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
            let (last, found) = crate::tail::last_lines(&pieces, lines);
            tail = last;
            if found {
                break;
            }
        }
        Ok(OutputChunk {
            pieces: tail,
            next: Cursor(log.end),
            ..OutputChunk::default()
        })
    }

    async fn remove(&self, id: ProcessId) -> Result<(), OutputError> {
        let base = self.process(id);
        let mut conn = self.conn.clone();
        let starts: Vec<u64> = conn
            .zrange(format!("{base}segs"), 0, -1)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut keys = vec![format!("{base}segs"), format!("{base}end")];
        for s in starts {
            keys.push(format!("{base}d:{s}"));
            keys.push(format!("{base}i:{s}"));
        }
        let () = conn.del(keys).await.map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
