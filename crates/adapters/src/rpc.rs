//! Line-delimited JSON over a stream, as both of bpm's connections speak it
//! (the control socket and the keeper's): the framing (one JSON value per
//! line, bounded), the first line each side sends (its hello), and the
//! correlation of calls with their answers by id, which may come in any
//! order. What the lines hold is each protocol's own (`control::wire`, and
//! the keeper's `KeeperLine` and `Request`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// A line could not be read whole.
#[derive(Debug)]
pub(crate) enum LineError {
    /// Longer than the limit.
    TooLarge,
    /// The peer closed the connection in the middle of a line.
    Truncated,
    /// The connection failed.
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLarge => f.write_str("a line longer than the limit"),
            LineError::Truncated => f.write_str("the connection closed in the middle of a line"),
            LineError::Io(e) => e.fmt(f),
        }
    }
}

/// Reads one line of at most `max` bytes (without its newline); `None` at a clean end.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, LineError> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(LineError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > max {
            LineError::TooLarge
        } else {
            LineError::Truncated
        });
    }
    buf.pop();
    Ok(Some(buf))
}

/// `value` as one line, newline included.
///
/// # Errors
/// It cannot be encoded.
pub(crate) fn encode_line<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Writes `value` as one line.
///
/// # Errors
/// It cannot be encoded, or the write fails.
pub(crate) async fn write_line<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    writer.write_all(&encode_line(value)?).await
}

/// The first line a peer sends (its hello), within `within`.
///
/// # Errors
/// A message that names what went wrong: no line in time, the connection
/// closed, or a line that could not be read.
pub(crate) async fn first_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    within: Duration,
    max: usize,
) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(within, read_line(reader, max)).await {
        Err(_) => Err(format!("no hello within {within:?}")),
        Ok(Ok(Some(line))) => Ok(line),
        Ok(Ok(None)) => Err("the connection closed before the hello".into()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// The calls of one connection awaiting their answers, by id.
pub(crate) struct Calls<T> {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

impl<T> Calls<T> {
    /// No call yet; the first gets id `first` (a protocol may keep 0 for
    /// lines that want no answer).
    pub(crate) fn new(first: u64) -> Self {
        Calls {
            next: AtomicU64::new(first),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// A new call: its id, and where its answer will come. The receiver
    /// fails if the connection closes first ([`close`](Self::close)).
    pub(crate) fn open(&self) -> (u64, oneshot::Receiver<T>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Forgets call `id`, which was not sent.
    pub(crate) fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Hands `answer` to call `id`, if it still waits.
    pub(crate) fn answer(&self, id: u64, answer: T) {
        if let Some(waiter) = self.lock().remove(&id) {
            let _ = waiter.send(answer);
        }
    }

    /// The connection is gone: every waiting call learns it.
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<T>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_reach_their_calls_in_any_order_and_a_close_ends_the_rest() {
        let calls: Calls<&str> = Calls::new(1);
        let (a, ra) = calls.open();
        let (b, rb) = calls.open();
        let (c, rc) = calls.open();
        assert_eq!((a, b, c), (1, 2, 3));
        calls.answer(b, "two");
        calls.answer(a, "one");
        calls.answer(99, "nobody");
        assert_eq!((ra.await, rb.await), (Ok("one"), Ok("two")));
        calls.close();
        assert!(rc.await.is_err(), "a closed connection ends the call");
    }

    #[tokio::test]
    async fn lines_are_bounded_and_a_cut_one_is_named() {
        let mut input: &[u8] = b"{\"a\":1}\n{\"b\":2";
        let mut reader = tokio::io::BufReader::new(&mut input);
        assert_eq!(
            read_line(&mut reader, 64).await.expect("line"),
            Some(b"{\"a\":1}".to_vec())
        );
        assert!(matches!(
            read_line(&mut reader, 64).await,
            Err(LineError::Truncated)
        ));
        let mut long: &[u8] = b"0123456789\n";
        let mut reader = tokio::io::BufReader::new(&mut long);
        assert!(matches!(
            read_line(&mut reader, 4).await,
            Err(LineError::TooLarge)
        ));
        let mut out = Vec::new();
        write_line(&mut out, &serde_json::json!({"x": 1}))
            .await
            .expect("write");
        assert_eq!(out, b"{\"x\":1}\n");
    }
}
