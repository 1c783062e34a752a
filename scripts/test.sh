#!/usr/bin/env bash
# The test command: builds everything and runs every test (unit, integration with real processes).
# Protobuf is compiled by the pure-Rust protox, so the build needs only Rust. The PKCS#11 keystore tests
# (crypto/src/keystore/pkcs11/tests.rs) run against a real SoftHSM2 token, so SoftHSM2 is installed here
# when it is missing; each test run then creates its own token directory and fresh tokens.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s softhsm2 >/dev/null 2>&1; then
  echo "installing softhsm2 (PKCS#11 keystore tests)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null
fi

cargo build --release --workspace --all-targets
cargo test --release --workspace --all-targets -- --test-threads="${HEARTH_TEST_THREADS:-2}"
