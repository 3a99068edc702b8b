//! Records as one JSON file each, written atomically, behind a journal.
//!
//! A durable write (a creation, an update, a deletion, or a batch of them)
//! is appended to the journal and flushed there, one flush for the batch
//! (see `journal.rs`); then each record's file `ID.json` is written through
//! a temporary file and a rename, without waiting for the disk. A record is
//! either wholly there or not at all, and one transition costs one small
//! file whatever the number of records (rewriting one state file per change
//! is the known failure of peers). Opening the store replays the journal
//! over the files, so what a power cut kept from reaching them is restored.
//! An unflushed update (a change the domain need not make durable) goes to
//! `ID.live` the same way but without the flush; it is read when it is
//! whole and newer than `ID.json`, and the next flushed write removes it, so
//! a power cut that tears it leaves the flushed version standing. One process writes a store at a time: opening it for
//! writing takes an exclusive lock, and a second writer is refused. Readers in
//! other processes open it read-only and see whole records only.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, Timestamp};
use bpm_ports::{ProcessStore, StoreError, StoreWrite};
use rustix::fs::{FlockOperation, flock};

use super::journal::{self, CommitError, Journal, Op};

/// A store of records under a folder.
pub struct FsStore {
    dir: PathBuf,
    mode: Mode,
}

enum Mode {
    /// The writer: records cached in memory, the lock file held.
    Writer {
        cache: Arc<RwLock<BTreeMap<ProcessId, ProcessRecord>>>,
        journal: Arc<Mutex<Journal>>,
        _lock: File,
        /// One write at a time, so the version check and the write are one step.
        writing: tokio::sync::Mutex<()>,
    },
    /// A reader in another process: every call reads the files.
    Reader,
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

fn live_path(dir: &Path, id: ProcessId) -> PathBuf {
    dir.join(format!("{id}.live"))
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

/// Removes `path` if it exists.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads every record file; unreadable ones are moved to `quarantine` (when
/// given) with a warning, never dropped silently and never fatal. An
/// unflushed version (`ID.live`) replaces its record when it is whole and
/// newer; otherwise it is a leftover, removed by the writer.
fn load_all(
    dir: &Path,
    quarantine: Option<&Path>,
) -> Result<BTreeMap<ProcessId, ProcessRecord>, StoreError> {
    let mut records = BTreeMap::new();
    let mut live = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| unavailable(dir, &e))?;
    for entry in entries {
        let path = entry.map_err(|e| unavailable(dir, &e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "tmp") {
            // A write that never reached its rename: the record's previous version stands.
            if quarantine.is_some() {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if let Some(stem) = name.strip_suffix(".live") {
            live.push((path.clone(), stem.to_owned()));
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        match read_record(&path, stem) {
            Ok(record) => {
                records.insert(record.id(), record);
            }
            Err(why) => match quarantine {
                Some(q) => {
                    let to = q.join(name);
                    tracing::warn!(file = %path.display(), moved_to = %to.display(), reason = %why, "corrupt record quarantined");
                    let _ = fs::rename(&path, &to);
                }
                None => {
                    tracing::warn!(file = %path.display(), reason = %why, "unreadable record skipped");
                }
            },
        }
    }
    for (path, stem) in live {
        let newer = read_record(&path, &stem).ok().filter(|r| {
            records
                .get(&r.id())
                .is_some_and(|flushed| flushed.version() < r.version())
        });
        match newer {
            Some(r) => {
                records.insert(r.id(), r);
            }
            None if quarantine.is_some() => {
                let _ = fs::remove_file(&path);
            }
            None => {}
        }
    }
    Ok(records)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `record` whole to `ID.live` without flushing it: a crash of this
/// process keeps it, a power cut may leave it torn or missing, and then the
/// flushed `ID.json` stands.
fn write_unflushed(dir: &Path, record: &ProcessRecord) -> Result<(), StoreError> {
    write_file(dir, record, &live_path(dir, record.id()))
}

/// Writes `record` whole to `path` (through a temporary file and a rename)
/// without waiting for the disk.
fn write_file(dir: &Path, record: &ProcessRecord, path: &Path) -> Result<(), StoreError> {
    let path = path.to_path_buf();
    let tmp = dir.join(format!("{}.tmp", record.id()));
    let bytes = serde_json::to_vec(record)
        .map_err(|e| StoreError::Refused(format!("record {}: {e}", record.id())))?;
    let write = || -> io::Result<()> {
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        refused(&path, &e)
    })
}

/// One record of a flushed group: its final version, and whether its name is new.
struct GroupItem {
    record: ProcessRecord,
    new_name: bool,
}

/// Writes several records whole, with one wait for the disk for the group:
/// every temporary file is written, then each is flushed (on a journalling
/// filesystem the first flush commits them all, so the rest are quick), then
/// each is renamed into place, then the folder is flushed once if any name
/// is new. Returns one result per item.
fn write_group(dir: &Path, items: &[GroupItem]) -> Vec<Result<(), StoreError>> {
    let mut files: Vec<Result<File, StoreError>> = items
        .iter()
        .map(|item| {
            let id = item.record.id();
            let tmp = dir.join(format!("{id}.tmp"));
            let bytes = serde_json::to_vec(&item.record)
                .map_err(|e| StoreError::Refused(format!("record {id}: {e}")))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| refused(&record_path(dir, id), &e))?;
            f.write_all(&bytes)
                .map_err(|e| refused(&record_path(dir, id), &e))?;
            Ok(f)
        })
        .collect();
    for (item, file) in items.iter().zip(files.iter_mut()) {
        if let Ok(f) = file
            && let Err(e) = f.sync_data()
        {
            *file = Err(refused(&record_path(dir, item.record.id()), &e));
        }
    }
    let mut results: Vec<Result<(), StoreError>> = items
        .iter()
        .zip(files)
        .map(|(item, file)| {
            let id = item.record.id();
            let (tmp, path) = (dir.join(format!("{id}.tmp")), record_path(dir, id));
            let renamed =
                file.and_then(|_| fs::rename(&tmp, &path).map_err(|e| refused(&path, &e)));
            if renamed.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            renamed
        })
        .collect();
    if items.iter().any(|i| i.new_name)
        && let Err(e) = sync_dir(dir)
    {
        for (item, result) in items.iter().zip(results.iter_mut()) {
            if item.new_name && result.is_ok() {
                *result = Err(refused(dir, &e));
            }
        }
    }
    for (item, result) in items.iter().zip(results.iter_mut()) {
        if !item.new_name && result.is_ok() {
            let live = live_path(dir, item.record.id());
            if let Err(e) = remove_if_there(&live) {
                *result = Err(refused(&live, &e));
            }
        }
    }
    results
}

/// Makes `items` durable with one journal flush, then writes their files
/// without waiting for the disk. A group too large for the journal is
/// written the direct way. Returns one result per item.
fn write_durably(
    dir: &Path,
    journal: &Mutex<Journal>,
    items: &[GroupItem],
) -> Vec<Result<(), StoreError>> {
    let ops: Vec<Op> = items
        .iter()
        .map(|i| Op::Put(Box::new(i.record.clone())))
        .collect();
    let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
    match journal.commit(&ops) {
        Ok(()) => {}
        Err(CommitError::TooLarge) => return write_group(dir, items),
        Err(CommitError::Io(e)) => {
            let at = journal.path();
            return items.iter().map(|_| Err(refused(&at, &e))).collect();
        }
    }
    drop(journal);
    items
        .iter()
        .map(|item| {
            let id = item.record.id();
            write_file(dir, &item.record, &record_path(dir, id))?;
            if item.new_name {
                Ok(())
            } else {
                let live = live_path(dir, id);
                remove_if_there(&live).map_err(|e| refused(&live, &e))
            }
        })
        .collect()
}

/// Replays the journal over the records loaded from their files (the newer
/// version of each record wins; deletions apply), makes the result durable,
/// and starts the journal afresh.
fn replay(
    dir: &Path,
    records: &mut BTreeMap<ProcessId, ProcessRecord>,
    capacity: u64,
) -> Result<Journal, StoreError> {
    let (ops, newest) = journal::recover(dir).map_err(|e| unavailable(dir, &e))?;
    let mut put = BTreeMap::new();
    let mut gone = Vec::new();
    for op in ops {
        match op {
            Op::Put(r) => {
                if records
                    .get(&r.id())
                    .is_none_or(|have| have.version() < r.version())
                {
                    records.insert(r.id(), (*r).clone());
                    put.insert(r.id(), *r);
                }
            }
            Op::Delete(id) => {
                records.remove(&id);
                put.remove(&id);
                gone.push(id);
            }
        }
    }
    if !put.is_empty() {
        tracing::warn!(records = put.len(), "restored records from the journal");
    }
    let items: Vec<GroupItem> = put
        .into_values()
        .map(|record| GroupItem {
            record,
            new_name: true,
        })
        .collect();
    if let Some(Err(e)) = write_group(dir, &items).into_iter().find(Result::is_err) {
        return Err(e);
    }
    for id in gone {
        for path in [live_path(dir, id), record_path(dir, id)] {
            remove_if_there(&path).map_err(|e| refused(&path, &e))?;
        }
    }
    sync_dir(dir).map_err(|e| refused(dir, &e))?;
    Journal::start(dir, capacity, newest).map_err(|e| refused(dir, &e))
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
        fs::create_dir_all(&quarantine).map_err(|e| refused(&quarantine, &e))?;
        let lock_path = dir.join(".writer.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| refused(&lock_path, &e))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            StoreError::Refused(format!(
                "{}: another process is writing to this store",
                dir.display()
            ))
        })?;
        let mut cache = load_all(&dir, Some(&quarantine))?;
        let journal = replay(&dir, &mut cache, journal_bytes)?;
        Ok(FsStore {
            dir,
            mode: Mode::Writer {
                cache: Arc::new(RwLock::new(cache)),
                journal: Arc::new(Mutex::new(journal)),
                _lock: lock,
                writing: tokio::sync::Mutex::new(()),
            },
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

    /// Writes `record` to disk, then to the cache (only once it is on disk).
    async fn write_and_cache(
        &self,
        cache: &RwLock<BTreeMap<ProcessId, ProcessRecord>>,
        journal: &Arc<Mutex<Journal>>,
        record: &ProcessRecord,
        new_name: bool,
    ) -> Result<(), StoreError> {
        let item = GroupItem {
            record: record.clone(),
            new_name,
        };
        let journal = journal.clone();
        self.blocking(move |dir| {
            write_durably(&dir, &journal, std::slice::from_ref(&item))
                .pop()
                .unwrap_or(Ok(()))
        })
        .await?;
        cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.id(), record.clone());
        Ok(())
    }

    fn read_only() -> StoreError {
        StoreError::Refused("this store was opened read-only".into())
    }
}

/// Compare-and-set: `record`'s stored version must be `expected`.
fn check_version(
    cache: &RwLock<BTreeMap<ProcessId, ProcessRecord>>,
    record: &ProcessRecord,
    expected: u64,
) -> Result<(), StoreError> {
    let actual = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&record.id())
        .map(ProcessRecord::version)
        .ok_or(StoreError::NotFound(record.id()))?;
    if actual == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            id: record.id(),
            expected,
            actual,
        })
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
    async fn create(&self, record: &ProcessRecord) -> Result<(), StoreError> {
        let Mode::Writer {
            cache,
            journal,
            writing,
            ..
        } = &self.mode
        else {
            return Err(Self::read_only());
        };
        let _turn = writing.lock().await;
        if cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&record.id())
        {
            return Err(StoreError::AlreadyExists(record.id()));
        }
        self.write_and_cache(cache, journal, record, true).await
    }

    async fn get(&self, id: ProcessId) -> Result<ProcessRecord, StoreError> {
        match &self.mode {
            Mode::Writer { cache, .. } => cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned()
                .ok_or(StoreError::NotFound(id)),
            Mode::Reader => {
                self.blocking(move |dir| {
                    let path = record_path(&dir, id);
                    let flushed: ProcessRecord = match fs::read(&path) {
                        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                            StoreError::Unavailable(format!("{}: {e}", path.display()))
                        })?,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(StoreError::NotFound(id));
                        }
                        Err(e) => return Err(unavailable(&path, &e)),
                    };
                    let live = read_record(&live_path(&dir, id), &id.to_string()).ok();
                    Ok(live
                        .filter(|r| r.version() > flushed.version())
                        .unwrap_or(flushed))
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
        let Mode::Writer {
            cache,
            journal,
            writing,
            ..
        } = &self.mode
        else {
            return Err(Self::read_only());
        };
        let _turn = writing.lock().await;
        check_version(cache, record, expected_version)?;
        self.write_and_cache(cache, journal, record, false).await
    }

    async fn update_unflushed(
        &self,
        record: &ProcessRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let Mode::Writer { cache, writing, .. } = &self.mode else {
            return Err(Self::read_only());
        };
        let _turn = writing.lock().await;
        check_version(cache, record, expected_version)?;
        // No flush, so no blocking wait worth a thread: a small write and a rename.
        write_unflushed(&self.dir, record)?;
        cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.id(), record.clone());
        Ok(())
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Vec<Result<(), StoreError>> {
        let Mode::Writer {
            cache,
            journal,
            writing,
            ..
        } = &self.mode
        else {
            return writes.iter().map(|_| Err(Self::read_only())).collect();
        };
        let _turn = writing.lock().await;
        // Check each write against the store as the earlier ones leave it.
        let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(writes.len());
        let mut after: HashMap<ProcessId, u64> = HashMap::new();
        // Per record: its final version, whether it needs a flush, whether it is new, and its writes.
        let mut plan: BTreeMap<ProcessId, (usize, bool, bool, Vec<usize>)> = BTreeMap::new();
        {
            let cached = cache.read().unwrap_or_else(PoisonError::into_inner);
            for (i, w) in writes.iter().enumerate() {
                let id = w.record.id();
                let current = after
                    .get(&id)
                    .copied()
                    .or_else(|| cached.get(&id).map(ProcessRecord::version));
                let checked = match (w.expected_version, current) {
                    (None, Some(_)) => Err(StoreError::AlreadyExists(id)),
                    (Some(_), None) => Err(StoreError::NotFound(id)),
                    (Some(expected), Some(actual)) if expected != actual => {
                        Err(StoreError::Conflict {
                            id,
                            expected,
                            actual,
                        })
                    }
                    _ => Ok(()),
                };
                if checked.is_ok() {
                    after.insert(id, w.record.version());
                    let created = w.expected_version.is_none();
                    let entry = plan.entry(id).or_insert((i, false, false, Vec::new()));
                    entry.0 = i;
                    entry.1 |= w.durable || created;
                    entry.2 |= created;
                    entry.3.push(i);
                }
                results.push(checked);
            }
        }
        let mut group = Vec::new();
        let mut group_writes = Vec::new();
        for (last, flush, created, indices) in plan.into_values() {
            let record = &writes[last].record;
            if flush {
                group.push(GroupItem {
                    record: record.clone(),
                    new_name: created,
                });
                group_writes.push(indices);
            } else {
                let written = write_unflushed(&self.dir, record);
                if written.is_ok() {
                    cache
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(record.id(), record.clone());
                }
                for i in indices {
                    results[i].clone_from(&written);
                }
            }
        }
        if group.is_empty() {
            return results;
        }
        let records: Vec<ProcessRecord> = group.iter().map(|g| g.record.clone()).collect();
        let written = match self
            .blocking({
                let journal = journal.clone();
                move |dir| Ok(write_durably(&dir, &journal, &group))
            })
            .await
        {
            Ok(written) => written,
            Err(e) => vec![Err(e); records.len()],
        };
        let mut cached = cache.write().unwrap_or_else(PoisonError::into_inner);
        for ((record, result), indices) in records.into_iter().zip(written).zip(group_writes) {
            if result.is_ok() {
                cached.insert(record.id(), record);
            }
            for i in indices {
                results[i].clone_from(&result);
            }
        }
        results
    }

    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        let Mode::Writer {
            cache,
            journal,
            writing,
            ..
        } = &self.mode
        else {
            return Err(Self::read_only());
        };
        let _turn = writing.lock().await;
        if !cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
        {
            return Err(StoreError::NotFound(id));
        }
        let journal = journal.clone();
        self.blocking(move |dir| {
            // The deletion is durable once journalled; the files go after.
            let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
            journal.commit(&[Op::Delete(id)]).map_err(|e| match e {
                CommitError::Io(e) => refused(&journal.path(), &e),
                CommitError::TooLarge => StoreError::Refused("the journal is too small".into()),
            })?;
            drop(journal);
            let live = live_path(&dir, id);
            remove_if_there(&live).map_err(|e| refused(&live, &e))?;
            let path = record_path(&dir, id);
            remove_if_there(&path).map_err(|e| refused(&path, &e))
        })
        .await?;
        cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        Ok(())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ProcessRecord>, StoreError> {
        match &self.mode {
            Mode::Writer { cache, .. } => Ok(list_from(
                &cache.read().unwrap_or_else(PoisonError::into_inner),
                filter,
            )),
            Mode::Reader => {
                let filter = filter.clone();
                self.blocking(move |dir| Ok(list_from(&load_all(&dir, None)?, &filter)))
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
