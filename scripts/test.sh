#!/usr/bin/env bash
# The test command: builds everything and runs every test (unit, integration with real processes).
# Installs nothing today: the build needs only Rust (protobuf is compiled by the pure-Rust protox).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --all-targets
cargo test --release --workspace --all-targets -- --test-threads="${HEARTH_TEST_THREADS:-2}"
