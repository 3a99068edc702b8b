//! Links the `bpm` binary position-dependent on Linux. Every command is a
//! short-lived process, and as a position-independent executable most of its
//! start went to the dynamic loader applying about 25,000 relocations (and
//! the page copies they cause): `bpm --version` took 1.61 ms as a PIE and
//! 1.25 ms linked with `-no-pie` (`cargo bench -p bpm-cli --bench cli`). The
//! code is still compiled position-independent, so only the link changes;
//! the price is that the binary's own code and data load at a fixed address
//! (libraries, stack and heap stay randomised). Build with `BPM_PIE=1` to
//! keep a PIE. Where the workspace's rustc wrapper (rustc-wrapper.sh) can,
//! it links the binary statically instead, which starts faster still.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BPM_PIE");
    // Read by rustc-wrapper.sh; listed here so that a change relinks `bpm`.
    println!("cargo:rerun-if-env-changed=BPM_DYNAMIC");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var_os("BPM_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
