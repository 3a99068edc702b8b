//! The filesystem store's journal: every write lands here first, as one
//! append for a whole group of records, flushed when the write must be
//! durable; the records' own files are written later, in bulk, without
//! waiting for the disk.
//!
//! Two preallocated files, `journal.0` and `journal.1`, take turns. Each
//! starts with a header (a magic and a generation); each entry carries the
//! generation, its length and a checksum, so replay knows an entry that is
//! torn or left from an earlier turn. Since a file is written in order, an
//! unreadable entry followed by a whole one of the same turn is damage, not
//! the end: replay goes on from that next entry, and the store reports the
//! stretch it skipped and the records it named (see `Damage`), keeping a
//! copy of the file in the quarantine folder. A record's first entry in a
//! file holds it whole; its later entries in that file leave out its spec
//! (which never changes, and holds the process's whole environment, most of
//! a record's size), and replay takes the spec from the version before.
//! An environment is written once per file (`env`, under a number) and
//! the records that share it name it (`put_shared`): a batch of processes
//! from one shell carries one environment, which may be most of each record.
//! Since a file handed over is replaced by the record files before it is
//! invalidated, every record the live file updates has its whole version
//! there, or in its own file. Overwriting preallocated blocks
//! and flushing them costs one device flush, where creating a record's file
//! and flushing it (and its folder) costs two filesystem commits.
//!
//! When the active file is full, the record files are brought up to date,
//! the other file takes over under a new generation, and a background thread
//! flushes the filesystem, then invalidates the full file. Opening the store replays both (older generation
//! first) over what the record files hold, keeping the newer version of each
//! record, makes the result durable, and starts a fresh generation.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use bpm_domain::{Environment, ProcessId, ProcessRecord, ProcessSpec, RecordUpdate};
use serde::{Deserialize, Serialize};

/// Version 2: an entry's checksum covers its generation too.
const MAGIC: &[u8; 8] = b"bpmjrnl2";
/// Version 1 (read only): an entry's checksum covers its payload alone.
const MAGIC_V1: &[u8; 8] = b"bpmjrnl1";
/// The header: the magic, then the generation (0: nothing to replay).
const HEADER_LEN: usize = 16;
const HEADER: u64 = HEADER_LEN as u64;
/// An entry's head: generation, payload length, payload checksum.
const ENTRY_HEAD: usize = 20;
/// Each of the two files, unless the store is opened with another size.
pub(super) const DEFAULT_CAPACITY: u64 = 2 << 20;

/// One change to journal.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// The record's new version.
    Put(ProcessRecord),
    /// The record is gone.
    Delete(ProcessId),
}

impl Op {
    pub(super) fn id(&self) -> ProcessId {
        match self {
            Op::Put(r) => r.id(),
            Op::Delete(id) => *id,
        }
    }
}

/// How a change is written: the first version of a record in a journal
/// file whole, later ones in the same file without the spec, which never
/// changes (a record's spec holds its whole environment, most of its size).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Written<'a> {
    Put(&'a ProcessRecord),
    Update(Box<RecordUpdate>),
    Delete(ProcessId),
    /// An environment that records put later in this file name by `key`.
    Env {
        key: u64,
        #[serde(serialize_with = "bpm_domain::env_serde::serialize")]
        env: &'a Arc<Environment>,
    },
    /// A record put whole, its spec's environment given by `env`.
    PutShared {
        env: u64,
        spec: Box<ProcessSpec>,
        record: Box<RecordUpdate>,
    },
}

/// What a journal file holds, as read back: environments are resolved
/// into the records that name them before replay sees them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Read {
    Put(ProcessRecord),
    Update(Box<RecordUpdate>),
    Delete(ProcessId),
    Env {
        key: u64,
        #[serde(with = "bpm_domain::env_serde")]
        env: Arc<Environment>,
    },
    PutShared {
        env: u64,
        spec: Box<ProcessSpec>,
        record: Box<RecordUpdate>,
    },
}

/// The environments a journal file holds: by the address of the shared
/// map (kept alive here, so the address stays its own) to the key.
type Envs = HashMap<usize, (u64, Arc<Environment>)>;

/// An environment smaller than this is written with its record.
const SHARED_ENV_MIN: usize = 4;

/// One change as read back.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    /// The record's new version.
    Put(ProcessRecord),
    /// A new version of a record put earlier in the same journal file.
    Update(Box<RecordUpdate>),
    /// The record is gone.
    Delete(ProcessId),
}

impl Entry {
    pub(super) fn id(&self) -> ProcessId {
        match self {
            Entry::Put(r) => r.id(),
            Entry::Update(u) => u.id(),
            Entry::Delete(id) => *id,
        }
    }
}

/// What `commit` could not do.
#[derive(Debug)]
pub(super) enum CommitError {
    /// The group does not fit in an empty journal file: write it another way.
    TooLarge,
    /// The journal could not be written or flushed.
    Io(io::Error),
}

/// FNV-1a, 64 bits: enough to tell a whole entry from a torn one.
fn checksum(bytes: &[u8]) -> u64 {
    fnv(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv(from: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(from, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An entry's checksum: its generation, then its payload. A stale entry of
/// an earlier turn fails it, so a damaged generation field cannot hide a
/// whole entry of this turn (it would read as the end of the file).
fn entry_sum(generation: u64, payload: &[u8]) -> u64 {
    fnv(checksum(&generation.to_le_bytes()), payload)
}

fn path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("journal.{n}"))
}

fn write_header(file: &File, generation: u64) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&generation.to_le_bytes());
    file.write_all_at(&header, 0)?;
    file.sync_data()
}

/// The generation and the entries of one journal file (none if it is
/// missing, invalidated or not a journal).
/// A stretch of a journal file that could not be read, between entries that could.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    /// The file (`journal.0` or `journal.1`).
    pub file: PathBuf,
    /// Where the stretch starts and how long it is, in bytes.
    pub at: usize,
    /// Its length.
    pub len: usize,
    /// The ids of records it names (as far as they can be read), whose
    /// change it held.
    pub ids: Vec<ProcessId>,
}

/// The entry of `generation` at `at`, if a whole one is there: its payload
/// and where the next begins. In a version 2 file the checksum says which
/// generation wrote it, so the generation field itself is not trusted.
fn entry_at(bytes: &[u8], at: usize, generation: u64, v1: bool) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + ENTRY_HEAD)?;
    let entry_gen = u64::from_le_bytes(head[..8].try_into().ok()?);
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(head[12..20].try_into().ok()?);
    let start = at + ENTRY_HEAD;
    if (v1 && entry_gen != generation) || len == 0 {
        return None;
    }
    let payload = bytes.get(start..start.checked_add(len)?)?;
    let expected = if v1 {
        checksum(payload)
    } else {
        entry_sum(generation, payload)
    };
    (expected == sum).then_some((payload, start + len))
}

/// The first whole entry of `generation` after `from`: a file is written in
/// order, so one found past an entry that could not be read means that
/// entry was damaged (a torn or lost block, bytes changed), not the end.
fn next_entry(bytes: &[u8], from: usize, generation: u64, v1: bool) -> Option<usize> {
    let mark = generation.to_le_bytes();
    (from..bytes.len().saturating_sub(ENTRY_HEAD))
        .filter(|&at| bytes[at..at + 8] == mark)
        .find(|&at| entry_at(bytes, at, generation, v1).is_some())
}

/// The newest turn whose entries `bytes` holds (version 2), and where its
/// first whole entry starts: a file is reused turn after turn, and each
/// turn writes from the header on, so the newest turn is the highest
/// generation any whole entry carries. Used when the header is damaged.
fn newest_turn(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut best: Option<(u64, usize)> = None;
    let mut at = HEADER_LEN;
    while at + ENTRY_HEAD < bytes.len() {
        let generation = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        // A cheap look first: a generation, then a JSON object.
        let plausible =
            generation != 0 && generation < 1 << 48 && bytes.get(at + ENTRY_HEAD) == Some(&b'{');
        if let Some((_, next)) = plausible
            .then(|| entry_at(bytes, at, generation, false))
            .flatten()
        {
            if best.is_none_or(|(g, _)| generation > g) {
                best = Some((generation, at));
            }
            at = next;
        } else {
            at += 1;
        }
    }
    best
}

/// The record ids written in `bytes` (36-character UUIDs).
fn ids_in(bytes: &[u8]) -> Vec<ProcessId> {
    let mut ids = Vec::new();
    for window in bytes.windows(36) {
        if window[8] == b'-'
            && window[13] == b'-'
            && let Ok(text) = std::str::from_utf8(window)
            && let Ok(id) = text.parse::<ProcessId>()
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// What journal file `n` holds: its generation, its entries in order, and
/// the stretches between them that could not be read.
fn read(dir: &Path, n: usize) -> io::Result<(u64, Vec<Entry>, Vec<Damage>)> {
    let file = path(dir, n);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    if bytes.len() < HEADER_LEN {
        return Ok((0, Vec::new(), Vec::new()));
    }
    let mut damage = Vec::new();
    let v1 = &bytes[..8] == MAGIC_V1;
    let mut generation = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let mut at = HEADER_LEN;
    let header_whole = &bytes[..8] == MAGIC || v1;
    let first_reads = v1 || entry_at(&bytes, HEADER_LEN, generation, false).is_some();
    if !header_whole || (generation != 0 && !first_reads) {
        // The header cannot be trusted: the entries say which turn the
        // file holds (their checksums cover their generation), so a
        // damaged header costs nothing that checks out.
        match newest_turn(&bytes) {
            Some((turn, first)) if !header_whole || turn > generation => {
                generation = turn;
                damage.push(Damage {
                    file: file.clone(),
                    at: 0,
                    len: first,
                    ids: ids_in(&bytes[..first]),
                });
                at = first;
            }
            Some(_) => {}
            None if header_whole || bytes.iter().all(|b| *b == 0) => {}
            None => {
                // Not a journal any more: nothing in it checks out.
                damage.push(Damage {
                    file: file.clone(),
                    at: 0,
                    len: bytes.len(),
                    ids: ids_in(&bytes),
                });
                return Ok((0, Vec::new(), damage));
            }
        }
    }
    let mut ops = Vec::new();
    let mut envs: HashMap<u64, Arc<Environment>> = HashMap::new();
    while generation != 0 && at + ENTRY_HEAD <= bytes.len() {
        let Some((payload, next)) = entry_at(&bytes, at, generation, v1) else {
            // The end of this turn's entries, unless a whole one follows.
            let Some(resume) = next_entry(&bytes, at + 1, generation, v1) else {
                // An entry of this turn was begun here: a write cut short
                // by a crash, or damage. Either way, say what it held.
                if bytes[at..at + 8] == generation.to_le_bytes() {
                    let len =
                        u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
                    let end = (at + ENTRY_HEAD)
                        .saturating_add(len as usize)
                        .min(bytes.len());
                    damage.push(Damage {
                        file: file.clone(),
                        at,
                        len: end - at,
                        ids: ids_in(&bytes[at..end]),
                    });
                }
                break;
            };
            damage.push(Damage {
                file: file.clone(),
                at,
                len: resume - at,
                ids: ids_in(&bytes[at..resume]),
            });
            at = resume;
            continue;
        };
        ops.extend(decode(payload, &file, at..next, &mut envs, &mut damage));
        at = next;
    }
    Ok((generation, ops, damage))
}

/// The entry of the payload read at `span` of `file`, if it is one:
/// an environment entry is kept in `envs` for the records that follow;
/// what does not decode is noted in `damage`.
fn decode(
    payload: &[u8],
    file: &Path,
    span: std::ops::Range<usize>,
    envs: &mut HashMap<u64, Arc<Environment>>,
    damage: &mut Vec<Damage>,
) -> Option<Entry> {
    match serde_json::from_slice::<Read>(payload) {
        Ok(Read::Put(r)) => Some(Entry::Put(r)),
        Ok(Read::Update(u)) => Some(Entry::Update(u)),
        Ok(Read::Delete(id)) => Some(Entry::Delete(id)),
        Ok(Read::Env { key, env }) => {
            envs.insert(key, env);
            None
        }
        Ok(Read::PutShared {
            env,
            mut spec,
            record,
        }) => {
            if let Some(env) = envs.get(&env) {
                spec.env = Arc::clone(env);
                Some(Entry::Put(ProcessRecord::from_update(
                    Arc::new(*spec),
                    *record,
                )))
            } else {
                // Its environment was in a damaged stretch.
                damage.push(Damage {
                    file: file.to_path_buf(),
                    at: span.start,
                    len: span.len(),
                    ids: vec![record.id()],
                });
                None
            }
        }
        Err(_) => {
            damage.push(Damage {
                file: file.to_path_buf(),
                at: span.start,
                len: span.len(),
                ids: ids_in(payload),
            });
            None
        }
    }
}

/// What both journal files still hold: their entries, oldest generation
/// first, the newest generation seen, and the stretches that could not be read.
pub(super) struct Recovered {
    pub entries: Vec<Entry>,
    pub newest: u64,
    pub damage: Vec<Damage>,
}

/// Reads both journal files (see [`Recovered`]).
pub(super) fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut both = [read(dir, 0)?, read(dir, 1)?];
    both.sort_by_key(|(generation, ..)| *generation);
    let newest = both[1].0;
    // A file whose turn was read from its entries (its header damaged) and
    // is older than the turn before the other file's was retired long ago:
    // what it holds is in the records' own files already.
    if both[0].2.iter().any(|d| d.at == 0) && both[0].0 + 1 < newest {
        both[0].1.clear();
    }
    let mut damage = Vec::new();
    let mut entries = Vec::new();
    for (_, ops, hurt) in both {
        entries.extend(ops);
        damage.extend(hurt);
    }
    Ok(Recovered {
        entries,
        newest,
        damage,
    })
}

/// A group of changes serialized for the active journal file.
pub(super) struct Entries {
    payloads: Vec<Vec<u8>>,
    /// The bytes they take in the journal, with their heads.
    size: u64,
    /// The records they put whole (true) or delete (false), in order.
    touched: Vec<(ProcessId, bool)>,
    /// The generation they were encoded for.
    generation: u64,
    /// The environments they write, for the file's table once appended.
    envs: Envs,
}

/// Serializes `ops` for a journal file of `generation` in which the
/// records `put_here` were put whole. An entry too large for the journal's
/// length field makes the group too large for any journal file.
fn encode(
    ops: &[Op],
    put_here: &HashSet<ProcessId>,
    envs_here: &Envs,
    generation: u64,
) -> io::Result<Entries> {
    let mut touched: Vec<(ProcessId, bool)> = Vec::with_capacity(ops.len());
    let mut payloads = Vec::with_capacity(ops.len());
    let mut envs = Envs::new();
    let to_json =
        |w: &Written<'_>| serde_json::to_vec(w).map_err(|e| io::Error::other(e.to_string()));
    for op in ops {
        let record = match op {
            Op::Delete(id) => {
                touched.push((*id, false));
                payloads.push(to_json(&Written::Delete(*id))?);
                continue;
            }
            Op::Put(record) => record,
        };
        let id = record.id();
        let earlier = touched.iter().rev().find(|(t, _)| *t == id).map(|t| t.1);
        if earlier.unwrap_or_else(|| put_here.contains(&id)) {
            payloads.push(to_json(&Written::Update(Box::new(record.update())))?);
            continue;
        }
        touched.push((id, true));
        let env = &record.spec().env;
        if env.len() < SHARED_ENV_MIN {
            payloads.push(to_json(&Written::Put(record))?);
            continue;
        }
        // Put whole, naming its environment, written first if this file
        // does not hold it yet.
        let address = Arc::as_ptr(env) as usize;
        let known = envs_here.get(&address).or_else(|| envs.get(&address));
        let key = if let Some((key, _)) = known {
            *key
        } else {
            let key = (envs_here.len() + envs.len()) as u64;
            payloads.push(to_json(&Written::Env { key, env })?);
            envs.insert(address, (key, Arc::clone(env)));
            key
        };
        let mut spec = record.spec().clone();
        spec.env = Arc::default();
        payloads.push(to_json(&Written::PutShared {
            env: key,
            spec: Box::new(spec),
            record: Box::new(record.update()),
        })?);
    }
    let size = if payloads.iter().all(|p| u32::try_from(p.len()).is_ok()) {
        payloads.iter().map(|p| (ENTRY_HEAD + p.len()) as u64).sum()
    } else {
        u64::MAX
    };
    Ok(Entries {
        payloads,
        size,
        touched,
        generation,
        envs,
    })
}

/// The writer's side: appends groups of changes to the active file.
pub(super) struct Journal {
    dir: PathBuf,
    files: [File; 2],
    generation: u64,
    active: usize,
    head: u64,
    capacity: u64,
    /// The thread flushing the previous generation's files.
    retiring: Option<JoinHandle<io::Result<()>>>,
    /// Whether the active file holds appends not yet flushed.
    unsynced: bool,
    /// The records put whole in the active file: their later versions in
    /// it are written without their spec.
    put_here: HashSet<ProcessId>,
    /// The environments the active file holds.
    envs_here: Envs,
}

impl Journal {
    /// Starts a fresh generation after `newest`: both files exist at full
    /// size, the first is active and empty, the second holds nothing to
    /// replay. Call it once whatever was replayed is on disk.
    pub(super) fn start(dir: &Path, capacity: u64, newest: u64) -> io::Result<Journal> {
        let capacity = capacity.max(HEADER + 4096);
        let open = |n: usize| -> io::Result<File> {
            let file = crate::private::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path(dir, n))?;
            // Real zeros, not a hole: writing into a hole allocates blocks,
            // and flushing that costs a filesystem commit.
            let len = file.metadata()?.len();
            if len < capacity {
                let zeros = vec![0u8; usize::try_from(capacity - len).unwrap_or(0)];
                file.write_all_at(&zeros, len)?;
            }
            Ok(file)
        };
        let files = [open(0)?, open(1)?];
        write_header(&files[1], 0)?;
        let generation = newest + 1;
        write_header(&files[0], generation)?;
        super::sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            files,
            generation,
            active: 0,
            head: HEADER,
            capacity,
            retiring: None,
            unsynced: false,
            put_here: HashSet::new(),
            envs_here: Envs::new(),
        })
    }

    /// Serializes `ops` for the active file.
    pub(super) fn encode(&self, ops: &[Op]) -> io::Result<Entries> {
        encode(ops, &self.put_here, &self.envs_here, self.generation)
    }

    /// Whether `entries` fit in the active file, so appending them hands
    /// no file over.
    pub(super) fn fits(&self, entries: &Entries) -> bool {
        self.head.saturating_add(entries.size) <= self.capacity
    }

    /// Appends `ops` as one write. With `flush`, they survive a power cut
    /// once this returns; without, they survive a crash of this process
    /// (and reach the disk with the next flushed append, which flushes the
    /// whole file). When the active file is full, `before_switch` runs
    /// first: it must write every record changed so far to its file, which
    /// the background flush then makes durable.
    pub(super) fn commit(
        &mut self,
        ops: &[Op],
        flush: bool,
        before_switch: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), CommitError> {
        let entries = self.encode(ops).map_err(CommitError::Io)?;
        if self.fits(&entries) {
            return self.append(&entries, flush);
        }
        // In a fresh file every record is put whole.
        let fresh =
            encode(ops, &HashSet::new(), &Envs::new(), self.generation).map_err(CommitError::Io)?;
        if fresh.size > self.capacity - HEADER {
            return Err(CommitError::TooLarge);
        }
        before_switch().map_err(CommitError::Io)?;
        self.switch().map_err(CommitError::Io)?;
        let entries = self.encode(ops).map_err(CommitError::Io)?;
        self.append(&entries, flush)
    }

    /// Appends `entries`, encoded for the active file, which they must fit.
    pub(super) fn append(&mut self, entries: &Entries, flush: bool) -> Result<(), CommitError> {
        if entries.generation != self.generation || !self.fits(entries) {
            return Err(CommitError::Io(io::Error::other(
                "journal entries were encoded for another file, or do not fit",
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(entries.size).unwrap_or(0));
        for payload in &entries.payloads {
            let len = u32::try_from(payload.len()).map_err(|_| CommitError::TooLarge)?;
            buf.extend_from_slice(&self.generation.to_le_bytes());
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&entry_sum(self.generation, payload).to_le_bytes());
            buf.extend_from_slice(payload);
        }
        let file = &self.files[self.active];
        file.write_all_at(&buf, self.head)
            .and_then(|()| if flush { file.sync_data() } else { Ok(()) })
            .map_err(CommitError::Io)?;
        self.head += entries.size;
        self.unsynced = !flush;
        self.envs_here
            .extend(entries.envs.iter().map(|(a, e)| (*a, e.clone())));
        for &(id, put) in &entries.touched {
            if put {
                self.put_here.insert(id);
            } else {
                self.put_here.remove(&id);
            }
        }
        Ok(())
    }

    /// Flushes what the active file holds, if anything is unflushed: every
    /// append so far is then on disk (a full file was flushed when it was
    /// handed over).
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.files[self.active].sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// For a flush made without holding the journal: the active file, if it
    /// holds unflushed appends, which are then counted as flushed. Flushing
    /// it puts every append made so far on disk (appends made since the last
    /// switch live in it; earlier ones were flushed by the switch). If that
    /// flush fails, call [`flush_failed`](Self::flush_failed).
    pub(super) fn unflushed(&mut self) -> io::Result<Option<File>> {
        if !self.unsynced {
            return Ok(None);
        }
        let file = self.files[self.active].try_clone()?;
        self.unsynced = false;
        Ok(Some(file))
    }

    /// A flush of the file [`unflushed`](Self::unflushed) gave failed: its
    /// appends are unflushed again.
    pub(super) fn flush_failed(&mut self) {
        self.unsynced = true;
    }

    /// Hands over to the other file under the next generation, and flushes
    /// the filesystem in the background before invalidating the full one.
    fn switch(&mut self) -> io::Result<()> {
        // Unflushed appends in the full file must not wait for the
        // background flush: a `sync` after the switch flushes only the new file.
        self.sync()?;
        let full = self.active;
        let next = 1 - full;
        if let Some(previous) = self.retiring.take() {
            // The file about to be reused must hold nothing the disk lacks:
            // if its background flush failed, flush again here.
            if !matches!(previous.join(), Ok(Ok(()))) {
                super::sync_filesystem(&self.dir)?;
                write_header(&self.files[next], 0)?;
            }
        }
        self.generation += 1;
        write_header(&self.files[next], self.generation)?;
        self.active = next;
        self.head = HEADER;
        self.put_here.clear();
        self.envs_here.clear();
        let file = self.files[full].try_clone()?;
        let dir = self.dir.clone();
        // The record files were brought up to date before the switch; one
        // flush of the filesystem puts them (and their names) on disk.
        self.retiring = Some(std::thread::spawn(move || {
            super::sync_filesystem(&dir)?;
            write_header(&file, 0)
        }));
        Ok(())
    }

    /// Where the journal lives, for error messages.
    pub(super) fn path(&self) -> PathBuf {
        path(&self.dir, self.active)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(previous) = self.retiring.take() {
            let _ = previous.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{NodeId, ProcessSpec, Timestamp};

    fn record(n: u128) -> ProcessRecord {
        ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            NodeId::local(),
            ProcessSpec::argv(["true"]),
            Timestamp::from_millis(1),
        )
    }

    fn ids(entries: &[Entry]) -> Vec<u128> {
        entries.iter().map(|e| e.id().as_uuid().as_u128()).collect()
    }

    /// Found by fuzzing: one flipped bit in the generation field of the last
    /// entry made it read as the end of the turn, losing it in silence.
    #[test]
    fn a_damaged_generation_field_loses_no_entry() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::start(dir.path(), 1 << 16, 0).expect("start");
        j.commit(&[Op::Put(record(1))], true, || Ok(()))
            .expect("commit");
        let last = j.head;
        j.commit(&[Op::Put(record(2))], true, || Ok(()))
            .expect("commit");
        for bit in [0u8, 3, 7] {
            let mut byte = [0u8];
            j.files[0].read_exact_at(&mut byte, last).expect("read");
            j.files[0]
                .write_all_at(&[byte[0] ^ (1 << bit)], last)
                .expect("flip");
            let got = recover(dir.path()).expect("recover");
            assert_eq!(ids(&got.entries), [1, 2], "bit {bit}");
            assert!(got.damage.is_empty());
            j.files[0].write_all_at(&byte, last).expect("mend");
        }
        // A stale entry of an earlier turn is still not read as this one's.
        let mut stale = Vec::new();
        let payload = br#"{"delete":"00000000-0000-0000-0000-000000000001"}"#;
        stale.extend_from_slice(&7u64.to_le_bytes());
        stale.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        stale.extend_from_slice(&entry_sum(7, payload).to_le_bytes());
        stale.extend_from_slice(payload);
        j.files[0].write_all_at(&stale, j.head).expect("stale");
        assert_eq!(ids(&recover(dir.path()).expect("recover").entries), [1, 2]);
    }

    #[test]
    fn entries_replay_in_order_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::start(dir.path(), 1 << 16, 0).expect("start");
        j.commit(&[Op::Put(record(1)), Op::Put(record(2))], true, || Ok(()))
            .expect("commit");
        j.commit(&[Op::Delete(record(1).id())], false, || Ok(()))
            .expect("commit");
        let Recovered {
            entries: ops,
            newest,
            ..
        } = recover(dir.path()).expect("recover");
        assert_eq!((ids(&ops), newest), (vec![1, 2, 1], 1));
        assert!(matches!(ops[2], Entry::Delete(_)));
        // A torn entry after the last whole one: its head, half its payload.
        let at = j.head;
        let mut torn = Vec::new();
        torn.extend_from_slice(&1u64.to_le_bytes());
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&7u64.to_le_bytes());
        torn.extend_from_slice(b"{\"put\":");
        j.files[0].write_all_at(&torn, at).expect("tear");
        assert_eq!(
            ids(&recover(dir.path()).expect("recover").entries),
            [1, 2, 1]
        );
    }

    #[test]
    fn a_full_file_hands_over_and_is_invalidated_once_flushed() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::start(dir.path(), 20_000, 4).expect("start");
        assert_eq!(j.generation, 5);
        let mut n = 0;
        while j.active == 0 {
            n += 1;
            j.commit(&[Op::Put(record(n))], true, || Ok(()))
                .expect("commit");
        }
        assert_eq!(j.generation, 6);
        if let Some(t) = j.retiring.take() {
            t.join().expect("joined").expect("flushed");
        }
        let Recovered {
            entries: ops,
            newest,
            ..
        } = recover(dir.path()).expect("recover");
        assert_eq!(newest, 6);
        assert_eq!(ids(&ops), [n], "only the new generation's entries are left");
        let big = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(999)),
            NodeId::local(),
            ProcessSpec::argv(vec!["x".repeat(30_000)]),
            Timestamp::from_millis(1),
        );
        assert!(matches!(
            j.commit(&[Op::Put(big)], true, || Ok(())),
            Err(CommitError::TooLarge)
        ));
    }

    /// A record with a large environment, moved one step on.
    fn versions(n: u128) -> [ProcessRecord; 3] {
        let mut spec = ProcessSpec::argv(["true"]);
        spec.env = std::sync::Arc::new(
            (0..50)
                .map(|i| (format!("VARIABLE_{i}").into(), "value ".repeat(5).into()))
                .collect(),
        );
        let first = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            NodeId::local(),
            spec,
            Timestamp::from_millis(1),
        );
        let mut second = first.clone();
        second
            .apply(bpm_domain::Transition::Start, Timestamp::from_millis(2))
            .expect("start");
        let mut third = second.clone();
        third
            .apply(
                bpm_domain::Transition::Spawned { pid: 42 },
                Timestamp::from_millis(3),
            )
            .expect("spawned");
        [first, second, third]
    }

    #[test]
    fn later_versions_in_one_file_leave_the_spec_out_and_a_new_file_starts_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::start(dir.path(), 1 << 16, 0).expect("start");
        let [first, second, third] = versions(1);
        j.commit(&[Op::Put(first.clone())], false, || Ok(()))
            .expect("commit");
        let whole = j.head;
        // Two versions in one group: the second is written as an update too.
        j.commit(
            &[Op::Put(second.clone()), Op::Put(third.clone())],
            false,
            || Ok(()),
        )
        .expect("commit");
        assert!(
            (j.head - whole) * 2 < whole,
            "two updates took {} bytes, the whole record {whole}",
            j.head - whole
        );
        let entries = recover(dir.path()).expect("recover").entries;
        let [Entry::Put(put), Entry::Update(u2), Entry::Update(u3)] = &entries[..] else {
            panic!("expected a put and two updates, got {entries:?}");
        };
        assert_eq!(*put, first);
        assert_eq!(put.updated((**u2).clone()), Some(second));
        assert_eq!(put.updated((**u3).clone()), Some(third.clone()));
        // Deleted, then put again: whole.
        j.commit(
            &[Op::Delete(first.id()), Op::Put(third.clone())],
            false,
            || Ok(()),
        )
        .expect("commit");
        let entries = recover(dir.path()).expect("recover").entries;
        assert!(matches!(entries[3..], [Entry::Delete(_), Entry::Put(_)]));
        // Once the file is handed over, the next version is whole again.
        let mut n = 100;
        while j.active == 0 {
            n += 1;
            j.commit(&[Op::Put(versions(n)[0].clone())], false, || Ok(()))
                .expect("commit");
        }
        j.commit(&[Op::Put(third.clone())], false, || Ok(()))
            .expect("commit");
        let entries = recover(dir.path()).expect("recover").entries;
        let last = entries.last().expect("an entry");
        assert!(matches!(last, Entry::Put(r) if *r == third), "got {last:?}");
    }

    // The records are a, b and c.
    #[allow(clippy::many_single_char_names)]
    #[test]
    fn records_sharing_an_environment_write_it_once_per_file_and_read_it_back() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::start(dir.path(), 1 << 16, 0).expect("start");
        let [a, ..] = versions(1);
        let shared = Arc::clone(&a.spec().env);
        let with_env = |n: u128| {
            let mut spec = ProcessSpec::argv(["true"]);
            spec.env = Arc::clone(&shared);
            ProcessRecord::new(
                ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
                NodeId::local(),
                spec,
                Timestamp::from_millis(1),
            )
        };
        let (b, c) = (with_env(2), with_env(3));
        j.commit(&[Op::Put(a.clone()), Op::Put(b.clone())], false, || Ok(()))
            .expect("commit");
        j.commit(&[Op::Put(c.clone())], false, || Ok(()))
            .expect("commit");
        let bytes = std::fs::read(path(dir.path(), 0)).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            text.matches("VARIABLE_7").count(),
            1,
            "the environment is written once"
        );
        let entries = recover(dir.path()).expect("recover").entries;
        let puts: Vec<&ProcessRecord> = entries
            .iter()
            .map(|e| match e {
                Entry::Put(r) => r,
                other => panic!("expected puts, got {other:?}"),
            })
            .collect();
        assert_eq!(puts, [&a, &b, &c]);
        assert!(
            Arc::ptr_eq(&puts[0].spec().env, &puts[2].spec().env),
            "read back shared"
        );
        // A file that names an environment it does not hold is read up to there.
        let mut torn = Vec::new();
        let mut spec = a.spec().clone();
        spec.env = Arc::default();
        let payload = serde_json::to_vec(&Written::PutShared {
            env: 9,
            spec: Box::new(spec),
            record: Box::new(a.update()),
        })
        .expect("json");
        let payload = &payload[..];
        torn.extend_from_slice(&1u64.to_le_bytes());
        torn.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        torn.extend_from_slice(&entry_sum(1, payload).to_le_bytes());
        torn.extend_from_slice(payload);
        j.files[0].write_all_at(&torn, j.head).expect("write");
        assert_eq!(recover(dir.path()).expect("recover").entries.len(), 3);
    }
}
