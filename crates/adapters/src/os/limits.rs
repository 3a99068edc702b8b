//! Resource limits on a record's process tree.
//!
//! Where this machine lets bpm make a control group for a controller (cgroup
//! v2 with the controller enabled below bpm's own group, else cgroup v1 with
//! a writable hierarchy), each limited record gets one, `bpm-<record id>`
//! beside bpm's own group; its process joins it between `fork` and `exec`,
//! so nothing it starts is ever outside. Otherwise `setrlimit` stands in
//! where a limit of its own fits (address space for memory, the user's
//! process count for pids), and a limit nothing here can enforce (a CPU
//! share without a cgroup) is refused by name. Open files are always a
//! `setrlimit`: no cgroup counts them.
//!
//! The group's name follows from the record's id, so a keeper that adopts
//! a process (its starter died) still finds the group at its end: it reads
//! whether the kernel's OOM killer struck there, kills what is left in it,
//! and removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bpm_domain::{LimitHit, ProcessId, ResourceLimits, limit_word};

/// Set to `1`, bpm makes no control group and uses `setrlimit` alone.
pub const NO_CGROUPS_ENV: &str = "BPM_NO_CGROUPS";

/// The controllers bpm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// Where groups of one controller are made: in `dir`, a v2 or a v1 hierarchy.
#[derive(Debug, Clone)]
struct Place {
    dir: PathBuf,
    v2: bool,
}

/// What this machine offers, found once per process.
#[derive(Debug, Default)]
struct Machine {
    memory: Option<Place>,
    cpu: Option<Place>,
    pids: Option<Place>,
    root: bool,
}

impl Machine {
    fn place(&self, c: Controller) -> Option<&Place> {
        match c {
            Controller::Memory => self.memory.as_ref(),
            Controller::Cpu => self.cpu.as_ref(),
            Controller::Pids => self.pids.as_ref(),
        }
    }
}

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let root = rustix::process::geteuid().is_root();
        if std::env::var_os(NO_CGROUPS_ENV).is_some_and(|v| v == "1") {
            return Machine {
                root,
                ..Machine::default()
            };
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let find = |c| find_place(c, &mounts, &own);
        Machine {
            memory: find(Controller::Memory),
            cpu: find(Controller::Cpu),
            pids: find(Controller::Pids),
            root,
        }
    })
}

/// Where this process may make groups of controller `c`: v2 first, where
/// the controller is enabled for the children of its own group, then v1.
/// A place counts only once a group made there (and removed) proves it.
fn find_place(c: Controller, mountinfo: &str, own: &str) -> Option<Place> {
    let mut v2 = None;
    let mut v1 = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(dash + 1))
        else {
            continue;
        };
        let supers = fields.get(dash + 3).copied().unwrap_or_default();
        let path_of = |wanted: &dyn Fn(&str) -> bool| {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                wanted(ctrls).then(|| path.to_owned())
            })
        };
        match *fstype {
            "cgroup2" => {
                let Some(path) = path_of(&|ctrls: &str| ctrls.is_empty()) else {
                    continue;
                };
                let dir = below(Path::new(point), root, &path);
                let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|s| s.split_whitespace().any(|w| w == c.name()));
                if enabled {
                    v2 = Some(Place { dir, v2: true });
                }
            }
            "cgroup" if supers.split(',').any(|o| o == c.name()) => {
                let Some(path) = path_of(&|ctrls: &str| ctrls.split(',').any(|x| x == c.name()))
                else {
                    continue;
                };
                v1 = Some(Place {
                    dir: below(Path::new(point), root, &path),
                    v2: false,
                });
            }
            _ => {}
        }
    }
    [v2, v1].into_iter().flatten().find(|p| {
        let probe = p.dir.join(format!("bpm-probe-{}", std::process::id()));
        let made = std::fs::create_dir(&probe).is_ok();
        made && std::fs::remove_dir(&probe).is_ok()
    })
}

/// The folder of cgroup `path` in a hierarchy whose `root` is mounted at
/// `point`; the mount point itself when `path` is not under `root` or its
/// folder is not there.
fn below(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        Some(path)
    } else {
        path.strip_prefix(root)
    };
    rel.map(|r| point.join(r.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| point.to_path_buf())
}

/// How each limit of `limits` would be enforced on this machine, as
/// `(limit, mechanism)` lines for `bpm show`.
///
/// # Errors
/// The first limit this machine cannot enforce, named by its option
/// (`flag` before it: `"--"` on the command line, `""` elsewhere).
pub fn check_limits(limits: &ResourceLimits, flag: &str) -> Result<Vec<(String, String)>, String> {
    enforcement(limits).map_err(|(option, why)| {
        if flag.is_empty() {
            format!("{option}: {why}")
        } else {
            format!("{flag}{}: {why}", option.replace('_', "-"))
        }
    })
}

/// [`check_limits`], the refusal as the option it names and why.
///
/// # Errors
/// The first limit this machine cannot enforce: `(option, why)`.
pub fn enforcement(
    limits: &ResourceLimits,
) -> Result<Vec<(String, String)>, (&'static str, String)> {
    let m = machine();
    let mut out = Vec::new();
    for (option, value) in limits.each() {
        let controller = match option {
            "memory_max" => Some(Controller::Memory),
            "cpu_max" => Some(Controller::Cpu),
            "pids_max" => Some(Controller::Pids),
            _ => None,
        };
        let how = match controller.and_then(|c| m.place(c).map(|p| (c, p))) {
            Some((c, p)) => format!(
                "cgroup v{} ({})",
                if p.v2 { 2 } else { 1 },
                p.dir.join(format!("bpm-<id>/{}", limit_file(c, p.v2))).display()
            ),
            None => match option {
                "memory_max" => "setrlimit RLIMIT_AS (address space; no cgroup memory controller bpm may use here)".to_owned(),
                "pids_max" if !m.root => "setrlimit RLIMIT_NPROC (counts every process of this user; no cgroup pids controller bpm may use here)".to_owned(),
                "pids_max" => {
                    return Err((option, "this machine offers no cgroup pids controller bpm may use, and RLIMIT_NPROC does not bind root: the limit cannot be enforced".to_owned()));
                }
                "cpu_max" => {
                    return Err((option, "this machine offers no cgroup cpu controller bpm may use (cgroup v2 with cpu delegated, or a writable v1 cpu hierarchy), and no rlimit caps a CPU share: the limit cannot be enforced".to_owned()));
                }
                _ => {
                    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                        .maximum
                        .unwrap_or(u64::MAX);
                    if limits.nofile.is_some_and(|n| n > hard) && !m.root {
                        return Err((
                            option,
                            format!("{value} is above this user's hard limit of {hard} open files"),
                        ));
                    }
                    "setrlimit RLIMIT_NOFILE".to_owned()
                }
            },
        };
        out.push((format!("{} {value}", limit_word(option)), how));
    }
    Ok(out)
}

/// The limits a front end was asked for, once read and checked against
/// this machine ([`check_limits`]); `flag` as there.
///
/// # Errors
/// A value that does not read, or a limit this machine cannot enforce.
pub fn asked_limits(
    asked: &bpm_domain::LimitsAsked<'_>,
    flag: &str,
) -> Result<Option<Box<ResourceLimits>>, String> {
    let limits = asked.limits(flag)?;
    if let Some(l) = &limits {
        check_limits(l, flag)?;
    }
    Ok(limits.map(Box::new))
}

/// The file that holds controller `c`'s limit.
fn limit_file(c: Controller, v2: bool) -> &'static str {
    match (c, v2) {
        (Controller::Memory, true) => "memory.max",
        (Controller::Memory, false) => "memory.limit_in_bytes",
        (Controller::Cpu, true) => "cpu.max",
        (Controller::Cpu, false) => "cpu.cfs_quota_us",
        (Controller::Pids, _) => "pids.max",
    }
}

/// The group of record `id` for controller `c`, where one would be.
fn group_dir(c: Controller, id: ProcessId) -> Option<(PathBuf, bool)> {
    machine()
        .place(c)
        .map(|p| (p.dir.join(format!("bpm-{id}")), p.v2))
}

/// What a limited process takes with it into its `fork`: the groups'
/// `cgroup.procs`, open, to write itself into, and the rlimits to set.
#[derive(Debug, Default)]
pub(crate) struct Confinement {
    pub(crate) procs: Vec<std::fs::File>,
    pub(crate) rlimits: Vec<(rustix::process::Resource, u64)>,
}

impl Confinement {
    /// Makes record `id`'s groups and writes `limits` into them.
    ///
    /// # Errors
    /// A limit that cannot be enforced, or a group that cannot be made.
    pub(crate) fn make(id: ProcessId, limits: &ResourceLimits) -> Result<Self, String> {
        check_limits(limits, "")?;
        let mut out = Confinement::default();
        let mut group = |c: Controller, writes: &[(&str, String)]| -> Result<bool, String> {
            let Some((dir, _)) = group_dir(c, id) else {
                return Ok(false);
            };
            let made = |e: io::Error| {
                format!("cannot make the {} cgroup {}: {e}", c.name(), dir.display())
            };
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(made(e)),
            }
            for (file, value) in writes {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, value) {
                    // Swap accounting is optional: its file may refuse.
                    if !file.contains("memsw") {
                        return Err(format!("cannot write {value} to {}: {e}", path.display()));
                    }
                }
            }
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(made)?;
            out.procs.push(procs);
            Ok(true)
        };
        if let Some(bytes) = limits.memory_max {
            let v2 = group_dir(Controller::Memory, id).is_some_and(|(_, v2)| v2);
            let writes: Vec<(&str, String)> = if v2 {
                vec![
                    ("memory.max", bytes.to_string()),
                    ("memory.swap.max", "0".into()),
                ]
            } else {
                vec![
                    ("memory.limit_in_bytes", bytes.to_string()),
                    ("memory.memsw.limit_in_bytes", bytes.to_string()),
                ]
            };
            if !group(Controller::Memory, &writes)? {
                out.rlimits.push((rustix::process::Resource::As, bytes));
            }
        }
        if let Some(percent) = limits.cpu_max {
            let period = 100_000u64;
            let quota = u64::from(percent) * period / 100;
            let v2 = group_dir(Controller::Cpu, id).is_some_and(|(_, v2)| v2);
            let writes: Vec<(&str, String)> = if v2 {
                vec![("cpu.max", format!("{quota} {period}"))]
            } else {
                vec![
                    ("cpu.cfs_period_us", period.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ]
            };
            group(Controller::Cpu, &writes)?;
        }
        if let Some(n) = limits.pids_max
            && !group(Controller::Pids, &[("pids.max", n.to_string())])?
        {
            out.rlimits
                .push((rustix::process::Resource::Nproc, u64::from(n)));
        }
        if let Some(n) = limits.nofile {
            out.rlimits.push((rustix::process::Resource::Nofile, n));
        }
        Ok(out)
    }
}

/// At the end of record `id`'s process tree: whether the kernel killed
/// something in its memory group for going over the limit, once what is
/// left in its groups is killed (with `kill`; otherwise it runs on in them)
/// and the groups removed. Nothing to do for a record with no group.
pub(crate) fn finish(id: ProcessId, kill: bool) -> Option<LimitHit> {
    let mut hit = None;
    for c in Controller::ALL {
        let Some((dir, v2)) = group_dir(c, id) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        if c == Controller::Memory {
            hit = memory_hit(&dir, v2);
        }
        if kill {
            remove(&dir);
        } else {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    hit
}

/// [`finish`] when it is quick: every group of record `id` empty, so each
/// is removed at once (a few system calls, fit for an async task).
/// `Err` (with what the memory group said) when a group still holds
/// processes: then [`finish`] it is, on a thread that may wait for them.
pub(crate) fn finish_quickly(id: ProcessId) -> Result<Option<LimitHit>, Option<LimitHit>> {
    let mut hit = None;
    for c in Controller::ALL {
        let Some((dir, v2)) = group_dir(c, id) else {
            continue;
        };
        if c == Controller::Memory {
            hit = memory_hit(&dir, v2).or(hit);
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return Err(hit),
        }
    }
    Ok(hit)
}

/// The memory limit, if the OOM killer struck in group `dir`.
fn memory_hit(dir: &Path, v2: bool) -> Option<LimitHit> {
    let (file, limit) = if v2 {
        ("memory.events", "memory.max")
    } else {
        ("memory.oom_control", "memory.limit_in_bytes")
    };
    let kills: u64 = std::fs::read_to_string(dir.join(file))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())?;
    let max = std::fs::read_to_string(dir.join(limit))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (kills > 0).then_some(LimitHit::Memory { max })
}

/// Kills what is left in group `dir` and removes it, trying for a moment
/// while the killed processes go.
fn remove(dir: &Path) {
    for _ in 0..40 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    tracing::warn!(dir = %dir.display(), "cannot remove a record's cgroup: processes stay in it");
}

/// Sends signal `number` to every process in record `id`'s groups, so that
/// a stop or a pause reaches what left the process group and cleared
/// bpm's mark too. On cgroup v2, KILL goes through `cgroup.kill`, and STOP
/// and CONT through `cgroup.freeze`, where those files take the write;
/// otherwise each process is signalled. Nothing for a record with no group.
pub(crate) fn signal_group(id: ProcessId, number: i32) {
    let Some((dir, v2)) = Controller::ALL
        .into_iter()
        .filter_map(|c| group_dir(c, id))
        .find(|(dir, _)| dir.is_dir())
    else {
        return;
    };
    if v2 {
        let write = |file: &str, value: &str| std::fs::write(dir.join(file), value).is_ok();
        let done = match number {
            n if n == libc::SIGKILL => write("cgroup.kill", "1"),
            n if n == libc::SIGSTOP => write("cgroup.freeze", "1"),
            n if n == libc::SIGCONT => write("cgroup.freeze", "0"),
            _ => false,
        };
        if done {
            return;
        }
    }
    let Some(signal) = super::tree::os_signal(number) else {
        return;
    };
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// The records' groups in folder `dir` (`bpm-ID`), with their paths.
fn groups_in(dir: &Path) -> impl Iterator<Item = (ProcessId, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flat_map(std::iter::Iterator::flatten)
        .filter_map(|entry| {
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("bpm-"))
                .and_then(|n| n.parse::<ProcessId>().ok())?;
            Some((id, entry.path()))
        })
}

/// Removes the groups left by records that ended while no bpm process
/// watched them (`kill -9` of the daemon and the keeper together): each
/// `bpm-ID` group, in every controller, whose record `ended` says has
/// ended and that holds no process. A group of a record it does not say
/// so of (live, or another state directory's on this machine) is not
/// touched; one that still holds processes is left, and said in the log.
/// Returns how many were removed.
pub fn sweep_groups(ended: &dyn Fn(ProcessId) -> bool) -> usize {
    let mut removed = 0;
    let mut seen = std::collections::HashSet::new();
    for c in Controller::ALL {
        let Some(place) = machine().place(c) else {
            continue;
        };
        // Controllers of one v2 hierarchy share their folder.
        if !seen.insert(place.dir.clone()) {
            continue;
        }
        for (id, dir) in groups_in(&place.dir) {
            if !ended(id) {
                continue;
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => tracing::warn!(
                    dir = %dir.display(),
                    "the cgroup of a record that ended still holds processes: left as it is"
                ),
            }
        }
    }
    removed
}

/// What each record's memory group is charged, in bytes (`memory.current`
/// on v2, `memory.usage_in_bytes` on v1): the figure its memory limit is
/// measured against. One listing of the folder the groups are made in,
/// whatever the number of records asked about.
pub(crate) fn memory_charged() -> std::collections::HashMap<ProcessId, u64> {
    let mut charged = std::collections::HashMap::new();
    let Some(place) = machine().place(Controller::Memory) else {
        return charged;
    };
    let file = if place.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    for (id, dir) in groups_in(&place.dir) {
        let bytes = std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if let Some(bytes) = bytes {
            charged.insert(id, bytes);
        }
    }
    charged
}

#[cfg(test)]
mod tests {
    use super::{Controller, find_place, limit_file};

    /// A machine's mounts as `/proc/self/mountinfo` gives them: a v2
    /// hierarchy at `v2` and a v1 memory hierarchy at `v1`.
    fn mountinfo(v2: &std::path::Path, v1: &std::path::Path) -> String {
        format!(
            "30 25 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
             31 25 0:27 / {} rw,nosuid - cgroup cgroup rw,memory\n",
            v2.display(),
            v1.display()
        )
    }

    /// On cgroup v2 (the unified hierarchy, today's default), the group
    /// this process is in is where bpm makes its groups, once the
    /// controller is delegated to its children (`cgroup.subtree_control`);
    /// a v1 hierarchy is the fallback, and each writes the limit to its
    /// own file. Checked on folders laid out as each hierarchy is: the
    /// machine's own is whichever it has (CI's is v1), and the limit
    /// tests of crates/cli run there.
    #[test]
    fn v2_is_chosen_where_the_controller_is_delegated_else_v1() {
        let v2 = tempfile::tempdir().expect("v2");
        let v1 = tempfile::tempdir().expect("v1");
        let own_group = v2.path().join("user.slice/me");
        std::fs::create_dir_all(&own_group).expect("group");
        std::fs::create_dir_all(v1.path().join("bpm")).expect("v1 group");
        let info = mountinfo(v2.path(), v1.path());
        // /proc/self/cgroup on a hybrid machine: the v2 line has no controllers.
        let own = "0::/user.slice/me\n5:memory:/bpm\n";

        // Not delegated: v1.
        std::fs::write(own_group.join("cgroup.subtree_control"), "pids\n").expect("ctl");
        let place = find_place(Controller::Memory, &info, own).expect("v1");
        assert!(!place.v2 && place.dir == v1.path().join("bpm"), "{place:?}");
        assert_eq!(
            limit_file(Controller::Memory, place.v2),
            "memory.limit_in_bytes"
        );

        // Delegated: v2, in this process's own group.
        std::fs::write(
            own_group.join("cgroup.subtree_control"),
            "cpu memory pids\n",
        )
        .expect("ctl");
        let place = find_place(Controller::Memory, &info, own).expect("v2");
        assert!(place.v2 && place.dir == own_group, "{place:?}");
        assert_eq!(limit_file(Controller::Memory, true), "memory.max");
        assert_eq!(limit_file(Controller::Cpu, true), "cpu.max");

        // No v1 hierarchy and nothing delegated: no place, so the limit is
        // refused by name rather than silently not applied.
        let only_v2 = format!(
            "30 25 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            v2.path().display()
        );
        std::fs::write(own_group.join("cgroup.subtree_control"), "").expect("ctl");
        assert!(find_place(Controller::Memory, &only_v2, "0::/user.slice/me\n").is_none());
    }
}
