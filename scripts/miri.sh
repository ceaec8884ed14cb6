#!/usr/bin/env bash
# Runs the tests of core's `unsafe` code under Miri (undefined-behaviour checks): the lazy
# once-cell (`lazy.rs`) and the staging stripes built on it (`stage.rs`). Miri needs a nightly
# toolchain with the `miri` component; this installs it with rustup when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain with miri (rustup)"
  rustup toolchain install nightly --profile minimal -c miri -c rust-src
fi
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
exec cargo +nightly miri test -p moescope-core --lib --target-dir target/miri -- lazy:: stage:: "$@"
