//! What `bpm tui` shows and what its keys ask for, without a terminal: the
//! records in view, the selection, the filter, the output pane's lines,
//! scroll and search. [`App::key`] turns a key into a change of view or an
//! [`Ask`] the loop carries out.

use std::collections::{HashMap, VecDeque};

use bpm_domain::{ProcessId, ProcessRecord};
use bpm_ports::{ResourceUsage, StreamSelect};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The most output lines the pane keeps.
pub(super) const KEPT_LINES: usize = 10_000;

/// What a key asks the loop to do to bpm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ask {
    /// Stop the record's tree.
    Stop(ProcessId),
    /// Start a new run of the record's spec.
    Restart(ProcessId),
    /// Pause the tree.
    Pause(ProcessId),
    /// Resume it.
    Resume(ProcessId),
    /// Leave the screen for the record's terminal, and come back.
    Attach(ProcessId),
    /// Run this many copies of a project's service (`bpm scale`).
    Scale {
        /// The project.
        project: String,
        /// The service (its first copy's name).
        service: String,
        /// How many copies.
        to: i64,
    },
    /// Leave.
    Quit,
}

/// Where typed text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Typing {
    /// Keys are commands.
    No,
    /// Into the list's filter.
    Filter,
    /// Into the output pane's search.
    Search,
}

/// The view's state.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each is one toggle of the view"
)]
pub(super) struct App {
    /// Every record listed, newest data.
    pub(super) records: Vec<ProcessRecord>,
    /// What each running tree uses.
    pub(super) usage: HashMap<ProcessId, ResourceUsage>,
    /// The rows shown, in order: indexes into `records`.
    pub(super) rows: Vec<usize>,
    /// The selected row.
    pub(super) selected: usize,
    /// Text a record's name, command, project or state must contain.
    pub(super) filter: String,
    /// Whether ended records are listed.
    pub(super) show_ended: bool,
    /// Where typed text goes.
    pub(super) typing: Typing,
    /// The selected record's output, line by line (the last
    /// [`KEPT_LINES`]).
    pub(super) lines: VecDeque<String>,
    /// Lines scrolled back from the end; 0 follows.
    pub(super) scroll: usize,
    /// Whether long lines wrap.
    pub(super) wrap: bool,
    /// Which streams the pane shows.
    pub(super) stream: StreamSelect,
    /// What the pane highlights.
    pub(super) search: String,
    /// The help overlay is up.
    pub(super) help: bool,
    /// Actions are refused (`--read-only`).
    pub(super) read_only: bool,
    /// The one-line message at the bottom.
    pub(super) message: String,
    /// Whether colours are used (`NO_COLOR` unset).
    pub(super) color: bool,
}

impl App {
    /// An empty view.
    pub(super) fn new(read_only: bool, color: bool) -> Self {
        App {
            records: Vec::new(),
            usage: HashMap::new(),
            rows: Vec::new(),
            selected: 0,
            filter: String::new(),
            show_ended: false,
            typing: Typing::No,
            lines: VecDeque::new(),
            scroll: 0,
            wrap: false,
            stream: StreamSelect::Both,
            search: String::new(),
            help: false,
            read_only,
            message: "? for keys".into(),
            color,
        }
    }

    /// The selected record.
    pub(super) fn current(&self) -> Option<&ProcessRecord> {
        self.rows
            .get(self.selected)
            .and_then(|i| self.records.get(*i))
    }

    /// Takes a new list, keeping the selection on the same record.
    pub(super) fn set_records(&mut self, mut records: Vec<ProcessRecord>) {
        let kept = self.current().map(ProcessRecord::id);
        records.sort_by(|a, b| {
            let key = |r: &ProcessRecord| {
                (
                    bpm_domain::project::project_of(r).map(str::to_owned),
                    display_name(r),
                    r.created_at(),
                )
            };
            key(a).cmp(&key(b))
        });
        self.records = records;
        self.refilter(kept);
    }

    /// Recomputes the rows shown, selecting `keep` if it is among them.
    fn refilter(&mut self, keep: Option<ProcessId>) {
        let needle = self.filter.to_lowercase();
        self.rows = self
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| self.show_ended || !r.is_terminal())
            .filter(|(_, r)| needle.is_empty() || haystack(r).contains(&needle))
            .map(|(i, _)| i)
            .collect();
        self.selected = keep
            .and_then(|id| self.rows.iter().position(|i| self.records[*i].id() == id))
            .unwrap_or_else(|| self.selected.min(self.rows.len().saturating_sub(1)));
    }

    /// Adds output to the pane, dropping the oldest lines past
    /// [`KEPT_LINES`]; a partial last line is continued by the next call.
    pub(super) fn push_output(&mut self, bytes: &[u8], continues: &mut bool) {
        let text = String::from_utf8_lossy(bytes);
        let mut parts = text.split('\n').peekable();
        while let Some(part) = parts.next() {
            let part = part.trim_end_matches('\r');
            match (self.lines.back_mut(), *continues) {
                (Some(last), true) => last.push_str(part),
                _ => self.lines.push_back(part.to_owned()),
            }
            // Every part but the last ended with a newline.
            *continues = parts.peek().is_none();
        }
        while self.lines.len() > KEPT_LINES {
            self.lines.pop_front();
        }
    }

    /// What `key` does: a change of view, or an [`Ask`] for the loop.
    pub(super) fn key(&mut self, key: KeyEvent) -> Option<Ask> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Ask::Quit);
        }
        match self.typing {
            Typing::Filter | Typing::Search => {
                self.type_key(key);
                return None;
            }
            Typing::No => {}
        }
        if self.help {
            self.help = false;
            return None;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Ask::Quit),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Down | KeyCode::Char('j') => self.select(self.selected.saturating_add(1)),
            KeyCode::Up | KeyCode::Char('k') => self.select(self.selected.saturating_sub(1)),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Home => self.scroll = self.lines.len(),
            KeyCode::End => self.scroll = 0,
            KeyCode::Char('/') => self.start_typing(Typing::Filter),
            KeyCode::Char('f') => self.start_typing(Typing::Search),
            KeyCode::Char('n') => self.next_match(),
            KeyCode::Char('w') => {
                self.wrap = !self.wrap;
                self.message = format!("wrap {}", if self.wrap { "on" } else { "off" });
            }
            KeyCode::Char('o') => self.next_stream(),
            KeyCode::Char('a') => {
                self.show_ended = !self.show_ended;
                let keep = self.current().map(ProcessRecord::id);
                self.refilter(keep);
                self.message = if self.show_ended {
                    "showing ended records too".into()
                } else {
                    "showing live records".into()
                };
            }
            code => return self.action(code),
        }
        None
    }

    fn select(&mut self, row: usize) {
        let row = row.min(self.rows.len().saturating_sub(1));
        if row != self.selected {
            self.selected = row;
            self.lines.clear();
            self.scroll = 0;
        }
    }

    fn start_typing(&mut self, typing: Typing) {
        self.typing = typing;
        match typing {
            Typing::Filter => self.filter.clear(),
            _ => self.search.clear(),
        }
    }

    fn type_key(&mut self, key: KeyEvent) {
        let keep = self.current().map(ProcessRecord::id);
        let text = if self.typing == Typing::Filter {
            &mut self.filter
        } else {
            &mut self.search
        };
        match key.code {
            KeyCode::Enter => self.typing = Typing::No,
            KeyCode::Esc => {
                text.clear();
                self.typing = Typing::No;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        if self.typing == Typing::Search || !self.search.is_empty() {
            self.next_match_from(0);
        }
        self.refilter(keep);
    }

    fn next_match(&mut self) {
        let from = self.scroll + 1;
        self.next_match_from(from);
    }

    /// Scrolls to the newest line at or above `from` lines back that
    /// holds the search.
    fn next_match_from(&mut self, from: usize) {
        if self.search.is_empty() {
            return;
        }
        let n = self.lines.len();
        let hit = (from..n).find(|back| self.lines[n - 1 - back].contains(&self.search));
        match hit {
            Some(back) => {
                self.scroll = back;
                self.message = format!("{:?} at line {}", self.search, n - back);
            }
            None => self.message = format!("{:?}: no more matches", self.search),
        }
    }

    fn next_stream(&mut self) {
        self.stream = match self.stream {
            StreamSelect::Both => StreamSelect::Stdout,
            StreamSelect::Stdout => StreamSelect::Stderr,
            StreamSelect::Stderr => StreamSelect::Both,
        };
        self.lines.clear();
        self.scroll = 0;
        self.message = format!("showing {}", stream_name(self.stream));
    }

    /// A key that changes a record.
    fn action(&mut self, code: KeyCode) -> Option<Ask> {
        let r = self.current()?;
        let id = r.id();
        let ask = match code {
            KeyCode::Char('x') => Ask::Stop(id),
            KeyCode::Char('r') => Ask::Restart(id),
            // A stopped service of a project starts again as a new run.
            KeyCode::Char('s') if r.is_terminal() => Ask::Restart(id),
            KeyCode::Char('s') => {
                self.message = "it runs already; r restarts it".into();
                return None;
            }
            KeyCode::Char('p') => Ask::Pause(id),
            KeyCode::Char('u') => Ask::Resume(id),
            KeyCode::Char('t') => Ask::Attach(id),
            KeyCode::Char(c @ ('+' | '-')) => {
                let Some((project, service, now)) = self.copies_of(r) else {
                    self.message = "only a project's service scales".into();
                    return None;
                };
                let to = if c == '+' { now + 1 } else { now - 1 };
                Ask::Scale {
                    project,
                    service,
                    to,
                }
            }
            _ => return None,
        };
        if self.read_only {
            self.message = "read-only: bpm tui --read-only changes nothing".into();
            return None;
        }
        Some(ask)
    }
}

impl App {
    /// The project and service of `r`, and how many copies of that
    /// service run now.
    fn copies_of(&self, r: &ProcessRecord) -> Option<(String, String, i64)> {
        let project = bpm_domain::project::project_of(r)?.to_owned();
        let name = bpm_domain::project::service_of(&project, r)?;
        let service = bpm_domain::project::replica_of(name).0.to_owned();
        let running = self
            .records
            .iter()
            .filter(|o| !o.is_terminal())
            .filter_map(|o| bpm_domain::project::service_of(&project, o))
            .filter(|s| bpm_domain::project::replica_of(s).0 == service)
            .count();
        Some((project, service, i64::try_from(running).unwrap_or(i64::MAX)))
    }
}

/// What a record is called in the list: its name, else its command.
pub(super) fn display_name(r: &ProcessRecord) -> String {
    r.spec().name.as_ref().map_or_else(
        || {
            r.spec()
                .command
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string)
        },
        ToString::to_string,
    )
}

/// What the filter looks in: name, command, project and state.
fn haystack(r: &ProcessRecord) -> String {
    format!(
        "{} {} {} {}",
        display_name(r),
        r.spec()
            .command
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        bpm_domain::project::project_of(r).unwrap_or(""),
        r.state().as_str()
    )
    .to_lowercase()
}

/// A stream choice's name.
pub(super) fn stream_name(s: StreamSelect) -> &'static str {
    match s {
        StreamSelect::Both => "stdout and stderr",
        StreamSelect::Stdout => "stdout",
        StreamSelect::Stderr => "stderr",
    }
}

/// Every key, for the help overlay.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("j k ↑ ↓", "select a record"),
    (
        "/",
        "filter: name, command, project, state (Enter keeps, Esc clears)",
    ),
    ("a", "show ended records too, or not"),
    ("x", "stop the record and its children"),
    ("r", "restart it (a new run of its spec)"),
    ("s", "start an ended service again"),
    ("p  u", "pause, resume"),
    ("t", "attach to a --tty process (detach key: Ctrl-])"),
    (
        "+  -",
        "one copy more or less of a project's service (bpm scale)",
    ),
    ("PgUp PgDn", "scroll the output"),
    ("Home End", "its first line; follow the end"),
    ("f  n", "search the output; next match"),
    ("w", "wrap long lines, or not"),
    ("o", "stdout and stderr, stdout, stderr"),
    ("?", "this help (any key closes it)"),
    ("q Esc", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn output_is_kept_by_line_across_reads() {
        let mut app = App::new(false, false);
        let mut continues = false;
        app.push_output(b"one\ntw", &mut continues);
        app.push_output(b"o\nthree\n", &mut continues);
        let lines: Vec<&str> = app.lines.iter().map(String::as_str).collect();
        assert_eq!(lines, ["one", "two", "three", ""]);
        for _ in 0..KEPT_LINES {
            app.push_output(b"x\n", &mut continues);
        }
        assert_eq!(app.lines.len(), KEPT_LINES);
    }

    #[test]
    fn typing_a_filter_does_not_act_and_read_only_refuses_actions() {
        let mut app = App::new(true, false);
        assert_eq!(app.key(key('/')), None);
        assert_eq!(app.key(key('x')), None, "typed into the filter");
        assert_eq!(app.filter, "x");
        app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(app.key(key('q')), Some(Ask::Quit));
    }

    #[test]
    fn the_search_scrolls_to_the_newest_match_then_older_ones() {
        let mut app = App::new(false, false);
        let mut continues = false;
        app.push_output(b"a needle\nb\nc needle\nd\n", &mut continues);
        app.key(key('f'));
        for c in "needle".chars() {
            app.key(key(c));
        }
        app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        // Lines: a needle, b, c needle, d, "" (the newline's end).
        assert_eq!(app.scroll, 2);
        app.key(key('n'));
        assert_eq!(app.scroll, 4);
    }
}
