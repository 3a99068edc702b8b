//! Records as one JSON file each, behind a journal.
//!
//! Every write (a creation, an update, a deletion, or a batch of them) is
//! first appended to the journal (see `journal.rs`): one append for the
//! batch, flushed when the write must be durable, so a durable write costs
//! one flush whatever it holds, and an unflushed update (a change the domain
//! need not make durable) costs none. Each record's file `ID.json` is then
//! written whole, in place, by the store's own thread beside the writes
//! (which wait for none of it): once files have lagged a second and the
//! writes have paused (see [`QUIET`]), all of them before the journal
//! turns over, and when the store closes. A lock
//! taken before the journal's by a write that may turn it over, and held
//! while files are written, makes sure a file taken from those behind is on
//! disk before the journal file that holds its record is let go. Opening the store
//! replays the journal over the files, so what a crash or a power cut kept
//! from them (or tore in them) is restored. One process writes a store at a
//! time: opening it for writing takes an exclusive lock, and a second writer
//! is refused. Readers in other processes open it read-only and see whole
//! records (reading again a file caught mid-write), as of the last time the
//! files were written.
//!
//! Rewriting one state file per change is the known failure of peers; here
//! a change costs one journal entry and, later, one small file, whatever the
//! number of records.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, Timestamp};
use bpm_ports::{ProcessStore, StoreError, StoreWrite};
use rustix::fs::{FlockOperation, flock};

use super::journal::{self, CommitError, Entry, Journal, Op};
use super::{sync_dir, sync_filesystem};

/// How long a changed record's file lags behind the journal at least.
const WRITE_FILES_EVERY: Duration = Duration::from_secs(1);

/// How long the writes must have paused before lagging files are written.
/// Creating files is the costliest thing the store does (on ext4 without a
/// journal, each new file scans past every inode freed in the last seconds),
/// so it waits for a lull rather than competing for the CPU with the
/// processes whose starts and exits are being recorded.
const QUIET: Duration = Duration::from_millis(50);

/// How long files may lag while the writes never pause. Waiting longer
/// gains nothing under a load that does not pause, and leaves more to
/// write when it ends (a burst of 20,000 writes left up to 10,000 files
/// behind with 10 s, and the round trips right after it paid for them).
const WRITE_FILES_AT_LATEST: Duration = Duration::from_secs(2);

/// How many record files the catch-up writes between two looks at the
/// journal: a commit that hands a journal file over waits for these at most.
const FILES_PER_BATCH: usize = 64;

/// A store of records under a folder.
pub struct FsStore {
    dir: PathBuf,
    mode: Mode,
}

enum Mode {
    /// The writer: records cached in memory, the lock file held.
    Writer(Box<Writer>),
    /// A reader in another process: every call reads the files.
    Reader,
}

struct Writer {
    cache: Arc<RwLock<BTreeMap<ProcessId, ProcessRecord>>>,
    /// Durable versions journalled by `write_batch_unsynced` and not yet
    /// flushed: compare-and-set sees them, readers only once `sync` (or any
    /// flushed write) has put them on disk.
    unsynced: Mutex<Unsynced>,
    disk: Arc<Mutex<Disk>>,
    /// Held while record files are written, and taken before `disk` by a
    /// commit that may hand a journal file over: a file taken out of
    /// `behind` is on disk before the journal that holds it is let go.
    files: Arc<Mutex<()>>,
    /// Wakes the thread that writes record files (it waits on `disk`).
    wake: Arc<Condvar>,
    files_thread: Option<std::thread::JoinHandle<()>>,
    /// What opening found damaged in the journal, and what it cost.
    warnings: Vec<String>,
    _lock: File,
    /// One write at a time, so the version check and the write are one step.
    writing: tokio::sync::Mutex<()>,
    /// One `sync` at a time. A sync holds `writing` only to see what it
    /// covers, not while the disk flushes, so writes go on meanwhile.
    flushing: tokio::sync::Mutex<()>,
}

/// The records whose newest durable version is journalled but not flushed.
#[derive(Default)]
struct Unsynced {
    /// Each such record's versions since the one readers see, oldest first,
    /// each with the append that must be on disk before readers may see it:
    /// a durable version's own, an unflushed update's that of the durable
    /// version before it (which it replaces in the list).
    records: BTreeMap<ProcessId, Vec<(ProcessRecord, u64)>>,
    /// How many appends of durable versions were made.
    appends: u64,
}

impl Unsynced {
    /// The newest version of `id` written, if it waits for a flush.
    fn newest(&self, id: ProcessId) -> Option<&ProcessRecord> {
        self.records.get(&id)?.last().map(|(r, _)| r)
    }

    /// A durable version journalled by append number `append`.
    fn durable(&mut self, record: ProcessRecord, append: u64) {
        let versions = self.records.entry(record.id()).or_default();
        if versions.last().is_some_and(|(_, at)| *at == append) {
            versions.pop();
        }
        versions.push((record, append));
    }

    /// An unflushed update: it replaces the newest version if that waits for
    /// a flush, and is returned otherwise (readers may see it at once).
    fn update(&mut self, record: ProcessRecord) -> Option<ProcessRecord> {
        match self
            .records
            .get_mut(&record.id())
            .and_then(|v| v.last_mut())
        {
            Some((waiting, _)) => {
                *waiting = record;
                None
            }
            None => Some(record),
        }
    }
}

/// The writer's side of the disk: the journal, and the records whose files
/// are behind it.
struct Disk {
    journal: Journal,
    /// The folder's device and inode at open: writes stop if it is replaced.
    folder: (u64, u64),
    /// Each changed record's newest version, or `None` once deleted.
    behind: BTreeMap<ProcessId, Option<ProcessRecord>>,
    files_written: Instant,
    last_write: Instant,
    /// Set when the store closes: the files thread ends.
    closing: bool,
    /// Whether the files thread waits for records to fall behind (and must be woken).
    files_idle: bool,
    /// Whether the last round of record files failed for want of space:
    /// new records are refused until one succeeds.
    files_full: bool,
}

fn io_err(path: &Path, e: &io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn refused(path: &Path, e: &io::Error) -> StoreError {
    StoreError::Refused(io_err(path, e))
}

fn unavailable(path: &Path, e: &io::Error) -> StoreError {
    StoreError::Unavailable(io_err(path, e))
}

fn record_path(dir: &Path, id: ProcessId) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Reads one record file, checking that it holds the record its name says.
fn read_record(path: &Path, stem: &str) -> Result<ProcessRecord, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let r: ProcessRecord = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if r.id().to_string() == stem {
        Ok(r)
    } else {
        Err(format!("it holds record {}", r.id()))
    }
}

/// How often a reader in another process reads a record file again when it
/// caught the writer rewriting it, and how long it waits in between.
const TORN_READ_TRIES: u32 = 5;
const TORN_READ_PAUSE: Duration = Duration::from_millis(2);

/// [`read_record`] for a reader beside a live writer, which rewrites files
/// in place: a file that does not parse is read again a few times.
fn read_record_beside_writer(path: &Path, stem: &str) -> Result<ProcessRecord, String> {
    let mut tries = 1;
    loop {
        match read_record(path, stem) {
            Err(_) if tries < TORN_READ_TRIES && path.exists() => {
                tries += 1;
                std::thread::sleep(TORN_READ_PAUSE);
            }
            done => return done,
        }
    }
}

/// Removes `path` if it exists.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How [`load_all`] treats files that cannot be read.
enum Loading<'a> {
    /// The writer, at open: an unreadable file whose record the journal
    /// holds was torn by a crash and is restored by the replay; any other is
    /// moved to the quarantine folder with a warning.
    Writer {
        quarantine: &'a Path,
        journalled: &'a HashSet<ProcessId>,
    },
    /// A reader beside a live writer: files caught mid-write are read
    /// again; what stays unreadable is skipped with a warning.
    Reader,
}

/// Reads every record file; unreadable ones are never dropped silently and
/// never fatal (see [`Loading`]).
fn load_all(
    dir: &Path,
    loading: &Loading,
) -> Result<BTreeMap<ProcessId, ProcessRecord>, StoreError> {
    let mut records = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| unavailable(dir, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unavailable(dir, &e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "json")
            && !entry.file_type().is_ok_and(|t| t.is_file())
            && let Loading::Writer { quarantine, .. } = loading
        {
            // A folder (or anything but a file) where a record's file goes
            // would stop every write of that record: out of the way with it,
            // and the journal, if it holds the record, writes the file anew.
            let to = unused(&quarantine.join(name));
            tracing::warn!(path = %path.display(), moved_to = %to.display(), "not a file where a record's file goes: quarantined");
            fs::rename(&path, &to).map_err(|e| unavailable(&path, &e))?;
            continue;
        }
        if path.extension().is_some_and(|e| e == "tmp") {
            // A write that never reached its rename (temporary files are
            // used for records too large for the journal): the record's
            // previous version stands.
            if matches!(loading, Loading::Writer { .. }) {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let read = match loading {
            Loading::Writer { .. } => read_record(&path, stem),
            Loading::Reader => read_record_beside_writer(&path, stem),
        };
        match (read, loading) {
            (Ok(record), _) => {
                records.insert(record.id(), record);
            }
            (Err(why), Loading::Writer { journalled, .. })
                if stem
                    .parse::<ProcessId>()
                    .is_ok_and(|id| journalled.contains(&id)) =>
            {
                tracing::info!(file = %path.display(), reason = %why, "record file torn by a crash; the journal restores it");
            }
            (Err(why), Loading::Writer { quarantine, .. }) => {
                let to = unused(&quarantine.join(name));
                tracing::warn!(file = %path.display(), moved_to = %to.display(), reason = %why, "corrupt record quarantined");
                let _ = fs::rename(&path, &to);
            }
            (Err(why), Loading::Reader) => {
                tracing::warn!(file = %path.display(), reason = %why, "unreadable record skipped");
            }
        }
    }
    Ok(records)
}

/// Copies each journal file with damage to the quarantine folder before the
/// replay starts it afresh, for whoever looks into it.
fn keep_damaged(dir: &Path, quarantine: &Path, damage: &[journal::Damage]) {
    let mut copied = HashSet::new();
    for d in damage {
        if !copied.insert(d.file.clone()) {
            continue;
        }
        let name = d.file.file_name().map(|n| n.to_string_lossy().into_owned());
        let to = unused(&quarantine.join(format!("{}.damaged", name.unwrap_or_default())));
        if let Err(e) = fs::copy(&d.file, &to) {
            tracing::warn!(file = %d.file.display(), dir = %dir.display(), error = %e, "could not keep a copy of a damaged journal");
        }
    }
}

/// One line on a damaged stretch of the journal: where, how long, and which
/// records it cost (gone, or back at an earlier version).
fn describe_damage(
    d: &journal::Damage,
    records: &BTreeMap<ProcessId, ProcessRecord>,
    quarantine: &Path,
) -> String {
    use std::fmt::Write as _;
    let (kept, lost): (Vec<ProcessId>, Vec<ProcessId>) =
        d.ids.iter().partition(|id| records.contains_key(id));
    let list = |ids: &[ProcessId]| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!(
        "the journal {} was damaged: {} bytes at offset {} could not be read and were skipped \
         (every entry after them was recovered; a copy is in {})",
        d.file.display(),
        d.len,
        d.at,
        quarantine.display()
    );
    if !lost.is_empty() {
        let _ = write!(line, "; records lost: {}", list(&lost));
    }
    if !kept.is_empty() {
        let _ = write!(
            line,
            "; records that may have lost their latest change: {}",
            list(&kept)
        );
    }
    if d.ids.is_empty() {
        line.push_str("; no record id could be read in them");
    }
    line
}

/// `path`, or `path` with the first of `.1`, `.2`, ... that names nothing,
/// so a quarantined file never replaces an earlier one.
fn unused(path: &Path) -> PathBuf {
    let mut n = 0u32;
    let mut candidate = path.to_path_buf();
    while fs::symlink_metadata(&candidate).is_ok() && n < 10_000 {
        n += 1;
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        candidate = PathBuf::from(name);
    }
    candidate
}

fn folder_identity(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir)?;
    if meta.is_dir() {
        Ok((meta.dev(), meta.ino()))
    } else {
        Err(io::Error::other("not a folder"))
    }
}

/// Writes `record` whole to its file without waiting for the disk: in place,
/// over the previous version, padded with spaces to the previous length so
/// that one write covers the whole file.
///
/// In place rather than through a temporary file and a rename: every rename
/// frees the replaced file's inode, and on ext4 without a journal each new
/// file then scans past every inode freed in the last seconds (about a third
/// of the daemon's time while it started and ended hundreds of processes a
/// second). A file torn by a crash is covered by the journal, which keeps the
/// record's entry until the files written since are flushed; readers in
/// other processes retry a read that catches a write half done.
fn write_file(dir: &Path, record: &ProcessRecord) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let path = record_path(dir, record.id());
    let file = crate::private::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let before = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if bytes.len() < before {
        bytes.resize(before, b' ');
    }
    file.write_all_at(&bytes, 0).inspect_err(|_| {
        // A file begun on a full disk is not left empty: the journal
        // still holds the record, until the file can be written whole.
        if before == 0 {
            let _ = fs::remove_file(&path);
        }
    })
}

/// Brings the files of the records in `behind` up to date (without waiting
/// for the disk); a record that could not be written stays behind.
fn write_files(
    dir: &Path,
    behind: &mut BTreeMap<ProcessId, Option<ProcessRecord>>,
    written: &mut Instant,
) -> io::Result<()> {
    let mut first_error = None;
    for (id, version) in std::mem::take(behind) {
        let done = match &version {
            Some(record) => write_file(dir, record),
            None => remove_if_there(&record_path(dir, id)),
        };
        if let Err(e) = done {
            behind.insert(id, version);
            first_error.get_or_insert(e);
        }
    }
    *written = Instant::now();
    first_error.map_or(Ok(()), Err)
}

/// Writes `record` whole and durably without the journal (for a record too
/// large for it): temporary file, flush, rename, folder flush.
fn write_durably(dir: &Path, record: &ProcessRecord) -> io::Result<()> {
    let path = record_path(dir, record.id());
    let tmp = dir.join(format!("{}.tmp", record.id()));
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let write = || -> io::Result<()> {
        let mut f = crate::private::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

impl Disk {
    /// The journal's open file would go on taking writes in a folder that
    /// was moved away (or under a mount that is gone): refuses them.
    fn check_folder(&self, dir: &Path, ops: &[Op]) -> Result<(), StoreError> {
        if folder_identity(dir).ok() == Some(self.folder) {
            return Ok(());
        }
        let what = ops
            .first()
            .map(|op| op.id().to_string())
            .unwrap_or_default();
        Err(StoreError::Refused(format!(
            "record {what}: {}: the store's folder was moved, replaced or unmounted",
            dir.display()
        )))
    }

    /// Journals `ops` without a flush if that is a short write to the page
    /// cache: no journal file is handed over. Otherwise gives `ops` back
    /// untouched, for [`Disk::commit`].
    fn quick_commit(
        &mut self,
        dir: &Path,
        ops: Vec<Op>,
    ) -> Result<Result<(), StoreError>, Vec<Op>> {
        if let Err(e) = self.check_folder(dir, &ops) {
            return Ok(Err(e));
        }
        let entries = match self.journal.encode(&ops) {
            Ok(entries) if self.journal.fits(&entries) => entries,
            Ok(_) => return Err(ops),
            Err(e) => return Ok(Err(refused(&self.journal.path(), &e))),
        };
        match self.journal.append(&entries, false) {
            Ok(()) => {}
            Err(CommitError::Io(e)) => return Ok(Err(refused(&self.journal.path(), &e))),
            // It fits, so it is not too large.
            Err(CommitError::TooLarge) => return Err(ops),
        }
        self.note(ops);
        Ok(Ok(()))
    }

    /// Journals `ops` (flushed when `flush`), then notes their records as
    /// behind. The caller holds the files lock: a journal file may be
    /// handed over.
    fn commit(&mut self, dir: &Path, ops: Vec<Op>, flush: bool) -> Result<(), StoreError> {
        self.check_folder(dir, &ops)?;
        self.journal_ops(dir, ops, flush)
    }

    /// When the record files behind are to be written, if any are.
    fn files_due(&self) -> Option<Instant> {
        if self.behind.is_empty() {
            return None;
        }
        let soonest = (self.files_written + WRITE_FILES_EVERY).max(self.last_write + QUIET);
        Some(soonest.min(self.files_written + WRITE_FILES_AT_LATEST))
    }

    /// Journals `ops` as one append if one journal file can hold them. A
    /// batch too large for that goes in halves, each journalled whole (so
    /// a crash may keep the first and not the second, as it may keep some
    /// of the records written one by one below); one record too large for
    /// the journal is written to its own file durably.
    fn journal_ops(&mut self, dir: &Path, mut ops: Vec<Op>, flush: bool) -> Result<(), StoreError> {
        let Disk {
            journal,
            behind,
            files_written,
            ..
        } = self;
        match journal.commit(&ops, flush, || write_files(dir, behind, files_written)) {
            Ok(()) => {
                self.note(ops);
                Ok(())
            }
            Err(CommitError::TooLarge) if ops.len() > 1 => {
                let second = ops.split_off(ops.len() / 2);
                self.journal_ops(dir, ops, flush)?;
                self.journal_ops(dir, second, flush)
            }
            Err(CommitError::TooLarge) => {
                for op in ops {
                    let id = op.id();
                    let path = record_path(dir, id);
                    match op {
                        Op::Put(record) => write_durably(dir, &record),
                        Op::Delete(_) => remove_if_there(&path).and_then(|()| sync_dir(dir)),
                    }
                    .map_err(|e| refused(&path, &e))?;
                    behind.remove(&id);
                }
                Ok(())
            }
            Err(CommitError::Io(e)) => Err(refused(&journal.path(), &e)),
        }
    }

    /// Notes the records of journalled `ops` as behind their files.
    fn note(&mut self, ops: Vec<Op>) {
        self.last_write = Instant::now();
        for op in ops {
            match op {
                Op::Put(record) => self.behind.insert(record.id(), Some(*record)),
                Op::Delete(id) => self.behind.insert(id, None),
            };
        }
    }
}

/// Replays the journal over the records loaded from their files (the newer
/// version of each record wins; deletions apply), brings the files up to
/// date, flushes them, and starts the journal afresh.
fn replay(
    dir: &Path,
    records: &mut BTreeMap<ProcessId, ProcessRecord>,
    (entries, newest): (Vec<Entry>, u64),
    capacity: u64,
) -> Result<Journal, StoreError> {
    let replayed = !entries.is_empty();
    let mut behind = BTreeMap::new();
    for entry in entries {
        let record = match entry {
            Entry::Put(r) => *r,
            // The spec comes from the version put earlier in the same file
            // (or a newer one in the record's file: the spec never changes).
            Entry::Update(u) => {
                let id = u.id();
                let Some(record) = records.get(&id).and_then(|have| have.updated(*u)) else {
                    tracing::warn!(%id, "journal update of a record it never put: skipped");
                    continue;
                };
                record
            }
            Entry::Delete(id) => {
                records.remove(&id);
                behind.insert(id, None);
                continue;
            }
        };
        if records
            .get(&record.id())
            .is_none_or(|have| have.version() < record.version())
        {
            records.insert(record.id(), record.clone());
            behind.insert(record.id(), Some(record));
        }
    }
    let restored = behind.values().filter(|v| v.is_some()).count();
    if restored > 0 {
        tracing::info!(
            records = restored,
            "brought record files up to date from the journal"
        );
    }
    let mut written = Instant::now();
    write_files(dir, &mut behind, &mut written).map_err(|e| refused(dir, &e))?;
    // Whatever the files hold (some written before the last stop, never
    // flushed) must be on disk before the journal is emptied. An empty
    // journal means everything was flushed already.
    if replayed {
        sync_filesystem(dir).map_err(|e| refused(dir, &e))?;
    }
    Journal::start(dir, capacity, newest).map_err(|e| refused(dir, &e))
}

/// Makes records whose environments are equal share one map. They were read
/// one file (or one journal file) at a time, each with its own copy, and
/// the records of one caller usually carry the same environment: for 10,000
/// records from one shell, 13 MB less of live heap in a daemon just started
/// (77 MB against 90, measured after giving freed memory back).
fn share_environments(records: &mut BTreeMap<ProcessId, ProcessRecord>) {
    let mut seen: HashSet<Arc<bpm_domain::Environment>> = HashSet::new();
    for record in records.values_mut() {
        let env = &record.spec().env;
        if env.is_empty() {
            continue;
        }
        match seen.get(&**env) {
            Some(shared) if Arc::ptr_eq(shared, env) => {}
            Some(shared) => {
                let mut spec = record.spec().clone();
                spec.env = Arc::clone(shared);
                *record = ProcessRecord::from_update(Arc::new(spec), record.update());
            }
            None => {
                seen.insert(Arc::clone(env));
            }
        }
    }
}

/// The files thread: writes the record files behind the journal when
/// [`Disk::files_due`] says, until the store closes.
fn keep_files(dir: &Path, disk: &Mutex<Disk>, files: &Mutex<()>, wake: &Condvar) {
    let mut d = disk.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if d.closing {
            return;
        }
        let now = Instant::now();
        d = match d.files_due() {
            None => {
                d.files_idle = true;
                let mut d = wake.wait(d).unwrap_or_else(PoisonError::into_inner);
                d.files_idle = false;
                d
            }
            Some(at) if at > now => {
                wake.wait_timeout(d, at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            Some(_) => {
                drop(d);
                catch_up(dir, disk, files);
                disk.lock().unwrap_or_else(PoisonError::into_inner)
            }
        };
    }
}

/// Writes the files of the records behind now (not of those that fall
/// behind meanwhile: their changes gather for the next round, one file
/// each), batch by batch, so that a journal file handed over waits for one
/// batch at most.
fn catch_up(dir: &Path, disk: &Mutex<Disk>, files: &Mutex<()>) {
    let lock = || disk.lock().unwrap_or_else(PoisonError::into_inner);
    let mut left = lock().behind.len();
    while left > 0 {
        let _files = files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = {
            let mut disk = lock();
            let take = left.min(FILES_PER_BATCH);
            let rest = match disk.behind.keys().nth(take) {
                Some(&first_left) => disk.behind.split_off(&first_left),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut disk.behind, rest)
        };
        if batch.is_empty() {
            break;
        }
        left = left.saturating_sub(batch.len());
        let mut written = Instant::now();
        let result = write_files(dir, &mut batch, &mut written);
        // What could not be written waits again, unless a newer version did meanwhile.
        let mut disk = lock();
        for (id, version) in batch {
            disk.behind.entry(id).or_insert(version);
        }
        if let Err(e) = result {
            tracing::warn!(dir = %dir.display(), error = %e, "record files lag behind the journal");
            disk.files_full = crate::space::is_full(&e);
            break;
        }
        disk.files_full = false;
    }
    lock().files_written = Instant::now();
}

/// The room a new record is taken to need: its file (mostly its
/// environment, a few KiB), written again as it changes.
const RECORD_ROOM: u64 = 8 << 10;

/// Refuses to open where the journal cannot be laid out with room to spare:
/// a journal left half laid out, with no room for its log, is a daemon that
/// fails with nothing to say why.
fn check_room_to_open(dir: &Path, journal_bytes: u64) -> Result<(), StoreError> {
    let there: u64 = (0..2)
        .map(|n| {
            fs::metadata(dir.join(format!("journal.{n}"))).map_or(0, |m| m.len().min(journal_bytes))
        })
        .sum();
    let needed = (2 * journal_bytes).saturating_sub(there) + crate::space::RESERVE;
    match crate::space::short_of(
        dir,
        needed,
        "bpm's journal and new records",
        "free some space there, or set BPM_HOME to a folder on a larger disk",
    ) {
        Some(short) => Err(StoreError::Refused(short)),
        None => Ok(()),
    }
}

impl FsStore {
    /// Opens (creating it if needed) the store in `dir` for writing.
    ///
    /// # Errors
    /// [`StoreError::Refused`] if the folder cannot be made or another process
    /// writes to it; [`StoreError::Unavailable`] if it cannot be read.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with_journal(dir, journal::DEFAULT_CAPACITY)
    }

    /// [`open`](Self::open) with each of the journal's two files
    /// `journal_bytes` long (2 MiB by default).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_journal(
        dir: impl Into<PathBuf>,
        journal_bytes: u64,
    ) -> Result<Self, StoreError> {
        let dir = dir.into();
        let quarantine = dir.join("quarantine");
        crate::private::create_dir_all(&quarantine).map_err(|e| refused(&quarantine, &e))?;
        let lock_path = dir.join(".writer.lock");
        let lock = crate::private::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| refused(&lock_path, &e))?;
        take_lock(&lock).map_err(|_| {
            StoreError::Refused(format!(
                "{}: another process is writing to this store",
                dir.display()
            ))
        })?;
        let recovered = journal::recover(&dir).map_err(|e| unavailable(&dir, &e))?;
        let damage = recovered.damage;
        keep_damaged(&dir, &quarantine, &damage);
        let recovered = (recovered.entries, recovered.newest);
        let journalled = recovered
            .0
            .iter()
            .filter(|entry| matches!(entry, Entry::Put(_)))
            .map(Entry::id)
            .collect();
        let mut cache = load_all(
            &dir,
            &Loading::Writer {
                quarantine: &quarantine,
                journalled: &journalled,
            },
        )?;
        check_room_to_open(&dir, journal_bytes)?;
        let journal = replay(&dir, &mut cache, recovered, journal_bytes)?;
        let warnings = damage
            .iter()
            .map(|d| describe_damage(d, &cache, &quarantine))
            .collect::<Vec<_>>();
        for warning in &warnings {
            tracing::error!("{warning}");
        }
        share_environments(&mut cache);
        let folder = folder_identity(&dir).map_err(|e| unavailable(&dir, &e))?;
        let disk = Arc::new(Mutex::new(Disk {
            journal,
            folder,
            behind: BTreeMap::new(),
            files_written: Instant::now(),
            last_write: Instant::now(),
            closing: false,
            files_idle: false,
            files_full: false,
        }));
        let (files, wake) = (Arc::new(Mutex::new(())), Arc::new(Condvar::new()));
        let files_thread = {
            let (at, disk, files, wake) = (dir.clone(), disk.clone(), files.clone(), wake.clone());
            std::thread::Builder::new()
                .name("bpm-record-files".into())
                .spawn(move || keep_files(&at, &disk, &files, &wake))
                .map_err(|e| refused(&dir, &e))?
        };
        Ok(FsStore {
            dir,
            mode: Mode::Writer(Box::new(Writer {
                cache: Arc::new(RwLock::new(cache)),
                unsynced: Mutex::new(Unsynced::default()),
                disk,
                files,
                wake,
                files_thread: Some(files_thread),
                _lock: lock,
                writing: tokio::sync::Mutex::new(()),
                flushing: tokio::sync::Mutex::new(()),
                warnings,
            })),
        })
    }

    /// Opens the store in `dir` for reading only, alongside a writer in another process.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the folder cannot be read.
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::read_dir(&dir).map_err(|e| unavailable(&dir, &e))?;
        Ok(FsStore {
            dir,
            mode: Mode::Reader,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(PathBuf) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        // On a multi-threaded runtime the wait for the disk happens on this
        // worker (its other tasks move to another thread): handing the work
        // to the blocking pool and back cost two thread wake-ups, about
        // 0.3 ms of every write. A current-thread runtime must not block.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(move || f(dir));
        }
        tokio::task::spawn_blocking(move || f(dir))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Journals `ops` (flushed when `flush`). A quick append is made here;
    /// one that waits for the disk, writes record files or hands a journal
    /// file over is made off the async threads.
    async fn commit(&self, writer: &Writer, ops: Vec<Op>, flush: bool) -> Result<(), StoreError> {
        let ops = if flush {
            ops
        } else {
            // Handing a write of a few kilobytes to another thread and back
            // costs more than the write.
            let done = writer
                .disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .quick_commit(&self.dir, ops);
            match done {
                Ok(done) => {
                    Self::files_behind(writer);
                    return done;
                }
                Err(ops) => ops,
            }
        };
        let (disk, files) = (writer.disk.clone(), writer.files.clone());
        let done = self
            .blocking(move |dir| {
                let _files = files.lock().unwrap_or_else(PoisonError::into_inner);
                disk.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .commit(&dir, ops, flush)
            })
            .await;
        Self::files_behind(writer);
        done
    }

    /// Wakes the files thread if it waits for files to fall behind and some have.
    fn files_behind(writer: &Writer) {
        let disk = writer.disk.lock().unwrap_or_else(PoisonError::into_inner);
        if disk.files_idle && !disk.behind.is_empty() {
            writer.wake.notify_one();
        }
    }

    /// Writes `writes` as one journal append, flushed when `sync` and any
    /// of them must be durable.
    async fn batch(&self, writes: &[StoreWrite], sync: bool) -> Vec<Result<(), StoreError>> {
        let Some(writer) = self.writer() else {
            return writes.iter().map(|_| Err(Self::read_only())).collect();
        };
        let _turn = writer.writing.lock().await;
        // Check each write against the store as the earlier ones leave it;
        // the accepted ones go to the journal as one append.
        let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(writes.len());
        let mut after: BTreeMap<ProcessId, u64> = BTreeMap::new();
        let mut accepted = Vec::new();
        let mut flush = false;
        {
            let cached = writer.cache.read().unwrap_or_else(PoisonError::into_inner);
            let pending = writer
                .unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (i, w) in writes.iter().enumerate() {
                let id = w.record.id();
                let actual = after
                    .get(&id)
                    .copied()
                    .or_else(|| pending.newest(id).map(ProcessRecord::version))
                    .or_else(|| cached.get(&id).map(ProcessRecord::version));
                let checked = version_check(id, w.expected_version, actual);
                if checked.is_ok() {
                    after.insert(id, w.record.version());
                    flush |= sync && (w.durable || w.expected_version.is_none());
                    accepted.push(i);
                }
                results.push(checked);
            }
        }
        if accepted.is_empty() {
            return results;
        }
        let ops = accepted
            .iter()
            .map(|&i| Op::Put(Box::new(writes[i].record.clone())))
            .collect();
        let committed = self.commit(writer, ops, flush).await;
        let mut cached = writer.cache.write().unwrap_or_else(PoisonError::into_inner);
        let mut pending = writer
            .unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flush && committed.is_ok() {
            // The flush put every earlier append on disk too.
            show(&mut cached, &mut pending);
        }
        let append = pending.appends + 1;
        for i in accepted {
            let w = &writes[i];
            match &committed {
                Ok(()) => {
                    let id = w.record.id();
                    let durable = w.durable || w.expected_version.is_none();
                    if !sync && durable {
                        pending.appends = append;
                        pending.durable(w.record.clone(), append);
                    } else if let Some(visible) = pending.update(w.record.clone()) {
                        cached.insert(id, visible);
                    }
                }
                Err(e) => results[i] = Err(e.clone()),
            }
        }
        results
    }

    fn writer(&self) -> Option<&Writer> {
        match &self.mode {
            Mode::Writer(writer) => Some(writer),
            Mode::Reader => None,
        }
    }

    fn read_only() -> StoreError {
        StoreError::Refused("this store was opened read-only".into())
    }

    /// A write of `record` under compare-and-set, durable when `flush`.
    async fn put(
        &self,
        record: &ProcessRecord,
        expected: Option<u64>,
        flush: bool,
    ) -> Result<(), StoreError> {
        let Some(writer) = self.writer() else {
            return Err(Self::read_only());
        };
        let _turn = writer.writing.lock().await;
        check_version(&writer.cache, &writer.unsynced, record, expected)?;
        self.commit(writer, vec![Op::Put(Box::new(record.clone()))], flush)
            .await?;
        let mut cached = writer.cache.write().unwrap_or_else(PoisonError::into_inner);
        let mut pending = writer
            .unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flush {
            show(&mut cached, &mut pending);
        }
        if let Some(visible) = pending.update(record.clone()) {
            cached.insert(record.id(), visible);
        }
        Ok(())
    }
}

impl Drop for FsStore {
    fn drop(&mut self) {
        if let Mode::Writer(writer) = &mut self.mode {
            let Writer {
                disk,
                files,
                wake,
                files_thread,
                ..
            } = &mut **writer;
            disk.lock().unwrap_or_else(PoisonError::into_inner).closing = true;
            wake.notify_one();
            if let Some(thread) = files_thread.take() {
                let _ = thread.join();
            }
            let _files = files.lock().unwrap_or_else(PoisonError::into_inner);
            let mut disk = disk.lock().unwrap_or_else(PoisonError::into_inner);
            let Disk {
                behind,
                files_written,
                ..
            } = &mut *disk;
            if let Err(e) = write_files(&self.dir, behind, files_written) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "record files left behind the journal");
            }
        }
    }
}

/// How long `open` waits for a lock that is about to be released.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Takes the writer's lock, waiting up to [`LOCK_PATIENCE`] while it is held.
/// A lock can outlive its writer for a moment: a child being spawned by
/// another thread holds a copy of every descriptor, the lock's among them,
/// until its `exec` closes them, so a store closed and at once reopened in
/// one process could find its own old lock still taken.
fn take_lock(lock: &File) -> rustix::io::Result<()> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match flock(lock, FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Moves every version in `pending` into the cache readers see, once a
/// flush has put all the appends made so far on disk.
fn show(cache: &mut BTreeMap<ProcessId, ProcessRecord>, pending: &mut Unsynced) {
    show_flushed(cache, pending, u64::MAX);
}

/// Once the first `appends` appends are on disk: shows readers each
/// record's newest version that waited for no later one. One insert each:
/// `BTreeMap::append` rebuilds the whole cache, which made every flush cost
/// the number of records (a round trip at 10,000 records took 2.3 times as
/// long as at none).
fn show_flushed(
    cache: &mut BTreeMap<ProcessId, ProcessRecord>,
    pending: &mut Unsynced,
    appends: u64,
) {
    pending.records.retain(|id, versions| {
        let flushed = versions.partition_point(|(_, at)| *at <= appends);
        if let Some((record, _)) = versions.drain(..flushed).next_back() {
            cache.insert(*id, record);
        }
        !versions.is_empty()
    });
}

/// Compare-and-set: `record`'s stored version must be `expected` (`None`:
/// it must not exist yet).
fn check_version(
    cache: &RwLock<BTreeMap<ProcessId, ProcessRecord>>,
    unsynced: &Mutex<Unsynced>,
    record: &ProcessRecord,
    expected: Option<u64>,
) -> Result<(), StoreError> {
    let id = record.id();
    let actual = unsynced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .newest(id)
        .map(ProcessRecord::version)
        .or_else(|| {
            cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .map(ProcessRecord::version)
        });
    version_check(id, expected, actual)
}

fn version_check(
    id: ProcessId,
    expected: Option<u64>,
    actual: Option<u64>,
) -> Result<(), StoreError> {
    match (expected, actual) {
        (None, Some(_)) => Err(StoreError::AlreadyExists(id)),
        (Some(_), None) => Err(StoreError::NotFound(id)),
        (Some(expected), Some(actual)) if expected != actual => Err(StoreError::Conflict {
            id,
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

fn list_from(
    records: &BTreeMap<ProcessId, ProcessRecord>,
    filter: &ListFilter,
) -> Vec<ProcessRecord> {
    let start = filter.after.map_or(Bound::Unbounded, Bound::Excluded);
    records
        .range((start, Bound::Unbounded))
        .map(|(_, r)| r)
        .filter(|r| filter.matches(r))
        .take(filter.limit.unwrap_or(usize::MAX))
        .cloned()
        .collect()
}

#[async_trait]
impl ProcessStore for FsStore {
    fn room(&self, records: usize) -> Result<(), StoreError> {
        let Some(writer) = self.writer() else {
            return Ok(());
        };
        let needed =
            crate::space::RESERVE.saturating_add((records as u64).saturating_mul(RECORD_ROOM));
        let what = match records {
            1 => "a new record".to_string(),
            n => format!("{n} new records"),
        };
        if let Some(short) =
            crate::space::short_of(&self.dir, needed, &what, crate::space::FREE_SOME)
        {
            return Err(StoreError::Refused(short));
        }
        if writer
            .disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files_full
        {
            let device = crate::space::space(&self.dir)
                .map_or_else(|_| self.dir.display().to_string(), |s| s.device);
            return Err(StoreError::Refused(format!(
                "no space left on {device} ({}): the files of records bpm holds cannot be written; {}",
                self.dir.display(),
                crate::space::FREE_SOME
            )));
        }
        Ok(())
    }

    fn recovery_warnings(&self) -> Vec<String> {
        match &self.mode {
            Mode::Writer(w) => w.warnings.clone(),
            Mode::Reader => Vec::new(),
        }
    }

    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        self.put(record, None, true).await
    }

    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        match &self.mode {
            Mode::Writer(w) => w
                .cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned()
                .ok_or(StoreError::NotFound(id)),
            Mode::Reader => {
                self.blocking(move |dir| {
                    let path = record_path(&dir, id);
                    if !path.exists() {
                        return Err(StoreError::NotFound(id));
                    }
                    read_record_beside_writer(&path, &id.to_string()).map_err(|why| {
                        StoreError::Unavailable(format!("{}: {why}", path.display()))
                    })
                })
                .await
            }
        }
    }

    async fn update(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.put(record, Some(expected_version), true).await
    }

    async fn update_unflushed(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.put(record, Some(expected_version), false).await
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        self.batch(writes, true).await
    }

    async fn write_batch_unsynced(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        self.batch(writes, false).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let Some(writer) = self.writer() else {
            return Ok(());
        };
        let _one_at_a_time = writer.flushing.lock().await;
        // What this flush covers: the appends made so far. Writes made
        // while the disk flushes wait for the next sync.
        let (appends, file) = {
            let _turn = writer.writing.lock().await;
            let appends = {
                let pending = writer
                    .unsynced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pending.records.is_empty() {
                    return Ok(());
                }
                pending.appends
            };
            let mut disk = writer.disk.lock().unwrap_or_else(PoisonError::into_inner);
            let file = disk
                .journal
                .unflushed()
                .map_err(|e| refused(&disk.journal.path(), &e))?;
            (appends, file)
        };
        if let Some(file) = file {
            let disk = writer.disk.clone();
            self.blocking(move |_| {
                file.sync_data().map_err(|e| {
                    let mut disk = disk.lock().unwrap_or_else(PoisonError::into_inner);
                    disk.journal.flush_failed();
                    refused(&disk.journal.path(), &e)
                })
            })
            .await?;
        }
        show_flushed(
            &mut writer.cache.write().unwrap_or_else(PoisonError::into_inner),
            &mut writer
                .unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            appends,
        );
        Ok(())
    }

    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        let Some(writer) = self.writer() else {
            return Err(Self::read_only());
        };
        let _turn = writer.writing.lock().await;
        let known = writer
            .unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .contains_key(&id)
            || writer
                .cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&id);
        if !known {
            return Err(StoreError::NotFound(id));
        }
        self.commit(writer, vec![Op::Delete(id)], true).await?;
        let mut cached = writer.cache.write().unwrap_or_else(PoisonError::into_inner);
        show(
            &mut cached,
            &mut writer
                .unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        cached.remove(&id);
        Ok(())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        match &self.mode {
            Mode::Writer(w) => Ok(list_from(
                &w.cache.read().unwrap_or_else(PoisonError::into_inner),
                filter,
            )),
            Mode::Reader => {
                let filter = filter.clone();
                self.blocking(move |dir| Ok(list_from(&load_all(&dir, &Loading::Reader)?, &filter)))
                    .await
            }
        }
    }

    async fn expire(&self, ended_before: Timestamp) -> Result<Vec<ProcessId>, StoreError> {
        let due: Vec<ProcessId> = self
            .list(&ListFilter::default())
            .await?
            .into_iter()
            .filter(|r| r.lifecycle().ended_at().is_some_and(|t| t < ended_before))
            .map(|r| r.id())
            .collect();
        for id in &due {
            match self.delete(*id).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, ProcessSpec, Transition};

    fn versions() -> [ProcessRecord; 3] {
        let t = Timestamp::from_millis;
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(7));
        let created = ProcessRecord::new(id, NodeId::local(), ProcessSpec::argv(["true"]), t(1));
        let mut starting = created.clone();
        starting.apply(Transition::Start, t(2)).expect("start");
        let mut running = starting.clone();
        running
            .apply(Transition::Spawned { pid: 9 }, t(3))
            .expect("spawned");
        [created, starting, running]
    }

    #[test]
    fn a_flush_shows_the_newest_version_it_covers_not_a_later_durable_one() {
        let [created, starting, running] = versions();
        let id = created.id();
        let (mut cache, mut pending) = (BTreeMap::new(), Unsynced::default());
        pending.durable(created.clone(), 1);
        // Written while the flush of append 1 runs: covered by the next one.
        pending.durable(starting.clone(), 2);
        show_flushed(&mut cache, &mut pending, 1);
        assert_eq!(
            cache.get(&id),
            Some(&created),
            "the flushed creation is seen"
        );
        assert_eq!(pending.newest(id), Some(&starting));
        // An unflushed update waits with the durable version before it.
        assert_eq!(pending.update(running.clone()), None);
        show_flushed(&mut cache, &mut pending, 1);
        assert_eq!(cache.get(&id), Some(&created));
        show_flushed(&mut cache, &mut pending, 2);
        assert_eq!(cache.get(&id), Some(&running));
        assert!(pending.records.is_empty());
        // With nothing waiting, an unflushed update is seen at once.
        assert_eq!(pending.update(created.clone()), Some(created));
    }
}
