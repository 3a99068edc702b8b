//! Opening a store: loading the files, replaying the journal over them,
//! and keeping aside what cannot be restored.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bpm_domain::{ProcessId, ProcessRecord};
use bpm_ports::StoreError;

use super::Records;
use super::files::{read_record, read_record_beside_writer, write_files};
use super::journal::{self, Entry, Journal};
use super::{refused, sync_filesystem, unavailable};

/// How [`load_all`] treats files that cannot be read.
pub(super) enum Loading<'a> {
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
pub(super) fn load_all(
    dir: &Path,
    loading: &Loading,
    sharing: &mut Sharing,
) -> Result<Records, StoreError> {
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
            (Ok(mut record), _) => {
                sharing.share(&mut record);
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
pub(super) fn keep_damaged(dir: &Path, quarantine: &Path, damage: &[journal::Damage]) {
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
pub(super) fn describe_damage(d: &journal::Damage, records: &Records, quarantine: &Path) -> String {
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
pub(super) fn unused(path: &Path) -> PathBuf {
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

pub(super) fn folder_identity(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir)?;
    if meta.is_dir() {
        Ok((meta.dev(), meta.ino()))
    } else {
        Err(io::Error::other("not a folder"))
    }
}

/// Replays the journal over the records loaded from their files (the newer
/// version of each record wins; deletions apply), brings the files up to
/// date, flushes them, and starts the journal afresh.
pub(super) fn replay(
    dir: &Path,
    records: &mut Records,
    (entries, newest): (Vec<Entry>, u64),
    capacity: u64,
    sharing: &mut Sharing,
) -> Result<Journal, StoreError> {
    let replayed = !entries.is_empty();
    let mut behind = BTreeMap::new();
    for entry in entries {
        let record = match entry {
            Entry::Put(mut r) => {
                sharing.share(&mut r);
                r
            }
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

/// What records read back hold in common, kept once: equal environments
/// share one map, and the records of one node its name. Each file (or
/// journal file) is read with its own copies, and the records of one
/// caller usually carry the same environment. Sharing each record as it is
/// read, rather than all of them once read, lets the next record reuse the
/// memory of the last one's copy: 10,000 records from one shell held 13 MB
/// less of live heap once shared, and the daemon's resident memory after a
/// restart no longer keeps the copies' pages.
#[derive(Default)]
pub(super) struct Sharing {
    envs: HashSet<Arc<bpm_domain::Environment>>,
    nodes: HashSet<bpm_domain::NodeId>,
}

impl Sharing {
    /// Makes `record` hold the parts already seen instead of its own copies.
    pub(super) fn share(&mut self, record: &mut ProcessRecord) {
        match self.nodes.get(record.node()) {
            Some(node) => record.share_node(node),
            None => {
                self.nodes.insert(record.node().clone());
            }
        }
        let env = &record.spec().env;
        if env.is_empty() {
            return;
        }
        match self.envs.get(&**env) {
            Some(shared) if Arc::ptr_eq(shared, env) => {}
            Some(shared) => {
                let mut spec = record.spec().clone();
                spec.env = Arc::clone(shared);
                *record = ProcessRecord::from_update(Arc::new(spec), record.update());
            }
            None => {
                self.envs.insert(Arc::clone(env));
            }
        }
    }
}

/// The room a new record is taken to need: its file (mostly its
/// environment, a few KiB), written again as it changes.
pub(super) const RECORD_ROOM: u64 = 8 << 10;

/// Refuses to open where the journal cannot be laid out with room to spare:
/// a journal left half laid out, with no room for its log, is a daemon that
/// fails with nothing to say why.
pub(super) fn check_room_to_open(dir: &Path, journal_bytes: u64) -> Result<(), StoreError> {
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
