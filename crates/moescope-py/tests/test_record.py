"""Recording from Python: exact counts against NumPy, the forms of `langs`, weights and
router scores, depth vs layer number, and the model argument."""

import json

import numpy as np
import pytest

import moescope

E, K = 16, 4
LAYERS = [0, 1, 2]
SPEC = {"name": "tiny", "num_experts": E, "top_k": K, "layers": LAYERS}


def recorder(**kw):
    # One bucket of an hour: every test's records stay in the window.
    kw.setdefault("window_seconds", 3600)
    kw.setdefault("buckets", 1)
    return moescope.Recorder(SPEC, **kw)


def expert_tokens(snap, lang, depth):
    return np.array(snap["languages"][lang]["layers"][depth]["expert_tokens"])


def test_counts_equal_numpy_bincount_per_language():
    rng = np.random.default_rng(7)
    rec = recorder()
    tags = ["en", "he", "zh"]
    ids_of = [rec.language(t) for t in tags]
    expected = {t: np.zeros((len(LAYERS), E)) for t in tags}
    tokens = {t: np.zeros(len(LAYERS)) for t in tags}
    for step in range(20):
        t = int(rng.integers(1, 200))
        for depth in range(len(LAYERS)):
            ids = rng.integers(0, E, size=(t, K))
            which = rng.integers(0, 3, size=t)
            langs = np.array(ids_of, dtype=np.uint16)[which]
            # Alternate id and language dtypes: every path must count the same.
            ids_in = ids.astype([np.int64, np.int32, np.uint8, np.uint16][step % 4])
            langs_in = langs.astype([np.uint16, np.int64, np.int32][step % 3])
            out = rec.record(depth, ids_in, langs_in)
            assert out.recorded == t and out.dropped == 0
            for li, tag in enumerate(tags):
                rows = ids[which == li]
                expected[tag][depth] += np.bincount(rows.ravel(), minlength=E)
                tokens[tag][depth] += rows.shape[0]
    snap = rec.snapshot()
    assert snap["format"] == "moescope.snapshot/v1"
    for tag in tags:
        for depth in range(len(LAYERS)):
            np.testing.assert_array_equal(expert_tokens(snap, tag, depth), expected[tag][depth])
            assert snap["languages"][tag]["layers"][depth]["tokens"] == tokens[tag][depth]
        assert expected[tag].sum() > 0


def test_language_forms_one_id_a_tag_segments_and_per_token_agree():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, E, size=(10, K))
    forms = []
    for form in range(6):
        rec = recorder()
        en, he = rec.language("en"), rec.language("he")
        if form == 0:
            rec.record(0, ids[:6], en)
            rec.record(0, ids[6:], he)
        elif form == 1:
            rec.record(0, ids[:6], "en")
            rec.record(0, ids[6:], "he")
        elif form == 2:
            rec.record(0, ids, [(en, 6), (he, 4, 12345)])
        elif form == 3:
            rec.record(0, ids, np.array([en] * 6 + [he] * 4, dtype=np.uint16))
        elif form == 4:  # NumPy scalars and 0-d arrays: one language for the batch
            rec.record(0, ids[:6], np.uint16(en))
            rec.record(0, ids[6:], np.array(he, dtype=np.int64))
        else:
            rec.record(0, ids, [("en", 6), ("he", 4)])
        snap = rec.snapshot()
        forms.append((expert_tokens(snap, "en", 0), expert_tokens(snap, "he", 0)))
    np.testing.assert_array_equal(forms[0][0], np.bincount(ids[:6].ravel(), minlength=E))
    np.testing.assert_array_equal(forms[0][1], np.bincount(ids[6:].ravel(), minlength=E))
    for en_counts, he_counts in forms[1:]:
        np.testing.assert_array_equal(en_counts, forms[0][0])
        np.testing.assert_array_equal(he_counts, forms[0][1])


def test_excluded_tokens_are_not_counted():
    rec = recorder()
    en = rec.language("en")
    ids = np.arange(3 * K).reshape(3, K) % E
    out = rec.record(1, ids, np.array([en, moescope.EXCLUDED, en], dtype=np.uint16))
    assert (out.recorded, out.excluded) == (2, 1)
    counts = expert_tokens(rec.snapshot(), "en", 1)
    np.testing.assert_array_equal(counts, np.bincount(ids[[0, 2]].ravel(), minlength=E))


def test_weights_and_logits_sums_match_numpy():
    rng = np.random.default_rng(3)
    rec = recorder()
    en = rec.language("en")
    t = 50
    logits = rng.normal(size=(t, E)).astype(np.float32)
    ids = np.argsort(-logits, axis=1)[:, :K].astype(np.int64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    weights = np.take_along_axis(probs, ids, axis=1).astype(np.float32)
    out = rec.record(2, ids, en, weights=weights, logits=logits)
    assert out.recorded == t
    layer = rec.snapshot()["languages"]["en"]["layers"][2]
    np.testing.assert_allclose(layer["prob_sum"], probs.sum(axis=0), rtol=1e-5)
    assert layer["prob_tokens"] == t
    np.testing.assert_allclose(layer["topk_weight_sum"], weights.sum(), rtol=1e-5)
    # Probabilities given directly: the same sums.
    rec2 = recorder()
    rec2.record(2, ids, rec2.language("en"), probs=probs.astype(np.float32))
    layer2 = rec2.snapshot()["languages"]["en"]["layers"][2]
    np.testing.assert_allclose(layer2["prob_sum"], layer["prob_sum"], rtol=1e-5)


def test_depth_and_layer_number():
    rec = moescope.Recorder("deepseek-v3")
    assert rec.moe_layers[0] == 3 and rec.moe_layers[-1] == 60
    assert rec.depth_of(3) == 0 and rec.depth_of(60) == 57
    assert rec.layer_of(57) == 60
    with pytest.raises(ValueError, match="not an MoE layer"):
        rec.depth_of(2)
    with pytest.raises(ValueError, match="out of range"):
        rec.layer_of(58)
    en = rec.language("en")
    ids = np.zeros((2, 8), dtype=np.int64)
    rec.record(rec.depth_of(60), ids, en)
    layers = rec.snapshot()["languages"]["en"]["layers"]
    assert layers[57]["tokens"] == 2 and layers[0]["tokens"] == 0


def test_model_argument_forms(tmp_path):
    assert moescope.Recorder("olmoe-1b-7b").num_experts == 64
    hf = {
        "model_type": "qwen3_moe",
        "num_hidden_layers": 4,
        "num_experts": 32,
        "num_experts_per_tok": 4,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf))
    for model in (hf, str(path), path, tmp_path):
        rec = moescope.Recorder(model)
        assert (rec.num_experts, rec.top_k, rec.moe_layers) == (32, 4, [0, 1, 2, 3])
    assert moescope.Recorder(SPEC).model == SPEC
    assert moescope.Recorder(SPEC, name="renamed").model["name"] == "renamed"

    class Config:  # a transformers config: anything with to_dict()
        def to_dict(self):
            return hf

    assert moescope.Recorder(Config()).num_experts == 32


def test_sampling_and_allowlist():
    rec = recorder(sampling=0.5, seed=11)
    en = rec.language("en")
    ids = np.zeros((1000, K), dtype=np.int64)
    out = rec.record(0, ids, en)
    assert out.recorded + out.sampled_out == 1000
    assert 350 < out.recorded < 650
    rec = recorder(allowed_languages=["en"])
    assert rec.language("en") >= 2
    assert rec.language("fr") == moescope.OTHER
    assert rec.language("") == moescope.UND
    assert set(rec.languages()) >= {"und", "other", "en"}
    rec = recorder(sampling={"default": 1.0, "languages": {"en": {"target_tokens_per_second": 100}}})
    assert rec.record(0, ids, "en").recorded == 1000  # the target starts at rate 1


def test_record_text_and_tokenization_counts():
    rec = recorder()
    rec.record_text("en", 120, 20)
    rec.record_text("en", 30, 5)
    lang = rec.snapshot()["languages"]["en"]
    assert (lang["chars"], lang["words"]) == (150, 25)


def test_snapshot_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    rec = recorder()
    for tag in ("en", "fr"):
        for depth in range(3):
            rec.record(depth, rng.integers(0, E, size=(40, K)), tag)
    snap = rec.snapshot()
    path = tmp_path / "snap.json"
    rec.write_snapshot(path)
    # The window ends "now": equal up to the end of the window.
    def counts(s):
        assert s["window"]["start_unix_ms"] == snap["window"]["start_unix_ms"]
        assert s["window"]["end_unix_ms"] >= snap["window"]["end_unix_ms"] - 1
        return {k: v for k, v in s.items() if k != "window"}

    assert counts(json.loads(path.read_text())) == counts(snap)
    assert counts(json.loads(rec.snapshot_json())) == counts(snap)
    assert counts(snap)["languages"]["fr"]["layers"][2]["tokens"] == 40
    # Every input form of a snapshot analyzes to the same document.
    docs = [moescope.analyze(x, "en") for x in (snap, path, str(path), json.dumps(snap), rec)]
    for d in docs[1:]:
        assert counts(d) == counts(docs[0])
    assert docs[0]["format"] == "moescope.analysis/v1"
    with_buckets = rec.snapshot(buckets=True)
    assert len(with_buckets["buckets"]) >= 1
    bucket_en = with_buckets["buckets"][-1]["languages"]["en"]["layers"][0]["expert_tokens"]
    assert bucket_en == snap["languages"]["en"]["layers"][0]["expert_tokens"]


def test_sequence_ids_keep_a_sequence_in_one_split_half():
    rng = np.random.default_rng(9)
    ids = rng.integers(0, E, size=(40, K))
    for seq_dtype in (np.uint64, np.int64):
        rec = recorder()
        en = rec.language("en")
        # Two sequences of 20 tokens each: every token of a sequence lands in the same half.
        seq = np.array([11] * 20 + [12] * 20, dtype=seq_dtype)
        rec.record(0, ids, en, sequence_ids=seq)
        rec.record(0, ids, [(en, 20, 11), (en, 20, 12)])
        halves = rec.snapshot()["languages"]["en"]["halves"]
        got = sorted(tuple(h["layers"][0]["expert_tokens"]) for h in halves)
        first = 2 * np.bincount(ids[:20].ravel(), minlength=E)
        second = 2 * np.bincount(ids[20:].ravel(), minlength=E)
        whole_sequences = [
            sorted([tuple(first + second), tuple(np.zeros(E))]),  # both in one half
            sorted([tuple(first), tuple(second)]),  # one in each
        ]
        assert got in whole_sequences
        # Without sequence ids the recorder alternates tokens: an even split.
        rec2 = recorder()
        rec2.record(0, ids, "en")
        halves2 = rec2.snapshot()["languages"]["en"]["halves"]
        assert [h["layers"][0]["tokens"] for h in halves2] == [20, 20]


def test_float16_bfloat16_and_float64_scores_are_converted():
    rng = np.random.default_rng(4)
    t = 30
    logits = rng.normal(size=(t, E)).astype(np.float32)
    ids = np.argsort(-logits, axis=1)[:, :K].astype(np.int64)
    weights = np.full((t, K), 0.25, np.float32)

    def layer_of(**kw):
        rec = recorder()
        assert rec.record(1, ids, "en", **kw).recorded == t
        return rec.snapshot()["languages"]["en"]["layers"][1]

    base = layer_of(weights=weights, logits=logits)
    for dtype in (np.float16, np.float64):
        got = layer_of(weights=weights.astype(dtype), logits=logits.astype(dtype))
        # float16 rounds the logits to 11 bits: the probabilities agree to about 1e-3.
        np.testing.assert_allclose(got["prob_sum"], base["prob_sum"], rtol=2e-3, atol=1e-3)
        assert got["topk_weight_sum"] == base["topk_weight_sum"] == 0.25 * t * K
        assert got["expert_tokens"] == base["expert_tokens"]
    torch = pytest.importorskip("torch")
    got = layer_of(weights=torch.from_numpy(weights).bfloat16(), logits=torch.from_numpy(logits).bfloat16())
    np.testing.assert_allclose(got["prob_sum"], base["prob_sum"], rtol=2e-2, atol=1e-2)
    assert got["topk_weight_sum"] == 0.25 * t * K
