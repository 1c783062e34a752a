#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every decoder a peer can reach: fuzz/fuzz_targets/.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default 15 seconds per target (what ./scripts/test.sh runs); long runs pass more, e.g. 3600. Needs the
# nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz from crates.io when missing. The
# corpus grows in $HEARTH_FUZZ_DIR (default ~/.cache/hearth/fuzz), starting from fuzz/seeds/; a crash is
# written there under artifacts/ and fails the run, printing how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
shift || true
work="${HEARTH_FUZZ_DIR:-$HOME/.cache/hearth/fuzz}"
mkdir -p "$work"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "scripts/fuzz.sh: the nightly toolchain is missing (libFuzzer needs it): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz 0.13.2 from crates.io" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 >/dev/null 2>&1
fi

# No sanitizer (the code under test is safe Rust: a panic is the bug looked for), overflow checks on.
flags=(--fuzz-dir fuzz -s none -a)
cargo +nightly fuzz build "${flags[@]}" 2>&1 | grep -E '^(error|warning: unused)' || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
printf '%-18s %14s %10s %8s\n' target executions exec/s corpus
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  log="$work/$t.log"
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t found a crash: see $work/artifacts/$t/ (reproduce: cargo +nightly fuzz run ${flags[*]} $t FILE)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  corpus=$(find "$work/corpus/$t" -type f | wc -l)
  printf '%-18s %14s %10s %8s\n' "$t" "$execs" "$rate" "$corpus"
done
