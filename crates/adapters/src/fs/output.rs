//! Output in capped files, one folder per process.
//!
//! A process's combined output is kept as segments: `<start>.data` holds the
//! raw bytes from logical offset `start` on, and `<start>.idx` says which
//! stream wrote which run (5 bytes a run: the stream, then the length, little
//! endian; consecutive writes of one stream extend one run). A segment holds at
//! most half the cap; when the kept output passes the cap, the oldest segment
//! is deleted, so between half the cap and the whole cap is always kept and
//! the loss is reported to readers as `skipped`. One write larger than a
//! segment keeps only its newest half cap, and drops all older output with
//! its front, so what is kept never has a gap. Bytes are stored exactly as
//! written.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::segments::{
    RUN_BYTES, Run, Segment, SegmentedLog, parse_runs, plan_read, stream_byte, tail_windows,
};
use async_trait::async_trait;
use bpm_domain::ProcessId;
use bpm_ports::{
    Cursor, OutputChunk, OutputError, OutputPiece, OutputQuery, OutputStore, Stream, StreamSelect,
};

/// Output kept in capped files under a folder.
pub struct FileOutput {
    root: PathBuf,
    cap: u64,
    /// Another process writes: read from disk every time, cache nothing.
    reader: bool,
    logs: Mutex<HashMap<ProcessId, Arc<Mutex<SegmentedLog>>>>,
}

impl FileOutput {
    /// A store under `root` keeping at most `cap` bytes per process.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn new(root: impl Into<PathBuf>, cap: u64) -> io::Result<Self> {
        let root = root.into();
        crate::private::create_dir_all(&root)?;
        Ok(FileOutput {
            root,
            cap: cap.max(2),
            reader: false,
            logs: Mutex::new(HashMap::new()),
        })
    }

    /// A store that reads output another process (bpm's keeper) writes under
    /// `root`: every read goes to the files. It can remove output, not append.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn reader(root: impl Into<PathBuf>, cap: u64) -> io::Result<Self> {
        let mut store = FileOutput::new(root, cap)?;
        store.reader = true;
        Ok(store)
    }

    fn dir(&self, id: ProcessId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// The log of a process that has written something; `None` (and nothing
    /// cached) for one that has not, so reads of silent processes stay cheap.
    fn existing_log(&self, id: ProcessId) -> io::Result<Option<Arc<Mutex<SegmentedLog>>>> {
        if self.reader {
            let dir = self.dir(id);
            return if dir.exists() {
                Ok(Some(Arc::new(Mutex::new(load(&dir)?))))
            } else {
                Ok(None)
            };
        }
        if let Some(log) = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(Some(log.clone()));
        }
        if !self.dir(id).exists() {
            return Ok(None);
        }
        self.log(id).map(Some)
    }

    fn log(&self, id: ProcessId) -> io::Result<Arc<Mutex<SegmentedLog>>> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = logs.get(&id) {
            return Ok(log.clone());
        }
        let log = Arc::new(Mutex::new(load(&self.dir(id))?));
        logs.insert(id, log.clone());
        Ok(log)
    }
}

fn seg_path(dir: &Path, start: u64, ext: &str) -> PathBuf {
    dir.join(format!("{start:016x}.{ext}"))
}

/// Reads a process's segments back from disk (after a restart).
fn load(dir: &Path) -> io::Result<SegmentedLog> {
    let mut starts: Vec<u64> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".idx")?, 16).ok()
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    starts.sort_unstable();
    let mut log = SegmentedLog::default();
    for start in starts {
        let idx = fs::read(seg_path(dir, start, "idx"))?;
        let data_len = fs::metadata(seg_path(dir, start, "data")).map_or(0, |m| m.len());
        let runs = parse_runs(&idx, data_len);
        let segment = Segment { start, runs };
        log.end = start + segment.len();
        log.segments.push(segment);
    }
    Ok(log)
}

fn append_to(
    dir: &Path,
    log: &mut SegmentedLog,
    cap: u64,
    stream: Stream,
    mut data: &[u8],
) -> io::Result<()> {
    let segment_max = (cap / 2).max(1);
    crate::private::create_dir_all(dir)?;
    let len = data.len() as u64;
    if len > segment_max {
        // Only the newest part fits a segment. Its front is dropped, so
        // everything older goes too: what is kept must be the newest output,
        // with no gap that readers would not be told about.
        let drop = usize::try_from(len - segment_max).unwrap_or(usize::MAX);
        data = &data[drop..];
        log.end += len - segment_max;
        for old in log.segments.drain(..) {
            let _ = fs::remove_file(seg_path(dir, old.start, "data"));
            let _ = fs::remove_file(seg_path(dir, old.start, "idx"));
        }
    }
    let needs_new = log
        .segments
        .last()
        .is_none_or(|s| s.start + s.len() != log.end || s.len() + data.len() as u64 > segment_max);
    if needs_new {
        log.segments.push(Segment {
            start: log.end,
            runs: Vec::new(),
        });
    }
    let segment = log.segments.last_mut().expect("a segment");
    let mut file = crate::private::options()
        .create(true)
        .append(true)
        .open(seg_path(dir, segment.start, "data"))?;
    file.write_all(data)?;
    let idx_path = seg_path(dir, segment.start, "idx");
    let n = data.len() as u64;
    match segment.runs.last_mut() {
        // Extending the last run keeps the index small; its length must fit the 4 bytes.
        Some(run) if run.stream == stream && u32::try_from(run.len + n).is_ok() => {
            run.len += n;
            let idx = crate::private::options().write(true).open(&idx_path)?;
            let pos = (segment.runs.len() as u64 - 1) * RUN_BYTES + 1;
            idx.write_all_at(
                &u32::try_from(segment.runs.last().map_or(0, |r| r.len))
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
                pos,
            )?;
        }
        _ => {
            let at = segment.len();
            segment.runs.push(Run { stream, at, len: n });
            let mut idx = crate::private::options()
                .create(true)
                .append(true)
                .open(&idx_path)?;
            let mut entry = [0u8; 5];
            entry[0] = stream_byte(stream);
            entry[1..].copy_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
            idx.write_all(&entry)?;
        }
    }
    log.end += n;
    while log.end - log.kept_start() > cap && log.segments.len() > 1 {
        let old = log.segments.remove(0);
        let _ = fs::remove_file(seg_path(dir, old.start, "data"));
        let _ = fs::remove_file(seg_path(dir, old.start, "idx"));
    }
    Ok(())
}

fn read_from(dir: &Path, log: &SegmentedLog, query: &OutputQuery) -> io::Result<OutputChunk> {
    let plan = plan_read(log, query);
    let mut pieces = Vec::with_capacity(plan.fetches.len());
    let mut open: Option<(u64, File)> = None;
    for f in &plan.fetches {
        let file = match &mut open {
            Some((start, file)) if *start == f.segment => file,
            _ => {
                &mut open
                    .insert((f.segment, File::open(seg_path(dir, f.segment, "data"))?))
                    .1
            }
        };
        let mut data = vec![0u8; usize::try_from(f.len).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(f.at))?;
        file.read_exact(&mut data)?;
        pieces.push(OutputPiece {
            stream: f.stream,
            offset: f.offset,
            data,
        });
    }
    Ok(OutputChunk {
        pieces,
        next: plan.next,
        skipped: plan.skipped,
        truncated: plan.truncated,
    })
}

fn tail_of(
    dir: &Path,
    log: &SegmentedLog,
    select: StreamSelect,
    lines: usize,
) -> io::Result<OutputChunk> {
    let mut tail = Vec::new();
    for start in tail_windows(log) {
        let q = OutputQuery {
            stream: select,
            cursor: Some(Cursor(start)),
            max_bytes: usize::MAX,
            tail_lines: None,
        };
        let chunk = read_from(dir, log, &q)?;
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

fn unavailable(id: ProcessId, e: &io::Error) -> OutputError {
    OutputError::Unavailable(format!("output of {id}: {e}"))
}

fn refused(id: ProcessId, e: &io::Error) -> OutputError {
    OutputError::Refused(format!("output of {id}: {e}"))
}

#[async_trait]
impl OutputStore for FileOutput {
    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError> {
        if self.reader {
            return Err(OutputError::Refused(format!(
                "output of {id}: this store only reads what another process writes"
            )));
        }
        let log = self.log(id).map_err(|e| refused(id, &e))?;
        let (dir, cap, data) = (self.dir(id), self.cap, data.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            append_to(&dir, &mut log, cap, stream, &data).map_err(|e| refused(id, &e))?;
            Ok(Cursor(log.end))
        })
        .await
        .map_err(|e| OutputError::Unavailable(e.to_string()))?
    }

    async fn read(&self, id: ProcessId, query: &OutputQuery) -> Result<OutputChunk, OutputError> {
        let Some(log) = self.existing_log(id).map_err(|e| unavailable(id, &e))? else {
            return Ok(OutputChunk {
                next: query.cursor.unwrap_or_default(),
                ..OutputChunk::default()
            });
        };
        let (dir, query) = (self.dir(id), query.clone());
        tokio::task::spawn_blocking(move || {
            let log = log.lock().unwrap_or_else(PoisonError::into_inner);
            read_from(&dir, &log, &query)
                .map_err(|e| OutputError::Unavailable(format!("output of {id}: {e}")))
        })
        .await
        .map_err(|e| OutputError::Unavailable(e.to_string()))?
    }

    async fn tail(
        &self,
        id: ProcessId,
        stream: StreamSelect,
        lines: usize,
    ) -> Result<OutputChunk, OutputError> {
        let Some(log) = self.existing_log(id).map_err(|e| unavailable(id, &e))? else {
            return Ok(OutputChunk::default());
        };
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || {
            let log = log.lock().unwrap_or_else(PoisonError::into_inner);
            tail_of(&dir, &log, stream, lines)
                .map_err(|e| OutputError::Unavailable(format!("output of {id}: {e}")))
        })
        .await
        .map_err(|e| OutputError::Unavailable(e.to_string()))?
    }

    async fn remove(&self, id: ProcessId) -> Result<(), OutputError> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        match fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(refused(id, &e)),
        }
    }
}
