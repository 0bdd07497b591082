#!/usr/bin/env bash
# Installs what building, testing and benchmarking apiproxy needs on a fresh
# Debian machine (as root, no questions): a C toolchain and cmake (Pingora
# builds zlib-ng), OpenSSL headers (TLS to providers), redis-server and
# redis-tools (tests: one server, a cluster, a Sentinel), chromium (the
# console's browser tests, driven headless over the DevTools protocol),
# wrk (benchmarks), and the Rust toolchain when cargo is missing.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# redis-cli creates the test and bench Redis Clusters; Sentinels run as `redis-server --sentinel`.
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v perl >/dev/null 2>&1 || need+=(perl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "bootstrap: cargo is in ~/.cargo/bin (add it to PATH)"
  else
    echo "bootstrap: installing the Rust toolchain from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq cargo rustc >/dev/null
  fi
fi
# The default Redis service is not needed: tests start their own servers.
exit 0
