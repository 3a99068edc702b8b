//! Events of every node, through Redis. Each daemon's bus delivers its own
//! events to its subscribers at once and appends them to the deployment's
//! capped events stream (the one the store writes its changes to, `events`),
//! as entries with the fields `from` (the publishing node) and `event` (the
//! event as JSON); a reader follows that stream with `XREAD BLOCK` and
//! delivers the other nodes' events to this daemon's subscribers. So `wait`,
//! `events -f`, the page and the MCP resources see every node's records
//! change, woken by the event, never by polling.
//!
//! The loop never waits for Redis: `publish` queues the event (bounded) for
//! a writer task that sends what it holds in one pipeline. While Redis does
//! not answer, the writer keeps the queue and sends it when Redis is back; a
//! queue that fills drops its oldest events and counts them
//! ([`RedisEvents::dropped`]). The reader starts at the stream's end and
//! goes on from the last entry it saw, across reconnects.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bpm_domain::{Event, NodeId};
use bpm_ports::{EventBus, EventBusError};
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value};
use tokio::sync::{Notify, broadcast};

use bpm_adapters::memory::BroadcastBus;

/// How many events wait for Redis before the oldest are dropped.
const QUEUED_EVENTS: usize = 10_000;
/// How many entries the stream keeps (about; `MAXLEN ~`), as the store's.
const STREAM_LEN: usize = 10_000;
/// How long one `XREAD` waits for new entries, under the connection's
/// answer timeout.
const BLOCK: Duration = Duration::from_secs(1);
/// How long the writer and the reader wait after Redis failed them.
const RETRY: Duration = Duration::from_millis(250);

/// What the writer task and the bus share.
struct Queue {
    /// Each event with its place in the order of publishing.
    events: Mutex<VecDeque<(u64, Event)>>,
    next: AtomicU64,
    ready: Notify,
    dropped: AtomicU64,
}

/// An event bus shared by every node on one Redis (see the module docs).
pub struct RedisEvents {
    local: Arc<BroadcastBus>,
    queue: Arc<Queue>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RedisEvents {
    /// A bus for node `node` on `url`, deployment `prefix`: it starts its
    /// writer and its reader (each with its own connection) on the current
    /// tokio runtime; they end when the bus is dropped.
    ///
    /// # Errors
    /// [`EventBusError::Unavailable`] if Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, node: NodeId) -> Result<Self, EventBusError> {
        let writer = super::connect(url)
            .await
            .map_err(EventBusError::Unavailable)?;
        let reader = super::connect(url)
            .await
            .map_err(EventBusError::Unavailable)?;
        let stream = format!("{}events", super::base(prefix));
        let local = Arc::new(BroadcastBus::default());
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        let mut reader = Reader {
            conn: reader,
            stream: stream.clone(),
            node: node.to_string(),
            local: local.clone(),
            last: String::from("$"),
        };
        // The reader starts at the stream's end as it is now, so nothing
        // published after `connect` returns is missed.
        reader.last = reader.newest().await.map_err(EventBusError::Unavailable)?;
        let tasks = vec![
            tokio::spawn(write(writer, stream, node.to_string(), queue.clone())),
            tokio::spawn(reader.run()),
        ];
        Ok(RedisEvents {
            local,
            queue,
            tasks,
        })
    }

    /// How many events were dropped unsent because the queue for Redis was
    /// full (Redis did not answer for a long while).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for RedisEvents {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl EventBus for RedisEvents {
    async fn publish(&self, event: Event) -> Result<(), EventBusError> {
        {
            let mut events = self
                .queue
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if events.len() == QUEUED_EVENTS {
                events.pop_front();
                self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            }
            let place = self.queue.next.fetch_add(1, Ordering::Relaxed);
            events.push_back((place, event.clone()));
        }
        self.queue.ready.notify_one();
        self.local.publish(event).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    fn recent(&self) -> Vec<Event> {
        self.local.recent()
    }
}

/// Sends the queued events, in order, one pipeline per round; keeps them
/// queued while Redis does not take them.
async fn write(mut conn: ConnectionManager, stream: String, node: String, queue: Arc<Queue>) {
    loop {
        let batch: Vec<(u64, Event)> = {
            let events = queue.events.lock().unwrap_or_else(PoisonError::into_inner);
            events.iter().take(256).cloned().collect()
        };
        let Some(&(last, _)) = batch.last() else {
            queue.ready.notified().await;
            continue;
        };
        let mut pipe = redis::pipe();
        for (_, event) in &batch {
            let Ok(json) = serde_json::to_string(event) else {
                continue;
            };
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN)
                .arg("*")
                .arg("from")
                .arg(&node)
                .arg("event")
                .arg(json)
                .ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                // What was sent leaves the queue; what the queue dropped
                // meanwhile left it already.
                let mut events = queue.events.lock().unwrap_or_else(PoisonError::into_inner);
                while events.front().is_some_and(|(place, _)| *place <= last) {
                    events.pop_front();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "events not sent to Redis yet; will retry");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Follows the stream and delivers the other nodes' events here.
struct Reader {
    conn: ConnectionManager,
    stream: String,
    node: String,
    local: Arc<BroadcastBus>,
    last: String,
}

impl Reader {
    /// The id of the stream's newest entry (`0-0` for none).
    async fn newest(&mut self) -> Result<String, String> {
        let newest: Value = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        let id = match newest {
            Value::Array(entries) => entries.into_iter().next().and_then(|entry| match entry {
                Value::Array(mut parts) if !parts.is_empty() => {
                    redis::from_redis_value::<String>(parts.swap_remove(0)).ok()
                }
                _ => None,
            }),
            _ => None,
        };
        Ok(id.unwrap_or_else(|| "0-0".into()))
    }

    async fn run(mut self) {
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis().try_into().unwrap_or(1_000))
            .count(512);
        loop {
            let read: Result<Option<StreamReadReply>, _> = self
                .conn
                .xread_options(&[&self.stream], &[&self.last], &options)
                .await;
            let reply = match read {
                Ok(Some(reply)) => reply,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read other nodes' events yet; will retry");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            for key in reply.keys {
                for entry in key.ids {
                    self.last.clone_from(&entry.id);
                    let from: Option<String> = entry.get("from");
                    if from.as_deref().is_none_or(|f| f == self.node) {
                        continue;
                    }
                    let Some(json) = entry.get::<String>("event") else {
                        continue;
                    };
                    match serde_json::from_str::<Event>(&json) {
                        Ok(event) => {
                            let _ = self.local.publish(event).await;
                        }
                        Err(e) => {
                            tracing::warn!(id = %entry.id, error = %e, "an event in Redis could not be read; skipped");
                        }
                    }
                }
            }
        }
    }
}
