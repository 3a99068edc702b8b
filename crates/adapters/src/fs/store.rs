//! Records as one JSON file each, behind a journal.
//!
//! Every write (a creation, an update, a deletion, or a batch of them) is
//! first appended to the journal (see `journal.rs`): one append for the
//! batch, flushed when the write must be durable, so a durable write costs
//! one flush whatever it holds, and an unflushed update (a change the domain
//! need not make durable) costs none. Each record's file `ID.json` is then
//! written whole, in place, by the store's own thread beside the writes
//! (which wait for none of it): once files have lagged a second and the
//! writes have paused (see `disk::QUIET`), all of them before the journal
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

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord};
use bpm_ports::{ProcessStore, StoreError, StoreWrite};
use rustix::fs::{FlockOperation, flock};

use super::Records;
use super::disk::{Disk, keep_files};
use super::files::{read_record_beside_writer, record_path, write_files};
use super::journal::{self, Entry, Op};
use super::load::{
    Loading, RECORD_ROOM, Sharing, check_room_to_open, describe_damage, folder_identity,
    keep_damaged, load_all, replay,
};
use super::{refused, unavailable};

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
    cache: Arc<RwLock<Records>>,
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
        let mut sharing = Sharing::default();
        let mut cache = load_all(
            &dir,
            &Loading::Writer {
                quarantine: &quarantine,
                journalled: &journalled,
            },
            &mut sharing,
        )?;
        check_room_to_open(&dir, journal_bytes)?;
        let journal = replay(&dir, &mut cache, recovered, journal_bytes, &mut sharing)?;
        let warnings = damage
            .iter()
            .map(|d| describe_damage(d, &cache, &quarantine))
            .collect::<Vec<_>>();
        for warning in &warnings {
            tracing::error!("{warning}");
        }
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
            .map(|&i| Op::Put(writes[i].record.clone()))
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
        self.commit(writer, vec![Op::Put(record.clone())], flush)
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

    /// Before a read: flushes the versions written but not yet on disk (of
    /// record `id`, or of any record for `None`), so that what the read
    /// returns is on disk and nothing is hidden from it. A process started
    /// before its record's sync ended may ask for that record at once. A
    /// flush that fails is logged; the read then returns what is on disk.
    async fn flush_for_read(&self, writer: &Writer, id: Option<ProcessId>) {
        let waits = {
            let pending = writer
                .unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            id.map_or(!pending.records.is_empty(), |id| {
                pending.records.contains_key(&id)
            })
        };
        if waits && let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "a read could not flush what it reads");
        }
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
fn show(cache: &mut Records, pending: &mut Unsynced) {
    show_flushed(cache, pending, u64::MAX);
}

/// Once the first `appends` appends are on disk: shows readers each
/// record's newest version that waited for no later one. One insert each:
/// `BTreeMap::append` rebuilds the whole cache, which made every flush cost
/// the number of records (a round trip at 10,000 records took 2.3 times as
/// long as at none).
fn show_flushed(cache: &mut Records, pending: &mut Unsynced, appends: u64) {
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
    cache: &RwLock<Records>,
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

fn list_from(records: &Records, filter: &ListFilter) -> Vec<ProcessRecord> {
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
    /// A folder on this machine always answers; a full disk is
    /// [`room`](ProcessStore::room)'s to tell.
    async fn reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }

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
            Mode::Writer(w) => {
                self.flush_for_read(w, Some(id)).await;
                w.cache
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .cloned()
                    .ok_or(StoreError::NotFound(id))
            }
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
            Mode::Writer(w) => {
                self.flush_for_read(w, None).await;
                Ok(list_from(
                    &w.cache.read().unwrap_or_else(PoisonError::into_inner),
                    filter,
                ))
            }
            Mode::Reader => {
                let filter = filter.clone();
                self.blocking(move |dir| {
                    let records = load_all(&dir, &Loading::Reader, &mut Sharing::default())?;
                    Ok(list_from(&records, &filter))
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, ProcessSpec, Transition};

    fn versions() -> [ProcessRecord; 3] {
        let t = bpm_domain::Timestamp::from_millis;
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
