//! `bpm show`: a record in full, for people, with its earlier runs.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How many earlier records `show` follows back through `restarted_from`.
pub(super) const EARLIER_SHOWN: usize = 32;

/// The records `r` was restarted from (a restart, or a failover to
/// another node), newest first, as far as the store still holds them.
pub(super) async fn earlier_runs(m: &Manager, r: &ProcessRecord) -> Vec<ProcessRecord> {
    let mut out = Vec::new();
    let mut next = r.restarted_from();
    while let Some(id) = next.filter(|_| out.len() < EARLIER_SHOWN) {
        let Ok(earlier) = m.get(id).await else { break };
        next = earlier.restarted_from();
        out.push(earlier);
    }
    out
}

/// One earlier record: where it ran, and how it ended.
pub(super) fn earlier_line(r: &ProcessRecord) -> String {
    let l = r.lifecycle();
    let mut parts = vec![format!("{} on node {}: {}", r.id(), r.node(), r.state())];
    if let Some(t) = l.started_at() {
        parts.push(format!("started {t}"));
    }
    if let Some(t) = l.ended_at() {
        parts.push(format!("ended {t}"));
    }
    if r.restarts() > 0 {
        parts.push(format!("restart count {}", r.restarts()));
    }
    parts.join(", ")
}

pub(super) fn earlier_json(r: &ProcessRecord) -> serde_json::Value {
    let l = r.lifecycle();
    serde_json::json!({
        "id": r.id().to_string(),
        "node": r.node().to_string(),
        "state": r.state().as_str(),
        "started_at": l.started_at().map(|t| t.to_string()),
        "ended_at": l.ended_at().map(|t| t.to_string()),
        "restarts": r.restarts(),
    })
}

/// `bpm show`'s lines for `r`, as one text: written with one call, not
/// one a line.
pub(super) fn show(r: &ProcessRecord, usage: Option<&bpm_ports::ResourceUsage>) -> String {
    let mut text = String::new();
    identity(&mut text, r, usage);
    settings(&mut text, r, usage);
    schedule(&mut text, r, usage);
    live(&mut text, r, usage);
    outcome(&mut text, r, usage);
    text
}

/// One line of `bpm show`.
fn line(text: &mut String, k: &str, v: &str) {
    let _ = writeln!(text, "{k:<14}{v}");
}

/// `bpm show`'s lines of its name, command and process.
fn identity(text: &mut String, r: &ProcessRecord, _usage: Option<&bpm_ports::ResourceUsage>) {
    let spec = r.spec();
    let mut field = |k: &str, v: String| line(text, k, &v);
    field("id", r.id().to_string());
    field(
        "name",
        spec.name.as_ref().map_or("-".into(), ToString::to_string),
    );
    field("state", r.state().to_string());
    field(
        "command",
        spec.command
            .as_ref()
            .map_or("(tracked operation)".into(), ToString::to_string),
    );
    field(
        "kind",
        serde_json::to_value(spec.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    );
    field("pid", r.pid().map_or("-".into(), |p| p.to_string()));
}

/// `bpm show`'s lines of what it was started with: env files, watch, terminal, limits.
fn settings(text: &mut String, r: &ProcessRecord, _usage: Option<&bpm_ports::ResourceUsage>) {
    let spec = r.spec();
    let mut field = |k: &str, v: String| line(text, k, &v);
    if !spec.env_files.is_empty() {
        let files: Vec<String> = spec
            .env_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        field("env files", files.join(", "));
    }
    if let Some(w) = &spec.watch {
        let paths: Vec<String> = w.paths.iter().map(|p| p.display().to_string()).collect();
        let mut text = format!("{} (debounce {})", paths.join(", "), w.debounce);
        if !w.ignore.is_empty() {
            let _ = write!(text, ", ignoring {}", w.ignore.join(" "));
        }
        if w.restart_dependents {
            text.push_str(", with its dependents");
        }
        if let Some(why) = r.watch_error() {
            let _ = write!(text, "; NOT WATCHED: {why}");
        }
        field("watch", text);
    }
    if let Some(size) = spec.tty {
        field("terminal", format!("{size} (bpm attach connects to it)"));
    }
    if let Some(limits) = &spec.limits {
        // How this machine enforces each: the node's, for a record here.
        let text = match bpm_adapters::os::check_limits(limits, "") {
            Ok(each) => each
                .iter()
                .map(|(limit, how)| format!("{limit} by {how}"))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("{limits} (this machine cannot enforce them: {e})"),
        };
        field("limits", text);
    }
}

/// `bpm show`'s lines of its schedule and runs.
fn schedule(text: &mut String, r: &ProcessRecord, _usage: Option<&bpm_ports::ResourceUsage>) {
    let spec = r.spec();
    let mut field = |k: &str, v: String| line(text, k, &v);
    if let Some(schedule) = &spec.schedule {
        let mut text = schedule.cadence();
        let overlap = match schedule.overlap {
            bpm_domain::Overlap::Skip => "skip",
            bpm_domain::Overlap::Queue => "queue",
            bpm_domain::Overlap::Allow => "allow",
        };
        let _ = write!(text, ", overlap {overlap}");
        if let Some(j) = schedule.jitter {
            let _ = write!(text, ", jitter {j}");
        }
        if schedule.catch_up {
            text.push_str(", catches up");
        }
        field("schedule", text);
    }
    if let Some(s) = r.schedule() {
        if let Some(due) = r.next_due() {
            field("next due", due.to_string());
        }
        let mut runs = format!("{} started", s.runs);
        if s.skipped > 0 {
            let _ = write!(runs, ", {} skipped (the last run was live)", s.skipped);
        }
        if s.missed > 0 {
            let _ = write!(runs, ", {} missed (no daemon ran)", s.missed);
        }
        field("runs", runs);
        if let Some(last) = s.last_run {
            field("last run", last.to_string());
        }
    }
    if let Some(from) = r.scheduled_from() {
        field("scheduled from", from.to_string());
    }
}

/// `bpm show`'s lines of how it runs: health, port, owners, its leader, usage.
fn live(text: &mut String, r: &ProcessRecord, usage: Option<&bpm_ports::ResourceUsage>) {
    let spec = r.spec();
    let mut field = |k: &str, v: String| line(text, k, &v);
    if let Some(h) = r.health() {
        let text = match (h.healthy, &h.last_failure) {
            (true, _) => "healthy".to_owned(),
            (false, Some(why)) => format!("unhealthy: {why}"),
            (false, None) => "unhealthy".to_owned(),
        };
        field("health", text);
    }
    if let Some(port) = r.port() {
        let listening = usage.map(|u| &u.listening_ports);
        let seen = match listening {
            Some(ports) if ports.contains(&port) => " (listening)".to_owned(),
            Some(ports) if !ports.is_empty() => {
                let elsewhere: Vec<String> = ports.iter().map(|p| format!(":{p}")).collect();
                format!(
                    " (not listening there; listens on {})",
                    elsewhere.join(", ")
                )
            }
            Some(_) => " (not listening yet)".to_owned(),
            None => String::new(),
        };
        field("port", format!("{port}{seen}"));
    }
    if !spec.owners.is_empty() {
        let owners: Vec<String> = spec.owners.iter().map(ToString::to_string).collect();
        let grace = spec
            .owner_grace
            .map_or_else(|| "30s".to_owned(), |g| g.to_string());
        field(
            "owners",
            format!(
                "{} (stopped {grace} after the last is gone)",
                owners.join(", ")
            ),
        );
    }
    if let Some(x) = r.leader_exit() {
        let ports = usage.map_or(Vec::new(), |u| {
            u.listening_ports.iter().map(|p| format!(":{p}")).collect()
        });
        if ports.is_empty() {
            field("leader", x.to_string());
        } else {
            field("leader", format!("{x}; listening on {}", ports.join(", ")));
        }
    }
    if let Some(u) = usage {
        field(
            "usage",
            format!(
                "CPU {}, memory {} ({} process{})",
                table::cpu(u.cpu_percent),
                table::memory(u.rss_bytes),
                u.processes,
                if u.processes == 1 { "" } else { "es" }
            ),
        );
        if !u.listening_ports.is_empty() {
            let ports: Vec<String> = u.listening_ports.iter().map(u16::to_string).collect();
            field("ports", ports.join(", "));
        }
    }
}

/// `bpm show`'s lines of how it ended, and when each thing happened.
fn outcome(text: &mut String, r: &ProcessRecord, _usage: Option<&bpm_ports::ResourceUsage>) {
    let l = r.lifecycle();
    let mut field = |k: &str, v: String| line(text, k, &v);
    if let Some(e) = l.exit() {
        field("exit", e.to_string());
    }
    if let Some(e) = l.error() {
        field("error", e);
    }
    if let Some(p) = r.progress() {
        field(
            "progress",
            format!(
                "{}% {}",
                p.percent.get(),
                p.message.clone().unwrap_or_default()
            ),
        );
    }
    field(
        "session",
        r.session().map_or("-".into(), ToString::to_string),
    );
    field("node", r.node().to_string());
    field("parent", r.parent().map_or("-".into(), |p| p.to_string()));
    field("group", r.group().map_or("-".into(), ToString::to_string));
    field("created", r.created_at().to_string());
    if let Some(t) = l.started_at() {
        field("started", t.to_string());
    }
    if let Some(t) = l.ended_at() {
        field("ended", t.to_string());
    }
    if r.restarts() > 0 {
        field("restarts", r.restarts().to_string());
    }
    if let Some(from) = r.restarted_from() {
        field("restarted from", from.to_string());
    }
}
