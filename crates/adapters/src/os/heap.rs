//! Giving the heap's free pages back to the OS.

/// Returns the free pages of the process's heap to the OS, so that memory
/// used for a while and freed (the files and journal a store reads when it
/// opens, say) stops counting as the process's own.
///
/// The allocator keeps freed memory for reuse; after a one-off burst, such
/// as a daemon reading back its records, that memory would stay resident
/// for the daemon's life. On glibc this is `malloc_trim(0)`, which also
/// releases whole free pages within the heap; elsewhere it does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only changes the
        // allocator's own state, under its own lock.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Lets go of the pages of this program's own file, and of the libraries
/// it loaded, that its start read (code and constants, clean copies of
/// the files): a process that then
/// only waits keeps resident only what it touches while it waits, instead
/// of everything its start ran. The pages come back from the page cache
/// if they are needed again. Returns how many bytes of mappings were
/// given back; 0 where this cannot be done.
pub fn give_back_start_pages() -> usize {
    let Ok(exe) = std::env::current_exe() else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut given = 0;
    for (start, end) in clean_mappings_of(&smaps, &exe) {
        if give_back(start, end - start) {
            given += end - start;
        }
    }
    release_free_memory();
    given
}

/// CPU time under which a period of [`give_back_when_quiet`] counts as
/// quiet: over what waiting costs a daemon or keeper holding hundreds of
/// processes (under 0.5 ms a second each), under what a burst of requests
/// does.
const QUIET_CPU: std::time::Duration = std::time::Duration::from_millis(1);

/// How many times less often a process that has given its pages back
/// looks for work: every 2 s for the daemon's and keeper's quarter second.
const IDLE_SLOWER: u32 = 8;

/// The least time between two give-backs: work that comes back every
/// second (five schedules `--every 1s`) maps its pages again at most once
/// in this long, not after every quiet spell.
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Gives this process's start pages back ([`give_back_start_pages`]) each
/// time it falls quiet after work: once a `period` passes in which it used
/// under 1 ms of CPU, the first such period after any busier one. A daemon
/// or keeper that served a burst (its start, a project's `up`, 200 `run`s)
/// and now only waits keeps resident only what its waiting touches; the
/// next request maps back from the page cache the code it runs (about 70
/// minor faults for a `bpm run`, no disk read while the file stays
/// cached). A lone request after that does not count as work, and two
/// give-backs are at least 5 s apart, so work that comes back often does
/// not map the same pages over and over. Runs for as long as the runtime
/// does.
pub async fn give_back_when_quiet(period: std::time::Duration) {
    let mut quiet = Quiet::default();
    let mut last = cpu_time();
    loop {
        // Once given back, only work can change anything: look 8 times
        // less often, and weigh the CPU used over the longer wait as over
        // one period.
        let slower = if quiet.given { IDLE_SLOWER } else { 1 };
        tokio::time::sleep(period * slower).await;
        let now = cpu_time();
        if quiet.after(
            now.saturating_sub(last) / slower,
            tokio::time::Instant::now().into_std(),
        ) {
            give_back_start_pages();
            // The give-back's own reading of smaps is not work to wake for.
            last = cpu_time();
        } else {
            last = now;
        }
    }
}

/// When to give back: the first quiet period after work, at most once in
/// [`GIVE_BACK_EVERY`].
#[derive(Debug, Default)]
struct Quiet {
    /// Given back since the last work.
    given: bool,
    last_given: Option<std::time::Instant>,
}

impl Quiet {
    /// After a period in which the process used `used` of CPU, ending at
    /// `now`: whether to give back now.
    fn after(&mut self, used: std::time::Duration, now: std::time::Instant) -> bool {
        if used >= QUIET_CPU {
            self.given = false;
            return false;
        }
        let spaced = self
            .last_given
            .is_none_or(|t| now.saturating_duration_since(t) >= GIVE_BACK_EVERY);
        if self.given || !spaced {
            return false;
        }
        self.given = true;
        self.last_given = Some(now);
        true
    }
}

/// This process's CPU time, all threads.
fn cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The read-only mappings of `exe` and of the other files mapped in
/// `smaps` none of whose pages were
/// ever written (no anonymous copy: relocated constants are), as
/// `(start, end)`.
fn clean_mappings_of(smaps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            // The program's own file and the libraries it loaded.
            let ours = (std::path::Path::new(path) == exe || path.starts_with('/'))
                && perms.starts_with('r')
                && !perms.contains('w');
            current = ours.then_some((start, end));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && fields.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

#[cfg(target_os = "linux")]
fn give_back(start: usize, len: usize) -> bool {
    // SAFETY: the range is one whole mapping of a file (this program's or
    // a library's),
    // read-only and never written (no anonymous page: `clean_mappings_of`),
    // so its pages hold nothing but the file's bytes: MADV_DONTNEED drops
    // them from memory and the next access reads them again from the
    // file, as at the start. No Rust object is changed by it.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn give_back(_start: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::Quiet;
    use std::time::{Duration, Instant};

    #[test]
    fn pages_go_back_once_per_quiet_spell_and_at_most_once_in_5_s() {
        let (idle, busy) = (Duration::from_micros(100), Duration::from_millis(5));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut q = Quiet::default();
        // Quiet from the start (the daemon's start was the work): given back.
        assert!(q.after(idle, at(250)));
        // Still quiet: nothing more to give.
        assert!(!q.after(idle, at(500)));
        // A lone light request is not work.
        assert!(!q.after(Duration::from_micros(900), at(750)));
        // A burst, then quiet: but under 5 s since the last give-back.
        assert!(!q.after(busy, at(1_000)));
        assert!(!q.after(idle, at(1_250)));
        // Work every second (a schedule): still once in 5 s.
        for s in 2..5 {
            assert!(!q.after(busy, at(s * 1_000)));
            assert!(!q.after(idle, at(s * 1_000 + 250)));
        }
        assert!(!q.after(busy, at(5_000)));
        assert!(q.after(idle, at(5_250)));
        assert!(!q.after(idle, at(5_500)));
    }

    #[test]
    fn a_program_gives_back_its_start_pages_and_runs_on() {
        let given = super::give_back_start_pages();
        assert!(
            given > 0,
            "no read-only mapping of the test binary was given back"
        );
        // The code still runs: its pages come back from the file.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
