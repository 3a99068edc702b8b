#!/usr/bin/env bash
# Long runs of the proptest fuzz targets: each target runs in batches of
# $BATCH cases (a fresh random seed each batch) until $SECONDS_EACH have
# passed, then prints the cases run and any failure.
#
# Usage: tests/campaigns/fuzz_long.sh [SECONDS_EACH] [TARGET...]
# Targets: journal-tail journal-damage keeper control config mcp
set -u
each="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(journal-tail journal-damage keeper control config mcp)
BATCH="${BATCH:-500}"

command_for() {
  case "$1" in
    journal-tail) echo "-p bpm-adapters --test fuzz_inputs any_journal_tail" ;;
    journal-damage) echo "-p bpm-adapters --test fuzz_inputs a_damaged_journal" ;;
    keeper) echo "-p bpm-adapters --test fuzz_inputs the_keeper_survives" ;;
    control) echo "-p bpm-cli --test fuzz_inputs the_daemon_survives" ;;
    config) echo "-p bpm-cli --test fuzz_inputs any_config" ;;
    mcp) echo "-p bpm-cli --test mcp any_tool_arguments" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

status=0
for target in "${targets[@]}"; do
  args=$(command_for "$target")
  # Build first, so the time counts cases only.
  cargo test -q $args --no-run >/dev/null 2>&1
  start=$(date +%s); cases=0; failed=0
  while [ $(( $(date +%s) - start )) -lt "$each" ]; do
    if ! PROPTEST_CASES="$BATCH" cargo test -q $args >/tmp/fuzz-$target.log 2>&1; then
      failed=1; break
    fi
    cases=$((cases + BATCH))
  done
  if [ "$failed" = 1 ]; then
    echo "$target: FAILED after $cases cases; see /tmp/fuzz-$target.log"
    status=1
  else
    echo "$target: $cases cases in $(( $(date +%s) - start )) s, no failure"
  fi
done
exit "$status"
