"""Bad input raises a clear exception and leaves every count unchanged; the recorder's own
refusals are counted as drops (as in Rust); bad values inside a batch are dropped per token,
or refused whole by a strict recorder."""

import numpy as np
import pytest

import moescope

E, K = 16, 4
SPEC = {"name": "tiny", "num_experts": E, "top_k": K, "layers": [0, 1, 2]}


def counts(rec):
    snap = rec.snapshot()
    return {
        tag: [layer["expert_tokens"] + [layer["tokens"]] for layer in lang["layers"]]
        for tag, lang in snap["languages"].items()
    }


@pytest.fixture
def rec():
    r = moescope.Recorder(SPEC, window_seconds=3600, buckets=1)
    en = r.language("en")
    r.record(0, np.arange(8 * K).reshape(8, K) % E, en)
    return r


IDS = np.arange(6 * K, dtype=np.int64).reshape(6, K) % E


@pytest.mark.parametrize(
    "call, exc, match",
    [
        # Refused by the binding, before the recorder sees the batch: nothing is counted.
        (lambda r: r.record(0, IDS.astype(np.float32), "en"), TypeError, "integer dtype"),
        (lambda r: r.record(0, IDS.reshape(4, 6), "en"), ValueError, "top_k = 4"),
        (lambda r: r.record(0, np.int64(3), "en"), ValueError, "scalar"),
        (lambda r: r.record(-1, IDS, "en"), ValueError, "negative"),
        (lambda r: r.record(0, IDS, 70000), ValueError, "out of range"),
        (lambda r: r.record(0, IDS, np.full(6, -1)), ValueError, r"langs\[0\]"),
        (lambda r: r.record(0, IDS, np.zeros(6, np.float32)), TypeError, "dtype"),
        (lambda r: r.record(0, IDS, [("en", 3), ("fr",)]), TypeError, "segment"),
        (lambda r: r.record(0, IDS, 2.5), TypeError, "dtype float64"),
        (lambda r: r.record(0, np.asfortranarray(IDS), "en"), ValueError, "C-contiguous"),
        (lambda r: r.record(0, IDS[::2], "en"), ValueError, "C-contiguous"),
        (
            lambda r: r.record(0, IDS, "en", weights=np.ones((6, K), np.int32)),
            TypeError,
            "weights: expected a float array",
        ),
        (
            lambda r: r.record(0, IDS, "en", logits=np.ones((6, E), np.complex64)),
            TypeError,
            r"astype\(numpy.float32\)",
        ),
        (
            lambda r: r.record(0, IDS, "en", probs=np.ones((6, E), np.float64).T),
            ValueError,
            "C-contiguous",
        ),
        (
            lambda r: r.record(
                0, IDS, "en", logits=np.ones((6, E), np.float32), probs=np.ones((6, E), np.float32)
            ),
            ValueError,
            "not both",
        ),
        (
            lambda r: r.record(0, IDS, "en", sequence_ids=np.zeros(6, np.float32)),
            TypeError,
            "sequence_ids",
        ),
        (lambda r: r.record(0, "not an array", "en"), TypeError, "integer dtype"),
    ],
)
def test_rejected_before_recording(rec, call, exc, match):
    before, drops = counts(rec), rec.dropped()
    with pytest.raises(exc, match=match):
        call(rec)
    assert counts(rec) == before
    assert rec.dropped() == drops


@pytest.mark.parametrize(
    "call, reason, tokens, match",
    [
        (lambda r: r.record(3, IDS, "en"), "layer_out_of_range", 6, "depth 3 is out of range"),
        (lambda r: r.record(0, IDS.ravel()[:-1], "en"), "shape_mismatch", 5, "expert_ids"),
        (lambda r: r.record(0, IDS, np.zeros(5, np.uint16)), "shape_mismatch", 6, "languages"),
        (lambda r: r.record(0, IDS, [("en", 4), ("en", 1)]), "shape_mismatch", 6, "languages"),
        (
            lambda r: r.record(0, IDS, "en", weights=np.ones(5 * K, np.float32)),
            "shape_mismatch",
            6,
            "topk_weights",
        ),
        (
            lambda r: r.record(0, IDS, "en", logits=np.ones((6, E - 1), np.float32)),
            "shape_mismatch",
            6,
            "router_scores",
        ),
    ],
)
def test_refused_by_the_recorder_and_counted_as_drops(rec, call, reason, tokens, match):
    before, drops = counts(rec), rec.dropped()
    with pytest.raises(moescope.RecordError, match=match) as err:
        call(rec)
    assert isinstance(err.value, ValueError) and isinstance(err.value, moescope.MoescopeError)
    assert counts(rec) == before
    after = rec.dropped()
    assert after[reason] == drops[reason] + tokens
    assert rec.dropped(reason) == after[reason]
    assert {k: v for k, v in after.items() if k != reason} == {
        k: v for k, v in drops.items() if k != reason
    }


def test_bad_values_drop_their_tokens_only(rec):
    ids = IDS.copy()
    ids[2, 1] = E  # out of range
    ids[4, 0] = -3  # negative
    before = np.array(counts(rec)["en"][1][:E])
    out = rec.record(1, ids, "en")
    assert (out.recorded, out.dropped) == (4, 2)
    assert rec.dropped("expert_out_of_range") == 2
    good = ids[[0, 1, 3, 5]]
    np.testing.assert_array_equal(
        np.array(counts(rec)["en"][1][:E]) - before, np.bincount(good.ravel(), minlength=E)
    )
    logits = np.zeros((6, E), np.float32)
    logits[5, 3] = np.nan
    out = rec.record(2, IDS, "en", logits=logits)
    assert (out.recorded, out.dropped) == (5, 1)
    assert rec.dropped("non_finite") == 1
    out = rec.record(2, IDS, np.array([rec.language("en")] * 5 + [900], np.uint16))
    assert (out.recorded, out.dropped) == (5, 1)
    assert rec.dropped("unknown_language") == 1


@pytest.mark.parametrize(
    "kwargs, ids_patch, match",
    [
        ({}, (3, 2, E + 5), "expert id 21 \\(token 3, slot 2\\)"),
        ({}, (0, 0, -1), "expert id -1"),
        ({"weights": "nan"}, None, "weights: NaN"),
        ({"logits": "inf"}, None, "logits: inf"),
        ({"probs": "neg"}, None, "probs: -1"),
        ({"probs": "zero"}, None, "sums to 0"),
        ({"langs": 900}, None, "never issued"),
    ],
)
def test_strict_recorder_raises_and_records_nothing(kwargs, ids_patch, match):
    rec = moescope.Recorder(SPEC, window_seconds=3600, buckets=1, strict=True)
    assert rec.strict
    en = rec.language("en")
    rec.record(0, IDS, en)
    before, drops = counts(rec), rec.dropped()
    ids = IDS.copy()
    if ids_patch:
        ids[ids_patch[0], ids_patch[1]] = ids_patch[2]
    extra = {}
    if kwargs.get("weights") == "nan":
        w = np.ones((6, K), np.float32)
        w[1, 1] = np.nan
        extra["weights"] = w
    if kwargs.get("logits") == "inf":
        lg = np.zeros((6, E), np.float32)
        lg[2, 7] = np.inf
        extra["logits"] = lg
    if kwargs.get("probs") in ("neg", "zero"):
        p = np.full((6, E), 1.0 / E, np.float32)
        if kwargs["probs"] == "neg":
            p[0, 0] = -1
        else:
            p[4] = 0
        extra["probs"] = p
    langs = kwargs.get("langs", en)
    with pytest.raises(moescope.RecordError, match=match):
        rec.record(0, ids, langs, **extra)
    assert counts(rec) == before
    assert rec.dropped() == drops


def test_cuda_or_other_device_tensors_are_refused_with_what_to_do():
    torch = pytest.importorskip("torch")
    rec = moescope.Recorder(SPEC)
    # The meta device stands in for CUDA (no GPU needed): the same check, the same message.
    t = torch.zeros((6, K), dtype=torch.int64, device="meta")
    with pytest.raises(TypeError, match=r"on device meta.*topk_ids\.cpu\(\).*moescope-cuda"):
        rec.record(0, t, "en")
    w = torch.zeros((6, K), dtype=torch.float32, device="meta")
    with pytest.raises(TypeError, match=r"weights\.cpu\(\)"):
        rec.record(0, torch.zeros((6, K), dtype=torch.int64), "en", weights=w)
    assert rec.snapshot()["languages"] == {} or all(
        layer["tokens"] == 0 for lang in rec.snapshot()["languages"].values()
        for layer in lang["layers"]
    )


def test_config_errors_name_the_setting():
    with pytest.raises(moescope.ConfigError, match="unknown-model.*neither a preset"):
        moescope.Recorder("unknown-model")
    with pytest.raises(moescope.ConfigError, match="top_k"):
        moescope.Recorder({"name": "x", "num_experts": 4, "top_k": 0, "layers": [0]})
    with pytest.raises(moescope.ConfigError, match="whole number of milliseconds"):
        moescope.Recorder(SPEC, window_seconds=1, buckets=3)
    with pytest.raises(moescope.ConfigError, match="max_languages"):
        moescope.Recorder(SPEC, max_languages=0)
    with pytest.raises(moescope.ConfigError, match="sampling"):
        moescope.Recorder(SPEC, sampling=2.0)
    with pytest.raises(moescope.ConfigError, match="same setting"):
        moescope.Recorder(SPEC, languages=["en"], allowed_languages=["en"])
    with pytest.raises(TypeError, match="preset name"):
        moescope.Recorder(42)


def test_analysis_errors():
    rec = moescope.Recorder(SPEC)
    rec.record(0, IDS, "fr")
    with pytest.raises(moescope.AnalysisError, match="en"):
        moescope.analyze(rec.snapshot(), "en")
    with pytest.raises(moescope.SnapshotError, match="cannot read"):
        moescope.analyze("/nonexistent/snap.json")
    with pytest.raises(moescope.SnapshotError):
        moescope.analyze({"format": "other"})
    with pytest.raises(moescope.SnapshotError):
        moescope.analyze("{ not json")
