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


def _bytes_to_unicode():
    """GPT-2's byte-to-character table, which tokenizers' ByteLevel pre-tokenizer uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _save_checkpoint(example, model, folder):
    """The tiny model and a byte-level tokenizer (token id = byte value) saved as a local
    Hugging Face checkpoint, so the script's real-model path runs without a network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab.update({"<pad>": example.PAD, "<s>": example.BOS, "</s>": example.EOS})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    model.save_pretrained(folder)


def test_the_real_model_path_on_local_checkpoints(example, tmp_path):
    base = example.tiny_model(5)
    cand = example.perturbed(base, 6)
    _save_checkpoint(example, base, tmp_path / "base")
    _save_checkpoint(example, cand, tmp_path / "cand")
    out = tmp_path / "out"
    argv = ["--model", str(tmp_path / "base"), "--compare", str(tmp_path / "cand"), "--out", str(out)]
    assert example.main(argv + ["--cli", str(tmp_path / "none")]) == 0
    for name in ("base", "candidate"):
        snap = json.loads((out / f"{name}.snapshot.json").read_text())
        for lang, texts in example.TEXTS.items():
            content = sum(len(t.encode("utf-8")) for t in texts)  # one token per byte, no specials
            assert [layer["tokens"] for layer in snap["languages"][lang]["layers"]] == [content] * 3
    # The saved tokenizer is byte-level indeed (what the token totals above rely on).
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "base", local_files_only=True)
    for texts in example.TEXTS.values():
        assert tok(texts[0])["input_ids"] == list(texts[0].encode("utf-8"))
