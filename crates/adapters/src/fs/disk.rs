//! The store's side of the disk: the journal's commits, and the record
//! files that follow it on the store's own thread.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bpm_domain::{ProcessId, ProcessRecord};
use bpm_ports::StoreError;

use super::files::{record_path, remove_if_there, write_durably, write_files};
use super::journal::{CommitError, Journal, Op};
use super::load::folder_identity;
use super::{refused, sync_dir};

/// How long a changed record's file lags behind the journal at least.
pub(super) const WRITE_FILES_EVERY: Duration = Duration::from_secs(1);

/// How long the writes must have paused before lagging files are written.
/// Creating files is the costliest thing the store does (on ext4 without a
/// journal, each new file scans past every inode freed in the last seconds),
/// so it waits for a lull rather than competing for the CPU with the
/// processes whose starts and exits are being recorded.
pub(super) const QUIET: Duration = Duration::from_millis(50);

/// How long files may lag while the writes never pause. Waiting longer
/// gains nothing under a load that does not pause, and leaves more to
/// write when it ends (a burst of 20,000 writes left up to 10,000 files
/// behind with 10 s, and the round trips right after it paid for them).
pub(super) const WRITE_FILES_AT_LATEST: Duration = Duration::from_secs(2);

/// How many record files the catch-up writes between two looks at the
/// journal: a commit that hands a journal file over waits for these at most.
pub(super) const FILES_PER_BATCH: usize = 64;

/// The writer's side of the disk: the journal, and the records whose files
/// are behind it.
pub(super) struct Disk {
    pub(super) journal: Journal,
    /// The folder's device and inode at open: writes stop if it is replaced.
    pub(super) folder: (u64, u64),
    /// Each changed record's newest version, or `None` once deleted.
    pub(super) behind: BTreeMap<ProcessId, Option<ProcessRecord>>,
    pub(super) files_written: Instant,
    pub(super) last_write: Instant,
    /// Set when the store closes: the files thread ends.
    pub(super) closing: bool,
    /// Whether the files thread waits for records to fall behind (and must be woken).
    pub(super) files_idle: bool,
    /// Whether the last round of record files failed for want of space:
    /// new records are refused until one succeeds.
    pub(super) files_full: bool,
}

impl Disk {
    /// The journal's open file would go on taking writes in a folder that
    /// was moved away (or under a mount that is gone): refuses them.
    pub(super) fn check_folder(&self, dir: &Path, ops: &[Op]) -> Result<(), StoreError> {
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
    pub(super) fn quick_commit(
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
    pub(super) fn commit(
        &mut self,
        dir: &Path,
        ops: Vec<Op>,
        flush: bool,
    ) -> Result<(), StoreError> {
        self.check_folder(dir, &ops)?;
        self.journal_ops(dir, ops, flush)
    }

    /// When the record files behind are to be written, if any are.
    pub(super) fn files_due(&self) -> Option<Instant> {
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
    pub(super) fn journal_ops(
        &mut self,
        dir: &Path,
        mut ops: Vec<Op>,
        flush: bool,
    ) -> Result<(), StoreError> {
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
    pub(super) fn note(&mut self, ops: Vec<Op>) {
        self.last_write = Instant::now();
        for op in ops {
            match op {
                Op::Put(record) => self.behind.insert(record.id(), Some(record)),
                Op::Delete(id) => self.behind.insert(id, None),
            };
        }
    }
}

/// The files thread: writes the record files behind the journal when
/// [`Disk::files_due`] says, until the store closes.
pub(super) fn keep_files(dir: &Path, disk: &Mutex<Disk>, files: &Mutex<()>, wake: &Condvar) {
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
pub(super) fn catch_up(dir: &Path, disk: &Mutex<Disk>, files: &Mutex<()>) {
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
