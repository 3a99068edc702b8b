//! `bpm tui`: the records and their output, live, with keys to act on
//! them (ratatui over crossterm).
//!
//! The screen is drawn again when something happens: a key, an event from
//! the daemon (a record changed), new output of the selected record (the
//! daemon answers a wait when it writes: nothing is read on a timer), or
//! the usage sample (every 2 s). The terminal is given back on every way
//! out, a panic included (ratatui's hook).

mod app;
mod view;

use std::process::ExitCode;
use std::time::Duration;

use bpm_domain::{ListFilter, ProcessId};
use bpm_ports::{Cursor, OutputQuery};
use futures_util::StreamExt as _;
use ratatui::crossterm::event::{Event as TermEvent, EventStream};

use self::app::{App, Ask};
use super::Manager;
use super::error::{CliError, Outcome};
use super::follow::Follow;

/// The least time between two draws for output: a busy writer's bytes
/// are shown ten times a second, a quiet one's line at once.
const FRAME: Duration = Duration::from_millis(100);
/// How often what the trees use is sampled.
const USAGE_EVERY: Duration = Duration::from_secs(2);
/// The most output one read brings; past it, the pane jumps to the end.
const READ_AT_MOST: usize = 256 * 1024;

/// Runs the interface until `q`.
pub(super) async fn tui(m: &Manager, read_only: bool) -> Outcome {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return Err(CliError::invalid(
            "bpm tui needs a terminal; bpm ps and bpm logs -f print the same to a pipe",
        ));
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app = App::new(read_only, color);
    app.set_records(list(m).await?);
    loop {
        let mut terminal = ratatui::try_init()
            .map_err(|e| CliError::failed(format!("cannot take the terminal: {e}")))?;
        let outcome = run(m, &mut app, &mut terminal).await;
        ratatui::restore();
        match outcome {
            Ok(Some(id)) => attach(id).await,
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e),
        }
    }
}

/// Every record (the view hides the ended ones unless asked).
async fn list(m: &Manager) -> Result<Vec<bpm_domain::ProcessRecord>, CliError> {
    Ok(m.list(ListFilter::default()).await?)
}

/// Where the selected record's output is read from.
struct Following {
    id: Option<ProcessId>,
    cursor: Cursor,
    continues: bool,
    stream: bpm_ports::StreamSelect,
}

/// The loop; `Some(id)` to leave the screen for `bpm attach id`.
async fn run(
    m: &Manager,
    app: &mut App,
    terminal: &mut ratatui::DefaultTerminal,
) -> Result<Option<ProcessId>, CliError> {
    let mut keys = EventStream::new();
    let mut events = m.subscribe();
    let mut wrote = Follow::new(m.clone());
    let mut usage_tick = tokio::time::interval(USAGE_EVERY);
    let mut following = Following {
        id: None,
        cursor: Cursor(0),
        continues: false,
        stream: app.stream,
    };
    let mut stale = false;
    let mut redraw = true;
    let mut drawn = tokio::time::Instant::now();
    loop {
        if stale {
            app.set_records(list(m).await?);
            stale = false;
        }
        if redraw {
            read_output(m, app, &mut following).await?;
            follow(&mut wrote, app, &following, false);
            drawn = tokio::time::Instant::now();
            let now = super::table::now();
            terminal
                .draw(|frame| view::draw(frame, app, now))
                .map_err(|e| CliError::failed(format!("cannot draw: {e}")))?;
        }
        redraw = true;
        tokio::select! {
            key = keys.next() => {
                let Some(Ok(event)) = key else { continue };
                let TermEvent::Key(key) = event else {
                    // A resize, a focus change: drawn again.
                    continue;
                };
                if !key.is_press() {
                    continue;
                }
                match app.key(key) {
                    Some(Ask::Quit) => return Ok(None),
                    Some(Ask::Attach(id)) => return Ok(Some(id)),
                    Some(ask) => carry_out(m, app, ask).await,
                    None => {}
                }
            }
            event = events.recv() => {
                use tokio::sync::broadcast::error::RecvError;
                match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => stale = true,
                    Err(RecvError::Closed) => {
                        app.message = "the daemon went away".into();
                        events = m.subscribe();
                    }
                }
                // Several events at once make one new list.
                while events.try_recv().is_ok() {}
            }
            _ = wrote.next() => {
                // Drawn only if it brought something, and not sooner than a
                // frame after the last draw; the wait is made again.
                tokio::time::sleep_until(drawn + FRAME).await;
                let before = following.cursor;
                read_output(m, app, &mut following).await?;
                redraw = following.cursor != before;
                follow(&mut wrote, app, &following, true);
            }
            _ = usage_tick.tick() => {
                app.usage = m
                    .resource_usage()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|u| (u.id, u))
                    .collect();
            }
        }
    }
}

/// Has the follower wait on the selected record while it runs, from
/// where its output was read up to: when that changed, or `again` after
/// it answered.
fn follow(follow: &mut Follow, app: &App, f: &Following, again: bool) {
    let now = app
        .current()
        .filter(|r| !r.is_terminal() && f.id == Some(r.id()))
        .map(|r| (r.id(), f.cursor));
    follow.set(0, now, again);
}

/// Reads what the selected record wrote since the last read (its tail,
/// when another record was selected or it wrote too much to show).
async fn read_output(m: &Manager, app: &mut App, f: &mut Following) -> Result<(), CliError> {
    let Some(id) = app.current().map(bpm_domain::ProcessRecord::id) else {
        return Ok(());
    };
    let fresh =
        f.id != Some(id) || f.stream != app.stream || app.lines.is_empty() && f.cursor.0 > 0;
    let query = OutputQuery {
        stream: app.stream,
        cursor: (!fresh).then_some(f.cursor),
        max_bytes: READ_AT_MOST,
        tail_lines: fresh.then_some(app::KEPT_LINES / 10),
    };
    let chunk = match m.read_output(id, query).await {
        Ok(c) => c,
        Err(bpm_ports::ManagerError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if fresh {
        app.lines.clear();
        f.continues = false;
    }
    if chunk.truncated {
        // Too much to show: the newest screenful says more than the rest.
        app.lines.clear();
        f.continues = false;
        let tail = m
            .read_output(
                id,
                OutputQuery {
                    stream: app.stream,
                    cursor: None,
                    max_bytes: READ_AT_MOST,
                    tail_lines: Some(200),
                },
            )
            .await?;
        for piece in &tail.pieces {
            app.push_output(&piece.data, &mut f.continues);
        }
        f.cursor = tail.next;
    } else {
        for piece in &chunk.pieces {
            app.push_output(&piece.data, &mut f.continues);
        }
        f.cursor = chunk.next;
    }
    f.id = Some(id);
    f.stream = app.stream;
    Ok(())
}

/// Carries out what a key asked, saying how it went.
async fn carry_out(m: &Manager, app: &mut App, ask: Ask) {
    let name = app.current().map(app::display_name).unwrap_or_default();
    let result = match ask {
        Ask::Stop(id) => m
            .stop(id, bpm_ports::StopOptions::default())
            .await
            .map(|_| format!("stopping {name}")),
        Ask::Restart(id) => m
            .restart(id)
            .await
            .map(|r| format!("started {name} again ({})", r.id().short())),
        Ask::Pause(id) => m.pause(id).await.map(|_| format!("paused {name}")),
        Ask::Resume(id) => m.resume(id).await.map(|_| format!("resumed {name}")),
        Ask::Scale {
            project,
            service,
            to,
        } => {
            let scaled = bpm_intake::project::scale(m.as_ref(), &project, &service, to, |_| {});
            app.message = match scaled.await {
                Ok(_) => format!("{project}/{service}: {to} running"),
                Err((who, e)) => format!("{who}: {e}"),
            };
            return;
        }
        Ask::Attach(_) | Ask::Quit => return,
    };
    app.message = match result {
        Ok(said) => said,
        Err(e) => format!("{name}: {e}"),
    };
}

/// `bpm attach id` on this terminal, the screen left meanwhile.
async fn attach(id: ProcessId) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let _ = tokio::process::Command::new(exe)
        .arg("attach")
        .arg(id.to_string())
        .status()
        .await;
}
