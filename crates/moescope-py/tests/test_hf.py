"""moescope.hf.attach on tiny random-weight transformers MoE models, one per family.

Each model runs a mixed-language batch (English, Hebrew, Japanese as UTF-8 bytes, rows padded
on either side); the counts the recorder holds must equal, per language, MoE layer and expert,
the routing recomputed here from each router's input by the family's own rule (group-limited
sigmoid routing with the score-correction bias for DeepSeek-V3, and so on), and the ids the
experts module actually received, for the padded-out positions excluded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import moescope  # noqa: E402
import moescope.hf as mhf  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*eos_token_id.*")

TEXTS = [
    ("en", "Routing is watched per language, token by token."),
    ("he", "הניתוב נמדד לכל שפה."),
    ("ja", "言語ごとに監視する。"),
]

COMMON = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    use_cache=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
GENERIC = dict(
    num_hidden_layers=3,
    num_experts=8,
    num_local_experts=8,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
)
DEEPSEEK = dict(
    num_hidden_layers=3,
    n_routed_experts=16,
    num_experts_per_tok=4,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
    n_shared_experts=1,
    moe_intermediate_size=16,
    routed_scaling_factor=2.5,
    q_lora_rank=None,
    kv_lora_rank=16,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=8,
    num_key_value_heads=4,
)

# family -> (model_type for AutoConfig, config overrides, routing rule, dense layers)
FAMILIES = {
    "qwen2_moe": (
        "qwen2_moe",
        dict(
            GENERIC,
            num_hidden_layers=4,
            decoder_sparse_step=2,
            shared_expert_intermediate_size=32,
            norm_topk_prob=False,
        ),
        "softmax_topk",
        [0, 2],
    ),
    "qwen3_moe": (
        "qwen3_moe",
        dict(GENERIC, num_hidden_layers=4, mlp_only_layers=[0, 2], norm_topk_prob=True),
        "softmax_topk",
        [0, 2],
    ),
    "olmoe": ("olmoe", GENERIC, "softmax_topk", []),
    "mixtral": ("mixtral", dict(GENERIC, sliding_window=None), "softmax_topk", []),
    "deepseek_v3": ("deepseek_v3", DEEPSEEK, "grouped_sigmoid", [0]),
    "qwen3_next": (
        "qwen3_next",
        dict(GENERIC, layer_types=["linear_attention", "full_attention", "linear_attention"]),
        "softmax_topk",
        [],
    ),
    "gpt_oss": (
        "gpt_oss",
        dict(GENERIC, sliding_window=64, layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
        "logit_topk",
        [],
    ),
    "granitemoe": ("granitemoe", GENERIC, "logit_topk", []),
    "granitemoeshared": ("granitemoeshared", dict(GENERIC, shared_intermediate_size=16), "logit_topk", []),
    "phimoe": ("phimoe", dict(GENERIC, sliding_window=None), "logit_topk", []),
    "minimax": ("minimax", GENERIC, "softmax_topk", []),
    "hunyuan_v1_moe": ("hunyuan_v1_moe", dict(GENERIC, moe_topk=2), "softmax_topk", []),
    "ernie4_5_moe": ("ernie4_5_moe", dict(GENERIC, moe_layer_start_index=1), "ernie", [0]),
    "glm4_moe": ("glm4_moe", dict(DEEPSEEK, partial_rotary_factor=0.5, num_key_value_heads=2), "grouped_sigmoid", [0]),
    "exaone_moe": (
        "exaone_moe",
        dict(GENERIC, n_group=1, topk_group=1, first_k_dense_replace=1),
        "grouped_sigmoid",
        [0],
    ),
    "minimax_m2": ("minimax_m2", GENERIC, "sigmoid_bias", []),
    "llama4_text": (
        "llama4_text",
        dict(GENERIC, interleave_moe_layer_step=1, intermediate_size_mlp=32),
        "logit_topk",
        [],
    ),
    "jetmoe": ("jetmoe", dict(GENERIC, kv_channels=8), "logit_topk", []),
    "cohere2_moe": ("cohere2_moe", GENERIC, "logit_topk", []),
    "solar_open": (
        "solar_open",
        dict(GENERIC, n_group=2, topk_group=1, first_k_dense_replace=0),
        "grouped_sigmoid",
        [],
    ),
    "afmoe": ("afmoe", dict(GENERIC, num_dense_layers=1), "sigmoid_bias", [0]),
    "dbrx": ("dbrx", dict(num_hidden_layers=3), "softmax_topk", []),
    "deepseek_v2": (
        "deepseek_v2",
        dict(DEEPSEEK, topk_method="group_limited_greedy"),
        "grouped_softmax_max",
        [0],
    ),
    "lfm2_moe": (
        "lfm2_moe",
        dict(GENERIC, num_dense_layers=1, layer_types=["full_attention", "conv", "full_attention"]),
        "sigmoid_bias",
        [0],
    ),
    "dots1": (
        "dots1",
        dict(GENERIC, first_k_dense_replace=1, n_group=2, topk_group=1, n_shared_experts=1),
        "grouped_sigmoid",
        [0],
    ),
    "flex_olmo": ("flex_olmo", GENERIC, "softmax_topk", []),
    "granitemoehybrid": (
        "granitemoehybrid",
        dict(
            GENERIC,
            layer_types=["mamba", "attention", "mamba"],
            mamba_n_heads=4,
            mamba_d_head=16,
            mamba_n_groups=1,
            mamba_d_state=8,
            mamba_chunk_size=16,
        ),
        "logit_topk",
        [],
    ),
    "qwen3_5_moe_text": (
        "qwen3_5_moe_text",
        dict(GENERIC, layer_types=["linear_attention", "full_attention", "linear_attention"]),
        "softmax_topk",
        [],
    ),
}


def build(family: str, seed: int = 7):
    model_type, overrides, _, _ = FAMILIES[family]
    torch.manual_seed(seed)
    if model_type == "dbrx":  # its own key names, attention and FFN settings nested
        config = transformers.DbrxConfig(
            d_model=32,
            n_heads=4,
            n_layers=overrides["num_hidden_layers"],
            max_seq_len=256,
            vocab_size=256,
            attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
            ffn_config=dict(ffn_hidden_size=16, moe_num_experts=8, moe_top_k=2),
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    else:
        config = transformers.AutoConfig.for_model(model_type, **{**COMMON, **overrides})
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for r in mhf.routers(model):
            # Spread the routers' scores (random init is near-uniform at this size) and the
            # score-correction biases, so routing differs by token and the bias matters.
            w = _router_weight(r.module)
            w.normal_(0.0, 1.0, generator=gen)
            for bias_owner in (r.module, getattr(r.module, "moe_statics", None), _parent(model, r.name)):
                for attr in ("e_score_correction_bias", "expert_bias"):
                    b = getattr(bias_owner, attr, None) if bias_owner is not None else None
                    if isinstance(b, torch.Tensor):
                        b.normal_(0.0, 0.3, generator=gen)
    return config, model


def _parent(model, name):
    return model.get_submodule(name.rsplit(".", 1)[0])


def _router_weight(m):
    for sub in (getattr(m, "wg", None), getattr(m, "layer", None), getattr(m, "gate", None), m):
        if sub is not None and isinstance(getattr(sub, "weight", None), torch.Tensor):
            return sub.weight
    if hasattr(m, "router"):
        return _router_weight(m.router)
    raise AssertionError(f"no router weight in {type(m).__name__}")


def batch(side=("right", "right", "left")):
    rows = [list(text.encode()) for _, text in TEXTS]
    width = max(len(r) for r in rows) + 2
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        if side[i] == "right":
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        else:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


# ---- the reference: each family's routing rule, recomputed from the router's input ---------


def _logits(router, hidden):
    m = router.module
    if router.kind == "dbrx":
        m = m.router
    h = hidden.reshape(-1, hidden.shape[-1]).double()
    w = _router_weight(m).detach().double()
    out = h @ w.T
    bias = getattr(m, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.shape == (w.shape[0],):
        out = out + bias.detach().double()
    return out


def _bias(model, router):
    for owner in (router.module, getattr(router.module, "moe_statics", None), _parent(model, router.name)):
        for attr in ("e_score_correction_bias", "expert_bias"):
            b = getattr(owner, attr, None) if owner is not None else None
            if isinstance(b, torch.Tensor):
                return b.detach().double().reshape(-1)
    raise AssertionError(f"{router.name}: no e_score_correction_bias")


def reference_ids(model, router, rule, hidden):
    """[N, k] sorted expert ids per token, by the family's rule, written out here."""
    logits = _logits(router, hidden)
    k = router.top_k
    n, e = logits.shape
    if rule in ("softmax_topk", "logit_topk"):  # softmax is monotonic: the same top-k
        choice = logits
    elif rule == "ernie":
        choice = torch.softmax(logits, -1) + _bias(model, router)
    elif rule == "sigmoid_bias":
        choice = torch.sigmoid(logits) + _bias(model, router)
    elif rule == "grouped_softmax_max":  # DeepSeek-V2: groups ranked by their best softmax score
        m = router.module
        probs = torch.softmax(logits, -1).numpy()
        per = e // m.num_group
        out = np.zeros((n, k), dtype=np.int64)
        for t in range(n):
            best = [probs[t, g * per : (g + 1) * per].max() for g in range(m.num_group)]
            kept = sorted(range(m.num_group), key=lambda g: -best[g])[: m.topk_group]
            cand = [x for g in kept for x in range(g * per, (g + 1) * per)]
            out[t] = sorted(sorted(cand, key=lambda x: -probs[t, x])[:k])
        return out
    elif rule == "grouped_sigmoid":
        m = router.module
        groups, keep = m.n_group if hasattr(m, "n_group") else m.num_group, m.topk_group
        scores = torch.sigmoid(logits) + _bias(model, router)
        out = np.zeros((n, k), dtype=np.int64)
        for t in range(n):
            s = scores[t].numpy()
            per = e // groups
            # a group's score: the sum of its two best experts; keep the best `keep` groups
            gs = [np.sort(s[g * per : (g + 1) * per])[-2:].sum() for g in range(groups)]
            kept = sorted(range(groups), key=lambda g: -gs[g])[:keep]
            cand = [x for g in kept for x in range(g * per, (g + 1) * per)]
            out[t] = sorted(sorted(cand, key=lambda x: -s[x])[:k])
        return out
    else:
        raise AssertionError(rule)
    return np.sort(torch.topk(choice, k, dim=-1).indices.numpy(), axis=-1)


def run_with_reference(family, model, rule, ids, mask, rec_ctx):
    """Runs the model once, returning per router layer: (reference ids [B*T, k] by the rule,
    ids and weights the experts module received or None)."""
    hidden, experts_in = {}, {}
    hooks = []
    rs = mhf.routers(model)
    for r in rs:

        def pre(_m, args, kwargs, layer=r.layer):
            hidden[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        hooks.append(r.module.register_forward_pre_hook(pre, with_kwargs=True))
        owner = r.module if r.kind == "dbrx" else _parent(model, r.name)  # DBRX: the FFN is hooked
        experts = getattr(owner, "experts", None)
        if experts is not None and r.kind in ("tuple", "dbrx"):

            def epre(_m, args, kwargs, layer=r.layer):
                a = list(args) + [kwargs.get(x) for x in ("top_k_index", "top_k_weights") if x in kwargs]
                if len(a) >= 3 and not a[1].is_floating_point():
                    experts_in[layer] = (a[1].detach().clone(), a[2].detach().float().clone())

            hooks.append(experts.register_forward_pre_hook(epre, with_kwargs=True))
    try:
        with rec_ctx, torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    ref = {}
    for r in rs:
        logits = _logits(r, hidden[r.layer])
        raw = np.sort(torch.topk(logits, r.top_k, dim=-1).indices.numpy(), axis=-1)
        if r.scoring == "softmax":
            probs = torch.softmax(logits, -1).numpy()
        elif r.scoring == "sigmoid":
            sig = torch.sigmoid(logits)
            probs = (sig / sig.sum(-1, keepdim=True)).numpy()
        else:
            probs = None
        ref[r.layer] = (reference_ids(model, r, rule, hidden[r.layer]), experts_in.get(r.layer), raw, probs)
    return rs, ref


def expected_counts(rs, ref, langs_per_token, keep, tags):
    """{tag: {layer: (expert counts, weight sum)}} over kept tokens."""
    e = rs[0].num_experts
    want = {t: {} for t in tags}
    for r in rs:
        ids, exp, _, _ = ref[r.layer]
        for t in tags:
            sel = keep & (langs_per_token == t)
            counts = np.bincount(ids[sel].reshape(-1), minlength=e)
            wsum = float(exp[1].reshape(len(keep), -1)[sel].sum()) if exp is not None else None
            want[t][r.layer] = (counts, wsum)
    return want


def layer_counts(snapshot, tag, depth):
    lang = snapshot["languages"].get(tag)
    if lang is None:
        return None
    return lang["layers"][depth]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_counts_equal_the_models_routing(family):
    _, overrides, rule, dense = FAMILIES[family]
    config, model = build(family)
    rs = mhf.routers(model)
    spec = mhf.spec_from_model(model)
    n_layers = overrides.get("num_hidden_layers", 3)
    assert spec["layers"] == [i for i in range(n_layers) if i not in dense], spec
    assert [r.layer for r in rs] == spec["layers"]
    recorder = mhf.recorder_for(model)
    ids, mask = batch()
    tags = [t for t, _ in TEXTS]
    handle = mhf.attach(model, recorder)
    rs, ref = run_with_reference(family, model, rule, ids, mask, mhf.tag(tags))
    handle.remove()
    assert handle.errors == 0, handle.last_error

    keep = mask.reshape(-1).bool().numpy()
    langs_per_token = np.repeat(np.array(tags), ids.shape[1])
    want = expected_counts(rs, ref, langs_per_token, keep, tags)
    snap = recorder.snapshot()
    assert set(snap["languages"]) == set(tags)
    differs_from_raw_topk = False
    for depth, r in enumerate(rs):
        ref_ids, exp, raw, probs = ref[r.layer]
        if exp is not None:  # the ids the experts received are the rule's ids
            assert np.array_equal(np.sort(exp[0].numpy(), axis=-1), ref_ids), (family, r.layer)
        differs_from_raw_topk |= not np.array_equal(raw[keep], ref_ids[keep])
        for t in tags:
            got = layer_counts(snap, t, depth)
            counts, wsum = want[t][r.layer]
            assert np.array_equal(np.asarray(got["expert_tokens"], dtype=np.float64), counts.astype(np.float64)), (
                family,
                r.layer,
                t,
                got["expert_tokens"],
                counts.tolist(),
            )
            n_tokens = int((keep & (langs_per_token == t)).sum())
            assert got["tokens"] == n_tokens
            if wsum is not None:  # the weights the experts were given
                assert got["topk_weight_sum"] == pytest.approx(wsum, rel=1e-5)
            if probs is not None:  # the router's distribution: softmax, or normalized sigmoid
                sel = keep & (langs_per_token == t)
                assert got["prob_tokens"] == n_tokens
                assert np.allclose(got["prob_sum"], probs[sel].sum(0), rtol=1e-4, atol=1e-5), (family, r.layer, t)
            else:
                assert got.get("prob_sum") is None
    if rule in ("grouped_sigmoid", "grouped_softmax_max", "sigmoid_bias", "ernie"):
        assert differs_from_raw_topk, "the group limit and bias never changed a choice: the test would not tell"


# ---- tagging, padding, removal, failures, threads, generation ------------------------------


def qwen3(seed=7):
    return build("qwen3_moe", seed)[1]


def routed_counts(model, ids, mask, langs_per_token, tags, keep_extra=None):
    """Reference counts for one forward step (rule recomputed from router inputs)."""
    rule = FAMILIES["qwen3_moe"][2]
    rs, ref = run_with_reference("qwen3_moe", model, rule, ids, mask, _nullcontext())
    keep = mask.reshape(-1).bool().numpy()
    if keep_extra is not None:
        keep = keep & keep_extra
    return expected_counts(rs, ref, langs_per_token, keep, tags), rs


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return None


def assert_snapshot_counts(snap, rs, want, tags):
    for depth, r in enumerate(rs):
        for t in tags:
            got = layer_counts(snap, t, depth)
            counts = want[t][r.layer][0]
            if counts.sum() == 0:
                assert got is None or sum(got["expert_tokens"]) == 0
                continue
            assert got is not None, (t, r.layer)
            assert list(np.asarray(got["expert_tokens"], dtype=np.int64)) == counts.tolist(), (t, r.layer)


def test_per_token_language_ids_and_skipped_token_ids():
    model = qwen3()
    recorder = mhf.recorder_for(model)
    ids, mask = batch(("right", "left", "right"))
    ids[:, 0] = torch.where(mask[:, 0] == 1, torch.tensor(1), ids[:, 0])  # a BOS where row 0/2 start
    # Per token: the first half of each row English, the rest Hebrew (a code-switched batch).
    half = ids.shape[1] // 2
    names = np.empty(ids.shape, dtype=object)
    names[:, :half], names[:, half:] = "en", "he"
    lang_ids = np.vectorize(recorder.language)(names).astype(np.int64)
    keep_extra = (ids != 1).reshape(-1).numpy()
    want, rs = routed_counts(model, ids, mask, names.reshape(-1), ["en", "he"], keep_extra)
    with mhf.attach(model, recorder, skip_token_ids=[1]) as handle:
        with mhf.tag(torch.from_numpy(lang_ids)), torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    assert handle.errors == 0, handle.last_error
    assert_snapshot_counts(recorder.snapshot(), rs, want, ["en", "he"])
    assert handle.recorded_tokens == int((mask.reshape(-1).bool().numpy() & keep_extra).sum()) * len(rs)


def test_untagged_steps_use_the_default_tag_or_are_not_recorded():
    model = qwen3()
    ids, mask = batch()
    recorder = mhf.recorder_for(model)
    with mhf.attach(model, recorder) as handle, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert handle.recorded_tokens == 0 and handle.errors == 0
    assert not recorder.snapshot()["languages"]

    want, rs = routed_counts(model, ids, mask, np.array(["und"] * ids.numel()), ["und"])
    with mhf.attach(model, recorder, default_tag="und"), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert_snapshot_counts(recorder.snapshot(), rs, want, ["und"])


def test_remove_stops_recording_and_nested_tags_restore():
    model = qwen3()
    ids, mask = batch()
    recorder = mhf.recorder_for(model)
    handle = mhf.attach(model, recorder)
    with mhf.tag("en"):
        with mhf.tag("he"):
            assert mhf.current_tag() == "he"
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
        assert mhf.current_tag() == "en"
    assert mhf.current_tag() is None
    first = handle.recorded_tokens
    assert first == int(mask.sum()) * len(handle.routers)
    handle.remove()
    handle.remove()  # idempotent
    with mhf.tag("ja"), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert handle.recorded_tokens == first
    assert set(recorder.snapshot()["languages"]) == {"he"}


class _Broken:
    """A recorder whose record fails: the model must run as if nothing were attached."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):  # the spec (num_experts, top_k, moe_layers), language()
        return getattr(self.inner, name)

    def record(self, *a, **k):
        raise RuntimeError("recorder unavailable")


def test_a_recording_problem_never_reaches_the_models_forward():
    model = qwen3()
    ids, mask = batch()
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
    handle = mhf.attach(model, _Broken(mhf.recorder_for(model)))
    with warnings.catch_warnings(record=True) as caught, mhf.tag(["en", "he", "ja"]), torch.no_grad():
        warnings.simplefilter("always")
        hooked = model(input_ids=ids, attention_mask=mask).logits
        model(input_ids=ids, attention_mask=mask)
    handle.remove()
    assert torch.equal(plain, hooked)
    assert handle.errors == 2 * len(handle.routers)
    assert "recorder unavailable" in str(handle.last_error)
    ours = [w for w in caught if "moescope.hf" in str(w.message)]
    assert len(ours) == 1
    # A tag of the wrong length is a counted problem too, not an exception in the forward.
    handle = mhf.attach(model, mhf.recorder_for(model))
    with warnings.catch_warnings(), mhf.tag(["en", "he"]), torch.no_grad():
        warnings.simplefilter("ignore")
        model(input_ids=ids, attention_mask=mask)
    handle.remove()
    assert handle.errors == 1 and handle.recorded_tokens == 0


def test_a_recorder_for_another_model_is_refused_at_attach():
    model = qwen3()
    other = mhf.recorder_for(build("olmoe")[1])
    with pytest.raises(ValueError, match="layers"):
        mhf.attach(model, other)
    # and nothing stays hooked
    assert not any(m._forward_hooks for m in model.modules())


def test_threads_keep_their_own_tags():
    import threading

    model = qwen3()
    recorder = mhf.recorder_for(model)
    ids, mask = batch()
    want, rs = routed_counts(model, ids, mask, np.repeat(["en", "he", "ja"], ids.shape[1]), ["en", "he", "ja"])
    barrier = threading.Barrier(3)
    errors = []

    def run(t, row):
        try:
            barrier.wait()
            for _ in range(3):
                with mhf.tag(t), torch.no_grad():
                    model(input_ids=ids[row : row + 1], attention_mask=mask[row : row + 1])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with mhf.attach(model, recorder) as handle:
        threads = [threading.Thread(target=run, args=(t, i)) for i, t in enumerate(["en", "he", "ja"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors and handle.errors == 0, (errors, handle.last_error)
    snap = recorder.snapshot()
    for depth, r in enumerate(rs):
        for t in ["en", "he", "ja"]:
            got = np.asarray(layer_counts(snap, t, depth)["expert_tokens"], dtype=np.int64)
            assert got.tolist() == (3 * want[t][r.layer][0]).tolist(), (t, r.layer)


def test_generation_records_prompt_and_decode_steps():
    model = qwen3()
    model.config.use_cache = True
    recorder = mhf.recorder_for(model)
    ids, mask = batch(("left", "left", "left"))
    rs = mhf.routers(model)
    seen = {r.layer: [] for r in rs}
    hooks = [
        r.module.register_forward_pre_hook(lambda _m, a, layer=r.layer: seen[layer].append(a[0].detach().clone()))
        for r in rs
    ]
    new = 3
    with mhf.attach(model, recorder) as handle, mhf.tag(["en", "he", "ja"]), torch.no_grad():
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            use_cache=True,
        )
    for h in hooks:
        h.remove()
    assert handle.errors == 0, handle.last_error
    snap = recorder.snapshot()
    rows = ids.shape[0]
    for depth, r in enumerate(rs):
        steps = seen[r.layer]
        assert len(steps) == new  # the prompt, then one step per new token but the last
        for t_i, t in enumerate(["en", "he", "ja"]):
            counts = np.zeros(r.num_experts, dtype=np.int64)
            for s_i, h in enumerate(steps):
                routed = reference_ids(model, r, "softmax_topk", h).reshape(rows, -1, r.top_k)[t_i]
                if s_i == 0:
                    routed = routed[mask[t_i].bool().numpy()]
                counts += np.bincount(routed.reshape(-1), minlength=r.num_experts)
            got = layer_counts(snap, t, depth)
            assert list(np.asarray(got["expert_tokens"], dtype=np.int64)) == counts.tolist(), (t, r.layer)
            assert got["tokens"] == int(mask[t_i].sum()) + new - 1


@pytest.mark.parametrize(
    "family", ["qwen2_moe", "qwen3_moe", "olmoe", "mixtral", "deepseek_v3", "glm4_moe", "minimax", "llama4_text"]
)
def test_the_spec_read_from_the_routers_equals_the_config_readers(family):
    """spec_from_model (the hooked routers) and moescope's config.json reader (Recorder given
    the transformers config) agree on the MoE layers, experts, top-k and shared experts."""
    config, model = build(family)
    mine = mhf.spec_from_model(model)
    from_config = moescope.Recorder(model=config).model
    assert moescope.Recorder(model=mhf.spec_from_config(config)).model == from_config
    assert moescope.Recorder(model=mine).model == {**from_config, "name": mine["name"]}
    for key in ("num_experts", "top_k", "layers", "num_hidden_layers"):
        assert mine[key] == from_config[key], (key, mine, from_config)
    assert mine["shared_experts"] == from_config.get("shared_experts", 0), (mine, from_config)


def test_two_recorders_on_one_model_each_count_everything():
    """Language ids are each recorder's own: a second handle must not read the first's."""
    model = qwen3()
    ids, mask = batch()
    first, second = mhf.recorder_for(model), mhf.recorder_for(model)
    for tag_ in ("xx", "yy", "ja"):  # the second recorder numbers its languages differently
        second.language(tag_)
    assert first.language("en") != second.language("en")
    with mhf.attach(model, first) as h1, mhf.attach(model, second) as h2:
        with mhf.tag(["en", "he", "ja"]), torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    assert h1.errors == 0 and h2.errors == 0, (h1.last_error, h2.last_error)
    a, b = first.snapshot()["languages"], second.snapshot()["languages"]
    assert set(a) == set(b) == {"en", "he", "ja"}
    for lang in a:
        assert [x["expert_tokens"] for x in a[lang]["layers"]] == [x["expert_tokens"] for x in b[lang]["layers"]]


def test_a_multimodal_moe_model_records_its_text_decoder():
    """Qwen3-VL-MoE (vision encoder + MoE text decoder) on text: the decoder's routers are found
    under model.language_model, the spec comes from the text config, counts are exact."""
    torch.manual_seed(7)
    text = dict(
        COMMON,
        **GENERIC,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
    )
    vision = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=32,
        num_heads=2,
        out_hidden_size=32,
        patch_size=4,
        spatial_merge_size=1,
        temporal_patch_size=1,
    )
    model = transformers.Qwen3VLMoeForConditionalGeneration(
        transformers.Qwen3VLMoeConfig(text_config=text, vision_config=vision)
    ).eval()
    with torch.no_grad():
        for r in mhf.routers(model):
            r.module.weight.normal_(0.0, 1.0)
    spec = mhf.spec_from_model(model)
    assert spec["layers"] == [0, 1, 2] and spec["num_hidden_layers"] == 3
    assert all(".language_model." in r.name for r in mhf.routers(model))
    recorder = mhf.recorder_for(model)
    ids, mask = batch()
    tags = [t for t, _ in TEXTS]
    with mhf.attach(model, recorder) as handle:
        rs, ref = run_with_reference("qwen3_vl_moe", model, "softmax_topk", ids, mask, mhf.tag(tags))
    assert handle.errors == 0, handle.last_error
    keep = mask.reshape(-1).bool().numpy()
    want = expected_counts(rs, ref, np.repeat(np.array(tags), ids.shape[1]), keep, tags)
    assert_snapshot_counts(recorder.snapshot(), rs, want, tags)


def test_tag_forms_are_checked_when_the_tag_is_made():
    assert mhf.tag("he") and mhf.tag(["en", "he"]) and mhf.tag([3, 4]) and mhf.tag(torch.tensor([[3, 4]]))
    with pytest.raises(TypeError, match="integers"):
        mhf.tag(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[B\] or \[B, T\]"):
        mhf.tag(np.zeros((1, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="never negative"):
        mhf.tag([-1, 2])
    with pytest.raises(TypeError, match="one tag"):
        mhf.tag(["en", 3])
    with pytest.raises(TypeError, match="expected a tag"):
        mhf.tag(3.5)
    with pytest.raises(ValueError, match="one integer per batch row"):
        mhf.tag("en", sequence_ids=[[1, 2]])
    # A list of ints is the recorder's language ids, one per row.
    model = qwen3()
    recorder = mhf.recorder_for(model)
    ids, mask = batch()
    row_ids = [recorder.language(t) for t, _ in TEXTS]
    with mhf.attach(model, recorder) as handle, mhf.tag(row_ids, sequence_ids=[7, 8, 9]), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert handle.errors == 0, handle.last_error
    snap = recorder.snapshot()["languages"]
    assert {t: snap[t]["layers"][0]["tokens"] for t in snap} == {
        t: float(mask[i].sum()) for i, (t, _) in enumerate(TEXTS)
    }


def test_a_bfloat16_model_records_what_its_experts_received():
    """bf16 weights and logits go to the recorder as they are; the reference is the ids and
    weights the experts module received (a recomputation could differ at bf16 near-ties)."""
    model = qwen3().to(torch.bfloat16)
    recorder = mhf.recorder_for(model)
    ids, mask = batch()
    tags = [t for t, _ in TEXTS]
    with mhf.attach(model, recorder) as handle:
        rs, ref = run_with_reference("qwen3_moe", model, "softmax_topk", ids, mask, mhf.tag(tags))
    assert handle.errors == 0, handle.last_error
    keep = mask.reshape(-1).bool().numpy()
    per_token = np.repeat(np.array(tags), ids.shape[1])
    snap = recorder.snapshot()
    for depth, r in enumerate(rs):
        exp_ids, exp_w = ref[r.layer][1]
        assert exp_w.dtype == torch.float32  # (the test's copy; the model's were bf16)
        for t in tags:
            sel = keep & (per_token == t)
            got = layer_counts(snap, t, depth)
            want = np.bincount(exp_ids.numpy()[sel].reshape(-1), minlength=r.num_experts)
            assert list(np.asarray(got["expert_tokens"], dtype=np.int64)) == want.tolist(), (t, r.layer)
            assert got["topk_weight_sum"] == pytest.approx(float(exp_w.numpy()[sel].sum()), rel=1e-5)
            assert got["prob_tokens"] == sel.sum()
