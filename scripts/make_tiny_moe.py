#!/usr/bin/env python3
"""Writes crates/moescope-tract/models/tiny-qwen3-moe/: a tiny Qwen3-MoE decoder as ONNX.

One-time generator (the .onnx, config.json and reference.json it writes are committed, so
tests and `moescope demo` need no Python). Needs `pip install onnx numpy` only: PyPI's Linux
torch wheel pulls several GB of CUDA packages, so instead of exporting
`transformers.Qwen3MoeForCausalLM` with torch.onnx, this script writes the same computation
directly with the ONNX graph builder, op by op, following transformers' modeling_qwen3_moe.py:

  embed_tokens -> L x [ x += o_proj(attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v))  (input_layernorm first)
                        x += Qwen3MoeSparseMoeBlock(post_attention_layernorm(x)) ]
               -> norm -> lm_head

  Qwen3MoeSparseMoeBlock: router_logits = gate(h)              (Linear, no bias: E logits)
                          p = softmax(router_logits)           (float32)
                          w, ids = topk(p, k)
                          w /= sum(w) if norm_topk_prob
                          out = sum_k w_k * expert_{ids_k}(h)  (expert: down(silu(gate(h)) * up(h)))

What differs from the Hugging Face model (docs in the model folder's README.md):
- Weights are synthetic (seeded numpy), not trained; see `language_structure` below.
- Tokens of several requests are packed into one flat stream of T tokens, the way vLLM and
  SGLang batch ("varlen"): inputs `input_ids[T]`, `position_ids[T]` (RoPE positions, restarting
  per request) and `segment_ids[T]` (attention only within a request, causal by position).
  HF's forward takes [batch, seq] with an attention mask: same attention, different layout.
- The sparse dispatch (index_add over the tokens each expert got) is written densely: every
  expert runs on every token and its output is multiplied by a T x E weight matrix that is
  zero outside each token's top-k (ScatterElements of the top-k weights). Same output, more
  FLOPs, and no data-dependent shapes (NonZero) in the graph.
- No KV cache (each call is a prefill of the whole stream); no sliding window.
- The router's softmax is taken on float32 logits as in HF; everything here is float32.

Every MoE layer's router logits are a named tensor, `model.layers.{i}.mlp.router_logits`,
produced by the MatMul node `model.layers.{i}.mlp.gate` (HF's module name); the graph's only
output is `logits` [T, vocab]. moescope-tract finds and exposes the routers itself.

Tokenizer: byte-level, vocab = 256 (one token per UTF-8 byte; no special tokens).
"""

import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "moe_intermediate_size": 32,
    "num_experts": 16,
    "num_experts_per_tok": 4,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 1024,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
SEED = 20251117
NONASCII_STRENGTH = 4.0
OPSET = 17

# Byte classes of UTF-8: how the synthetic weights make scripts route differently.
ASCII_WORD, ASCII_OTHER, LEAD2, LEAD3, CONT = range(5)


def byte_class(b):
    if b < 0x80:
        return ASCII_WORD if chr(b).isalnum() else ASCII_OTHER
    if 0x80 <= b < 0xC0:
        return CONT
    if 0xC0 <= b < 0xE0:
        return LEAD2  # Hebrew letters: 0xD7 0x90..0xAA
    return LEAD3  # Japanese kana and kanji: 0xE3..0xE9 + 2 continuation bytes


def weights(cfg, rng):
    """Seeded synthetic weights with a language structure (see the model README)."""
    d, e, i_ = cfg["hidden_size"], cfg["num_experts"], cfg["moe_intermediate_size"]
    h, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    v, layers, k = cfg["vocab_size"], cfg["num_hidden_layers"], cfg["num_experts_per_tok"]

    def lin(out_f, in_f, gain=1.0):  # torch Linear layout [out, in]
        return (rng.standard_normal((out_f, in_f)) * gain / np.sqrt(in_f)).astype(np.float32)

    # Orthonormal class directions in the residual stream.
    q, _ = np.linalg.qr(rng.standard_normal((d, 5)))
    class_dir = q.T.astype(np.float32)  # [5, d]
    emb = rng.standard_normal((v, d)).astype(np.float32) * 0.6
    for b in range(v):
        emb[b] += 2.0 * class_dir[byte_class(b)]

    w = {"model.embed_tokens.weight": emb}
    # Attention and experts never write into the class subspace, so the residual stream
    # carries each byte's class unchanged to every layer's router.
    keep_out = (np.eye(d) - class_dir.T @ class_dir).astype(np.float32)
    for li in range(layers):
        p = f"model.layers.{li}."
        w[p + "input_layernorm.weight"] = np.ones(d, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
        w[p + "self_attn.q_proj.weight"] = lin(h * hd, d)
        w[p + "self_attn.k_proj.weight"] = lin(kv * hd, d)
        w[p + "self_attn.v_proj.weight"] = lin(kv * hd, d)
        w[p + "self_attn.o_proj.weight"] = keep_out @ lin(d, h * hd, 0.5)
        w[p + "self_attn.q_norm.weight"] = np.ones(hd, np.float32)
        w[p + "self_attn.k_norm.weight"] = np.ones(hd, np.float32)
        # Router: random part plus, per byte class, a preference for a subset of experts.
        # ASCII classes prefer half of the experts mildly at every depth; the non-ASCII
        # classes (Hebrew and Japanese bytes) prefer fewer experts more strongly the deeper
        # the layer: a synthetic stand-in for the paper's deep-layer narrowing.
        gate = lin(e, d, 1.0)
        depth = li / max(1, layers - 1)
        # Non-ASCII bytes (lead and continuation bytes alike) share one preferred subset per
        # layer, which narrows with depth; ASCII bytes have no preference.
        n_pref = max(k + 1, int(round(e * (0.75 - 0.45 * depth))))
        subset = rng.permutation(e)[:n_pref]
        pref = np.full(e, -n_pref / e, np.float32)
        pref[subset] += 1.0
        strength = NONASCII_STRENGTH * (0.25 + depth)
        for c in (LEAD2, LEAD3, CONT):
            gate += strength * np.outer(pref, class_dir[c]).astype(np.float32)
        w[p + "mlp.gate.weight"] = gate
        for x in range(e):
            w[p + f"mlp.experts.{x}.gate_proj.weight"] = lin(i_, d)
            w[p + f"mlp.experts.{x}.up_proj.weight"] = lin(i_, d)
            w[p + f"mlp.experts.{x}.down_proj.weight"] = keep_out @ lin(d, i_, 0.5)
    w["model.norm.weight"] = np.ones(d, np.float32)
    w["lm_head.weight"] = lin(v, d)
    return w


def rope_tables(cfg):
    hd, theta = cfg["head_dim"], cfg["rope_theta"]
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    pos = np.arange(cfg["max_position_embeddings"], dtype=np.float64)
    freqs = np.outer(pos, inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


class G:
    """A small ONNX graph builder: unique node names, initializers by name."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, name=None, outputs=1, out_names=None, **attrs):
        self.n += 1
        name = name or f"/{op_type}_{self.n}"
        outs = out_names or [f"{name}:{j}" for j in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if len(outs) == 1 else outs


def build(cfg, w):
    g = G()
    d, e, k = cfg["hidden_size"], cfg["num_experts"], cfg["num_experts_per_tok"]
    h, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(cfg)
    g.init("rope.cos", cos)
    g.init("rope.sin", sin)
    g.init("const.eps", np.array(eps, np.float32))
    g.init("const.neg_inf", np.array(-1e9, np.float32))
    g.init("const.scale", np.array(hd**-0.5, np.float32))
    g.init("const.k", np.array([k], np.int64))
    g.init("const.ax_last", np.array([-1], np.int64))
    g.init("const.ax0", np.array([0], np.int64))
    g.init("const.ax1", np.array([1], np.int64))
    g.init("const.ax2", np.array([2], np.int64))
    g.init("shape.q", np.array([0, h, hd], np.int64))
    g.init("shape.kv", np.array([0, kv, hd], np.int64))
    g.init("shape.heads", np.array([h, -1, hd], np.int64))
    g.init("shape.flat", np.array([0, h * hd], np.int64))
    g.init("split.half", np.array([hd // 2, hd // 2], np.int64))

    def linear(x, weight_name, name=None):  # x @ W^T with W in torch layout
        wt = g.init(weight_name + ".T", w[weight_name].T.copy())
        return g.op("MatMul", [x, wt], name=name)

    def rms(x, weight_name):
        var = g.op("ReduceMean", [g.op("Mul", [x, x])], axes=[-1], keepdims=1)
        inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, "const.eps"])])])
        return g.op("Mul", [g.op("Mul", [x, inv]), g.init(weight_name, w[weight_name])])

    def rope(x, cos_t, sin_t):  # x [heads, T, hd]; cos_t, sin_t [T, hd]
        x1, x2 = g.op("Split", [x, "split.half"], axis=-1, outputs=2)
        rot = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos_t]), g.op("Mul", [rot, sin_t])])

    x = g.op("Gather", [g.init("model.embed_tokens.weight", w["model.embed_tokens.weight"]),
                        "input_ids"], name="model.embed_tokens", axis=0)
    cos_t = g.op("Gather", ["rope.cos", "position_ids"], axis=0)
    sin_t = g.op("Gather", ["rope.sin", "position_ids"], axis=0)
    # mask[i, j]: same request and j not after i.
    seg_i = g.op("Unsqueeze", ["segment_ids", "const.ax1"])
    seg_j = g.op("Unsqueeze", ["segment_ids", "const.ax0"])
    pos_i = g.op("Unsqueeze", ["position_ids", "const.ax1"])
    pos_j = g.op("Unsqueeze", ["position_ids", "const.ax0"])
    mask = g.op("And", [g.op("Equal", [seg_i, seg_j]), g.op("LessOrEqual", [pos_j, pos_i])])

    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}."
        # --- attention (Qwen3MoeAttention) ---
        hs = rms(x, p + "input_layernorm.weight")
        q = g.op("Reshape", [linear(hs, p + "self_attn.q_proj.weight"), "shape.q"])
        kk = g.op("Reshape", [linear(hs, p + "self_attn.k_proj.weight"), "shape.kv"])
        vv = g.op("Reshape", [linear(hs, p + "self_attn.v_proj.weight"), "shape.kv"])
        q = g.op("Transpose", [rms(q, p + "self_attn.q_norm.weight")], perm=[1, 0, 2])
        kk = g.op("Transpose", [rms(kk, p + "self_attn.k_norm.weight")], perm=[1, 0, 2])
        vv = g.op("Transpose", [vv], perm=[1, 0, 2])
        q, kk = rope(q, cos_t, sin_t), rope(kk, cos_t, sin_t)
        rep = h // kv  # repeat_kv: head j uses kv head j // rep
        kk = g.op("Reshape", [g.op("Concat", [g.op("Unsqueeze", [kk, "const.ax1"])] * rep, axis=1),
                              "shape.heads"])
        vv = g.op("Reshape", [g.op("Concat", [g.op("Unsqueeze", [vv, "const.ax1"])] * rep, axis=1),
                              "shape.heads"])
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [kk], perm=[0, 2, 1])]),
                              "const.scale"])
        scores = g.op("Where", [mask, scores, "const.neg_inf"])
        attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), vv])  # [h, T, hd]
        attn = g.op("Reshape", [g.op("Transpose", [attn], perm=[1, 0, 2]), "shape.flat"])
        x = g.op("Add", [x, linear(attn, p + "self_attn.o_proj.weight")])
        # --- Qwen3MoeSparseMoeBlock ---
        hs = rms(x, p + "post_attention_layernorm.weight")
        logits = g.op("MatMul", [hs, g.init(p + "mlp.gate.weight.T", w[p + "mlp.gate.weight"].T.copy())],
                      name=p + "mlp.gate", out_names=[p + "mlp.router_logits"])
        probs = g.op("Softmax", [logits], axis=-1, name=p + "mlp.softmax")
        topw, topi = g.op("TopK", [probs, "const.k"], axis=-1, largest=1, sorted=1,
                          name=p + "mlp.topk",
                          out_names=[p + "mlp.topk_weights", p + "mlp.topk_ids"])
        if cfg["norm_topk_prob"]:
            topw = g.op("Div", [topw, g.op("ReduceSum", [topw, "const.ax_last"], keepdims=1)])
        zeros = g.op("ConstantOfShape", [g.op("Shape", [probs])],
                     value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
        dense = g.op("ScatterElements", [zeros, topi, topw], axis=1)  # [T, E]
        experts = [p + f"mlp.experts.{j}." for j in range(e)]
        wg = np.stack([w[n + "gate_proj.weight"].T for n in experts])  # [E, d, I]
        wu = np.stack([w[n + "up_proj.weight"].T for n in experts])
        wd = np.stack([w[n + "down_proj.weight"].T for n in experts])  # [E, I, d]
        h3 = g.op("Unsqueeze", [hs, "const.ax0"])  # [1, T, d]
        gg = g.op("MatMul", [h3, g.init(p + "mlp.experts.gate_proj", wg)])  # [E, T, I]
        uu = g.op("MatMul", [h3, g.init(p + "mlp.experts.up_proj", wu)])
        act = g.op("Mul", [g.op("Mul", [gg, g.op("Sigmoid", [gg])]), uu])
        yy = g.op("MatMul", [act, g.init(p + "mlp.experts.down_proj", wd)])  # [E, T, d]
        wt = g.op("Unsqueeze", [g.op("Transpose", [dense], perm=[1, 0]), "const.ax2"])  # [E, T, 1]
        moe = g.op("ReduceSum", [g.op("Mul", [yy, wt]), "const.ax0"], keepdims=0)
        x = g.op("Add", [x, moe])
    x = rms(x, "model.norm.weight")
    linear_out = g.op("MatMul", [x, g.init("lm_head.weight.T", w["lm_head.weight"].T.copy())],
                      name="lm_head", out_names=["logits"])
    t = "T"
    graph = helper.make_graph(
        g.nodes, "tiny-qwen3-moe",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [t]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, [t]),
         helper.make_tensor_value_info("segment_ids", TensorProto.INT64, [t])],
        [helper.make_tensor_value_info(linear_out, TensorProto.FLOAT, [t, cfg["vocab_size"]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="moescope scripts/make_tiny_moe.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_forward(cfg, w, ids, pos, seg):
    """NumPy forward of the same model, written like transformers' code (per-expert dispatch)."""
    d, e, k = cfg["hidden_size"], cfg["num_experts"], cfg["num_experts_per_tok"]
    h, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(cfg)
    cos, sin = cos[pos], sin[pos]

    def rms(x, wt):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * wt

    def rot(x):
        return np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)

    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    t = len(ids)
    mask = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    routers = []
    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}."
        hs = rms(x, w[p + "input_layernorm.weight"])
        q = (hs @ w[p + "self_attn.q_proj.weight"].T).reshape(t, h, hd)
        kk = (hs @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv, hd)
        vv = (hs @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv, hd)
        q = rms(q, w[p + "self_attn.q_norm.weight"]).transpose(1, 0, 2)
        kk = rms(kk, w[p + "self_attn.k_norm.weight"]).transpose(1, 0, 2)
        vv = vv.transpose(1, 0, 2)
        q, kk = q * cos + rot(q) * sin, kk * cos + rot(kk) * sin
        kk, vv = np.repeat(kk, h // kv, axis=0), np.repeat(vv, h // kv, axis=0)
        s = np.where(mask, q @ kk.transpose(0, 2, 1) * hd**-0.5, -1e9)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        attn = (s @ vv).transpose(1, 0, 2).reshape(t, h * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        hs = rms(x, w[p + "post_attention_layernorm.weight"])
        logits = hs @ w[p + "mlp.gate.weight"].T
        routers.append(logits)
        pr = np.exp(logits - logits.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        sel = np.argsort(-pr, axis=-1, kind="stable")[:, :k]
        rw = np.take_along_axis(pr, sel, -1)
        if cfg["norm_topk_prob"]:
            rw /= rw.sum(-1, keepdims=True)
        out = np.zeros_like(hs)
        for ex in range(e):  # HF: loop over experts, index_add the tokens routed to each
            tok, slot = np.nonzero(sel == ex)
            if len(tok) == 0:
                continue
            n = p + f"mlp.experts.{ex}."
            xe = hs[tok]
            ye = (silu(xe @ w[n + "gate_proj.weight"].T) * (xe @ w[n + "up_proj.weight"].T)) \
                @ w[n + "down_proj.weight"].T
            np.add.at(out, tok, ye * rw[tok, slot][:, None])
        x = x + out
    x = rms(x, w["model.norm.weight"])
    return x @ w["lm_head.weight"].T, routers


SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog.",
    "he": "השועל החום הזריז קופץ מעל הכלב העצלן.",
    "ja": "素早い茶色の狐がのろまな犬を飛び越える。",
}


def write_fixtures(root):
    """Two tiny graphs for moescope-tract's error tests."""
    out = os.path.join(root, "crates", "moescope-tract", "tests", "data")
    os.makedirs(out, exist_ok=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])
    wgt = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    # Attention-like: MatMul -> Softmax, no TopK: no router.
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"], name="attn.scores"),
         helper.make_node("Softmax", ["scores"], ["y"], name="attn.softmax", axis=-1)],
        "no_router", [x], [y], [wgt])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.save(m, os.path.join(out, "no_router.onnx"))
    # A router, then an operator tract does not implement.
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["router_logits"], name="moe.gate"),
         helper.make_node("Softmax", ["router_logits"], ["p"], name="moe.softmax", axis=-1),
         helper.make_node("TopK", ["p", "k"], ["tw", "ti"], name="moe.topk"),
         helper.make_node("FancyExpertDispatch", ["x", "ti", "tw"], ["y"],
                          name="moe.dispatch", domain="com.example")],
        "unsupported_op", [x], [y], [wgt, numpy_helper.from_array(np.array([2], np.int64), "k")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET),
                                            helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    onnx.save(m, os.path.join(out, "unsupported_op.onnx"))


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    write_fixtures(root)
    out_dir = os.path.join(root, "crates", "moescope-tract", "models", "tiny-qwen3-moe")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    w = weights(CONFIG, rng)
    model = build(CONFIG, w)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    # Reference values for the Rust test: the three samples packed in one stream.
    ids, pos, seg = [], [], []
    for s, text in enumerate(SAMPLES.values()):
        b = list(text.encode("utf-8"))
        ids += b
        pos += list(range(len(b)))
        seg += [s] * len(b)
    ids, pos, seg = (np.array(a, np.int64) for a in (ids, pos, seg))
    logits, routers = reference_forward(CONFIG, w, ids, pos, seg)
    ref = {
        "note": "NumPy reference forward (per-expert dispatch, float64) of model.onnx",
        "samples": SAMPLES,
        "input_ids": ids.tolist(),
        "position_ids": pos.tolist(),
        "segment_ids": seg.tolist(),
        "router_logits": [np.round(r, 6).tolist() for r in routers],
        "logits_argmax": logits.argmax(-1).tolist(),
        "logits_first_row": np.round(logits[0], 6).tolist(),
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    # How differently the scripts route, for the README.
    for li, r in enumerate(routers):
        sel = np.argsort(-r, axis=-1, kind="stable")[:, : CONFIG["num_experts_per_tok"]]
        row = []
        for s, lang in enumerate(SAMPLES):
            c = np.bincount(sel[seg == s].ravel(), minlength=CONFIG["num_experts"]).astype(float)
            p = c / c.sum()
            ent = -(p[p > 0] * np.log2(p[p > 0])).sum()
            row.append(f"{lang} {ent:.2f}")
        print(f"layer {li}: usage entropy bits " + ", ".join(row))
    size = os.path.getsize(os.path.join(out_dir, "model.onnx"))
    print(f"wrote {out_dir}/model.onnx ({size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
