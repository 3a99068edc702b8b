//! `bpm logs`' readers beside the plain one: a project's services at
//! once, the archives of old output, and the flags they share.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `bpm logs --archived ID`: the process's archives of old output, oldest
/// first, as its files keep them.
pub(super) async fn archived(home: &Home, m: &Manager, a: &LogsArgs) -> Outcome {
    let Some(text) = &a.id else {
        return Err(CliError::invalid(
            "--archived reads one process's archives: name it (bpm logs --archived ID)",
        ));
    };
    let id = resolve(m, text).await?;
    let root = home.dir.join("output");
    let mut out = std::io::stdout().lock();
    let found = match bpm_adapters::fs::FileOutput::archived(&root, id, &mut out) {
        Ok(found) => found,
        // Whoever reads stopped reading (`| head`): enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => {
            return Err(CliError::failed(format!(
                "{text}: cannot read its archives: {e}"
            )));
        }
    };
    if found == 0 {
        eprintln!(
            "bpm: {text} has no archives of old output: a process started with --log-archive N keeps them once its output passes the cap (`bpm logs` shows what is kept)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every service's output of project `name`, prefixed with its service;
/// `none` when the project has no records.
pub(super) async fn project_logs(m: &Manager, name: &str, a: &LogsArgs, none: CliError) -> Outcome {
    let records = m.list(bpm_intake::project::of_project(name)).await?;
    if records.is_empty() {
        return Err(none);
    }
    let grep = grep_of(a)?;
    let how = crate::cli::project::LinesAsked {
        follow: a.follow,
        lines: a.lines,
        stream: stream_of(&a.stream)?,
        grep: grep.as_ref(),
    };
    let color = color_on(std::io::stdout().is_terminal());
    crate::cli::project::logs(m, name, &records, &how, color).await
}

/// `--grep`'s expression, if given.
pub(super) fn grep_of(a: &LogsArgs) -> Result<Option<regex::Regex>, CliError> {
    a.grep
        .as_deref()
        .map(|re| {
            regex::Regex::new(re).map_err(|e| {
                CliError::invalid(format!("--grep {re:?}: not a regular expression: {e}"))
            })
        })
        .transpose()
}

/// `--stream`'s value.
pub(super) fn stream_of(text: &str) -> Result<StreamSelect, CliError> {
    match text {
        "stdout" => Ok(StreamSelect::Stdout),
        "stderr" => Ok(StreamSelect::Stderr),
        "both" => Ok(StreamSelect::Both),
        other => Err(CliError::invalid(format!(
            "invalid --stream {other:?}: expected stdout, stderr or both"
        ))),
    }
}
