use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use bpm_domain::ProcessId;
use bpm_ports::{
    Cursor, OutputChunk, OutputError, OutputPiece, OutputQuery, OutputStore, Stream, StreamSelect,
};

/// The default cap on kept output per process: 64 MiB.
pub const DEFAULT_OUTPUT_CAP: u64 = 64 << 20;

/// The kept output of one process: pieces in write order, covering `[start, end)`
/// of its combined output.
#[derive(Debug, Default)]
struct Log {
    pieces: VecDeque<OutputPiece>,
    start: u64,
    end: u64,
}

impl Log {
    fn append(&mut self, stream: Stream, data: &[u8], cap: u64) {
        match self.pieces.back_mut() {
            Some(last) if last.stream == stream => last.data.extend_from_slice(data),
            _ => self.pieces.push_back(OutputPiece {
                stream,
                offset: self.end,
                data: data.to_vec(),
            }),
        }
        self.end += data.len() as u64;
        // Keep the newest `cap` bytes: drop whole pieces, then trim the oldest one.
        while self.end - self.start > cap {
            let excess = self.end - self.start - cap;
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let len = front.data.len() as u64;
            if len <= excess {
                self.start += len;
                self.pieces.pop_front();
            } else {
                let cut = usize::try_from(excess).unwrap_or(usize::MAX);
                front.data.drain(..cut);
                front.offset += excess;
                self.start += excess;
            }
        }
    }

    fn read(&self, query: &OutputQuery) -> OutputChunk {
        let requested = query.cursor.map_or(self.start, |c| c.0);
        if requested >= self.end {
            return OutputChunk {
                next: Cursor(requested.max(self.end)),
                ..OutputChunk::default()
            };
        }
        let from = requested.max(self.start);
        let mut chunk = OutputChunk {
            skipped: from - requested,
            next: Cursor(self.end),
            ..OutputChunk::default()
        };
        let mut budget = query.max_bytes;
        for piece in &self.pieces {
            let piece_end = piece.offset + piece.data.len() as u64;
            if piece_end <= from || !query.stream.includes(piece.stream) {
                continue;
            }
            let skip = usize::try_from(from.saturating_sub(piece.offset)).unwrap_or(0);
            let data = &piece.data[skip..];
            if data.len() > budget {
                if budget > 0 {
                    chunk.pieces.push(OutputPiece {
                        stream: piece.stream,
                        offset: piece.offset + skip as u64,
                        data: data[..budget].to_vec(),
                    });
                }
                chunk.next = Cursor(piece.offset + (skip + budget) as u64);
                chunk.truncated = true;
                return chunk;
            }
            budget -= data.len();
            chunk.pieces.push(OutputPiece {
                stream: piece.stream,
                offset: piece.offset + skip as u64,
                data: data.to_vec(),
            });
        }
        chunk
    }

    fn tail(&self, select: StreamSelect, lines: usize, max_bytes: usize) -> OutputChunk {
        let mut chunk = OutputChunk {
            next: Cursor(self.end),
            ..OutputChunk::default()
        };
        let selected: Vec<&OutputPiece> = self
            .pieces
            .iter()
            .filter(|p| select.includes(p.stream))
            .collect();
        chunk.pieces = crate::tail::last_lines(&selected, lines).0;
        chunk.truncated = crate::tail::keep_newest(&mut chunk.pieces, max_bytes);
        chunk
    }
}

/// Output kept in memory, capped per process.
#[derive(Debug)]
pub struct InMemoryOutput {
    cap: u64,
    logs: Mutex<HashMap<ProcessId, Log>>,
}

impl InMemoryOutput {
    /// A store keeping at most `cap` bytes per process.
    pub fn new(cap: u64) -> Self {
        InMemoryOutput {
            cap: cap.max(1),
            logs: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for InMemoryOutput {
    fn default() -> Self {
        InMemoryOutput::new(DEFAULT_OUTPUT_CAP)
    }
}

#[async_trait]
impl OutputStore for InMemoryOutput {
    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let log = logs.entry(id).or_default();
        log.append(stream, data, self.cap);
        Ok(Cursor(log.end))
    }

    async fn read(&self, id: ProcessId, query: &OutputQuery) -> Result<OutputChunk, OutputError> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(match logs.get(&id) {
            Some(log) => log.read(query),
            None => OutputChunk {
                next: Cursor(query.cursor.map_or(0, |c| c.0)),
                ..OutputChunk::default()
            },
        })
    }

    async fn tail(
        &self,
        id: ProcessId,
        stream: StreamSelect,
        lines: usize,
        max_bytes: usize,
    ) -> Result<OutputChunk, OutputError> {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(logs
            .get(&id)
            .map(|log| log.tail(stream, lines, max_bytes))
            .unwrap_or_default())
    }

    async fn remove(&self, id: ProcessId) -> Result<(), OutputError> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        Ok(())
    }
}
