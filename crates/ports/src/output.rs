use async_trait::async_trait;
use bpm_domain::ProcessId;
use serde::{Deserialize, Serialize};

/// One of a process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Which streams a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamSelect {
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
    /// Both, in the order they were written.
    #[default]
    Both,
}

impl StreamSelect {
    /// Whether `stream` is selected.
    pub fn includes(self, stream: Stream) -> bool {
        matches!(
            (self, stream),
            (StreamSelect::Both, _)
                | (StreamSelect::Stdout, Stream::Stdout)
                | (StreamSelect::Stderr, Stream::Stderr)
        )
    }
}

/// A position in a process's combined output: the number of bytes written to
/// both streams before it. Cursors stay valid for every reader: reading never
/// consumes output.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cursor(pub u64);

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputQuery {
    /// Which streams.
    pub stream: StreamSelect,
    /// Where to start; `None` starts at the oldest output kept.
    pub cursor: Option<Cursor>,
    /// At most this many bytes of data in the answer.
    pub max_bytes: usize,
    /// Instead of reading from the cursor, the last this many lines (at most `max_bytes`, the newest kept).
    pub tail_lines: Option<usize>,
}

impl Default for OutputQuery {
    fn default() -> Self {
        OutputQuery {
            stream: StreamSelect::Both,
            cursor: None,
            max_bytes: 1 << 20,
            tail_lines: None,
        }
    }
}

/// A run of bytes one stream wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPiece {
    /// Which stream.
    pub stream: Stream,
    /// Its position in the combined output.
    pub offset: u64,
    /// The bytes, exactly as written (not necessarily UTF-8).
    pub data: Vec<u8>,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The pieces, in the order written.
    pub pieces: Vec<OutputPiece>,
    /// Where the next read should start to see only what is new.
    pub next: Cursor,
    /// Bytes between the requested cursor and the oldest output kept, dropped
    /// before they could be read: by rotation past the cap, or to make room
    /// on a full disk (those are in `dropped` too).
    pub skipped: u64,
    /// Whether more output was there than `max_bytes` allowed.
    pub truncated: bool,
    /// Bytes of the process's output lost, over its whole life, because bpm
    /// could not store them (its disk full, its store out of reach): dropped
    /// as they came (these take no offsets), or older output deleted early
    /// to make room for newer (a read from before it also counts that in
    /// `skipped`).
    #[serde(default)]
    pub dropped: u64,
}

impl OutputChunk {
    /// The data of every piece, concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect()
    }

    /// The data as text, with invalid UTF-8 replaced (for display only).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// The output store refused or failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputError {
    /// The backend cannot be reached.
    #[error("output store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the write (disk full, permission denied).
    #[error("output write refused: {0}")]
    Refused(String),
}

/// Where the output of processes is kept, capped per process: when a process
/// has written more than the cap, the oldest output is dropped and readers are
/// told how much.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OutputStore: Send + Sync + 'static {
    /// Appends `data` from `stream` of process `id`; returns the cursor after it.
    ///
    /// # Errors
    /// - MUST return [`OutputError::Refused`] when the write cannot be made;
    ///   then `data` is dropped whole, what was kept before stays readable,
    ///   and reads count the bytes in [`OutputChunk::dropped`]. A store may
    ///   first delete the process's oldest output to make room for the
    ///   newest, counting that in `dropped` too, and then succeed.
    /// - MUST return [`OutputError::Unavailable`] if the backend cannot be reached.
    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError>;

    /// [`append`](Self::append) of a buffer the caller hands over; the buffer
    /// comes back with the answer, with its contents and capacity as they
    /// were, so that a busy writer's capture reuses two buffers and a store
    /// that writes on another thread need not copy each chunk first.
    ///
    /// # Errors
    /// - MUST return what [`append`](Self::append) returns for the same bytes.
    async fn append_owned(
        &self,
        id: ProcessId,
        stream: Stream,
        data: Vec<u8>,
    ) -> (Vec<u8>, Result<Cursor, OutputError>) {
        let result = self.append(id, stream, &data).await;
        (data, result)
    }

    /// Keeps, from now on, the last `archives` pieces of process `id`'s
    /// output that its newest output pushes out, gzip-compressed (both
    /// streams as written), instead of deleting them: `bpm logs
    /// --archived`. Called before the process writes.
    ///
    /// # Errors
    /// - MUST return [`OutputError::Refused`] from a store that keeps no
    ///   archives (the default: only files are kept as archives).
    async fn keep_archives(&self, id: ProcessId, archives: u32) -> Result<(), OutputError> {
        let _ = (id, archives);
        Err(OutputError::Refused(
            "this output store keeps no archives of old output (the file store does): start it without log_archive".into(),
        ))
    }

    /// Output from `query.cursor` on. A process that wrote nothing reads as empty,
    /// with `next` at 0. A cursor past the end reads as empty with `next` unchanged.
    ///
    /// # Errors
    /// - MUST return [`OutputError::Unavailable`] if the backend cannot be reached.
    async fn read(&self, id: ProcessId, query: &OutputQuery) -> Result<OutputChunk, OutputError>;

    /// The last `lines` lines of the selected streams (a final line without a
    /// newline counts), at most `max_bytes` of them: when those lines hold
    /// more, only their newest `max_bytes` are returned and `truncated` is
    /// set. `next` is the end of the output.
    ///
    /// A store MUST NOT read much more than `max_bytes` of the selected
    /// output to answer when the lines are long: a process that writes no
    /// newline leaves one line as large as its cap, and every exit asks for
    /// its tail.
    ///
    /// # Errors
    /// - MUST return [`OutputError::Unavailable`] if the backend cannot be reached.
    async fn tail(
        &self,
        id: ProcessId,
        stream: StreamSelect,
        lines: usize,
        max_bytes: usize,
    ) -> Result<OutputChunk, OutputError>;

    /// Forgets the output of `id`. Removing output that does not exist is not an error.
    ///
    /// # Errors
    /// - MUST return [`OutputError::Unavailable`] if the backend cannot be reached.
    async fn remove(&self, id: ProcessId) -> Result<(), OutputError>;
}
