#!/usr/bin/env bash
# Installs the checkers Rust has no equal of, pinned, from PyPI, into a virtual environment
# outside the checkout, and prints that environment's bin directory:
# - Schemathesis: property-based fuzzing of a running API from the OpenAPI document it serves;
# - openapi-spec-validator: checks a document against the OpenAPI 3.1 specification's schema;
# - kubernetes-validate: checks Kubernetes manifests against the API's schemas (deploy/k8s).
# Used by ./scripts/test.sh (tests/the_fuzzed_api_answers_every_request_as_documented.rs,
# tests/the_kubernetes_overlays_render_and_validate.rs) and scripts/fuzz-api.sh. $HEARTH_API_TOOLS
# names another directory for the environment.
set -euo pipefail
venv="${HEARTH_API_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth/api-tools}"
want="schemathesis==4.32.5 openapi-spec-validator==0.9.0 kubernetes-validate==1.32.0"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "installing python3-venv (the API checkers run in a Python virtual environment)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "installing $want into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
  echo "$want" >"$venv/.installed"
fi
echo "$venv/bin"
