//! The control socket: the daemon's side ([`serve`]) and the client's
//! ([`DaemonClient`], a `ProcessManager` that talks to a daemon), over the
//! protocol in [`wire`].

mod client;
mod server;
pub mod wire;

pub use client::DaemonClient;
pub use server::{ConnectionLimits, ServerInfo, serve, serve_with};

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
