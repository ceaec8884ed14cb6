"""NumPy arrays and PyTorch CPU tensors are read in place: the recorder reads the very memory
the caller passed (same address), for every id dtype a router emits."""

import numpy as np
import pytest

import moescope
from moescope._moescope import _data_address

E, K = 16, 4
SPEC = {"name": "tiny", "num_experts": E, "top_k": K, "layers": [0, 1]}


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint8])
def test_numpy_arrays_are_not_copied(dtype):
    ids = np.arange(64 * K).reshape(64, K).astype(dtype) % E
    assert _data_address(ids) == ids.ctypes.data
    rows = ids[8:40]  # a contiguous slice of rows: a view, still read in place
    assert _data_address(rows) == ids.ctypes.data + 8 * K * ids.itemsize
    weights = np.ones((64, K), np.float32)
    assert _data_address(weights) == weights.ctypes.data


def test_lists_are_converted_and_counted_the_same():
    ids = [[0, 1, 2, 3], [3, 2, 1, 0]]
    rec = moescope.Recorder(SPEC)
    rec.record(0, ids, "en")
    assert rec.snapshot()["languages"]["en"]["layers"][0]["expert_tokens"][:4] == [2, 2, 2, 2]


def test_torch_cpu_tensors_are_not_copied():
    torch = pytest.importorskip("torch")
    for dtype in (torch.int64, torch.int32):
        t = torch.randint(0, E, (64, K), dtype=dtype)
        assert _data_address(t) == t.data_ptr()
        assert _data_address(t[8:]) == t.data_ptr() + 8 * K * t.element_size()
    # Router outputs of a model in training mode carry gradients: read in place all the same.
    logits = torch.randn(64, E, requires_grad=True)
    assert _data_address(logits) == logits.data_ptr()
    # A transposed tensor is not row-major: refused, not silently copied.
    with pytest.raises(ValueError, match="contiguous"):
        moescope.Recorder(SPEC).record(0, torch.zeros(K, 8, dtype=torch.int64).T, "en")


def test_torch_topk_output_records_like_numpy():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    logits = torch.randn(300, E)
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), K, dim=-1)
    langs = torch.randint(0, 2, (300,), dtype=torch.int64)
    a, b = moescope.Recorder(SPEC), moescope.Recorder(SPEC)
    ids_of = [a.language("en"), a.language("fr")]
    assert [b.language("en"), b.language("fr")] == ids_of
    lang_ids = torch.tensor(ids_of)[langs]
    out = a.record(1, ids, lang_ids, weights=weights, logits=logits)
    assert out.recorded == 300
    b.record(1, ids.numpy(), lang_ids.numpy(), weights=weights.numpy(), logits=logits.numpy())
    sa, sb = a.snapshot(), b.snapshot()
    assert sa["languages"] == sb["languages"]
    en = np.array(sa["languages"]["en"]["layers"][1]["expert_tokens"])
    expected = torch.bincount(ids[langs == 0].flatten(), minlength=E).numpy()
    np.testing.assert_array_equal(en, expected)
