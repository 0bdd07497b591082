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
  # Portkey's open-source gateway, from npm, into its own folder (once).
  PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
  pk="${BENCH_PORTKEY_DIR:-$HOME/.cache/apiproxy-bench/portkey-$PORTKEY_VERSION}"
  if [ ! -f "$pk/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    command -v npm >/dev/null 2>&1 || { echo "bench: npm is missing (Portkey's gateway needs node and npm)" >&2; exit 1; }
    echo "bench: installing @portkey-ai/gateway $PORTKEY_VERSION into $pk (once; npm)" >&2
    mkdir -p "$pk"
    (cd "$pk" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "@portkey-ai/gateway@$PORTKEY_VERSION")
  fi
  export BENCH_LITELLM_VENV="$venv" BENCH_PORTKEY_DIR="$pk" PORTKEY_VERSION PEERS
fi

# nginx, the baseline of the SSE scenarios (a streaming reverse proxy): the
# binary of Debian's package unpacked into the cache, so that no nginx
# service is installed or started on the machine.
ngx_dir="$HOME/.cache/apiproxy-bench/nginx"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x "$ngx_dir/usr/sbin/nginx" ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench: unpacking Debian's nginx into $ngx_dir (once; the SSE baseline)" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -q nginx >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download -q nginx >/dev/null; }) \
    && dpkg -x "$tmp"/nginx_*.deb "$ngx_dir" \
    || echo "bench: could not unpack nginx: the SSE table has no nginx baseline" >&2
  rm -rf "$tmp"
fi

# valgrind: section H's instruction counts (benches/instructions.py).
if ! command -v valgrind >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "bench: installing valgrind (once; section H's instruction counts)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
  { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }; } \
    || echo "bench: could not install valgrind: section H has no instruction counts" >&2
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
