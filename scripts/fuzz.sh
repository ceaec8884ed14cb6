#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time each.
#
#   scripts/fuzz.sh [seconds-per-target]       # default 60
#   FUZZ_TARGETS="http_request lang_tags" scripts/fuzz.sh 600
#
# Seeds come from fuzz/corpus/<target>/ (kept small, in the repository); inputs the fuzzer
# discovers go to fuzz/target/fuzz-corpus/<target>/ (ignored) and are reused by later runs.
# A crash stops the script with exit 1; its input is in fuzz/artifacts/<target>/.
# Per-target logs (with libFuzzer's final statistics) go to fuzz/target/fuzz-logs/.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets them through. Installs cargo-fuzz when missing, into target/tools
# (cached with the build).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
TARGETS="${FUZZ_TARGETS:-snapshot_json hf_config lang_tags router_batch http_request}"
CARGO_FUZZ_VERSION="0.13.2"

export PATH="$PWD/target/tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into target/tools"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root target/tools
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
echo "== cargo fuzz build (release, address sanitizer)"
cargo fuzz build -O
mkdir -p target/fuzz-logs target/fuzz-corpus
status=0
for t in $TARGETS; do
  found="target/fuzz-corpus/$t"
  mkdir -p "$found" "corpus/$t"
  log="target/fuzz-logs/$t.log"
  echo "== $t: ${SECONDS_PER_TARGET}s"
  # The first corpus directory receives new inputs; the repository's seeds are only read.
  if cargo fuzz run -O "$t" "$found" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "   ok: ${runs:-?} executions, ${cov:-cov: ?}, corpus $(ls "$found" | wc -l) inputs"
  else
    status=1
    echo "   FAILED: see fuzz/$log and fuzz/artifacts/$t/"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
  fi
done
exit $status
