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
use std::io::{self, Read, Seek, SeekFrom};
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
    let mut log = SegmentedLog {
        dropped: read_dropped(dir),
        ..SegmentedLog::default()
    };
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

/// The file that counts dropped bytes: 8 bytes, little endian, made with
/// the folder so that a later count overwrites space the disk already gave.
const DROPPED: &str = "dropped";

fn read_dropped(dir: &Path) -> u64 {
    fs::read(dir.join(DROPPED))
        .ok()
        .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
        .map_or(0, u64::from_le_bytes)
}

fn write_dropped(dir: &Path, dropped: u64) -> io::Result<()> {
    let file = crate::private::options()
        .create(true)
        .write(true)
        .open(dir.join(DROPPED))?;
    file.write_all_at(&dropped.to_le_bytes(), 0)
}

/// Appends `data`. On a full disk, this process's oldest output is deleted,
/// segment by segment, to make room for its newest; when even that cannot
/// make room, `data` is dropped whole. Either way the bytes lost are counted
/// in `log.dropped`, and what is kept stays whole.
fn append_to(
    dir: &Path,
    log: &mut SegmentedLog,
    cap: u64,
    stream: Stream,
    data: &[u8],
) -> io::Result<()> {
    // Only a log with nothing kept may lack its folder (and its count).
    let fresh = log.segments.is_empty() && !dir.exists();
    let mut result = crate::private::create_dir_all(dir).and_then(|()| {
        if fresh {
            write_dropped(dir, log.dropped)?;
        }
        write_whole(dir, log, cap, stream, data)
    });
    while let Err(e) = &result
        && crate::space::is_full(e)
        && !log.segments.is_empty()
    {
        let old = log.segments.remove(0);
        let _ = fs::remove_file(seg_path(dir, old.start, "data"));
        let _ = fs::remove_file(seg_path(dir, old.start, "idx"));
        log.dropped += old.len();
        log.dropped_unsaved = true;
        result = write_whole(dir, log, cap, stream, data);
    }
    // Nothing older is left to give way: the newest part that fits is kept.
    let mut lost = data.len() as u64;
    if let Err(e) = &result
        && crate::space::is_full(e)
        && let Ok(space) = crate::space::space(dir)
    {
        let fits = usize::try_from(space.free.saturating_sub(FULL_MARGIN)).unwrap_or(usize::MAX);
        if fits > 0 && fits < data.len() && log.segments.is_empty() {
            // The front is dropped but keeps its offsets: the tail starts
            // a segment of its own where it was written.
            let front = data.len() - fits;
            log.end += front as u64;
            result = write_whole(dir, log, cap, stream, &data[front..]);
            if result.is_ok() {
                log.dropped += front as u64;
                log.dropped_unsaved = true;
                lost = 0;
            } else {
                log.end -= front as u64;
            }
        }
    }
    if let Err(e) = result {
        log.dropped += lost;
        log.dropped_unsaved = write_dropped(dir, log.dropped).is_err();
        return Err(e);
    }
    if log.dropped_unsaved {
        log.dropped_unsaved = write_dropped(dir, log.dropped).is_err();
    }
    Ok(())
}

/// What a write on a full disk leaves free, for the small writes after it
/// (the last lines, which say most).
const FULL_MARGIN: u64 = 64 << 10;

fn write_whole(
    dir: &Path,
    log: &mut SegmentedLog,
    cap: u64,
    stream: Stream,
    mut data: &[u8],
) -> io::Result<()> {
    let segment_max = (cap / 2).max(1);
    let len = data.len() as u64;
    if len > segment_max {
        // Only the newest part fits a segment. Its front is dropped, so
        // everything older goes too: what is kept must be the newest output,
        // with no gap that readers would not be told about.
        let drop = usize::try_from(len - segment_max).unwrap_or(usize::MAX);
        data = &data[drop..];
        log.end += len - segment_max;
        for old in log.segments.drain(..) {
            retire(dir, old.start);
        }
    }
    let n = data.len() as u64;
    let fits_last = log
        .segments
        .last()
        .is_some_and(|s| s.start + s.len() == log.end && s.len() + n <= segment_max);
    let (start, at, runs) = match log.segments.last() {
        Some(s) if fits_last => (s.start, s.len(), s.runs.as_slice()),
        _ => (log.end, 0, &[][..]),
    };
    // Nothing in the log changes until both files hold the write; a failed
    // write is cut off again, so a half-written one is never read.
    let data_path = seg_path(dir, start, "data");
    let file = crate::private::options()
        .create(true)
        .write(true)
        .open(&data_path)?;
    let idx_path = seg_path(dir, start, "idx");
    let extends = runs
        .last()
        .is_some_and(|r| r.stream == stream && u32::try_from(r.len + n).is_ok());
    let written = file.write_all_at(data, at).and_then(|()| {
        let idx = crate::private::options()
            .create(true)
            .write(true)
            .open(&idx_path)?;
        let (entry, pos) = if let Some(run) = runs.last().filter(|_| extends) {
            let mut entry = vec![0u8; 4];
            entry.copy_from_slice(&u32::try_from(run.len + n).unwrap_or(u32::MAX).to_le_bytes());
            (entry, (runs.len() as u64 - 1) * RUN_BYTES + 1)
        } else {
            let mut entry = vec![stream_byte(stream)];
            entry.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
            (entry, runs.len() as u64 * RUN_BYTES)
        };
        idx.write_all_at(&entry, pos).inspect_err(|_| {
            let _ = idx.set_len(runs.len() as u64 * RUN_BYTES);
        })
    });
    if let Err(e) = written {
        if at == 0 {
            let _ = fs::remove_file(&data_path);
            let _ = fs::remove_file(&idx_path);
        } else {
            let _ = file.set_len(at);
        }
        return Err(e);
    }
    if !fits_last {
        log.segments.push(Segment {
            start,
            runs: Vec::new(),
        });
    }
    let segment = log.segments.last_mut().expect("the segment just written");
    match segment.runs.last_mut() {
        Some(run) if extends => run.len += n,
        _ => segment.runs.push(Run { stream, at, len: n }),
    }
    log.end += n;
    while log.end - log.kept_start() > cap && log.segments.len() > 1 {
        let old = log.segments.remove(0);
        retire(dir, old.start);
    }
    Ok(())
}

/// Where a process's archives are: `<start>.gz` each (a `<start>.raw` while
/// it is being compressed), and `keep`, how many to keep.
const ARCHIVE: &str = "archive";
const KEEP: &str = "keep";

/// How many archives the process of `dir` keeps, if it asked for any.
fn archives_kept(dir: &Path) -> Option<usize> {
    fs::read_to_string(dir.join(ARCHIVE).join(KEEP))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// A segment pushed out by newer output: archived when the process asked
/// for archives (moved aside at once, compressed beside the writer, the
/// oldest beyond the number kept deleted), deleted otherwise.
fn retire(dir: &Path, start: u64) {
    let data = seg_path(dir, start, "data");
    let _ = fs::remove_file(seg_path(dir, start, "idx"));
    let Some(keep) = archives_kept(dir) else {
        let _ = fs::remove_file(&data);
        return;
    };
    let archive = dir.join(ARCHIVE);
    let raw = archive.join(format!("{start:016x}.raw"));
    if fs::rename(&data, &raw).is_err() {
        let _ = fs::remove_file(&data);
        return;
    }
    let compress = move || {
        if let Err(e) = compress(&raw) {
            tracing::warn!(file = %raw.display(), error = %e, "cannot compress old output");
        }
        prune(&archive, keep);
    };
    if std::thread::Builder::new()
        .name("bpm-archive".into())
        .spawn(compress)
        .is_err()
    {
        tracing::warn!("cannot start a thread to compress old output");
    }
}

/// `raw` gzip-compressed into `<start>.gz` (whole or not at all), then
/// removed.
fn compress(raw: &Path) -> io::Result<()> {
    let gz = raw.with_extension("gz");
    let part = raw.with_extension("gz.part");
    let mut from = io::BufReader::new(File::open(raw)?);
    let to = crate::private::options()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&part)?;
    let mut encoder =
        flate2::write::GzEncoder::new(io::BufWriter::new(to), flate2::Compression::fast());
    io::copy(&mut from, &mut encoder)?;
    encoder
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    fs::rename(&part, &gz)?;
    fs::remove_file(raw)
}

/// The archives of `archive`, oldest first: each one's start and path.
fn archive_files(archive: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(archive)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let path = e.ok()?.path();
                    let name = path.file_name()?.to_str()?;
                    let start = name
                        .strip_suffix(".gz")
                        .or_else(|| name.strip_suffix(".raw"))?;
                    Some((u64::from_str_radix(start, 16).ok()?, path))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Deletes the oldest archives beyond `keep`.
fn prune(archive: &Path, keep: usize) {
    let found = archive_files(archive);
    for (_, path) in found.iter().take(found.len().saturating_sub(keep)) {
        let _ = fs::remove_file(path);
    }
}

impl FileOutput {
    /// Writes process `id`'s archives of old output under `root` to `out`,
    /// oldest first, decompressed: what `bpm logs --archived` prints.
    /// Answers how many there were.
    ///
    /// # Errors
    /// An archive that cannot be read.
    pub fn archived(root: &Path, id: ProcessId, out: &mut dyn io::Write) -> io::Result<usize> {
        let found = archive_files(&root.join(id.to_string()).join(ARCHIVE));
        for (_, path) in &found {
            let file = File::open(path)?;
            if path.extension().is_some_and(|e| e == "gz") {
                io::copy(&mut flate2::read::GzDecoder::new(file), out)?;
            } else {
                io::copy(&mut io::BufReader::new(file), out)?;
            }
        }
        Ok(found.len())
    }
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
        dropped: log.dropped,
    })
}

fn tail_of(
    dir: &Path,
    log: &SegmentedLog,
    select: StreamSelect,
    lines: usize,
    max_bytes: usize,
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
        // Past `max_bytes` of the lines, no wider window can change the answer.
        if found || crate::tail::bytes(&tail) >= max_bytes {
            break;
        }
    }
    let truncated = crate::tail::keep_newest(&mut tail, max_bytes);
    Ok(OutputChunk {
        pieces: tail,
        next: Cursor(log.end),
        dropped: log.dropped,
        truncated,
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
    async fn keep_archives(&self, id: ProcessId, archives: u32) -> Result<(), OutputError> {
        let archive = self.dir(id).join(ARCHIVE);
        let write = || -> io::Result<()> {
            crate::private::create_dir_all(&archive)?;
            let file = crate::private::options()
                .create(true)
                .truncate(true)
                .write(true)
                .open(archive.join(KEEP))?;
            file.write_all_at(archives.to_string().as_bytes(), 0)
        };
        write().map_err(|e| OutputError::Refused(format!("{}: {e}", archive.display())))
    }

    async fn append(
        &self,
        id: ProcessId,
        stream: Stream,
        data: &[u8],
    ) -> Result<Cursor, OutputError> {
        self.append_owned(id, stream, data.to_vec()).await.1
    }

    async fn append_owned(
        &self,
        id: ProcessId,
        stream: Stream,
        data: Vec<u8>,
    ) -> (Vec<u8>, Result<Cursor, OutputError>) {
        if self.reader {
            let refusal =
                format!("output of {id}: this store only reads what another process writes");
            return (data, Err(OutputError::Refused(refusal)));
        }
        let log = match self.log(id) {
            Ok(log) => log,
            Err(e) => return (data, Err(refused(id, &e))),
        };
        let (dir, cap) = (self.dir(id), self.cap);
        // The buffer goes to the blocking thread and back, uncopied.
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            let result = append_to(&dir, &mut log, cap, stream, &data)
                .map(|()| Cursor(log.end))
                .map_err(|e| refused(id, &e));
            (data, result)
        })
        .await
        .unwrap_or_else(|e| (Vec::new(), Err(OutputError::Unavailable(e.to_string()))))
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
        max_bytes: usize,
    ) -> Result<OutputChunk, OutputError> {
        let Some(log) = self.existing_log(id).map_err(|e| unavailable(id, &e))? else {
            return Ok(OutputChunk::default());
        };
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || {
            let log = log.lock().unwrap_or_else(PoisonError::into_inner);
            tail_of(&dir, &log, stream, lines, max_bytes)
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
