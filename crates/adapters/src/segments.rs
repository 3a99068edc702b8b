//! The layout shared by the file and Redis output stores: a process's output
//! as segments of raw bytes, each with an index of runs (which stream wrote
//! how many bytes), and the plan of which ranges a read must fetch.

use bpm_ports::{Cursor, OutputQuery, Stream};

/// Bytes per run in an index: the stream, then the length (u32, little endian).
pub const RUN_BYTES: u64 = 5;

/// One run: `len` bytes of `stream` at `at` within its segment.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub stream: Stream,
    pub at: u64,
    pub len: u64,
}

/// A segment: the runs stored from logical offset `start` on.
#[derive(Debug)]
pub struct Segment {
    pub start: u64,
    pub runs: Vec<Run>,
}

impl Segment {
    /// How many bytes the segment holds.
    pub fn len(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.at + r.len)
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What is kept of one process's output: segments, oldest first, up to `end`.
#[derive(Debug, Default)]
pub struct SegmentedLog {
    pub segments: Vec<Segment>,
    pub end: u64,
    /// Bytes that could not be stored, and so were dropped.
    pub dropped: u64,
    /// Whether `dropped` is newer than what the store holds.
    pub dropped_unsaved: bool,
}

impl SegmentedLog {
    /// The offset of the oldest byte kept.
    pub fn kept_start(&self) -> u64 {
        self.segments.first().map_or(self.end, |s| s.start)
    }
}

pub fn stream_byte(s: Stream) -> u8 {
    match s {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

/// Reads an index; a run the data does not fully hold (a crash between the
/// two writes) is cut to what is there.
pub fn parse_runs(idx: &[u8], data_len: u64) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut at = 0;
    for entry in idx.chunks_exact(5) {
        let stream = if entry[0] == 2 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let len = u64::from(u32::from_le_bytes([entry[1], entry[2], entry[3], entry[4]]))
            .min(data_len.saturating_sub(at));
        if len > 0 {
            runs.push(Run { stream, at, len });
        }
        at += len;
    }
    runs
}

/// One range to fetch: `len` bytes at `at` in the segment starting at `segment`.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    pub segment: u64,
    pub at: u64,
    pub len: u64,
    pub stream: Stream,
    /// The logical offset of the first byte.
    pub offset: u64,
}

/// Which ranges a read needs, and what it answers besides the bytes.
#[derive(Debug, Default)]
pub struct Plan {
    pub fetches: Vec<Fetch>,
    pub next: Cursor,
    pub skipped: u64,
    pub truncated: bool,
}

/// Plans a read of `query` from `log`.
pub fn plan_read(log: &SegmentedLog, query: &OutputQuery) -> Plan {
    let requested = query.cursor.map_or(log.kept_start(), |c| c.0);
    if requested >= log.end {
        return Plan {
            next: Cursor(requested.max(log.end)),
            ..Plan::default()
        };
    }
    let from = requested.max(log.kept_start());
    let mut plan = Plan {
        skipped: from - requested,
        next: Cursor(log.end),
        ..Plan::default()
    };
    let mut budget = query.max_bytes as u64;
    for segment in &log.segments {
        if segment.start + segment.len() <= from {
            continue;
        }
        for run in &segment.runs {
            let run_start = segment.start + run.at;
            if run_start + run.len <= from || !query.stream.includes(run.stream) {
                continue;
            }
            let skip = from.saturating_sub(run_start);
            let want = run.len - skip;
            let take = want.min(budget);
            if take > 0 {
                plan.fetches.push(Fetch {
                    segment: segment.start,
                    at: run.at + skip,
                    len: take,
                    stream: run.stream,
                    offset: run_start + skip,
                });
            }
            budget -= take;
            if take < want {
                plan.next = Cursor(run_start + skip + take);
                plan.truncated = true;
                return plan;
            }
        }
    }
    plan
}

/// The windows a tail reads, from the last 64 KiB outwards, ending with all that is kept.
pub fn tail_windows(log: &SegmentedLog) -> impl Iterator<Item = u64> + '_ {
    let kept = log.kept_start();
    let mut window: u64 = 64 * 1024;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = log.end.saturating_sub(window).max(kept);
        done = start == kept;
        window = window.saturating_mul(4);
        Some(start)
    })
}
