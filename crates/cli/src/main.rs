//! The `bpm` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Only the long-running daemon, keeper and MCP server log (to stderr: the
    // daemon and keeper send it to their log files, and MCP keeps stdout for
    // the protocol); a command prints its own results and errors, and starts faster without a logger.
    // `args_os`: an argument that is not UTF-8 is clap's to explain, not a panic here.
    let first = std::env::args_os().nth(1);
    if matches!(
        first.as_ref().and_then(|a| a.to_str()),
        Some("daemon" | "keeper" | "mcp" | "web")
    ) {
        tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            // Its own complaint about a failed write goes through eprintln!,
            // which panics the task that logged when stderr cannot be written.
            .log_internal_errors(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("BPM_LOG")
                    .unwrap_or_else(|_| "warn,bpm=info".into()),
            )
            .init();
    }
    bpm::cli::main()
}

/// Stderr for the logger, where a failed write (the daemon's or keeper's log
/// file on a full disk) drops the line: logging must never stop the task that
/// logs, and a keeper that stopped copying output would block the processes
/// writing it.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
