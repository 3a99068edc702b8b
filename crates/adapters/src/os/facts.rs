//! Facts of this host a front end or the daemon asks for: the time
//! zone, the environment to pass on, the boot, what a pid runs, and the
//! processes bpm marked.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Why a record is lost whose process `pid` ended with no keeper as its
/// parent (the one that started it died): its exit code cannot be known.
#[must_use]
pub fn unknown_end(pid: u32) -> String {
    format!(
        "process {pid} ended after the bpm keeper that started it died, so its exit code is unknown"
    )
}

/// The records whose start a spawner noted in the start log at `path` (see
/// [`OsSpawnerConfig::start_log`]), each with the pid it started, when the
/// start got that far: each may have started, and no record outside it
/// started since the log was last emptied. A missing log reads as empty.
///
/// # Errors
/// The log exists but cannot be read.
pub fn read_start_log(path: &std::path::Path) -> std::io::Result<HashMap<ProcessId, Option<u32>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut started = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(id) = words.next().and_then(|w| w.parse().ok()) else {
            continue;
        };
        let pid = words.next().and_then(|w| w.parse().ok());
        let known = started.entry(id).or_insert(None);
        if pid.is_some() {
            *known = pid;
        }
    }
    Ok(started)
}

/// Every live process that carries the mark of one of `ids`, by record: the
/// process whose parent does not carry the same mark (the leader of the
/// tree), and its pid.
#[must_use]
pub fn find_marked(ids: &[ProcessId]) -> HashMap<ProcessId, u32> {
    tree::find_leaders(&ids.iter().copied().collect())
}

/// The records whose processes run as children of process `keeper` (a
/// keeper, a subreaper: every process it started, and what they left
/// behind, are its children), by the mark each carries, with a pid of each.
#[must_use]
pub fn marked_children(keeper: u32) -> HashMap<ProcessId, u32> {
    let mut found = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{keeper}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let id = tree::variable_of(pid, tree::MARK.as_bytes())
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<ProcessId>().ok());
            if let Some(id) = id {
                found.entry(id).or_insert(pid);
            }
        }
    }
    found
}

/// Stops every process that carries record `id`'s mark: TERM, then KILL
/// to what is left after `grace`. For processes no record answers for any
/// more (their record was lost with a damaged journal): nothing bpm runs
/// is left out of reach. Blocks for up to `grace`.
pub fn stop_marked(id: ProcessId, grace: Duration) {
    let text = id.to_string();
    for member in tree::members(&text, None) {
        tree::signal_seen(member, Signal::Term.number());
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        let rest = tree::members(&text, None);
        if rest.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            for member in rest {
                tree::signal_seen(member, Signal::Kill.number());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// This machine's time zone, as an IANA name: `TZ`, else what
/// `/etc/localtime` links to, else `/etc/timezone`, else UTC. A schedule
/// keeps the name, so its hours do not move with the daemon's zone.
#[must_use]
pub fn local_time_zone() -> String {
    let known = |name: &str| {
        let name = name.trim().trim_start_matches(':');
        bpm_domain::known_time_zone(name).then(|| name.to_owned())
    };
    let from_env = std::env::var("TZ").ok().and_then(|tz| known(&tz));
    let from_link = || {
        let link = std::fs::read_link("/etc/localtime").ok()?;
        let text = link.to_string_lossy();
        let (_, name) = text.split_once("zoneinfo/")?;
        known(name)
    };
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .and_then(|t| known(&t))
    };
    from_env
        .or_else(from_link)
        .or_else(from_file)
        .unwrap_or_else(|| "UTC".to_owned())
}

/// This process's environment as the base of a process it starts for its
/// caller, as a shell would pass it on, byte for byte, without bpm's own
/// marks (`BPM_PROCESS_ID`, `BPM_SESSION`, `BPM_NODE`, `BPM_FENCE`,
/// `BPM_PORT`).
#[must_use]
pub fn inherited_env() -> Environment {
    std::env::vars_os()
        .filter(|(k, _)| {
            !matches!(
                k.as_bytes(),
                b"BPM_PROCESS_ID"
                    | b"BPM_SESSION"
                    | b"BPM_NODE"
                    | b"BPM_FENCE"
                    | b"BPM_PORT"
                    | b"NOTIFY_SOCKET"
            )
        })
        .map(|(k, v)| (OsText::from(k), OsText::from(v)))
        .collect()
}

/// Raises this process's limit of open files to its hard limit (at most
/// 65,536): a keeper holds about five descriptors per process it runs, and a
/// daemon two (the pipes that outlive the keeper), so the common soft limit
/// of 1,024 would cap them at a few hundred processes. The processes a
/// keeper starts inherit the raised soft limit, as they do in containers.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.map_or(65_536, |max| max.min(65_536));
    if limit.current.is_some_and(|c| c >= want) {
        return;
    }
    let raised = Rlimit {
        current: Some(want),
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        tracing::warn!(error = %e, "cannot raise the limit of open files");
    }
}

/// The kernel's id of this boot of the machine (empty if it cannot be
/// read): two processes that see the same one run on the same machine,
/// and it has not been restarted between them.
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Whether a bpm program runs as `pid` on this machine: the pid exists,
/// is not a zombie waiting to be reaped, and its command name is bpm's (a
/// pid the kernel gave to another program since does not count).
#[must_use]
pub fn runs_bpm(pid: u32) -> bool {
    if procfs::stat(pid).is_none_or(|s| s.has_ended()) {
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let name = comm.trim();
    if name.is_empty() {
        return false;
    }
    // A test binary or a renamed copy still names its executable bpm.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    name.starts_with("bpm") || exe.starts_with("bpm")
}
