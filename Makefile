# apiproxy: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/apiproxy.yaml

.PHONY: bootstrap build release run check test lint fmt bench microbench fuzz clean

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	cargo build --release

release: build

## Runs the gateway in the foreground on the embedded store.
run: build
	./target/release/apiproxy -c $(CONFIG)

## Checks the config file.
check: build
	./target/release/apiproxy -t -c $(CONFIG)

## The whole suite: unit, translation fixtures, store (real redis-server) and
## integration tests against the real binary.
test: bootstrap
	cargo test --workspace --all-features

lint: bootstrap
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	# The fuzz crate is not a workspace member (it builds with sanitizers under
	# `make fuzz`): checked here so a change cannot break it unnoticed. Same
	# target directory: the dependencies checked above are reused.
	CARGO_TARGET_DIR=target cargo clippy --manifest-path fuzz/Cargo.toml --bins -- -D warnings

fmt:
	cargo fmt --all

## Load harness: direct / bare-Pingora floor / apiproxy, table in benches/results (benches/README.md).
bench: bootstrap
	benches/run.sh

## Criterion micro-benchmarks of the hot pure code (parsing, routing, translation, SSE).
microbench: bootstrap
	cargo bench -p apiproxy --bench hot_path
	cargo bench -p apiproxy-translate --bench translate

## Fuzz targets (fuzz/): each runs FUZZ_SECONDS (default 60) at nice 19; not part of `make test`.
fuzz: bootstrap
	fuzz/run.sh

clean:
	cargo clean
