//! Commands for another node's records, through Redis (see
//! [`bpm_ports::CommandBus`]). Each node has a stream (`commands:NODE`)
//! read by one consumer group (`daemons`) whose consumer is the node's
//! daemon. A sender adds `{id, reply, body}` to the owner's stream and
//! waits on its own reply list (`reply:ID`, `BLPOP` on a connection of its
//! own) for the answer.
//!
//! Delivery is at least once: a command the daemon read but never answered
//! (it died) stays pending in the group, and the next daemon of the node
//! reads its pending entries first. Each command is carried out at most
//! once: before carrying one out, a daemon marks it taken (`cmd:ID`, one
//! script with the check); a command found answered is answered again from
//! its kept answer, and one found taken but unanswered (its daemon died
//! while carrying it out) is answered with an error saying so, never carried
//! out twice. A sender that gives up withdraws its command if no daemon took
//! it yet, and its error says which of the two happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bpm_domain::NodeId;
use bpm_ports::{
    Call, CommandBus, CommandMark, Delivery, ManagerError, Reply, answer_without_carrying_out,
    not_answering, only_if_alive, unanswered,
};
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};

use super::RedisMembership;

/// The consumer group of every node's command stream.
const GROUP: &str = "daemons";
/// How long a command's answer and its mark are kept.
const KEPT: Duration = Duration::from_mins(10);
/// How long one blocking read waits, under the connections' answer timeout.
const BLOCK: Duration = Duration::from_secs(1);

/// KEYS: the command's mark. ARGV: seconds to keep it. `new` (now taken),
/// `taken` (taken before, not answered), or `answered` and the answer.
const TAKE: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'state', 'answer')
if cur[1] == 'answered' then return {'answered', cur[2]} end
if cur[1] == 'taken' then return {'taken', ''} end
if cur[1] == 'withdrawn' then return {'withdrawn', ''} end
redis.call('HSET', KEYS[1], 'state', 'taken')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {'new', ''}
";

/// KEYS: the mark, the reply list, the stream. ARGV: the answer, seconds
/// to keep it, the group, the entry's id.
const ANSWER: &str = r"
redis.call('HSET', KEYS[1], 'state', 'answered', 'answer', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return 1
";

/// KEYS: the mark, the stream. ARGV: seconds to keep the mark, the entry's
/// id. Withdraws a command no daemon took: `withdrawn`, or the mark's state.
const WITHDRAW: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
redis.call('HSET', KEYS[1], 'state', 'withdrawn')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[2])
return 'withdrawn'
";

/// Where to answer a command read from the stream.
struct Pending {
    entry: String,
    reply: String,
}

/// A [`CommandBus`] on Redis (see the module docs).
pub struct RedisCommands {
    conn: ConnectionManager,
    /// For this node's blocking reads of its stream, which hold their
    /// connection while they wait.
    reading: ConnectionManager,
    /// For `BLPOP`, which holds its connection while it waits.
    waiting: tokio::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>,
    client: redis::Client,
    base: String,
    node: NodeId,
    membership: RedisMembership,
    take: Script,
    answer_script: Script,
    withdraw: Script,
    /// Commands read and not yet answered, by command id.
    pending: Mutex<HashMap<String, Pending>>,
    /// Whether this node's own unanswered entries were read again yet.
    caught_up: AtomicBool,
}

fn connection(e: &redis::RedisError) -> ManagerError {
    ManagerError::Connection(format!("Redis: {e}"))
}

impl RedisCommands {
    /// The bus of node `node` on `url`, deployment `prefix`; makes its
    /// stream's consumer group if there is none.
    ///
    /// # Errors
    /// [`ManagerError::Connection`] if Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, node: NodeId) -> Result<Self, ManagerError> {
        let conn = super::connect(url)
            .await
            .map_err(ManagerError::Connection)?;
        let reading = super::connect(url)
            .await
            .map_err(ManagerError::Connection)?;
        let client = redis::Client::open(url)
            .map_err(|e| ManagerError::Connection(format!("invalid Redis URL: {e}")))?;
        let membership = RedisMembership::connect(url, prefix)
            .await
            .map_err(|e| ManagerError::Connection(e.to_string()))?;
        let bus = RedisCommands {
            conn,
            reading,
            waiting: tokio::sync::Mutex::new(Vec::new()),
            client,
            base: super::base(prefix),
            node,
            membership,
            take: Script::new(TAKE),
            answer_script: Script::new(ANSWER),
            withdraw: Script::new(WITHDRAW),
            pending: Mutex::new(HashMap::new()),
            caught_up: AtomicBool::new(false),
        };
        bus.make_group(&bus.node.clone()).await?;
        Ok(bus)
    }

    fn stream(&self, node: &NodeId) -> String {
        format!("{}commands:{node}", self.base)
    }

    fn mark(&self, id: &str) -> String {
        format!("{}cmd:{id}", self.base)
    }

    fn reply(&self, id: &str) -> String {
        format!("{}reply:{id}", self.base)
    }

    async fn make_group(&self, node: &NodeId) -> Result<(), ManagerError> {
        let mut conn = self.conn.clone();
        let made: Result<(), _> = conn
            .xgroup_create_mkstream(self.stream(node), GROUP, "0")
            .await;
        match made {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(connection(&e)),
        }
    }

    /// Waits for one answer on `reply`, at most `within`.
    async fn wait_answer(
        &self,
        reply: &str,
        within: Duration,
    ) -> Result<Option<String>, ManagerError> {
        let pooled = self.waiting.lock().await.pop();
        let mut conn = if let Some(conn) = pooled {
            conn
        } else {
            // Its answers may take a blocking read's time, and more.
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
            self.client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| connection(&e))?
        };
        let deadline = Instant::now() + within;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(None);
            }
            let slice = left.min(BLOCK);
            let popped: Result<Option<(String, String)>, _> =
                conn.blpop(reply, slice.as_secs_f64()).await;
            match popped {
                Ok(Some((_, answer))) => break Ok(Some(answer)),
                Ok(None) => {}
                Err(e) => break Err(connection(&e)),
            }
        };
        if answer.is_ok() {
            self.waiting.lock().await.push(conn);
        }
        answer
    }
}

impl RedisCommands {
    /// Answers the command `id` read from the stream, keeps the answer for a
    /// delivery again, and takes the entry off the queue.
    async fn reply_to(
        &self,
        id: &str,
        answer: &Result<Reply, ManagerError>,
    ) -> Result<(), ManagerError> {
        let Some(pending) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
        else {
            return Ok(());
        };
        let text = serde_json::to_string(answer).map_err(|e| {
            ManagerError::BadRequest(format!("the answer could not be encoded: {e}"))
        })?;
        let mut conn = self.conn.clone();
        self.answer_script
            .key(self.mark(id))
            .key(&pending.reply)
            .key(self.stream(&self.node))
            .arg(text)
            .arg(KEPT.as_secs())
            .arg(GROUP)
            .arg(&pending.entry)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| connection(&e))
    }
}

/// The mark a script answered with (`new` for one it just took).
fn mark_of(state: &str) -> CommandMark {
    match state {
        "new" => CommandMark::New,
        "answered" => CommandMark::Answered,
        "withdrawn" => CommandMark::Withdrawn,
        _ => CommandMark::Taken,
    }
}

fn decode(text: &str) -> Result<Reply, ManagerError> {
    serde_json::from_str::<Result<Reply, ManagerError>>(text).unwrap_or_else(|e| {
        Err(ManagerError::Connection(format!(
            "an answer could not be read: {e}"
        )))
    })
}

#[async_trait]
impl CommandBus for RedisCommands {
    async fn send(
        &self,
        node: &NodeId,
        call: Call,
        within: Duration,
    ) -> Result<Reply, ManagerError> {
        let started = Instant::now();
        only_if_alive(&self.membership, node, &call).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let reply = self.reply(&id);
        let body = serde_json::to_string(&call)
            .map_err(|e| ManagerError::BadRequest(format!("cannot encode the command: {e}")))?;
        let mut conn = self.conn.clone();
        let entry: String = redis::cmd("XADD")
            .arg(self.stream(node))
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("id")
            .arg(&id)
            .arg("reply")
            .arg(&reply)
            .arg("body")
            .arg(body)
            .query_async(&mut conn)
            .await
            .map_err(|e| connection(&e))?;
        if let Some(answer) = self.wait_answer(&reply, within).await? {
            return decode(&answer);
        }
        // No answer in time: withdraw the command if no daemon took it.
        let state: String = self
            .withdraw
            .key(self.mark(&id))
            .key(self.stream(node))
            .arg(KEPT.as_secs())
            .arg(&entry)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| connection(&e))?;
        let mark = mark_of(&state);
        if mark == CommandMark::Answered
            && let Ok(Some(answer)) = self.wait_answer(&reply, Duration::from_millis(10)).await
        {
            // It answered as the wait ended.
            return decode(&answer);
        }
        Err(not_answering(
            &self.membership,
            node,
            &call,
            started.elapsed(),
            unanswered(mark).into(),
        )
        .await)
    }

    async fn receive(&self) -> Result<Option<Delivery>, ManagerError> {
        let mut conn = self.conn.clone();
        // This node's unanswered entries first, then new ones, waiting.
        let caught_up = self.caught_up.load(Ordering::Relaxed);
        let from = if caught_up { ">" } else { "0" };
        let options = StreamReadOptions::default()
            .group(GROUP, self.node.as_str())
            .count(1);
        let options = if caught_up {
            options.block(BLOCK.as_millis().try_into().unwrap_or(1_000))
        } else {
            options
        };
        let read: Option<StreamReadReply> = self
            .reading
            .clone()
            .xread_options(&[self.stream(&self.node)], &[from], &options)
            .await
            .map_err(|e| connection(&e))?;
        let entry = read
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        let Some(entry) = entry else {
            self.caught_up.store(true, Ordering::Relaxed);
            return Ok(None);
        };
        let (Some(id), Some(reply), Some(body)) = (
            entry.get::<String>("id"),
            entry.get::<String>("reply"),
            entry.get::<String>("body"),
        ) else {
            // Not a command (or trimmed to nothing): take it off the queue.
            let _: Result<(), _> = conn
                .xack(self.stream(&self.node), GROUP, &[&entry.id])
                .await;
            return Ok(None);
        };
        let (state, kept): (String, String) = self
            .take
            .key(self.mark(&id))
            .arg(KEPT.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| connection(&e))?;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                Pending {
                    entry: entry.id.clone(),
                    reply,
                },
            );
        let call = match serde_json::from_str::<Call>(&body) {
            Ok(call) => call,
            Err(e) => {
                let error = ManagerError::BadRequest(format!("the command could not be read: {e}"));
                self.reply_to(&id, &Err(error)).await?;
                return Ok(None);
            }
        };
        let delivery = Delivery { id, call };
        let mark = mark_of(&state);
        match answer_without_carrying_out(mark, &self.node, &delivery.call, || decode(&kept)) {
            None => Ok(Some(delivery)),
            Some(answer) => {
                self.answer(&delivery, &answer).await?;
                Ok(None)
            }
        }
    }

    async fn answer(
        &self,
        delivery: &Delivery,
        answer: &Result<Reply, ManagerError>,
    ) -> Result<(), ManagerError> {
        self.reply_to(&delivery.id, answer).await
    }
}
