//! How `bpm tui` draws an [`App`]: the records, grouped by project, over
//! the selected record's output, a status line, and the help overlay.

use bpm_domain::{ProcessRecord, StateName};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};

use super::app::{App, KEYS, Typing, display_name, stream_name};
use crate::cli::table::{cpu, memory, short_duration};

/// Draws `app` on `frame`; `now` ages the records.
pub(super) fn draw(frame: &mut Frame<'_>, app: &App, now: bpm_domain::Timestamp) {
    let [list, output, status] = Layout::vertical([
        Constraint::Percentage(45),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_list(frame, app, list, now);
    draw_output(frame, app, output);
    draw_status(frame, app, status);
    if app.help {
        draw_help(frame, app);
    }
}

fn style(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn state_color(state: StateName) -> Color {
    match state {
        StateName::Running => Color::Green,
        StateName::Completed => Color::Blue,
        StateName::Failed | StateName::TimedOut | StateName::Lost => Color::Red,
        StateName::Paused | StateName::Cancelled => Color::Yellow,
        _ => Color::Cyan,
    }
}

/// One record's cells.
fn cells<'a>(app: &App, r: &ProcessRecord, now: bpm_domain::Timestamp) -> Vec<Cell<'a>> {
    let usage = app.usage.get(&r.id());
    let state = r.state();
    let ready = if r.is_terminal() {
        "-"
    } else if r.lifecycle().ready_at().is_some() {
        "ready"
    } else {
        "not yet"
    };
    let ports = usage
        .map(|u| {
            u.listening_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|p| !p.is_empty())
        .or_else(|| r.port().map(|p| p.to_string()))
        .unwrap_or_else(|| "-".into());
    let name = display_name(r);
    let name = match bpm_domain::project::project_of(r) {
        // Under its project's heading, a service is its own name.
        Some(project) => format!(
            "  {}",
            name.strip_prefix(&format!("{project}/")).unwrap_or(&name)
        ),
        None => name,
    };
    vec![
        Cell::from(name),
        Cell::from(state.as_str()).style(style(app, state_color(state))),
        Cell::from(ready),
        Cell::from(r.pid().map_or_else(|| "-".into(), |p| p.to_string())),
        Cell::from(usage.map_or_else(|| "-".into(), |u| cpu(u.cpu_percent))),
        Cell::from(usage.map_or_else(|| "-".into(), |u| memory(u.rss_bytes))),
        Cell::from(ports),
        Cell::from(r.restarts().to_string()),
        Cell::from(r.runtime(now).map_or_else(|| "-".into(), short_duration)),
    ]
}

fn draw_list(frame: &mut Frame<'_>, app: &App, area: Rect, now: bpm_domain::Timestamp) {
    let mut rows = Vec::new();
    let mut selected_row = None;
    let mut project: Option<&str> = None;
    for (n, i) in app.rows.iter().enumerate() {
        let r = &app.records[*i];
        let this = bpm_domain::project::project_of(r);
        if this.is_some() && this != project {
            let heading = format!("project {}", this.unwrap_or_default());
            rows.push(
                Row::new(vec![Cell::from(heading)])
                    .style(Style::default().add_modifier(Modifier::BOLD)),
            );
        }
        project = this;
        if n == app.selected {
            selected_row = Some(rows.len());
        }
        rows.push(Row::new(cells(app, r, now)));
    }
    let header = Row::new([
        "NAME", "STATE", "READY", "PID", "CPU", "MEM", "PORTS", "RST", "AGE",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let title = format!(
        " bpm: {} {} ",
        app.rows.len(),
        if app.show_ended { "records" } else { "live" }
    );
    let table = Table::new(
        rows,
        [
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(3),
            Constraint::Length(5),
        ],
    )
    .header(header)
    .block(Block::default().borders(Borders::ALL).title(title))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected_row);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_output(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match app.current() {
        Some(r) => format!(
            " {} · {} · {} ",
            display_name(r),
            stream_name(app.stream),
            if app.scroll == 0 {
                "following".to_owned()
            } else {
                format!("{} lines back", app.scroll)
            }
        ),
        None => " no record selected ".into(),
    };
    let height = usize::from(area.height.saturating_sub(2)).max(1);
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    // A newline's end is no line of its own until something follows it.
    let shown = app.lines.len() - usize::from(app.lines.back().is_some_and(String::is_empty));
    // Scrolled past the oldest line (Home), the oldest page stays shown.
    let end = shown.saturating_sub(app.scroll).max(height.min(shown));
    let lines: Vec<Line<'_>> = if app.wrap {
        // Cut into rows of the pane's width here, so that the newest row
        // is the bottom one however long the lines are.
        let mut rows: Vec<&str> = Vec::new();
        for line in app.lines.range(..end).rev() {
            rows.extend(rows_of(line, width).into_iter().rev());
            if rows.len() >= height {
                break;
            }
        }
        rows.truncate(height);
        rows.into_iter()
            .rev()
            .map(|r| highlighted(app, r))
            .collect()
    } else {
        let start = end.saturating_sub(height);
        app.lines
            .range(start..end)
            .map(|l| highlighted(app, l))
            .collect()
    };
    let pane = Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(pane, area);
}

/// `line` cut into rows of at most `width` columns; an empty line is one
/// empty row.
fn rows_of(line: &str, width: usize) -> Vec<&str> {
    use unicode_width::UnicodeWidthChar as _;
    let mut rows = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (at, c) in line.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > width && at > start {
            rows.push(&line[start..at]);
            (start, used) = (at, 0);
        }
        used += w;
    }
    rows.push(&line[start..]);
    rows
}

/// `line`, with the search's matches marked.
fn highlighted<'a>(app: &App, line: &'a str) -> Line<'a> {
    if app.search.is_empty() || !line.contains(&app.search) {
        return Line::raw(line);
    }
    let mark = if app.color {
        Style::default().bg(Color::Yellow).fg(Color::Black)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    };
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(&app.search) {
        spans.push(Span::raw(&rest[..at]));
        spans.push(Span::styled(&rest[at..at + app.search.len()], mark));
        rest = &rest[at + app.search.len()..];
    }
    spans.push(Span::raw(rest));
    Line::from(spans)
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let text = match app.typing {
        Typing::Filter => format!("filter: {}█", app.filter),
        Typing::Search => format!("search: {}█", app.search),
        Typing::No if !app.filter.is_empty() => format!("[{}] {}", app.filter, app.message),
        Typing::No => app.message.clone(),
    };
    let text = if app.read_only {
        format!("read-only · {text}")
    } else {
        text
    };
    frame.render_widget(Paragraph::new(text), area);
}

fn draw_help(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    let height = u16::try_from(KEYS.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height);
    let width = 76.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<10} "),
                    style(app, Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::rows_of;

    #[test]
    fn a_line_is_cut_into_rows_of_the_panes_width() {
        assert_eq!(rows_of("", 4), [""]);
        assert_eq!(rows_of("abcd", 4), ["abcd"]);
        assert_eq!(rows_of("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        // A wide character takes two columns and is never split.
        assert_eq!(rows_of("ab漢字", 3), ["ab", "漢", "字"]);
    }
}
