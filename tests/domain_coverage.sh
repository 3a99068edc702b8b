#!/usr/bin/env bash
# Line coverage of bpm-domain by its own tests (issue 18 keeps it at or above
# 95%). Needs rustup's llvm-tools component, which it adds if missing. Builds
# into target/coverage, so the usual build is left alone; prints llvm-cov's
# per-file report and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
tools="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
out=target/coverage
rm -rf "$out/profiles"
mkdir -p "$out/profiles"
RUSTFLAGS="-C instrument-coverage" LLVM_PROFILE_FILE="$PWD/$out/profiles/%p-%m.profraw" \
  cargo test -q -p bpm-domain --target-dir "$out/build" >/dev/null
"$tools/llvm-profdata" merge -sparse "$out"/profiles/*.profraw -o "$out/domain.profdata"
objects=()
for f in "$out"/build/debug/deps/*; do
  case "$f" in *.d | *.rlib | *.rmeta | *.so) continue ;; esac
  [ -x "$f" ] && [ -f "$f" ] && objects+=(--object "$f")
done
"$tools/llvm-cov" report "${objects[@]}" --instr-profile="$out/domain.profdata" \
  --ignore-filename-regex='(/\.cargo/|/rustc/|/tests/|/benches/)' \
  | sed -n '/^Filename/,$p'
