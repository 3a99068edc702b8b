//! The record files: one JSON file per record, written whole, in place,
//! and read again when a read catches a write half done.

use std::collections::BTreeMap;
use std::fs::{self};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bpm_domain::{ProcessId, ProcessRecord};

use super::sync_dir;

pub(super) fn record_path(dir: &Path, id: ProcessId) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Reads one record file, checking that it holds the record its name says.
pub(super) fn read_record(path: &Path, stem: &str) -> Result<ProcessRecord, String> {
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
pub(super) const TORN_READ_TRIES: u32 = 5;

pub(super) const TORN_READ_PAUSE: Duration = Duration::from_millis(2);

/// [`read_record`] for a reader beside a live writer, which rewrites files
/// in place: a file that does not parse is read again a few times.
pub(super) fn read_record_beside_writer(path: &Path, stem: &str) -> Result<ProcessRecord, String> {
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
pub(super) fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
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
pub(super) fn write_file(dir: &Path, record: &ProcessRecord) -> io::Result<()> {
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
pub(super) fn write_files(
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
pub(super) fn write_durably(dir: &Path, record: &ProcessRecord) -> io::Result<()> {
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
