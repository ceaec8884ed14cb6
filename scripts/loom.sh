#!/usr/bin/env bash
# Model-checks the recorder's lock-free protocol with loom: the staging stripe's claim and
# release, the reader's fold and epoch change, and the lazily created language blocks, under
# every interleaving loom explores (tests `loom_model` in crates/moescope-core/src/stage.rs).
# Builds in its own target directory (a `--cfg loom` build replaces the atomics).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-100000}"
exec cargo test --locked -p moescope-core --lib --target-dir target/loom --release -- loom_model "$@"
