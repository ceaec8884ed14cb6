#!/usr/bin/env python3
"""Writes crates/moescope-tract/models/hf/<family>/: tiny random-weight decoders built from
transformers' own config and model classes, exported to ONNX, with transformers' own routing
as the expected result.

For each family: `model.onnx` (the export), `config.json` (the Hugging Face config, which
`ModelSpec::from_hf_config` reads), and `expected.json`: the fixed mixed-language requests
(byte-level tokens, one request per language) and, per request, per MoE layer and per token,
the expert ids transformers' own router chose (a forward hook on each router module: the
`*.mlp.gate` `TopKRouter` classes return `(logits, top-k weights, top-k ids)`), plus the
first tokens' selection scores (softmax, or sigmoid + `e_score_correction_bias`).

One-time generator: its outputs are committed, CI does not run it. To run it:

    python3 -m venv /path/to/venv          # outside the repository
    /path/to/venv/bin/pip install torch transformers onnx onnxscript onnxruntime
    /path/to/venv/bin/python scripts/make_hf_moe_fixtures.py [family ...]

(checked with torch 2.15, transformers 5.24, onnx 1.23, onnxscript 0.7, onnxruntime 1.32, on
the CPU; PyPI's Linux torch wheel brings the CUDA libraries too, about 4 GB, which are not
used). The export recipe (see docs/EXPORT.md):

- `experts_implementation="batched_mm"`: the default `grouped_mm` does not export, and
  `eager` bakes into the graph only the experts the tracing input happened to hit.
- An explicit 4-D attention mask built from the 2-D padding mask and positions (a wrapper
  module, `PositionMasked` below): transformers' own causal-mask construction uses ops and
  symbolic shapes tract cannot type.
- TorchScript exporter (`dynamo=False`) at opset 17, dynamic token axis; the dynamo exporter
  (torch's default) for one family too, whose node metadata carries the module paths.
"""

import json
import os
import sys
import warnings

import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "moescope-tract", "models", "hf")
SEED = 20261130
OPSET = 17

TEXTS = [
    ("en", "Routing is watched per language."),
    ("he", "הניתוב נמדד לכל שפה."),
    ("ja", "言語ごとに監視する。"),
]

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    tie_word_embeddings=True,
    initializer_range=0.1,
    use_cache=False,
)

# family -> (config class, model class, config overrides, exporter)
FAMILIES = {
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            num_hidden_layers=3,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=32,
            norm_topk_prob=False,
        ),
        "torchscript",
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            num_hidden_layers=4,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            mlp_only_layers=[0, 2],
            norm_topk_prob=True,
        ),
        "torchscript",
    ),
    "qwen3_moe_dynamo": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            num_hidden_layers=4,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            mlp_only_layers=[0, 2],
            norm_topk_prob=True,
        ),
        "dynamo",
    ),
    # transformers' own causal-mask construction (no wrapper): tract types it only with the
    # token count pinned (LoadOptions::fixed_tokens).
    "qwen3_moe_hf_mask": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            num_hidden_layers=4,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            mlp_only_layers=[0, 2],
            norm_topk_prob=True,
        ),
        "torchscript-hf-mask",
    ),
    "olmoe": (
        "OlmoeConfig",
        "OlmoeForCausalLM",
        dict(num_hidden_layers=3, num_experts=8, num_experts_per_tok=2, intermediate_size=16),
        "torchscript",
    ),
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(
            num_hidden_layers=3,
            num_local_experts=8,
            num_experts_per_tok=2,
            intermediate_size=16,
            sliding_window=None,
        ),
        "torchscript",
    ),
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            num_hidden_layers=3,
            n_routed_experts=8,
            num_experts_per_tok=4,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            n_shared_experts=1,
            moe_intermediate_size=16,
            q_lora_rank=None,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=16,
            head_dim=8,
            num_key_value_heads=4,
            rope_interleave=False,
        ),
        "torchscript",
    ),
    "deepseek_v3_grouped": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            num_hidden_layers=3,
            n_routed_experts=16,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            n_shared_experts=1,
            moe_intermediate_size=16,
            q_lora_rank=None,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=16,
            head_dim=8,
            num_key_value_heads=4,
            rope_interleave=False,
        ),
        "torchscript",
    ),
    "glm4_moe": (
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        dict(
            num_hidden_layers=3,
            n_routed_experts=16,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            n_shared_experts=1,
            moe_intermediate_size=16,
            partial_rotary_factor=0.5,
        ),
        "torchscript",
    ),
}

# Other MoE families of transformers 5, with generic small settings. Tried with these settings
# and left out (November 2026): ernie4_5_moe (the TorchScript export fails with an IndexError),
# hunyuan_v1_moe (its gate has no `weight` to redraw), dots1, flex_olmo and lfm2_moe (their
# configs need more settings than these), deepseek_v2 (`aten::polar` has no ONNX export at
# opset 17), cohere2_moe (the export is invalid: onnxruntime rejects it too).
GENERIC = dict(
    num_hidden_layers=3,
    num_experts=8,
    num_local_experts=8,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
    intermediate_size=16,
)
for _family, _cfg, _cls, _extra in [
    ("gpt_oss", "GptOssConfig", "GptOssForCausalLM", dict(sliding_window=None, layer_types=["full_attention"] * 3)),
    ("granitemoe", "GraniteMoeConfig", "GraniteMoeForCausalLM", dict()),
    ("phimoe", "PhimoeConfig", "PhimoeForCausalLM", dict(sliding_window=None)),
    ("exaone_moe", "ExaoneMoeConfig", "ExaoneMoeForCausalLM", dict()),
    ("minimax", "MiniMaxConfig", "MiniMaxForCausalLM", dict()),
]:
    FAMILIES[_family] = (_cfg, _cls, {**GENERIC, **_extra}, "torchscript")


class OwnMask(torch.nn.Module):
    """input_ids [B, T] + attention_mask [B, T] -> logits, transformers building the mask."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class PositionMasked(torch.nn.Module):
    """input_ids [B, T] + attention_mask [B, T] -> logits, with the 4-D causal mask and the
    positions built from the 2-D mask by element-wise ops (no arange over a symbolic length)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        pos = (torch.cumsum(attention_mask, dim=-1) - 1).clamp(min=0)
        allowed = (pos.unsqueeze(-1) >= pos.unsqueeze(-2)) & attention_mask.bool().unsqueeze(-2)
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min).unsqueeze(1)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)
        return out.logits


def routers(model):
    """(layer number, name, module) of every router module (`model.layers.N.*.gate` or
    `*.router` of a router class), in depth order."""
    found = []
    for name, m in model.named_modules():
        parts = name.split(".")
        kind = type(m).__name__
        if (
            parts[-1] in ("gate", "router")
            and "layers" in parts
            and any(w in kind for w in ("Router", "Gate", "Gating"))
        ):
            found.append((int(parts[parts.index("layers") + 1]), name, m))
    return sorted(found, key=lambda f: f[0])


def selection_scores(module, logits):
    if hasattr(module, "e_score_correction_bias"):
        return torch.sigmoid(logits.float()) + module.e_score_correction_bias
    return torch.softmax(logits.float(), dim=-1)


def build(family, seed):
    cfg_cls, model_cls, overrides, exporter = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_cls)(**{**COMMON, **overrides})
    config._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(config).eval()
    model.set_experts_implementation("batched_mm")
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, _, m in routers(model):
            # Wide router margins, so float differences between runtimes cannot flip a choice.
            # (narrower for sigmoid scoring, which saturates)
            sigmoid = hasattr(m, "e_score_correction_bias")
            m.weight.normal_(0.0, 0.15 if sigmoid else 1.0, generator=gen)
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.normal_(0.0, 0.05, generator=gen)
    return config, model, exporter


def run_transformers(model, tokens):
    """Per MoE layer, per token: transformers' top-k ids; and the first tokens' scores."""
    rs = routers(model)
    got = {}
    hooks = []
    for layer, _, m in rs:
        def hook(mod, args, out, layer=layer):
            logits = out[0]
            ids = [t for t in out if not t.is_floating_point()][-1]
            scores = selection_scores(mod, logits)
            # Ranking margins in logit space for a softmax (the same order, no squashing).
            ranked = scores if hasattr(mod, "e_score_correction_bias") else logits.float()
            got[layer] = (
                ids.detach().clone(),
                scores.detach().clone(),
                ranked.detach().clone(),
                logits.detach().float().clone(),
            )
        hooks.append(m.register_forward_hook(hook))
    ids = torch.tensor([tokens])
    with torch.no_grad():
        PositionMasked(model)(ids, torch.ones_like(ids))
    for h in hooks:
        h.remove()
    layers = [layer for layer, _, _ in rs]
    routing = [[sorted(int(x) for x in row) for row in got[layer][0]] for layer in layers]
    scores = [got[layer][1][:3].tolist() for layer in layers]
    first_logits = [got[layer][3][:3].tolist() for layer in layers]
    margins = []
    for layer in layers:
        s = got[layer][2]
        k = got[layer][0].shape[-1]
        top = torch.topk(s, k + 1, dim=-1).values
        margins.append(float((top[:, k - 1] - top[:, k]).min()))
    return layers, routing, scores, first_logits, margins


def export(model, exporter, path):
    wrapper = (OwnMask if exporter.endswith("hf-mask") else PositionMasked)(model).eval()
    ids = torch.tensor([list(TEXTS[0][1].encode())])
    mask = torch.ones_like(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter.startswith("torchscript"):
            torch.onnx.export(
                wrapper,
                (ids, mask),
                path,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {1: "T"},
                    "attention_mask": {1: "T"},
                    "logits": {1: "T"},
                },
            )
        else:
            t = torch.export.Dim("T", min=2, max=256)
            prog = torch.onnx.export(
                wrapper,
                (ids, mask),
                dynamo=True,
                opset_version=18,
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes=({1: t}, {1: t}),
            )
            prog.save(path, external_data=False)


def check_onnxruntime(path, tokens, want_logits):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(path)
    ids = np.array([tokens], dtype=np.int64)
    out = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    return float(np.abs(out - want_logits).max())


# Smallest gap, in ranking space, between the k-th and the (k+1)-th expert of any token: a
# seed is accepted only when float differences between runtimes cannot flip a choice.
MIN_MARGIN = 3e-4


def route(model):
    requests = []
    layers = None
    min_margin = float("inf")
    for lang, text in TEXTS:
        tokens = list(text.encode())
        layers, routing, scores, logits, margins = run_transformers(model, tokens)
        min_margin = min(min_margin, *margins)
        requests.append(
            {
                "lang": lang,
                "text": text,
                "tokens": tokens,
                "routing": routing,
                "scores": scores,
                "logits": logits,
            }
        )
    return layers, requests, min_margin


def main(families):
    for family in families:
        try:
            for attempt in range(40):
                seed = SEED + 7919 * attempt
                config, model, exporter = build(family, seed)
                layers, requests, min_margin = route(model)
                if min_margin >= MIN_MARGIN:
                    break
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{family}: not built: {type(e).__name__}: {e}")
            continue
        folder = os.path.join(OUT, family)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "model.onnx")
        try:
            export(model, exporter, path)
        except Exception as e:  # noqa: BLE001
            print(f"{family}: export failed: {type(e).__name__}: {str(e)[:300]}")
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            continue
        ort_diff = 0.0
        for req in requests:
            with torch.no_grad():
                ids = torch.tensor([req["tokens"]])
                logits = PositionMasked(model)(ids, torch.ones_like(ids)).numpy()
            try:
                d = check_onnxruntime(path, req["tokens"], logits)
            except Exception as e:  # noqa: BLE001
                print(f"{family}: onnxruntime cannot run the export: {str(e)[:200]}")
                d = float("nan")
            if d is not None:
                ort_diff = max(ort_diff, d)
        config.save_pretrained(folder)
        cfg_path = os.path.join(folder, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=1, sort_keys=True)
            f.write("\n")
        expected = {
            "family": family,
            "model_type": config.model_type,
            "exporter": exporter,
            "seed": seed,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "moe_layers": layers,
            "top_k": len(requests[0]["routing"][0][0]),
            "min_selection_margin": min_margin,
            "onnxruntime_max_logit_diff": ort_diff,
            "requests": requests,
        }
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
        size = os.path.getsize(path)
        print(
            f"{family}: {size / 1e6:.2f} MB, seed {seed}, MoE layers {layers}, min margin "
            f"{min_margin:.4f}, onnxruntime max |Δlogit| {ort_diff:.2e}"
        )


def tiny_graphs():
    """tests/data/two_routers.onnx: input_ids [1, T] -> embedding -> two routers (MatMul,
    Softmax, TopK) named without layer numbers; float_input.onnx: the same on a float input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    data = os.path.join(ROOT, "crates", "moescope-tract", "tests", "data")

    def graph(float_input):
        inits = [
            numpy_helper.from_array(rng.normal(size=(256, 8)).astype(np.float32), "embed"),
            numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w_first"),
            numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w_second"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "k"),
        ]
        nodes = []
        if float_input:
            inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])
            h = "x"
        else:
            inp = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "T"])
            nodes.append(helper.make_node("Gather", ["embed", "input_ids"], ["h"], name="embedding"))
            h = "h"
        outs = []
        for r in ["first", "second"]:
            nodes += [
                helper.make_node("MatMul", [h, f"w_{r}"], [f"{r}_logits"], name=f"{r}_gate"),
                helper.make_node("Softmax", [f"{r}_logits"], [f"{r}_probs"], axis=-1, name=f"{r}_softmax"),
                helper.make_node("TopK", [f"{r}_probs", "k"], [f"{r}_w", f"{r}_ids"], name=f"{r}_topk"),
            ]
            outs.append(helper.make_tensor_value_info(f"{r}_w", TensorProto.FLOAT, None))
        g = helper.make_graph(nodes, "two_routers", [inp], outs, inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        return m

    onnx.save(graph(False), os.path.join(data, "two_routers.onnx"))
    onnx.save(graph(True), os.path.join(data, "float_input.onnx"))
    print("tests/data/two_routers.onnx, float_input.onnx")


if __name__ == "__main__":
    if sys.argv[1:] == ["tiny"]:
        tiny_graphs()
    else:
        main(sys.argv[1:] or list(FAMILIES))
