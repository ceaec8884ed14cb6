#!/usr/bin/env python3
"""PyTorch baselines for moescope's CUDA kernels, on a Qwen3-30B-A3B-shaped MoE layer
(E = 128 experts, top-8, hidden 2048, expert intermediate 768), T = 1, 64, 4096, 16384.

Per layer, in microseconds (CUDA events around back-to-back iterations, median of 7 runs):
  (i)   softmax of the router logits + copy of the probabilities to the host (what offline
        analyses of routing do: `.cpu()` every layer, which synchronizes)
  (ii)  SGLang-style counting: torch.topk on the logits, then scatter_add_ of ones into a
        [E] counter (and, separately, torch.bincount) -- global counts only, no languages
  (iii) the layer's own expert computation: a grouped GEMM proxy with torch.bmm
        (gate+up projection 2048 -> 2 x 768, SiLU-and-multiply, down projection 768 -> 2048)
        over the active experts, bf16

With --moescope FILE (written by the gpu bench binary with --json) it prints the comparison
table: moescope's kernels as a share of the layer's expert computation, and against (ii).
"""
import argparse
import json
import math
import os
import statistics

import torch

E, K, HIDDEN, INTER = 128, 8, 2048, 768
TOKENS = [1, 64, 4096, 16384]
RUNS, ITERS = 7, 100


def cuda_time_us(fn, iters=ITERS, runs=RUNS):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(out)


def baselines(t, dev):
    g = torch.Generator(device=dev).manual_seed(t)
    logits = torch.randn(t, E, device=dev, dtype=torch.bfloat16, generator=g) * 2
    counts = torch.zeros(E, device=dev, dtype=torch.int64)
    ones = torch.ones(t * K, device=dev, dtype=torch.int64)
    host = torch.empty(t, E, dtype=torch.float32, pin_memory=True)

    def softmax_copy():
        p = torch.softmax(logits.float(), dim=-1)
        host.copy_(p)  # a synchronous copy: the host waits for the layer

    def topk_scatter():
        ids = torch.topk(logits, K, dim=-1).indices
        counts.scatter_add_(0, ids.reshape(-1), ones)

    def topk_bincount():
        ids = torch.topk(logits, K, dim=-1).indices
        counts.add_(torch.bincount(ids.reshape(-1), minlength=E))

    ids = torch.topk(logits, K, dim=-1).indices

    def scatter_only():
        counts.scatter_add_(0, ids.reshape(-1), ones)

    # Grouped-GEMM proxy: rows routed per active expert.
    active = min(E, t * K)
    rows = math.ceil(t * K / active)
    x = torch.randn(active, rows, HIDDEN, device=dev, dtype=torch.bfloat16)
    w1 = torch.randn(active, HIDDEN, 2 * INTER, device=dev, dtype=torch.bfloat16) * 0.02
    w2 = torch.randn(active, INTER, HIDDEN, device=dev, dtype=torch.bfloat16) * 0.02

    def experts():
        h = torch.bmm(x, w1)
        a = torch.nn.functional.silu(h[..., :INTER]) * h[..., INTER:]
        torch.bmm(a, w2)

    return {
        "softmax_copy_us": cuda_time_us(softmax_copy, iters=20),
        "topk_scatter_add_us": cuda_time_us(topk_scatter),
        "topk_bincount_us": cuda_time_us(topk_bincount),
        "scatter_add_only_us": cuda_time_us(scatter_only),
        "experts_bmm_us": cuda_time_us(experts),
        "active_experts": active,
        "rows_per_expert": rows,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moescope", help="JSON written by the gpu bench (--json)")
    ap.add_argument("--out", help="write the table (markdown) here too")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device (baselines.py)")
        return
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    base = {t: baselines(t, dev) for t in TOKENS}
    ours = {}
    if args.moescope and not os.path.exists(args.moescope):
        print(f"note: {args.moescope} is missing (the moescope benchmark did not run): baselines only")
    elif args.moescope:
        with open(args.moescope) as f:
            data = json.load(f)
        for r in data["rows"]:
            ours[(r["tokens"], r["kernel"])] = r["device_us"]
    lines = [
        "| T | moescope top-k ids (us) | moescope logits (us) | (i) softmax + copy to host (us) "
        "| (ii) topk + scatter_add_ (us) | (ii) topk + bincount (us) | scatter_add_ alone (us) "
        "| experts, bmm proxy (us) | top-k kernel / experts | logits kernel / experts "
        "| (ii) / logits kernel | scatter_add_ / top-k kernel |",
        "|" + "---|" * 13,
    ]
    for t in TOKENS:
        b = base[t]
        topk = ours.get((t, "topk_i32_f32_weights"), float("nan"))
        lg = ours.get((t, "logits_bf16"), float("nan"))
        ex = b["experts_bmm_us"]
        lines.append(
            f"| {t} | {topk:.2f} | {lg:.2f} | {b['softmax_copy_us']:.1f} | {b['topk_scatter_add_us']:.2f} "
            f"| {b['topk_bincount_us']:.2f} | {b['scatter_add_only_us']:.2f} | {ex:.1f} "
            f"| {100 * topk / ex:.2f} % | {100 * lg / ex:.2f} % "
            f"| {b['topk_scatter_add_us'] / lg:.2f}x | {b['scatter_add_only_us'] / topk:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
            f.write("\nraw: " + json.dumps({str(k): v for k, v in base.items()}) + "\n")


if __name__ == "__main__":
    main()
