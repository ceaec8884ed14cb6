#!/usr/bin/env bash
# The project's test command (README.md): formatting, lints, and every test of the workspace.
# It installs nothing yet: a fresh machine with the Rust toolchain (rustfmt, clippy) suffices.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
