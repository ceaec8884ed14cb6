"""examples/python/language_routing.py in its tiny mode (CPU, no network): the snapshots it
writes hold exactly the text's content tokens per language, the perturbed checkpoint differs
only in the layers it perturbs, and the CLI reads both files."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import moescope  # noqa: E402

torch.set_num_threads(1)
REPO = pathlib.Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "python" / "language_routing.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("language_routing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("routing")
    assert example.main(["--out", str(out)]) == 0
    return out


def test_snapshots_count_every_content_token_once_per_moe_layer(example, outputs):
    for name in ("base", "candidate"):
        snap = json.loads((outputs / f"{name}.snapshot.json").read_text())
        assert snap["format"] == "moescope.snapshot/v1"
        assert snap["model"]["layers"] == [1, 2, 3]  # layer 0 is dense
        assert set(snap["languages"]) == {"en", "he", "ja"}
        for lang, texts in example.TEXTS.items():
            entry = snap["languages"][lang]
            # Byte-level tokens: one per UTF-8 byte; BOS/EOS skipped, padding left out.
            content = sum(len(t.encode("utf-8")) for t in texts)
            assert entry["chars"] == sum(len(t) for t in texts)
            assert entry["words"] == sum(len(t.split()) for t in texts)
            for layer in entry["layers"]:
                assert layer["tokens"] == content
                assert sum(layer["expert_tokens"]) == 2 * content


def test_the_candidate_differs_only_in_its_perturbed_routers(outputs):
    base = json.loads((outputs / "base.snapshot.json").read_text())
    cand = json.loads((outputs / "candidate.snapshot.json").read_text())
    for lang in ("en", "he", "ja"):
        b, c = base["languages"][lang]["layers"], cand["languages"][lang]["layers"]
        assert b[0]["expert_tokens"] == c[0]["expert_tokens"]  # depth 0 untouched
        assert b[2]["expert_tokens"] != c[2]["expert_tokens"]  # the deepest one perturbed
    d = moescope.diff(str(outputs / "base.snapshot.json"), str(outputs / "candidate.snapshot.json"), "en")
    assert d["base_model"] == "tiny-qwen3-moe" and d["candidate_model"] == "tiny-qwen3-moe-perturbed"
    first = [r for r in d["layers"] if r["layer"] == 1]
    assert first and all(r["usage_entropy_bits"]["delta"] == 0.0 for r in first)


def test_the_cli_reads_what_the_example_wrote(outputs, moescope_bin):
    base, cand = str(outputs / "base.snapshot.json"), str(outputs / "candidate.snapshot.json")
    a = subprocess.run(
        [moescope_bin, "analyze", "--format", "json", "--reference", "en", base], capture_output=True, text=True
    )
    assert a.returncode == 0, a.stderr
    assert json.loads(a.stdout) == moescope.analyze(base, "en")
    d = subprocess.run(
        [moescope_bin, "diff", "--format", "json", "--reference", "en", base, cand], capture_output=True, text=True
    )
    assert d.returncode in (0, 1), d.stderr
    assert d.returncode == int(json.loads(d.stdout)["regression"])


def test_the_script_runs_as_a_program(tmp_path):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--cli", str(tmp_path / "no-such-moescope")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "usage entropy, bits" in r.stdout and "regression: False" in r.stdout
    assert "no moescope CLI at" in r.stdout
