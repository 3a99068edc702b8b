//! The `bpm` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Only the long-running daemon, keeper and MCP server log (to stderr: the
    // daemon and keeper send it to their log files, and MCP keeps stdout for
    // the protocol); a command prints its own results and errors, and starts faster without a logger.
    let args: Vec<String> = std::env::args().take(2).collect();
    if matches!(
        args.get(1).map(String::as_str),
        Some("daemon" | "keeper" | "mcp" | "web")
    ) {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("BPM_LOG")
                    .unwrap_or_else(|_| "warn,bpm=info".into()),
            )
            .init();
    }
    bpm::cli::main()
}
