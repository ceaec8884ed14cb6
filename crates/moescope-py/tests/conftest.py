"""Shared fixtures: the `moescope` CLI binary for the cross-checks against `moescope analyze`."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def moescope_bin():
    """The `moescope` binary: $MOESCOPE_BIN, else the workspace's target/debug/moescope,
    built with cargo when missing."""
    path = os.environ.get("MOESCOPE_BIN")
    if path:
        assert os.access(path, os.X_OK), f"MOESCOPE_BIN={path} is not an executable"
        return path
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "moescope"
    if not binary.exists():
        subprocess.run(
            ["cargo", "build", "-p", "moescope-cli", "--locked", "--quiet"],
            cwd=REPO,
            check=True,
        )
    return str(binary)
