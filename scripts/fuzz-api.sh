#!/usr/bin/env bash
# Fuzzes a serving participant's HTTP API from the OpenAPI document it serves, with Schemathesis:
# schema-valid and schema-invalid requests for every operation, each answer checked for
# - no server error (5xx),
# - a status the document lists for the operation, as JSON, matching that status's schema,
# - every schema-valid request accepted (2xx, or 403/404/409 for a caller, a resource that is not there or
#   a state that does not allow it, such as another agent's conversation).
# Apps' endpoints are called with the institution's app certificate, the data protection officer's with
# its DPO's, the agents' with its agent's (PKI_DIR/INSTITUTION/{app,dpo,agent}.pem, as `hearth pki init`
# writes them).
#
# Usage: scripts/fuzz-api.sh HOST:PORT PKI_DIR INSTITUTION [SECONDS_PER_CALLER]
#   e.g. against `hearth demo --dir /tmp/demo` (the banner names the participants' ports):
#   scripts/fuzz-api.sh localhost:PORT /tmp/demo/pki institution-1 90
# Without SECONDS_PER_CALLER: 30 cases per operation and phase. The tools come from
# scripts/install-api-tools.sh. Customer, workflow run and conversation ids that exist
# ($HEARTH_FUZZ_CUSTOMERS, $HEARTH_FUZZ_RUNS, $HEARTH_FUZZ_CONVERSATIONS, space-separated) are used for half
# the path ids (nine in ten of the conversations'), so that history, erasure, workflow and conversation answers are checked too, not only 404s.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: $0 HOST:PORT PKI_DIR INSTITUTION [SECONDS_PER_CALLER]" >&2; exit 2; }
addr=$1
pki=$2
institution=$3
bin=$(scripts/install-api-tools.sh)
budget=(--max-examples 30)
if [ $# -ge 4 ]; then budget=(--max-time "$4" --max-examples 100000); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config="$work/schemathesis.toml"
: >"$config"
seed() { # NAME PATH_REGEX PROBABILITY IDS...
  local name=$1 paths=$2 probability=$3
  shift 3
  [ $# -gt 0 ] || return 0
  local values
  values=$(printf '"%s", ' "$@")
  cat >>"$config" <<TOML
[dictionaries.$name]
values = [${values%, }]

[[operations]]
include-path-regex = "$paths"
parameters = { "path.id" = { dictionary = "$name", probability = $probability } }

TOML
}
# shellcheck disable=SC2086
seed customers '^/v1/customers/' 0.5 ${HEARTH_FUZZ_CUSTOMERS:-}
# shellcheck disable=SC2086
seed runs '^/v1/admin/workflows/' 0.5 ${HEARTH_FUZZ_RUNS:-}
# A reply's body has many cases of its own, each with a path id: most use a known conversation.
# shellcheck disable=SC2086
seed conversations '^/v1/agent/conversations/' 0.9 ${HEARTH_FUZZ_CONVERSATIONS:-}
status=0
# The agents' pass comes before the DPO's, whose erasures would take the seeded conversations with them.
for pass in "app|^/v1/(messages|intent|emotion|recommend|health|openapi\.json)$" \
            "agent|^/v1/agent/" \
            "dpo|^/v1/(customers|admin)/"; do
  who=${pass%%|*}
  paths=${pass#*|}
  echo "== as $who: $paths" >&2
  (cd "$work" && "$bin/st" --config-file "$config" run "https://$addr/v1/openapi.json" \
    --tls-verify "$pki/ca.pem" --request-cert "$pki/$institution/$who.pem" --request-cert-key "$pki/$institution/$who.key" \
    --include-path-regex "$paths" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance \
    --mode all --phases examples,coverage,fuzzing --generation-database none --no-color \
    --request-timeout 30 --workers 1 "${budget[@]}") || status=1
done
exit $status
