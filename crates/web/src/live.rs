//! The page's live streams (server-sent events): the daemon's events with
//! each record as it is after them, resource usage while a page is open,
//! and the output of one record as it is written.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as Sse, KeepAlive};
use bpm_ports::{Cursor, ManagerError, OutputQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::api::{ApiError, chunk_json, parse_id, row, stream_of};

type Stream = axum::response::Sse<
    axum::response::sse::KeepAliveStream<ReceiverStream<Result<Sse, Infallible>>>,
>;

/// What a page is sent, queued: a page that stops reading is dropped, not buffered for.
const QUEUE: usize = 1024;

fn stream(rx: mpsc::Receiver<Result<Sse, Infallible>>) -> Stream {
    axum::response::Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

async fn send(tx: &mpsc::Sender<Result<Sse, Infallible>>, name: &str, data: &Value) -> bool {
    tx.send(Ok(Sse::default().event(name).data(data.to_string())))
        .await
        .is_ok()
}

/// `GET /api/live`: `change` (`{event, record}`; `record` is null once
/// removed) for every event, `usage` (what running trees use) at once and
/// then every `usage_every`, and `resync` when events were missed (the page
/// then reloads the list).
///
/// Events and usage go out from two tasks: a sample of usage reads the
/// processes of the whole machine (about 10 ms), and an event must not wait
/// behind one.
pub(super) async fn events(State(s): State<Shared>) -> Stream {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut events = s.manager.subscribe();
    let usage = tokio::spawn(send_usage(s.clone(), tx.clone()));
    tokio::spawn(async move {
        loop {
            let ok = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => {
                        let record = match s.manager.get(event.id).await {
                            Ok(r) => row(&r),
                            Err(_) => Value::Null,
                        };
                        send(&tx, "change", &json!({ "event": event, "record": record })).await
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => send(&tx, "resync", &json!({})).await,
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                () = tx.closed() => false,
            };
            if !ok {
                // The stream ends with its events: the page connects again.
                usage.abort();
                return;
            }
        }
    });
    stream(rx)
}

/// Sends `usage` at once and then every `usage_every`, until the page is gone.
async fn send_usage(s: Shared, tx: mpsc::Sender<Result<Sse, Infallible>>) {
    let mut tick = tokio::time::interval(s.config.usage_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ok = tokio::select! {
            _ = tick.tick() => match s.manager.resource_usage().await {
                Ok(usage) => send(&tx, "usage", &json!(usage)).await,
                Err(e) => send(&tx, "usage_error", &json!({ "error": e.to_string() })).await,
            },
            () = tx.closed() => false,
        };
        if !ok {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TailParams {
    cursor: Option<u64>,
    stream: Option<String>,
}

/// `GET /api/processes/{id}/output/live?cursor=N&stream=both`: `output`
/// (pieces and the next cursor) as the process writes, from `cursor` on,
/// then `end` (the final state) once it has finished and all is sent.
pub(super) async fn output(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<TailParams>,
) -> Result<Stream, ApiError> {
    let id = parse_id(&id)?;
    let select = stream_of(q.stream.as_deref())?;
    let mut events = s.manager.subscribe();
    let mut finished = s.manager.get(id).await?.state().is_terminal();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut cursor = q.cursor.map(Cursor);
        loop {
            let read = s
                .manager
                .read_output(
                    id,
                    OutputQuery {
                        stream: select,
                        cursor,
                        max_bytes: 256 << 10,
                        tail_lines: None,
                    },
                )
                .await;
            let chunk = match read {
                Ok(c) => c,
                Err(ManagerError::NotFound(_)) => {
                    let _ = send(&tx, "end", &json!({ "removed": true })).await;
                    return;
                }
                Err(e) => {
                    let _ = send(&tx, "tail_error", &json!({ "error": e.to_string() })).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let fresh = !chunk.pieces.is_empty() || chunk.skipped > 0;
            if fresh && !send(&tx, "output", &chunk_json(&chunk)).await {
                return;
            }
            cursor = Some(chunk.next);
            if chunk.truncated {
                continue;
            }
            if finished {
                let state = s.manager.get(id).await.map(|r| r.state().to_string()).ok();
                let _ = send(&tx, "end", &json!({ "state": state })).await;
                return;
            }
            // Read again once the daemon says it wrote more, or at once
            // when this record ends; other records' events do not wake it,
            // and its state is asked for only if events were missed.
            let after = chunk.next;
            let manager = s.manager.clone();
            let wait = async move {
                bpm_intake::more_output(manager.as_ref(), id, after, bpm_intake::FOLLOW_WITHIN)
                    .await;
            };
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) if e.id == id && e.state.is_terminal() => finished = true,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            finished = s.manager.get(id).await.is_ok_and(|r| r.state().is_terminal());
                        }
                        Err(broadcast::error::RecvError::Closed) => (&mut wait).await,
                    },
                    () = &mut wait => {}
                    () = tx.closed() => return,
                }
                break;
            }
        }
    });
    Ok(stream(rx))
}
