//! What process trees use, read from /proc: CPU time, resident memory and
//! listening TCP ports, summed over each record's whole tree (the leader's
//! descendants, and processes that left it but carry its mark).
//!
//! One sample is one scan of /proc, whatever the number of trees: every
//! process's `stat`, the environment of those not already placed by their
//! parent chain (once in each process's life), and the open files of tree
//! members only when one of this user's listening TCP sockets (see
//! `listening`) is new since the last scan or its holder has gone. CPU time is summed with each member's reaped
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
use super::tree::mark_value;

/// A previous sample younger than this gives its figure again rather than
/// a rate over too short a window to mean anything.
const MIN_WINDOW: Duration = Duration::from_millis(250);
/// A previous sample older than this is forgotten: the rate is then over
/// the leader's life.
const MAX_WINDOW: Duration = Duration::from_secs(30);

/// One process as its `stat` shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    ppid: u32,
    zombie: bool,
    /// utime + stime + cutime + cstime, in clock ticks.
    ticks: u64,
    /// Start time in clock ticks since boot.
    start: u64,
    rss_pages: u64,
}

fn read_stat(pid: u32) -> Option<Proc> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the last `)`.
    let f: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Proc {
        pid,
        zombie: f.first()? == &"Z",
        ppid: u32::try_from(num(1)?).ok()?,
        ticks: num(11)? + num(12)? + num(13)? + num(14)?,
        start: num(19)?,
        rss_pages: num(21)?,
    })
}

fn all_procs() -> Vec<Proc> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(read_stat)
                .collect()
        })
        .unwrap_or_default()
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
fn members(procs: &[Proc], targets: &[SampleTarget], marks: &mut Marks) -> HashMap<u32, usize> {
    let own = std::process::id();
    let mut owner: HashMap<u32, usize> = HashMap::new();
    let live: Vec<&Proc> = procs.iter().filter(|p| !p.zombie && p.pid != own).collect();
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

fn scan(targets: &[SampleTarget], memory: &mut Memory) -> Vec<Option<Totals>> {
    let procs = all_procs();
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
}

impl Default for ProcSampler {
    fn default() -> Self {
        ProcSampler::new()
    }
}

impl ProcSampler {
    /// A sampler with no previous samples.
    pub fn new() -> Self {
        ProcSampler(Arc::new(Sampling {
            hz: f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).unwrap_or(100)),
            page: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
            previous: Mutex::new(HashMap::new()),
            memory: Mutex::new(Memory::default()),
        }))
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
        let totals = scan(
            targets,
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
