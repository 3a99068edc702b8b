//! The `ps` table and tree, fitted to 80 columns.

use std::collections::HashMap;
use std::time::Duration;

use bpm_domain::{ProcessId, ProcessRecord, StateName, Timestamp};
use bpm_ports::ResourceUsage;

/// Whether to colour what goes to a stream: a terminal, unless `NO_COLOR` is set.
pub(super) fn color_on(stream_is_tty: bool) -> bool {
    stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The wall clock, for the ages a table shows.
pub(super) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// What running trees use, by record (empty when the daemon cannot say).
pub(super) type Usage = HashMap<ProcessId, ResourceUsage>;

/// `512K`, `38M`, `1.2G`.
pub(super) fn memory(bytes: u64) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    #[allow(clippy::cast_precision_loss)]
    match bytes {
        0..M => format!("{}K", bytes / K),
        M..G => format!("{}M", bytes / M),
        _ => format!("{:.1}G", bytes as f64 / G as f64),
    }
}

/// `12%`, `105%`, `0.4%` (a tenth shown below 10).
pub(super) fn cpu(percent: f64) -> String {
    if percent < 9.95 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// `12s`, `4m5s`, `3h2m`, `2d4h`.
pub(super) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The widest NAME column.
const MOST_NAME: usize = 40;

/// `text` in `width` characters, its middle left out: a project's
/// services differ at their ends (`fixtures/process5`).
fn cut_middle(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let head = width.saturating_sub(1) / 2;
    let tail = width.saturating_sub(1) - head;
    let mut s: String = text.chars().take(head).collect();
    s.push('…');
    s.extend(text.chars().skip(count - tail));
    s
}

fn paint(state: StateName, text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match state {
        StateName::Running => "32",
        StateName::Completed => "2",
        StateName::Failed | StateName::Lost | StateName::TimedOut => "31",
        StateName::Paused | StateName::Stopping | StateName::Pending | StateName::Starting => "33",
        StateName::Cancelled | StateName::Unreachable => "35",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Which columns a listing needs, and how wide its state is: a table of
/// one node's records fits 80 columns, so the NODE column appears only
/// when the records come from more than one node, the PORT column only
/// when a live record holds a port, and STATE widens only for
/// `unreachable`.
#[derive(Debug, Clone, Copy)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each says whether one optional column is shown"
)]
pub(super) struct Columns {
    state: usize,
    /// The NAME column's width: the longest name, from 16 to 40.
    name: usize,
    node: bool,
    port: bool,
    project: bool,
    /// Whether a hosted MCP server is listed: its caller is shown.
    caller: bool,
}

/// A label's value, if the record has it.
fn label<'a>(r: &'a ProcessRecord, key: &str) -> Option<&'a str> {
    r.spec()
        .labels
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v.as_str())
}

impl Columns {
    /// The columns `records` need.
    pub(super) fn for_records(records: &[ProcessRecord]) -> Self {
        let state = records
            .iter()
            .map(|r| r.state().as_str().len())
            .fold(9, usize::max);
        let node = records
            .first()
            .is_some_and(|first| records.iter().any(|r| r.node() != first.node()));
        let name = records
            .iter()
            .filter_map(|r| r.spec().name.as_ref())
            .map(|n| n.as_str().chars().count())
            .fold(16, usize::max)
            .min(MOST_NAME);
        let port = records.iter().any(|r| r.port().is_some());
        let project = records
            .iter()
            .any(|r| bpm_domain::project::project_of(r).is_some());
        let caller = records
            .iter()
            .any(|r| label(r, crate::mcp_run::CALLER_LABEL).is_some());
        Columns {
            state,
            name,
            node,
            port,
            project,
            caller,
        }
    }
}

/// The table header.
pub(super) fn header(cols: Columns) -> String {
    let line = format!(
        "{:<8} {:<n$} {:<w$} {:>7} {:>5} {:>5} {:>4} {:>7} {:<10}",
        "ID",
        "NAME",
        "STATE",
        "PID",
        "CPU",
        "MEM",
        "PROG",
        "TIME",
        "SESSION",
        w = cols.state,
        n = cols.name
    );
    let line = if cols.port {
        format!("{line} {:>5}", "PORT")
    } else {
        line
    };
    let line = if cols.project {
        format!("{line} {:<12}", "PROJECT")
    } else {
        line
    };
    let line = if cols.caller {
        format!("{line} {:<24}", "CALLER")
    } else {
        line
    };
    if cols.node {
        format!("{line} NODE")
    } else {
        line.trim_end().to_string()
    }
}

/// One row; `indent` prefixes the name (for trees).
pub(super) fn row(
    r: &ProcessRecord,
    usage: Option<&ResourceUsage>,
    now: Timestamp,
    indent: &str,
    color: bool,
    cols: Columns,
) -> String {
    let name = format!(
        "{indent}{}",
        r.spec().name.as_ref().map_or_else(
            // A hosted MCP server: the server's own command, not the
            // step in front of it.
            || label(r, crate::mcp_run::SERVER_LABEL).map_or_else(
                || r.spec()
                    .command
                    .as_ref()
                    .map_or("-".into(), ToString::to_string),
                ToOwned::to_owned
            ),
            std::string::ToString::to_string
        )
    );
    let state = r.state();
    let pid = r.pid().map_or("-".into(), |p| p.to_string());
    let progress = r
        .progress()
        .map_or("-".into(), |p| format!("{}%", p.percent.get()));
    let time = match r
        .progress()
        .and_then(|p| p.eta)
        .filter(|_| !r.is_terminal())
    {
        Some(eta) => format!("~{}", short_duration(eta.saturating_since(now))),
        None => r.runtime(now).map_or("-".into(), short_duration),
    };
    // A schedule: its next due time, in the place of a run time.
    let (state_text, time) = match r.next_due() {
        Some(due) => (
            "scheduled",
            format!("in {}", short_duration(due.saturating_since(now))),
        ),
        None => (state.as_str(), time),
    };
    let session = r.session().map_or("-".into(), ToString::to_string);
    let (cpu, mem) = usage.map_or(("-".into(), "-".into()), |u| {
        (self::cpu(u.cpu_percent), memory(u.rss_bytes))
    });
    let line = format!(
        "{:<8} {:<n$} {} {:>7} {:>5} {:>5} {:>4} {:>7} {:<10}",
        r.id().short(),
        cut_middle(&name, cols.name),
        paint(state, &format!("{state_text:<w$}", w = cols.state), color),
        cut(&pid, 7),
        cpu,
        mem,
        progress,
        cut(&time, 7),
        cut(&session, 10),
        n = cols.name,
    );
    let line = if cols.port {
        let port = r.port().map_or("-".into(), |p| p.to_string());
        format!("{line} {port:>5}")
    } else {
        line
    };
    let line = if cols.project {
        let project = bpm_domain::project::project_of(r).unwrap_or("-");
        format!("{line} {:<12}", cut(project, 12))
    } else {
        line
    };
    let line = if cols.caller {
        let caller = label(r, crate::mcp_run::CALLER_LABEL).unwrap_or("-");
        format!("{line} {:<24}", cut(caller, 24))
    } else {
        line
    };
    if cols.node {
        format!("{line} {}", r.node())
    } else {
        line.trim_end().to_string()
    }
}

/// Depth of each record in its hierarchy (roots are 0), from parent links.
pub(super) fn depths(records: &[ProcessRecord]) -> HashMap<ProcessId, usize> {
    let parents: HashMap<ProcessId, Option<ProcessId>> =
        records.iter().map(|r| (r.id(), r.parent())).collect();
    records
        .iter()
        .map(|r| {
            let mut depth = 0;
            let mut cur = r.parent();
            while let Some(p) = cur {
                depth += 1;
                if depth > 64 {
                    break;
                }
                cur = parents.get(&p).copied().flatten();
            }
            (r.id(), depth)
        })
        .collect()
}

struct TreeDrawer<'a> {
    children: HashMap<ProcessId, Vec<&'a ProcessRecord>>,
    usage: &'a Usage,
    now: Timestamp,
    color: bool,
    cols: Columns,
    out: Vec<String>,
}

impl<'a> TreeDrawer<'a> {
    fn walk(&mut self, r: &'a ProcessRecord, prefix: &str, last: bool, top: bool) {
        let branch = match (top, last) {
            (true, _) => String::new(),
            (false, true) => format!("{prefix}└─ "),
            (false, false) => format!("{prefix}├─ "),
        };
        self.out.push(row(
            r,
            self.usage.get(&r.id()),
            self.now,
            &branch,
            self.color,
            self.cols,
        ));
        let next = match (top, last) {
            (true, _) => String::new(),
            (false, true) => format!("{prefix}   "),
            (false, false) => format!("{prefix}│  "),
        };
        let kids = self.children.get(&r.id()).cloned().unwrap_or_default();
        for (i, k) in kids.iter().enumerate() {
            self.walk(k, &next, i + 1 == kids.len(), false);
        }
    }
}

/// Rows drawn as a tree: each root, then its children indented under it.
pub(super) fn tree<'a>(
    records: &'a [ProcessRecord],
    usage: &'a Usage,
    now: Timestamp,
    color: bool,
    cols: Columns,
) -> Vec<String> {
    let ids: std::collections::HashSet<ProcessId> = records.iter().map(ProcessRecord::id).collect();
    let mut drawer = TreeDrawer {
        children: HashMap::new(),
        usage,
        now,
        color,
        cols,
        out: Vec::new(),
    };
    let mut roots = Vec::new();
    for r in records {
        match r.parent().filter(|p| ids.contains(p)) {
            Some(p) => drawer.children.entry(p).or_default().push(r),
            None => roots.push(r),
        }
    }
    for r in roots {
        drawer.walk(r, "", true, true);
    }
    drawer.out
}

#[cfg(test)]
mod tests {
    use super::cut_middle;

    #[test]
    fn a_long_name_keeps_its_start_and_its_end() {
        assert_eq!(cut_middle("fixtures/process5", 40), "fixtures/process5");
        assert_eq!(cut_middle("abcdefghij", 7), "abc…hij");
        assert_eq!(cut_middle("abcdefghij", 6), "ab…hij");
        assert_eq!(cut_middle("", 3), "");
    }
}
