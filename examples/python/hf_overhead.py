#!/usr/bin/env python3
"""What moescope.hf.attach costs a transformers MoE forward pass on the CPU.

Times the same forward pass (a random-weight Qwen3-MoE decoder, a padded mixed-language batch)
without hooks, with ``attach`` recording ids and gate weights, and with the router logits too
(the default), interleaving the three in every round so that machine noise hits them alike;
prints the median of each and the ratios to the unhooked median.

    python examples/python/hf_overhead.py                 # 8 layers, 64 experts, top-8
    python examples/python/hf_overhead.py --quick         # smaller model, fewer rounds
"""

from __future__ import annotations

import argparse
import statistics
import time

import moescope
import moescope.hf
import torch
import transformers


def build(layers: int, experts: int, top_k: int, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen3MoeConfig(
        vocab_size=1024,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        moe_intermediate_size=hidden // 2,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=hidden // 8,
        num_experts=experts,
        num_experts_per_tok=top_k,
        use_cache=False,
    )
    return transformers.Qwen3MoeForCausalLM(config).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        layers, experts, top_k, hidden, batch, seq, rounds = 4, 32, 4, 128, 4, 64, 7
    else:
        layers, experts, top_k, hidden, batch, seq, rounds = 8, 64, 8, 256, 8, 128, 15
    model = build(layers, experts, top_k, hidden)
    ids = torch.randint(0, 1024, (batch, seq))
    mask = torch.ones_like(ids)
    for row in range(0, batch, 2):  # every other row padded to 3/4 of its length
        mask[row, seq * 3 // 4 :] = 0
    tags = ["en", "he", "ja", "en"] * (batch // 4 + 1)
    recorder = moescope.hf.recorder_for(model)

    def forward() -> float:
        start = time.perf_counter()
        with moescope.hf.tag(tags[:batch]), torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"unhooked": [], "ids+weights": [], "ids+weights+logits": []}
    forward()  # warm-up
    for _ in range(rounds):
        times["unhooked"].append(forward())
        with moescope.hf.attach(model, recorder, scores=False):
            times["ids+weights"].append(forward())
        with moescope.hf.attach(model, recorder):
            times["ids+weights+logits"].append(forward())
    base = statistics.median(times["unhooked"])
    tokens = int(mask.sum())
    print(
        f"Qwen3-MoE {layers} layers, {experts} experts, top-{top_k}, hidden {hidden}; batch {batch} x {seq} "
        f"({tokens} content tokens), {args.threads} thread(s), {rounds} rounds, medians:"
    )
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:<20} {m * 1e3:8.2f} ms  ({m / base:.3f}x unhooked)")

    # One router alone, called directly with a captured input (tokens of the whole batch), with
    # and without the hook: the difference is what recording one MoE layer's step costs.
    router = moescope.hf.routers(model)[0]
    captured = []
    h = router.module.register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach().clone()))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    h.remove()
    hidden = captured[0]

    def router_calls(n: int) -> float:
        start = time.perf_counter()
        with moescope.hf.tag("en"), torch.no_grad():
            for _ in range(n):
                router.module(hidden)
        return (time.perf_counter() - start) / n

    per: dict[str, list[float]] = {"router": [], "router+ids+weights": [], "router+ids+weights+logits": []}
    for _ in range(rounds):
        per["router"].append(router_calls(50))
        with moescope.hf.attach(model, recorder, scores=False):
            per["router+ids+weights"].append(router_calls(50))
        with moescope.hf.attach(model, recorder):
            per["router+ids+weights+logits"].append(router_calls(50))
    r0 = statistics.median(per["router"])
    print(f"one router call on {hidden.shape[0]} tokens ({experts} experts), medians:")
    for name, ts in per.items():
        m = statistics.median(ts)
        print(f"  {name:<26} {m * 1e6:8.1f} us  (+{(m - r0) * 1e6:.1f} us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
