//! The `bpm` binary. The command line (run, ps, logs, stop, wait, ...) and its
//! daemon come next; today the binary reports its version, and the engine is
//! used as a library (see `examples/tour.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V" | "version") => {
            println!("bpm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "bpm: unknown command {other:?}: the command line is not built yet; \
                 use the library (cargo run -p bpm --example tour)"
            );
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: bpm --version   (the command line is not built yet; see README.md)");
            ExitCode::from(2)
        }
    }
}
