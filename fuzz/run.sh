#!/usr/bin/env bash
# `make fuzz`: seeds each target's corpus from the test fixtures, then runs
# every cargo-fuzz target for FUZZ_SECONDS (default 60) at the lowest CPU
# priority, and prints one summary line per target (execs, coverage, crashes).
# FUZZ_TARGETS picks some targets (space separated); FUZZ_JOBS runs that many
# workers per target. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS="${FUZZ_TARGETS:-request_decode response_decode stream_decode sse_parser config}"
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }

./seed.sh
status=0
for t in $TARGETS; do
  log="artifacts/$t.log"
  mkdir -p "artifacts/$t"
  echo "fuzz: $t for ${SECONDS_EACH}s" >&2
  if ! nice -n 19 cargo +nightly fuzz run "$t" -O -j "$JOBS" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=1
  fi
  # `|| true`: a grep that finds nothing must not end the run (set -e, pipefail).
  execs=$( (grep -h '^stat::number_of_executed_units' "$log" fuzz-*.log 2>/dev/null || true) | awk '{s+=$2} END {print s+0}')
  cov=$( (grep -ho 'cov: [0-9]*' "$log" || true) | tail -1)
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  echo "fuzz: $t: $execs execs, ${cov:-cov: ?}, $crashes crash/oom/timeout files (log: fuzz/$log)"
done
exit $status
