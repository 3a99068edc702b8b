//! Records as one JSON file each, written atomically.
//!
//! A write goes to a temporary file, is flushed to disk and renamed over the
//! record's file (the folder is flushed too when a record is created or
//! deleted): a record is either wholly there or not at all, and one
//! transition costs one small file whatever the number of records (rewriting
//! one state file per change is the known failure of peers). One process writes a store at a time: opening it for
//! writing takes an exclusive lock, and a second writer is refused. Readers in
//! other processes open it read-only and see whole records only.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use bpm_domain::{ListFilter, ProcessId, ProcessRecord, Timestamp};
use bpm_ports::{ProcessStore, StoreError};
use rustix::fs::{FlockOperation, flock};

/// A store of records under a folder.
pub struct FsStore {
    dir: PathBuf,
    mode: Mode,
}

enum Mode {
    /// The writer: records cached in memory, the lock file held.
    Writer {
        cache: Arc<RwLock<BTreeMap<ProcessId, ProcessRecord>>>,
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

/// Reads every record file; unreadable ones are moved to `quarantine` (when
/// given) with a warning, never dropped silently and never fatal.
fn load_all(
    dir: &Path,
    quarantine: Option<&Path>,
) -> Result<BTreeMap<ProcessId, ProcessRecord>, StoreError> {
    let mut records = BTreeMap::new();
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
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<ProcessRecord>(&bytes).map_err(|e| e.to_string())
            })
            .and_then(|r| {
                if r.id().to_string() == stem {
                    Ok(r)
                } else {
                    Err(format!("it holds record {}", r.id()))
                }
            });
        match parsed {
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
    Ok(records)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `record` whole or not at all. The data always reaches the disk
/// before the rename; the folder is flushed too when the name is new (a
/// create), so a created record cannot vanish. An update renames over an
/// existing name: after a power cut the file holds the old or the new
/// version, whole either way.
fn write_atomically(dir: &Path, record: &ProcessRecord, new_name: bool) -> Result<(), StoreError> {
    let path = record_path(dir, record.id());
    let tmp = dir.join(format!("{}.tmp", record.id()));
    let bytes = serde_json::to_vec(record)
        .map_err(|e| StoreError::Refused(format!("record {}: {e}", record.id())))?;
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        if new_name { sync_dir(dir) } else { Ok(()) }
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        refused(&path, &e)
    })
}

impl FsStore {
    /// Opens (creating it if needed) the store in `dir` for writing.
    ///
    /// # Errors
    /// [`StoreError::Refused`] if the folder cannot be made or another process
    /// writes to it; [`StoreError::Unavailable`] if it cannot be read.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
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
        let cache = load_all(&dir, Some(&quarantine))?;
        Ok(FsStore {
            dir,
            mode: Mode::Writer {
                cache: Arc::new(RwLock::new(cache)),
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
        tokio::task::spawn_blocking(move || f(dir))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Writes `record` to disk, then to the cache (only once it is on disk).
    async fn write_and_cache(
        &self,
        cache: &RwLock<BTreeMap<ProcessId, ProcessRecord>>,
        record: &ProcessRecord,
        new_name: bool,
    ) -> Result<(), StoreError> {
        let r = record.clone();
        self.blocking(move |dir| write_atomically(&dir, &r, new_name))
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
        let Mode::Writer { cache, writing, .. } = &self.mode else {
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
        self.write_and_cache(cache, record, true).await
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
                    match fs::read(&path) {
                        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                            StoreError::Unavailable(format!("{}: {e}", path.display()))
                        }),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            Err(StoreError::NotFound(id))
                        }
                        Err(e) => Err(unavailable(&path, &e)),
                    }
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
        let Mode::Writer { cache, writing, .. } = &self.mode else {
            return Err(Self::read_only());
        };
        let _turn = writing.lock().await;
        let actual = cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&record.id())
            .map(ProcessRecord::version)
            .ok_or(StoreError::NotFound(record.id()))?;
        if actual != expected_version {
            return Err(StoreError::Conflict {
                id: record.id(),
                expected: expected_version,
                actual,
            });
        }
        self.write_and_cache(cache, record, false).await
    }

    async fn delete(&self, id: ProcessId) -> Result<(), StoreError> {
        let Mode::Writer { cache, writing, .. } = &self.mode else {
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
        self.blocking(move |dir| {
            let path = record_path(&dir, id);
            fs::remove_file(&path).map_err(|e| refused(&path, &e))?;
            sync_dir(&dir).map_err(|e| refused(&dir, &e))
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
