#!/usr/bin/env bash
# `make bench`: the load harness, start to end. Builds apiproxy and the
# bench helpers (bench-mock, bench-floor) in release mode, installs the load
# generator (oha, from crates.io) when it is missing, then runs
# benches/harness.py, which prints the table and writes benches/results/,
# then benches/upgrade.py (binary upgrades and reloads under load).
# Everything listens on 127.0.0.1. Knobs: see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The version is pinned so every machine measures with the same generator.
OHA_VERSION="${OHA_VERSION:-1.16.0}"

if ! command -v oha >/dev/null 2>&1; then
  echo "bench: installing oha $OHA_VERSION (once; cargo install)" >&2
  cargo install --locked --quiet oha --version "$OHA_VERSION"
fi
command -v curl >/dev/null 2>&1 || { echo "bench: curl is missing (scripts/bootstrap.sh installs it)" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "bench: python3 is missing" >&2; exit 1; }

# PEERS=1: the peer gateways measured beside apiproxy, each in its own venv
# (once per machine). LiteLLM is pinned below the withdrawn 1.107.x releases.
if [ -n "${PEERS:-}" ] && [ "${PEERS}" != 0 ]; then
  LITELLM_VERSION="${LITELLM_VERSION:-1.106.12}"
  venv="${BENCH_LITELLM_VENV:-$HOME/.cache/apiproxy-bench/litellm-$LITELLM_VERSION}"
  if [ ! -x "$venv/bin/litellm" ]; then
    echo "bench: installing LiteLLM $LITELLM_VERSION into $venv (once; pip)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  fi
  export BENCH_LITELLM_VENV="$venv" PEERS
fi

# Absolute: the harness starts the servers from a scratch directory.
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
echo "bench: building release binaries into $target" >&2
cargo build --release --quiet -p apiproxy -p apiproxy-bench-tools --bin apiproxy --bin bench-mock --bin bench-floor
# BENCH_ONLY=load or BENCH_ONLY=upgrade runs one part; any other value is a
# comma list of the load harness's parts (benches/README.md).
case "${BENCH_ONLY:-all}" in
  all)
    python3 benches/harness.py "$target/release"
    exec python3 benches/upgrade.py "$target/release" ;;
  upgrade) exec python3 benches/upgrade.py "$target/release" ;;
  *) exec python3 benches/harness.py "$target/release" ;;
esac
