//! Finding and signalling every process of a record's tree, including those
//! that left its process group (`setsid`, double fork).
//!
//! Every child bpm starts carries `BPM_PROCESS_ID=<id>` in its environment,
//! and descendants inherit it. A stop therefore signals the process group,
//! then every process whose environment carries the mark or whose parent
//! chain leads to the leader. Each is signalled through a pidfd opened after
//! checking its start time, so a recycled pid is never signalled.

use std::collections::{HashMap, HashSet};
use std::fs;

use rustix::process::{Pid, PidfdFlags, Signal as OsSignal, pidfd_open, pidfd_send_signal};

use super::procfs::{Seen, pids, stat};

/// The environment mark every process bpm starts carries.
pub(crate) const MARK: &str = "BPM_PROCESS_ID";

pub(crate) fn carries_mark(pid: u32, needle: &[u8]) -> bool {
    mark_of(pid, needle) == Some(true)
}

/// Whether process `pid` carries the mark `needle`; `None` while that
/// cannot be told: its environment reads empty or not at all, as in the
/// middle of an `execve` (a leader's child that was exec'ing as the leader
/// exited), or for a zombie.
pub(crate) fn mark_of(pid: u32, needle: &[u8]) -> Option<bool> {
    with_environ(pid, |env| {
        (!env.is_empty()).then(|| env.split(|b| *b == 0).any(|var| var == needle))
    })
    .flatten()
}

/// Whether `process`, whose environment reads empty, is in the middle of
/// an `execve` (or of its exit): its new address space has no environment
/// laid out yet ([`Seen::env_end`] is 0, and not because it may not be
/// read). A process started with an empty environment has one laid out, of
/// length 0.
pub(crate) fn in_exec(process: &Seen) -> bool {
    !process.has_ended()
        && process.env_end == Some(0)
        && fs::File::open(format!("/proc/{}/environ", process.pid)).is_ok()
}

/// The value of variable `name` in process `pid`'s environment, if it
/// has one (as bytes).
pub(crate) fn variable_of(pid: u32, name: &[u8]) -> Option<Vec<u8>> {
    with_environ(pid, |env| {
        env.split(|b| *b == 0).find_map(|var| {
            var.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
                .map(<[u8]>::to_vec)
        })
    })
    .flatten()
}

/// The value of `MARK` in process `pid`'s environment, if it has one.
pub(crate) fn mark_value(pid: u32) -> Option<String> {
    let prefix = format!("{MARK}=");
    with_environ(pid, |env| {
        env.split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
    .flatten()
}

/// Calls `f` with process `pid`'s environment (`None` if it cannot be
/// read), read whole in one `pread`, into a buffer each thread keeps. The
/// kernel holds the address space for the length of one read only: a read
/// in pieces that an `execve` falls between ends early, with part of the
/// old image's environment, perhaps without the mark.
fn with_environ<R>(pid: u32, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    use std::os::unix::fs::FileExt;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let file = fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    BUF.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(16 * 1024, 0);
        }
        loop {
            let n = file.read_at(buf, 0).ok()?;
            if n < buf.len() {
                return Some(f(&buf[..n]));
            }
            // Linux caps arguments and environment together at a quarter
            // of the stack limit; 64 MiB is past any that runs.
            if buf.len() >= 64 << 20 {
                return None;
            }
            buf.resize(buf.len() * 4, 0);
        }
    })
}

/// Every live process of the tree of record `id`: marked with the record's id,
/// or descended from `leader` (given only while the leader is unreaped, so
/// its pid cannot have been reused). Zombies are left out.
pub(crate) fn members(id: &str, leader: Option<u32>) -> Vec<Seen> {
    let needle = format!("{MARK}={id}").into_bytes();
    let own = std::process::id();
    let seen: HashMap<u32, Seen> = pids()
        .into_iter()
        .filter_map(stat)
        .map(|s| (s.pid, s))
        .collect();
    let mut members: HashSet<u32> = seen
        .values()
        .filter(|s| {
            s.pid != own
                && !s.has_ended()
                && (Some(s.pid) == leader || carries_mark(s.pid, &needle))
        })
        .map(|s| s.pid)
        .collect();
    // Descendants that cleared their environment still have the leader as an ancestor.
    loop {
        let before = members.len();
        for s in seen.values() {
            if !s.has_ended() && s.pid != own && members.contains(&s.ppid) {
                members.insert(s.pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    members
        .into_iter()
        .filter_map(|p| seen.get(&p).copied())
        .collect()
}

/// For each of `ids`, the live process that leads its tree: of the processes
/// that carry the record's mark, the one started first (a descendant starts
/// after its ancestor).
pub(crate) fn find_leaders(
    ids: &HashSet<bpm_domain::ProcessId>,
) -> HashMap<bpm_domain::ProcessId, u32> {
    let own = std::process::id();
    let mut leaders: HashMap<bpm_domain::ProcessId, Seen> = HashMap::new();
    if ids.is_empty() {
        return HashMap::new();
    }
    for seen in pids().into_iter().filter_map(stat) {
        if seen.pid == own || seen.has_ended() {
            continue;
        }
        let Some(id) = mark_value(seen.pid)
            .and_then(|v| v.parse().ok())
            .filter(|id| ids.contains(id))
        else {
            continue;
        };
        let earlier = leaders.get(&id).is_some_and(|l| l.start <= seen.start);
        if !earlier {
            leaders.insert(id, seen);
        }
    }
    leaders.into_iter().map(|(id, s)| (id, s.pid)).collect()
}

/// Whether process group `group` still has a member (after its leader was
/// reaped, the group id stays reserved while one remains).
pub(crate) fn group_alive(group: u32) -> bool {
    Pid::from_raw(i32::try_from(group).unwrap_or(0))
        .is_some_and(|g| rustix::process::test_kill_process_group(g).is_ok())
}

/// The command name of process `pid` (`/proc/PID/comm`), or `?`.
pub(crate) fn command_name(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| "?".to_owned(), |c| c.trim_end().to_owned())
}

/// How many processes [`any_ends`] watches at once.
const WATCHED_AT_ONCE: usize = 64;

/// Returns when the first of `processes` ends (each watched by a pidfd,
/// opened only if it is still the one seen), or after `within`.
pub(crate) async fn any_ends(processes: &[Seen], within: std::time::Duration) {
    let fds: Vec<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> = processes
        .iter()
        .take(WATCHED_AT_ONCE)
        .filter_map(|p| {
            let pid = Pid::from_raw(i32::try_from(p.pid).ok()?)?;
            let fd = pidfd_open(pid, PidfdFlags::NONBLOCK).ok()?;
            // Opened after the scan: the same process only if it started when seen.
            if stat(p.pid).is_none_or(|now| now.start != p.start) {
                return None;
            }
            // SAFETY: the OwnedFd moves into the AsyncFd, stays open and keeps its number until dropped.
            #[allow(unsafe_code)]
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .ok()
        })
        .collect();
    if fds.len() < processes.len().min(WATCHED_AT_ONCE) {
        // One ended between the scan and now.
        return;
    }
    let first = std::future::poll_fn(|cx| {
        if fds.iter().any(|fd| fd.poll_read_ready(cx).is_ready()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    let _ = tokio::time::timeout(within, first).await;
}

/// Signals one process, only if it is still the one seen (same start time).
pub(crate) fn signal_seen(process: Seen, signal: i32) {
    let Some(pid) = Pid::from_raw(i32::try_from(process.pid).unwrap_or(0)) else {
        return;
    };
    let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) else {
        return;
    };
    // The pidfd pins the process; if the pid was recycled since the scan, the start time differs.
    if stat(process.pid).is_some_and(|now| now.start == process.start)
        && let Some(sig) = os_signal(signal)
    {
        let _ = pidfd_send_signal(&fd, sig);
    }
}

/// The OS signal for a signal number bpm sends.
pub(crate) fn os_signal(n: i32) -> Option<OsSignal> {
    Some(match n {
        1 => OsSignal::HUP,
        2 => OsSignal::INT,
        3 => OsSignal::QUIT,
        9 => OsSignal::KILL,
        10 => OsSignal::USR1,
        12 => OsSignal::USR2,
        15 => OsSignal::TERM,
        18 => OsSignal::CONT,
        19 => OsSignal::STOP,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process started with no environment reads empty, yet it is not
    /// taken for one in the middle of an `execve`; nor is a zombie.
    #[test]
    fn an_empty_environment_is_not_an_exec() {
        let mut bare = std::process::Command::new("/bin/sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn");
        let mut dead = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Once `sleep` runs, its environment is laid out (empty).
        while mark_of(bare.id(), b"X=1").is_none() && !environ_laid_out(bare.id()) {
            assert!(std::time::Instant::now() < deadline, "sleep never ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(mark_of(bare.id(), b"X=1"), None);
        assert!(!in_exec(&stat(bare.id()).expect("sleep runs")));
        let zombie = loop {
            match stat(dead.id()) {
                Some(s) if s.has_ended() => break s,
                _ => {}
            }
            assert!(std::time::Instant::now() < deadline, "true never ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(!in_exec(&zombie));
        assert_eq!(mark_of(std::process::id(), b"NO_SUCH=1"), Some(false));
        let _ = bare.kill();
        let _ = bare.wait();
        let _ = dead.wait();
    }

    /// Whether `pid`'s stat shows an environment laid out (`env_end`).
    fn environ_laid_out(pid: u32) -> bool {
        stat(pid).is_some_and(|s| s.env_end.is_some_and(|end| end != 0))
    }

    /// A process that carries the mark is never read as unmarked, however
    /// often it replaces itself with `execve` while it is read: a read that
    /// began before an `execve` and went on after it once got the old
    /// image's environment cut short, without the mark.
    #[test]
    fn a_mark_is_read_whole_across_execs() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("again");
        fs::write(
            &script,
            "[ \"$1\" -gt 0 ] && exec /bin/sh \"$0\" $(($1 - 1))\nsleep 0.2\n",
        )
        .expect("script");
        let needle = format!("{MARK}=across-execs");
        let mut child = std::process::Command::new("/bin/sh")
            .arg(&script)
            .arg("3000")
            .env_clear()
            .envs((0..60).map(|n| (format!("PAD_{n:02}"), "x".repeat(100))))
            .env(MARK, "across-execs")
            .spawn()
            .expect("spawn");
        let (mut marked, mut unmarked, mut unsure) = (0, 0, 0);
        let pid = child.id();
        for _ in 0..200_000 {
            match mark_of(pid, needle.as_bytes()) {
                Some(true) => marked += 1,
                Some(false) => unmarked += 1,
                None => unsure += 1,
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(marked > 0, "never read: {unsure} unsure");
        assert_eq!(
            unmarked, 0,
            "read as unmarked ({marked} marked, {unsure} unsure)"
        );
    }
}
