//! What `/proc` shows of processes: the pids it lists, and each one's
//! `stat` line. Stops (`tree`) and usage samples (`usage`) read both, a
//! whole machine's worth at a time, so each `stat` costs one open and,
//! nearly always, one read.

use std::fs;

/// One process as its `stat` line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// Start time in clock ticks since boot: with the pid, the process's identity.
    pub(crate) start: u64,
    /// `R`, `S`, `Z` and so on.
    pub(crate) state: char,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub(crate) ticks: u64,
    pub(crate) rss_pages: u64,
    /// How many threads it has.
    pub(crate) threads: u32,
    /// Where its environment ends (field 51; 0 while an `execve` has not
    /// laid one out yet, or when it may not be read); `None` on a kernel
    /// that does not show it.
    pub(crate) env_end: Option<u64>,
}

impl Seen {
    /// Whether it has ended and only waits to be reaped (a zombie, `Z`) or
    /// is on its way out of the table (`X`): it runs no more.
    pub(crate) fn has_ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// The pids of every process on the machine.
pub(crate) fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Process `pid`'s `stat`, or `None` when it is gone.
pub(crate) fn stat(pid: u32) -> Option<Seen> {
    read_stat(pid, &mut [0; 4096])
}

/// Reads `/proc/<pid>/stat` into `buf` with one open and, nearly always,
/// one read: the kernel makes the whole line at the first read, and it is
/// well under the buffer. (Reading it as a `String` costs twice the calls:
/// a stat to size the buffer, then reads growing from 32 bytes.)
pub(crate) fn read_stat(pid: u32, buf: &mut [u8; 4096]) -> Option<Seen> {
    use std::io::Read as _;
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    while len < buf.len() {
        let n = file.read(&mut buf[len..]).ok()?;
        len += n;
        if n == 0 || buf[len - 1] == b'\n' {
            break;
        }
    }
    parse_stat(pid, &buf[..len])
}

/// One `stat` line. The command name may hold spaces, parentheses and
/// bytes that are not UTF-8: the fields are counted from the last `)`.
fn parse_stat(pid: u32, line: &[u8]) -> Option<Seen> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Seen {
        pid,
        state: f.first()?.chars().next()?,
        ppid: u32::try_from(num(1)?).ok()?,
        ticks: num(11)? + num(12)? + num(13)? + num(14)?,
        threads: num(17).and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
        start: num(19)?,
        rss_pages: num(21)?,
        env_end: num(48),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_an_odd_command_name() {
        let mut line = b"42 (we) ird \xff) S 7 42 42 0 -1 4194304 10 0 0 0 ".to_vec();
        line.extend_from_slice(b"3 4 5 6 20 0 1 0 900 1000 77 18446744073709551615\n");
        let p = parse_stat(42, &line).expect("parsed");
        assert_eq!(
            (p.ppid, p.state, p.ticks, p.threads, p.start, p.rss_pages),
            (7, 'S', 18, 1, 900, 77)
        );
        assert_eq!(p.env_end, None, "a line without field 51");
        assert!(parse_stat(1, b"1 (no close").is_none());
    }

    #[test]
    fn reads_its_own_stat() {
        let me = stat(std::process::id()).expect("own stat");
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0 && me.rss_pages > 0 && me.threads >= 1);
        assert!(matches!(me.state, 'R' | 'S'));
        assert!(me.env_end.is_some_and(|end| end > 0));
        assert!(pids().contains(&me.pid));
    }
}
