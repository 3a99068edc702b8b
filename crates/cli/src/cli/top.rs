//! `bpm top`: what running process trees use, refreshed in place.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use bpm_domain::ListFilter;

use super::error::{CliError, Outcome};
use super::table;
use super::table::{color_on, now};

fn line(cells: [&str; 8]) -> String {
    format!(
        "{:<8} {:<16} {:<8} {:>7} {:>6} {:>6} {:>5} {}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
    )
}

/// One screen: a summary line, then one row per running tree, busiest first.
use super::Manager;

async fn screen(m: &Manager) -> Result<Vec<String>, CliError> {
    let records = m.list(ListFilter::holding_slots()).await?;
    let mut usage = if records.iter().any(|r| r.pid().is_some()) {
        m.resource_usage().await?
    } else {
        Vec::new()
    };
    usage.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    let cpu: f64 = usage.iter().map(|u| u.cpu_percent).sum();
    let rss: u64 = usage.iter().map(|u| u.rss_bytes).sum();
    let mut out = vec![
        format!(
            "bpm top: {} live, CPU {}, memory {} at {}",
            records.len(),
            table::cpu(cpu),
            table::memory(rss),
            now()
        ),
        line(["ID", "NAME", "STATE", "PID", "CPU", "MEM", "PROCS", "PORTS"]),
    ];
    for u in &usage {
        let Some(r) = records.iter().find(|r| r.id() == u.id) else {
            continue;
        };
        let name = r.spec().name.as_ref().map_or_else(
            || {
                r.spec()
                    .command
                    .as_ref()
                    .map_or("-".into(), ToString::to_string)
            },
            ToString::to_string,
        );
        let name: String = name.chars().take(16).collect();
        let ports: Vec<String> = u.listening_ports.iter().map(u16::to_string).collect();
        out.push(line([
            &r.id().short(),
            &name,
            r.state().as_str(),
            &r.pid().map_or("-".into(), |p| p.to_string()),
            &table::cpu(u.cpu_percent),
            &table::memory(u.rss_bytes),
            &u.processes.to_string(),
            &ports.join(","),
        ]));
    }
    Ok(out)
}

/// Refreshes every `interval` seconds until interrupted, or `iterations` times.
pub(super) async fn top(m: &Manager, interval: f64, iterations: Option<u64>) -> Outcome {
    let every = Duration::try_from_secs_f64(interval)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| {
            CliError::invalid(format!(
                "--interval: invalid {interval}: expected at least 0.1 seconds"
            ))
        })?;
    let tty = std::io::stdout().is_terminal() && color_on(true);
    let mut shown = 0u64;
    loop {
        let lines = screen(m).await?;
        let mut out = std::io::stdout().lock();
        let text = lines.join("\n");
        let written = if tty {
            // Home, clear, then the screen: redrawn in place.
            writeln!(out, "\x1b[H\x1b[2J{text}")
        } else {
            writeln!(out, "{text}\n")
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
