//! The `bpm` binary.

use anyhow::Result;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    println!("bpm {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
