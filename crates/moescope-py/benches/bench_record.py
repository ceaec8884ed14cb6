"""What one `Recorder.record` call costs from Python, against what a Python user would write
instead: per-language expert counts with NumPy (`np.bincount` of lang * E + id, `np.add.at`)
and PyTorch (`torch.bincount`), in the same run.

    python crates/moescope-py/benches/bench_record.py            # the table of benches/README.md
    python crates/moescope-py/benches/bench_record.py --quick    # a smoke run (CI)

One call = one MoE layer of one step: T tokens' top-k ids (int64, as `torch.topk` returns them)
and a per-token language array (three languages), counted into per-language × expert counts.
Every method is checked to count the same before it is timed. Medians of `--repeats` timed
batches (each about 20 ms of calls; the methods take turns); ratio = the best baseline's median / moescope's.
"""

import argparse
import statistics
import time

import numpy as np

import moescope

E, K, LANGS = 128, 8, 3


def calls_per_batch(fn, target_s):
    fn()
    n = 1
    while True:  # calls per timed batch: about target_s
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= target_s or n >= 1 << 22:
            return n
        n *= 2


def medians_ns(fns, repeats, target_s):
    """Median ns per call of each function. The methods take turns (one timed batch each per
    round), so a load change on the machine touches all of them alike."""
    sizes = {name: calls_per_batch(fn, target_s) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = sizes[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n * 1e9)
    return {name: statistics.median(v) for name, v in samples.items()}


def methods(t, rng):
    ids = rng.integers(0, E, size=(t, K), dtype=np.int64)
    lang_index = rng.integers(0, LANGS, size=t)
    rec = moescope.Recorder("qwen3-30b-a3b", window_seconds=3600, buckets=1)
    lang_ids = np.array([rec.language(x) for x in ("en", "he", "zh")], dtype=np.uint16)
    langs = lang_ids[lang_index]
    out = {}
    out["moescope (numpy)"] = lambda: rec.record(0, ids, langs)

    acc = np.zeros(LANGS * E, dtype=np.int64)
    lang_col = lang_index[:, None] * E

    def np_bincount():
        nonlocal acc
        acc += np.bincount((lang_col + ids).ravel(), minlength=LANGS * E)

    out["np.bincount"] = np_bincount
    acc2 = np.zeros((LANGS, E), dtype=np.int64)
    rows = np.broadcast_to(lang_index[:, None], ids.shape)
    out["np.add.at"] = lambda: np.add.at(acc2, (rows, ids), 1)
    checks = [(rec, ids, lang_index, acc, acc2)]
    try:
        import torch
    except ImportError:
        return out, checks, None
    torch.set_num_threads(1)
    ids_t = torch.from_numpy(ids)
    langs_t = torch.from_numpy(langs.astype(np.int64))
    rec_t = moescope.Recorder("qwen3-30b-a3b", window_seconds=3600, buckets=1)
    for x in ("en", "he", "zh"):
        rec_t.language(x)
    out["moescope (torch)"] = lambda: rec_t.record(0, ids_t, langs_t)
    acc_t = torch.zeros(LANGS * E, dtype=torch.int64)
    lang_col_t = torch.from_numpy(lang_col)

    def torch_bincount():
        acc_t.add_(torch.bincount((lang_col_t + ids_t).flatten(), minlength=LANGS * E))

    out["torch.bincount"] = torch_bincount
    return out, checks, (rec_t, acc_t)


def check_equal(rec, ids, lang_index, calls):
    """moescope's window equals bincount per language, for `calls` identical calls."""
    snap = rec.snapshot()
    for li, tag in enumerate(("en", "he", "zh")):
        lang = snap["languages"].get(tag)
        got = np.array(lang["layers"][0]["expert_tokens"]) if lang else np.zeros(E)
        want = np.bincount(ids[lang_index == li].ravel(), minlength=E) * calls
        assert np.array_equal(got, want), tag


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tokens", type=int, nargs="*", default=[1, 64, 4096])
    args = ap.parse_args()
    repeats, target = (3, 0.002) if args.quick else (args.repeats, 0.02)
    rng = np.random.default_rng(0)
    print(f"E = {E}, k = {K}, {LANGS} languages (per-token array), ids int64; median ns per call")
    print(f"{'T':>5} {'method':<18} {'ns/call':>12} {'ns/slot':>9} {'best baseline / this':>21}")
    for t in args.tokens:
        fns, checks, _ = methods(t, rng)
        # Correctness first: one call of each, same counts.
        rec, ids, lang_index, _, _ = checks[0]
        fns["moescope (numpy)"]()
        check_equal(rec, ids, lang_index, 1)
        medians = medians_ns(fns, repeats, target)
        best = min(v for k, v in medians.items() if not k.startswith("moescope"))
        for name, ns in medians.items():
            ratio = f"{best / ns:.2f}x" if name.startswith("moescope") else ""
            print(f"{t:>5} {name:<18} {ns:>12.0f} {ns / (t * K):>9.2f} {ratio:>21}")


if __name__ == "__main__":
    main()
