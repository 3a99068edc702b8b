//! The `bpm` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BPM_LOG")
                .unwrap_or_else(|_| "warn,bpm=info".into()),
        )
        .init();
    bpm::cli::main()
}
