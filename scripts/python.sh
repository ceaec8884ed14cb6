#!/usr/bin/env bash
# The Python package (crates/moescope-py): its Rust checks, a real `pip install` of it, and its
# tests (pytest), in a virtualenv cached outside the clone.
#
# The crate is not a member of the root workspace (PyO3 links libpython unless maturin builds
# it), so its fmt, clippy and doc checks run here. The virtualenv lives in
# ${MOESCOPE_PY_CACHE:-$HOME/.cache/moescope}/py-<hash of requirements-test.txt>: created and
# filled on a fresh machine (numpy, pytest, maturin, torch with its CUDA runtime wheels,
# transformers: about 5 GB), reused afterwards. The extension's build folder is cached next to
# it. Needs python3 (3.9 or later) with venv, and the Rust toolchain. Set MOESCOPE_BIN to a
# built `moescope` binary to skip building the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PKG=crates/moescope-py
REQ=$PKG/requirements-test.txt
CACHE="${MOESCOPE_PY_CACHE:-$HOME/.cache/moescope}"
VENV="$CACHE/py-$(sha256sum "$REQ" | cut -c1-16)"
PY="$VENV/bin/python"

if [ ! -f "$VENV/.complete" ]; then
  echo "== python: creating $VENV ($(python3 --version 2>&1))"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
    if command -v apt-get >/dev/null 2>&1; then
      echo "== python: installing python3-venv (Debian package)"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    fi
    python3 -m venv "$VENV" || {
      echo "error: python3 -m venv failed: install Python 3 with venv (Debian: python3-venv)" >&2
      exit 1
    }
  fi
  start=$(date +%s)
  "$PY" -m pip install -q --no-cache-dir --disable-pip-version-check -r "$REQ"
  echo "== python: requirements installed in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
  touch "$VENV/.complete"
fi

# PyO3's build script asks this interpreter for the Python version and paths.
export PYO3_PYTHON="$PY"
echo "== python: cargo fmt --check / clippy -D warnings / doc (moescope-py)"
cargo fmt --manifest-path "$PKG/Cargo.toml" -- --check
cargo clippy --manifest-path "$PKG/Cargo.toml" --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --manifest-path "$PKG/Cargo.toml" --no-deps --document-private-items --locked --quiet

echo "== python: pip install ./$PKG (maturin, release build)"
start=$(date +%s)
# The build folder outlives the clone: a rebuild compiles only what changed.
CARGO_TARGET_DIR="$CACHE/py-target" "$PY" -m pip install -q --no-cache-dir \
  --disable-pip-version-check --force-reinstall --no-deps "./$PKG"
echo "== python: built and installed in $(( $(date +%s) - start )) s"

# The tests compare moescope.analyze with the CLI's output: the binary $MOESCOPE_BIN (e.g. the
# one `cargo test --workspace` just built), else a debug build of moescope-cli.
if [ -z "${MOESCOPE_BIN:-}" ]; then
  cargo build -p moescope-cli --locked --quiet
  export MOESCOPE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/moescope"
fi
# pytest runs from the cache folder: a relative path is made absolute here.
case "$MOESCOPE_BIN" in
  /*) ;;
  *) export MOESCOPE_BIN="$ROOT/$MOESCOPE_BIN" ;;
esac

echo "== python: pytest $PKG/tests"
# From outside the source tree, so that `import moescope` is the installed package.
(cd "$CACHE" && "$PY" -m pytest -q -p no:cacheprovider "$ROOT/$PKG/tests")

echo "== python: the overhead benchmark, briefly (benches/README.md has the full run)"
(cd "$CACHE" && "$PY" "$ROOT/$PKG/benches/bench_record.py" --quick)
