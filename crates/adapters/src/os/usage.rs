//! What process trees use, read from /proc: CPU time, resident memory and
//! listening TCP ports, summed over each record's whole tree (the leader's
//! descendants, and processes that left it but carry its mark).
//!
//! One sample is one scan of /proc, whatever the number of trees: the
//! `stat` of every process under bpm's subreapers when they hold every tree
//! and under half the machine's processes (see [`ProcSampler::under`]),
//! else of every process on the machine; the environment of those not
//! already placed by their parent chain (once in each process's life), and
//! the open files of tree members only when one of this user's listening
//! TCP sockets (see `listening`) is new since the last scan or its holder
//! has gone. CPU time is summed with each member's reaped
//! children (`cutime`, `cstime`), so a child that ended between two samples
//! still counts toward the tree that ran it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bpm_domain::ProcessId;
use bpm_ports::{ResourceSampler, ResourceUsage, SampleTarget};

use super::listening::listeners;
use super::procfs::{Seen, pids, read_stat};
use super::tree::mark_value;

/// A previous sample younger than this gives its figure again rather than
/// a rate over too short a window to mean anything.
const MIN_WINDOW: Duration = Duration::from_millis(250);
/// A previous sample older than this is forgotten: the rate is then over
/// the leader's life.
const MAX_WINDOW: Duration = Duration::from_secs(30);
/// How long the machine's count of processes is used again (see
/// [`candidates`]).
const MACHINE_COUNT_KEPT: Duration = Duration::from_secs(5);

fn read_all(pids: &[u32]) -> Vec<Seen> {
    let mut buf = [0u8; 4096];
    pids.iter()
        .filter_map(|&pid| read_stat(pid, &mut buf))
        .collect()
}

/// Appends the children of every thread of `pid` to `into`, read from the
/// kernel's lists (`/proc/PID/task/TID/children`); false when no list could
/// be read (the process is gone, or the kernel keeps none). A process of
/// one thread (`threads`, 0 when unknown) has one list, read without
/// listing its threads.
fn children_of(pid: u32, threads: u32, text: &mut Vec<u8>, into: &mut Vec<u32>) -> bool {
    use std::io::Read as _;
    let lists: Vec<std::path::PathBuf> = if threads == 1 {
        vec![format!("/proc/{pid}/task/{pid}/children").into()]
    } else {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().map(|t| t.path().join("children")).collect()
    };
    let mut read = false;
    for path in lists {
        let Ok(mut list) = fs::File::open(path) else {
            continue;
        };
        text.clear();
        if list.read_to_end(text).is_err() {
            continue;
        }
        read = true;
        into.extend(
            text.split(u8::is_ascii_whitespace)
                .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok()),
        );
    }
    read
}

/// Every process under `roots` (not the roots), from the kernel's lists of
/// children; `None` when a root's list cannot be read.
fn descendants(roots: &[u32]) -> Option<Vec<Seen>> {
    let (mut buf, mut text, mut queue) = ([0u8; 4096], Vec::with_capacity(4096), Vec::new());
    for &root in roots {
        if !children_of(root, 0, &mut text, &mut queue) {
            return None;
        }
    }
    let mut seen = HashSet::new();
    let mut procs = Vec::new();
    while let Some(pid) = queue.pop() {
        if roots.contains(&pid) || !seen.insert(pid) {
            continue;
        }
        let Some(p) = read_stat(pid, &mut buf) else {
            continue;
        };
        if !p.has_ended() {
            children_of(pid, p.threads, &mut text, &mut queue);
        }
        procs.push(p);
    }
    Some(procs)
}

/// The processes to read for `targets`: those under `roots` when that is
/// cheaper and the roots hold every target's tree, else every process on
/// the machine.
///
/// A process that leaves a tree (its parent ends) is taken in by its
/// nearest subreaper ancestor. The roots are subreapers, so what leaves a
/// tree whose leader runs under them stays under them. A target qualifies
/// when its leader is found under them now, or was before and has ended
/// since (`memory.under`: it handed its tree to them).
/// Another leader (one a restarted daemon adopted, whose parent is init)
/// sends the scan to the whole machine, as a tree's escaped processes may
/// be anywhere.
///
/// Reading under the roots costs about twice a whole scan's reads per
/// process (each process's list of children besides its `stat`), so it is
/// chosen only while the roots held under half the machine's processes at
/// the last sample.
fn candidates(roots: Option<&[u32]>, targets: &[SampleTarget], memory: &mut Memory) -> Vec<Seen> {
    memory
        .under
        .retain(|id| targets.iter().any(|t| t.id == *id));
    // Listing /proc to count the machine costs a third of a walk of a few
    // trees, so a count younger than `MACHINE_COUNT_KEPT` is used again: a
    // poller (`bpm ps` in a loop, the page) pays it once in a while. The
    // count only chooses the cheaper way; both read every target's tree.
    let mut listed = None;
    let machine = match memory.machine {
        Some((at, count)) if at.elapsed() < MACHINE_COUNT_KEPT => count,
        _ => {
            let all = pids();
            memory.machine = Some((Instant::now(), all.len()));
            listed.insert(all).len()
        }
    };
    let cheaper = memory.under_roots.max(targets.len()) * 2 < machine;
    if let Some(roots) = roots.filter(|_| cheaper)
        && let Some(procs) = descendants(roots)
    {
        let found: HashSet<u32> = procs.iter().map(|p| p.pid).collect();
        if note_under(targets, &found, &mut memory.under) {
            memory.under_roots = procs.len();
            return procs;
        }
    }
    // A list made above for the count was stored then; a new one is now.
    let pids = listed.unwrap_or_else(|| {
        let all = pids();
        memory.machine = Some((Instant::now(), all.len()));
        all
    });
    let procs = read_all(&pids);
    if let Some(roots) = roots {
        let found = under_roots(&procs, roots);
        note_under(targets, &found, &mut memory.under);
        memory.under_roots = found.len();
    }
    procs
}

/// Notes the targets whose leader is among `found` (the processes under
/// the roots); whether every target's leader is, now or before.
fn note_under(
    targets: &[SampleTarget],
    found: &HashSet<u32>,
    under: &mut HashSet<ProcessId>,
) -> bool {
    let mut all = true;
    for t in targets {
        if found.contains(&t.pid) {
            under.insert(t.id);
        } else if !under.contains(&t.id) || runs_on(t.pid) {
            all = false;
        }
    }
    all
}

/// Whether `leader`, not found under the roots, still runs (outside them:
/// a keeper that died while the daemon was no subreaper left it to init).
/// One that ended left its tree to the roots.
fn runs_on(leader: u32) -> bool {
    std::path::Path::new(&format!("/proc/{leader}")).exists()
}

/// The pids of `procs` under `roots`, by parent chain.
fn under_roots(procs: &[Seen], roots: &[u32]) -> HashSet<u32> {
    let mut found: HashSet<u32> = HashSet::new();
    loop {
        let before = found.len();
        for p in procs {
            if !roots.contains(&p.pid) && (roots.contains(&p.ppid) || found.contains(&p.ppid)) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// The inodes of the sockets `pid` holds.
fn sockets_of(pid: u32, into: &mut Vec<u64>) {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds.flatten() {
        let Ok(link) = fs::read_link(fd.path()) else {
            continue;
        };
        if let Some(inode) = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:["))
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|i| i.parse::<u64>().ok())
        {
            into.push(inode);
        }
    }
}

/// Each process's mark, by pid and start time: a process's environment is
/// set when it starts, so its mark is read once in its life.
type Marks = HashMap<(u32, u64), Option<String>>;

/// Which target each live process belongs to: by parent chain from a
/// leader first, then by mark.
fn members(procs: &[Seen], targets: &[SampleTarget], marks: &mut Marks) -> HashMap<u32, usize> {
    let own = std::process::id();
    let mut owner: HashMap<u32, usize> = HashMap::new();
    let live: Vec<&Seen> = procs
        .iter()
        .filter(|p| !p.has_ended() && p.pid != own)
        .collect();
    for (i, t) in targets.iter().enumerate() {
        if live.iter().any(|p| p.pid == t.pid) {
            owner.insert(t.pid, i);
        }
    }
    let by_id: HashMap<String, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.to_string(), i))
        .collect();
    loop {
        let before = owner.len();
        for p in &live {
            if !owner.contains_key(&p.pid)
                && let Some(&i) = owner.get(&p.ppid)
            {
                owner.insert(p.pid, i);
            }
        }
        if owner.len() == before {
            break;
        }
    }
    let placed: HashSet<u32> = owner.keys().copied().collect();
    let seen: HashSet<(u32, u64)> = live.iter().map(|p| (p.pid, p.start)).collect();
    marks.retain(|k, _| seen.contains(k));
    for p in live.iter().filter(|p| !placed.contains(&p.pid)) {
        let mark = marks
            .entry((p.pid, p.start))
            .or_insert_with(|| mark_value(p.pid));
        if let Some(&i) = mark.as_ref().and_then(|m| by_id.get(m)) {
            owner.insert(p.pid, i);
        }
    }
    owner
}

/// One tree's totals in one scan.
#[derive(Debug, Default, Clone)]
struct Totals {
    ticks: u64,
    rss_pages: u64,
    processes: u32,
    ports: Vec<u16>,
    /// The leader's start, in ticks since boot, when the leader is alive.
    leader_start: Option<u64>,
}

/// Which member holds each of this user's listening sockets (`None`: no
/// member), by socket inode, as last found.
type Holders = HashMap<u64, Option<u32>>;

/// What the process-wide caches remember between samples.
#[derive(Debug, Default)]
struct Memory {
    marks: Marks,
    holders: Holders,
    /// Targets whose leader was found under the subreapers.
    under: HashSet<ProcessId>,
    /// How many processes were under the subreapers at the last sample.
    under_roots: usize,
    /// How many processes the machine had, and when that was counted.
    machine: Option<(Instant, usize)>,
}

/// Finds which members hold this user's listening sockets. Members' open
/// files are read only when a socket appeared that no earlier scan
/// placed, or its holder has gone: listeners are few and long-lived, and
/// reading every member's open files is most of a scan's cost.
fn place_listeners(
    listening: &HashMap<u64, u16>,
    owner: &HashMap<u32, usize>,
    holders: &mut Holders,
) {
    holders.retain(|inode, _| listening.contains_key(inode));
    let stale = listening.keys().any(|inode| match holders.get(inode) {
        None => true,
        Some(Some(pid)) => !owner.contains_key(pid),
        Some(None) => false,
    });
    if !stale {
        return;
    }
    let mut found: HashMap<u64, u32> = HashMap::new();
    let mut held = Vec::new();
    for &pid in owner.keys() {
        held.clear();
        sockets_of(pid, &mut held);
        for inode in held.iter().filter(|i| listening.contains_key(i)) {
            found.insert(*inode, pid);
        }
    }
    *holders = listening
        .keys()
        .map(|inode| (*inode, found.get(inode).copied()))
        .collect();
}

fn scan(
    targets: &[SampleTarget],
    roots: Option<&[u32]>,
    memory: &mut Memory,
) -> Vec<Option<Totals>> {
    let procs = candidates(roots, targets, memory);
    let owner = members(&procs, targets, &mut memory.marks);
    let mut totals: Vec<Option<Totals>> = vec![None; targets.len()];
    for p in &procs {
        let Some(&i) = owner.get(&p.pid) else {
            continue;
        };
        let t = totals[i].get_or_insert_with(Totals::default);
        t.ticks += p.ticks;
        t.rss_pages += p.rss_pages;
        t.processes += 1;
        if p.pid == targets[i].pid {
            t.leader_start = Some(p.start);
        }
    }
    if owner.is_empty() {
        return totals;
    }
    // Only this user's listening sockets can be held by its processes.
    let own = rustix::process::getuid().as_raw();
    let listening: HashMap<u64, u16> = listeners()
        .into_iter()
        .filter(|(_, l)| l.uid == own)
        .map(|(inode, l)| (inode, l.port))
        .collect();
    place_listeners(&listening, &owner, &mut memory.holders);
    for (inode, holder) in &memory.holders {
        let tree = holder.and_then(|pid| owner.get(&pid));
        if let (Some(&i), Some(port)) = (tree, listening.get(inode))
            && let Some(t) = totals[i].as_mut()
        {
            t.ports.push(*port);
        }
    }
    for t in totals.iter_mut().flatten() {
        t.ports.sort_unstable();
        t.ports.dedup();
    }
    totals
}

fn uptime_secs() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The previous sample of one tree.
#[derive(Debug, Clone, Copy)]
struct Previous {
    ticks: u64,
    at: Instant,
    percent: f64,
}

/// The processes that take in what leaves the sampled trees: child
/// subreapers that are ancestors of every leader (see [`ProcSampler::under`]).
pub type Subreapers = Arc<dyn Fn() -> Vec<u32> + Send + Sync>;

/// A [`ResourceSampler`] reading /proc on this machine. It keeps each
/// tree's previous CPU time, so that a caller sampling every few seconds
/// gets the rate over that window.
#[derive(Debug, Clone)]
pub struct ProcSampler(Arc<Sampling>);

#[derive(Debug)]
struct Sampling {
    hz: f64,
    page: u64,
    previous: Mutex<HashMap<ProcessId, Previous>>,
    memory: Mutex<Memory>,
    roots: Option<Roots>,
}

struct Roots(Subreapers);

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Roots").field(&(self.0)()).finish()
    }
}

impl Default for ProcSampler {
    fn default() -> Self {
        ProcSampler::new()
    }
}

impl ProcSampler {
    /// A sampler with no previous samples.
    pub fn new() -> Self {
        ProcSampler::with_roots(None)
    }

    fn with_roots(roots: Option<Roots>) -> Self {
        ProcSampler(Arc::new(Sampling {
            hz: f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).unwrap_or(100)),
            page: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
            previous: Mutex::new(HashMap::new()),
            memory: Mutex::new(Memory::default()),
            roots,
        }))
    }

    /// A sampler for trees that run under `subreapers` (bpm's keeper, and
    /// the daemon): it reads the processes under them, not every process on
    /// the machine, while they hold every tree it samples and under half
    /// the machine's processes. A sample then costs what bpm's processes
    /// number, not what the machine's do.
    pub fn under(subreapers: Subreapers) -> Self {
        ProcSampler::with_roots(Some(Roots(subreapers)))
    }
}

impl Sampling {
    /// CPU percent of a tree with `t`, against its previous sample or its life.
    #[allow(clippy::cast_precision_loss)]
    fn percent(&self, id: ProcessId, t: &Totals, now: Instant, uptime: Option<f64>) -> f64 {
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = previous.get(&id).copied();
        let percent = match since {
            Some(p) if now.duration_since(p.at) < MIN_WINDOW => return p.percent,
            Some(p) if now.duration_since(p.at) <= MAX_WINDOW => {
                let cpu = t.ticks.saturating_sub(p.ticks) as f64 / self.hz;
                cpu / now.duration_since(p.at).as_secs_f64() * 100.0
            }
            _ => match (t.leader_start, uptime) {
                (Some(start), Some(up)) => {
                    let life = up - start as f64 / self.hz;
                    if life > 0.0 {
                        t.ticks as f64 / self.hz / life * 100.0
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            },
        };
        previous.insert(
            id,
            Previous {
                ticks: t.ticks,
                at: now,
                percent,
            },
        );
        percent
    }

    fn forget_old(&self, now: Instant) {
        self.previous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, p| now.duration_since(p.at) <= MAX_WINDOW);
    }

    fn sample_now(&self, targets: &[SampleTarget]) -> Vec<ResourceUsage> {
        if targets.is_empty() {
            return Vec::new();
        }
        let roots = self.roots.as_ref().map(|r| (r.0)());
        let totals = scan(
            targets,
            roots.as_deref(),
            &mut self
                .memory
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let (now, uptime) = (Instant::now(), uptime_secs());
        self.forget_old(now);
        let charged = super::limits::memory_charged();
        targets
            .iter()
            .zip(totals)
            .filter_map(|(target, t)| {
                let t = t?;
                Some(ResourceUsage {
                    id: target.id,
                    cpu_percent: (self.percent(target.id, &t, now, uptime) * 10.0).round() / 10.0,
                    // A record in a memory cgroup: what its limit counts.
                    rss_bytes: charged
                        .get(&target.id)
                        .copied()
                        .unwrap_or(t.rss_pages * self.page),
                    listening_ports: t.ports,
                    processes: t.processes,
                })
            })
            .collect()
    }
}

#[async_trait]
impl ResourceSampler for ProcSampler {
    async fn sample(&self, targets: Vec<SampleTarget>) -> Vec<ResourceUsage> {
        if targets.is_empty() {
            return Vec::new();
        }
        // A scan reads a few files per process on the machine: keep it off
        // the daemon's one runtime thread.
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || inner.sample_now(&targets))
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::tree::MARK;
    use std::os::unix::process::CommandExt as _;

    /// A tree under the roots is read without the rest of the machine; a
    /// target whose leader runs elsewhere, roots whose children cannot be
    /// listed, or roots that held most of the machine at the last sample,
    /// send the scan to every process.
    #[test]
    fn a_tree_under_the_roots_is_read_alone() {
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & exec sleep 31"])
            .process_group(0)
            .spawn()
            .expect("sh");
        let (own, pid) = (std::process::id(), leader.id());
        let tree = SampleTarget {
            id: ProcessId::from_uuid(uuid::Uuid::now_v7()),
            pid,
        };
        let mut memory = Memory::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let read = loop {
            let read = candidates(Some(&[own]), &[tree], &mut memory);
            if read.iter().filter(|p| p.ppid == pid).count() == 1 {
                break read;
            }
            assert!(Instant::now() < deadline, "no child under {pid}: {read:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(read.iter().any(|p| p.pid == pid));
        assert!(read.iter().all(|p| p.pid != 1), "not the machine");
        assert!(memory.under.contains(&tree.id));
        let few = memory.under_roots;
        assert!(few >= 2, "{few}");
        // Most of the machine under the roots: a whole scan is cheaper. It
        // counts what is under them, so the next sample reads them alone.
        memory.under_roots = usize::MAX / 4;
        let read = candidates(Some(&[own]), &[tree], &mut memory);
        assert!(read.iter().any(|p| p.pid == 1), "the machine");
        assert!(memory.under_roots < usize::MAX / 4);
        let read = candidates(Some(&[own]), &[tree], &mut memory);
        assert!(read.iter().all(|p| p.pid != 1), "not the machine");
        // The machine's count is used again while it is young (a count of
        // one process sends the scan to the machine, which counts it
        // anew), and counted again once it is old.
        memory.machine = Some((Instant::now(), 1));
        let read = candidates(Some(&[own]), &[tree], &mut memory);
        assert!(read.iter().any(|p| p.pid == 1), "the machine");
        assert!(memory.machine.is_some_and(|(_, count)| count > 1));
        let read = candidates(Some(&[own]), &[tree], &mut memory);
        assert!(read.iter().all(|p| p.pid != 1), "not the machine");
        let old = Instant::now().checked_sub(MACHINE_COUNT_KEPT * 2);
        memory.machine = Some((old.expect("a clock past 10 s"), 1));
        let read = candidates(Some(&[own]), &[tree], &mut memory);
        assert!(read.iter().all(|p| p.pid != 1), "not the machine");
        // A leader once under the roots that runs on outside them (left to
        // init): the machine, though it was found under them before.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let read = candidates(Some(&[other.id()]), &[tree], &mut memory);
        assert!(read.iter().any(|p| p.pid == 1), "the machine");
        let _ = other.kill();
        let _ = other.wait();
        let elsewhere = SampleTarget {
            id: ProcessId::from_uuid(uuid::Uuid::now_v7()),
            pid: 1,
        };
        let read = candidates(Some(&[own]), &[tree, elsewhere], &mut memory);
        assert!(read.iter().any(|p| p.pid == 1), "the machine");
        let read = candidates(Some(&[u32::MAX]), &[tree], &mut memory);
        assert!(read.iter().any(|p| p.pid == 1), "the machine");
        assert!(
            candidates(None, &[tree], &mut memory)
                .iter()
                .any(|p| p.pid == 1)
        );
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid"),
            rustix::process::Signal::KILL,
        );
        let _ = leader.kill();
        let _ = leader.wait();
    }

    /// A process that left its leader's tree (a new session, reparented to
    /// init) but carries the record's mark still counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_marked_process_outside_the_tree_counts() {
        let id = ProcessId::from_uuid(uuid::Uuid::now_v7());
        let dir = tempfile::tempdir().expect("dir");
        let pidfile = dir.path().join("escaped");
        let mut leader = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "setsid sh -c 'echo $$ > {}; exec sleep 30' & sleep 30",
                pidfile.display()
            ))
            .env(MARK, id.to_string())
            .process_group(0)
            .spawn()
            .expect("sh");
        let mut escaped = None;
        for _ in 0..100 {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                escaped = Some(pid);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let escaped = escaped.expect("the escaped process wrote its pid");
        let target = SampleTarget {
            id,
            pid: leader.id(),
        };
        let sampler = ProcSampler::new();
        let both = sampler.sample(vec![target]).await;
        assert_eq!(both.len(), 1);
        assert!(
            both[0].processes >= 3,
            "sh, its sleep and the escaped sleep: {both:?}"
        );
        // With the leader gone, the marked process alone still answers.
        let _ = leader.kill();
        let _ = leader.wait();
        let alone = sampler.sample(vec![target]).await;
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &escaped.to_string()])
            .status();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", target.pid)])
            .status();
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert!(alone[0].processes >= 1, "{alone:?}");
    }
}
