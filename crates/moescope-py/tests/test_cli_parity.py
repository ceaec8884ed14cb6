"""`moescope.analyze` / `moescope.diff` return the documents `moescope analyze --format json` /
`moescope diff --format json` print for the same snapshot files."""

import json
import subprocess

import numpy as np
import pytest

import moescope

SPEC = {"name": "parity", "num_experts": 32, "top_k": 4, "layers": [0, 1, 2, 3, 4, 5, 6, 7]}


def write_snapshot(path, seed, skew):
    """Three languages; `he` routes to fewer experts in deep layers by `skew`."""
    rng = np.random.default_rng(seed)
    rec = moescope.Recorder(SPEC, window_seconds=3600, buckets=1)
    for tag in ("en", "fr", "he"):
        lang = rec.language(tag)
        for depth in range(8):
            hi = 32 if (tag != "he" or depth < 5) else max(4, 32 - skew)
            ids = np.stack([rng.permutation(hi)[:4] for _ in range(400)])
            rec.record(depth, ids, lang)
        rec.record_text(lang, 4000, 700)
    rec.write_snapshot(path)
    return path


def cli(moescope_bin, *args):
    out = subprocess.run([moescope_bin, *map(str, args)], capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout), out.returncode


@pytest.mark.parametrize(
    "py_kwargs, cli_args",
    [
        ({}, []),
        (
            {"lsi_threshold": 0.3, "all_pairs": True, "top_k": 2, "active_alpha": 0.5},
            ["--lsi-threshold", 0.3, "--all-pairs", "--top-k", 2, "--active-alpha", 0.5],
        ),
        (
            {"theta_bits": 0.05, "min_deep_tokens": 10},
            ["--theta-bits", 0.05, "--min-deep-tokens", 10],
        ),
    ],
)
def test_analyze_equals_the_cli(tmp_path, moescope_bin, py_kwargs, cli_args):
    snap = write_snapshot(tmp_path / "s.json", 1, 24)
    expected, _ = cli(moescope_bin, "analyze", snap, "--reference", "en", "--format", "json", *cli_args)
    got = moescope.analyze(snap, "en", **py_kwargs)
    assert got == expected
    assert got["collapse"] and got["layers"]
    # Reference "fr" too: the document depends on it, and both sides follow.
    expected_fr, _ = cli(moescope_bin, "analyze", snap, "--reference", "fr", "--format", "json")
    assert moescope.analyze(snap, "fr") == expected_fr != expected


@pytest.mark.parametrize("strict", [False, True])
def test_diff_equals_the_cli(tmp_path, moescope_bin, strict):
    base = write_snapshot(tmp_path / "base.json", 2, 0)
    cand = write_snapshot(tmp_path / "cand.json", 3, 28)
    args = ["diff", base, cand, "--reference", "en", "--format", "json", "--tolerance-bits", 0.05]
    if strict:
        args.append("--strict")
    expected, code = cli(moescope_bin, *args)
    got = moescope.diff(base, cand, "en", tolerance_bits=0.05, strict=strict)
    assert got == expected
    assert got["regression"] == (code == 1)
