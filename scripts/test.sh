#!/usr/bin/env bash
# The project's test command (README.md): formatting, lints, the Prometheus rules (promtool),
# and every test of the workspace, including the end-to-end test against a real Prometheus.
# Installs Debian's `prometheus` package (prometheus + promtool) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "== installing prometheus (Debian package: prometheus, promtool)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "error: prometheus/promtool missing, not root and no sudo: install the Debian package 'prometheus'" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: prometheus/promtool missing and no apt-get: install Prometheus 2.x (prometheus, promtool) on PATH" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null && command -v prometheus >/dev/null || {
    echo "error: installing the Debian package 'prometheus' did not provide prometheus and promtool" >&2
    exit 1
  }
fi
# The Rust tests that need them fail (instead of skipping) when they are missing.
export MOESCOPE_REQUIRE_PROMETHEUS=1

# --- Headless Chromium: browser tests of `moescope report` and the demos' live page ---
# Installs Debian's `chromium` when missing; exports MOESCOPE_CHROMIUM and
# MOESCOPE_REQUIRE_CHROMIUM=1 (the browser tests then fail instead of skipping).
source scripts/browser.sh

echo "== promtool check rules / test rules ($(promtool --version 2>&1 | head -1))"
(cd dashboards && promtool check rules rules/*.yml && promtool test rules tests/*.test.yml)

# --- CUDA path (moescope-cuda) ---------------------------------------------------------------
# NVRTC (libnvrtc.so.13) and ptxas from NVIDIA's PyPI wheels, cached under target/cuda-tools
# (about 460 MB, installed once): the kernels are compiled and assembled for sm_80, sm_90 and
# sm_100 by the tests, which fail instead of skipping when the tools are missing.
source scripts/cuda-tools.sh
export MOESCOPE_REQUIRE_NVRTC=1
# The kernels' source also runs on the CPU, built by a C++20 compiler (kernels_emulated).
if command -v "${CXX:-c++}" >/dev/null 2>&1; then
  export MOESCOPE_REQUIRE_CXX=1
else
  echo "note: no C++ compiler (\$CXX or c++): the CUDA kernel emulation test reports itself skipped"
fi
# --- end of the CUDA path block ---------------------------------------------------------------

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings (all features)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== cargo doc: every intra-doc link resolves (all features)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked --quiet

echo "== loom: the stripe protocol under every interleaving (scripts/loom.sh)"
bash scripts/loom.sh

echo "== cargo test"
cargo test --workspace --locked

echo "== cargo test: README's Rust examples (facade with the tract feature)"
cargo test -p moescope --features tract --doc --locked

echo "== cargo test: OTLP export (feature otlp)"
cargo test -p moescope-otel --features otlp --locked

# The Python package (crates/moescope-py, outside the workspace): its fmt/clippy/doc, a real
# `pip install`, and pytest (the binding, and moescope.hf on tiny transformers models of every
# family), in a virtualenv cached under ~/.cache/moescope (about 5.6 GB with torch, once).
echo "== Python package: build, checks and tests (scripts/python.sh)"
MOESCOPE_BIN="${CARGO_TARGET_DIR:-target}/debug/moescope" bash scripts/python.sh

echo "== fuzz: each cargo-fuzz target for ${MOESCOPE_FUZZ_SECONDS:-60}s (scripts/fuzz.sh; findings fail the run)"
bash scripts/fuzz.sh "${MOESCOPE_FUZZ_SECONDS:-60}"
