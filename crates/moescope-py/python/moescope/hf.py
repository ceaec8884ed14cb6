"""Hugging Face transformers MoE models, recorded in one line.

::

    import moescope, moescope.hf

    recorder = moescope.hf.recorder_for(model)        # a Recorder whose spec is the model's
    with moescope.hf.attach(model, recorder):          # hooks every MoE router
        with moescope.hf.tag(["en", "he", "ja"]):      # one tag per batch row (or one for all)
            model(**batch)                             # padding is left out (attention_mask)
    snapshot = recorder.snapshot()

:func:`attach` hooks the module of each MoE layer that produces the expert ids the model
actually routes to (the ``*TopKRouter`` / ``*Gate`` modules of transformers 5, which return
``(router_logits, top-k weights, top-k ids)``; DeepSeek-V3-style group-limited routing with
``e_score_correction_bias`` included, since the hook reads the router's own result rather than
recomputing a top-k). Layer numbers are the model's own decoder layer numbers; dense layers
have no router and are not hooked. Every token of a forward step is recorded with its
language, the router's top-k gate weights and its distribution over the experts (the logits
of softmax routers, the sigmoid scores of sigmoid routers); positions where
``attention_mask`` is 0 are left out, and so are the token ids passed as ``skip_token_ids``.

A recording problem never raises into the model's forward: it is counted
(``handle.errors``) and reported by one warning per handle.
"""

from __future__ import annotations

import contextvars
import itertools
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "attach",
    "tag",
    "current_tag",
    "routers",
    "Router",
    "spec_from_model",
    "spec_from_config",
    "recorder_for",
    "Handle",
]

# ---------------------------------------------------------------------------------------------
# Language tags of the forward steps in flight.


@dataclass(frozen=True)
class _Tag:
    value: Any  # str | tuple[str, ...] | np.ndarray (int language ids, [B] or [B, T])
    sequence_ids: Optional[np.ndarray]  # [B] uint64, or None


_TAG: contextvars.ContextVar[Optional[_Tag]] = contextvars.ContextVar("moescope_hf_tag", default=None)


class tag:
    """Context manager naming the language of the tokens of the forward steps run inside it.

    ``languages`` is one of:

    - a tag (``"he"``): every token of the batch;
    - a sequence of tags, one per batch row (``["en", "he", "ja"]``), for mixed batches;
    - an integer array (numpy or torch) of the recorder's language ids
      (``recorder.language(tag)``), shape ``[B]`` (one per row) or ``[B, T]`` (one per token).

    ``sequence_ids`` (optional, one per batch row) names each row's request, which keeps the
    recorder's split-half control and sampling consistent across forward steps of the same
    request (e.g. the decode steps of ``generate``); by default each row of each forward step
    is its own sequence.

    The tag is held in a :class:`contextvars.ContextVar`: threads and asyncio tasks each see
    their own, and nested ``with tag(...)`` blocks restore the outer tag on exit.
    """

    def __init__(self, languages: Any, *, sequence_ids: Any = None):
        self._tag = _Tag(_normalize_languages(languages), _normalize_sequence_ids(sequence_ids))
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> "tag":
        self._tokens.append(_TAG.set(self._tag))
        return self

    def __exit__(self, *exc: Any) -> None:
        _TAG.reset(self._tokens.pop())


def current_tag() -> Any:
    """The languages set by the innermost active :class:`tag` (``None`` outside one)."""
    t = _TAG.get()
    return None if t is None else t.value


def _normalize_languages(languages: Any) -> Any:
    if isinstance(languages, str):
        return languages
    if isinstance(languages, torch.Tensor):
        languages = languages.detach().cpu().numpy()
    if isinstance(languages, np.ndarray):
        if languages.dtype.kind not in "iu":
            raise TypeError(f"tag: a language-id array must hold integers, got dtype {languages.dtype}")
        if languages.ndim not in (1, 2):
            raise ValueError(f"tag: a language-id array must be [B] or [B, T], got shape {languages.shape}")
        if languages.size and int(languages.min()) < 0:
            raise ValueError("tag: language ids are the recorder's ids (recorder.language(tag)), never negative")
        return languages.astype(np.int64, copy=True)
    if isinstance(languages, Sequence):
        tags = tuple(languages)
        if tags and all(isinstance(t, int) and not isinstance(t, bool) for t in tags):
            return _normalize_languages(np.asarray(tags, dtype=np.int64))
        if not all(isinstance(t, str) for t in tags):
            raise TypeError("tag: a sequence of languages must hold one tag (str) per batch row")
        return tags
    raise TypeError(
        "tag: expected a tag (str), one tag per batch row (a sequence of str), or an integer "
        f"array of language ids, got {type(languages).__name__}"
    )


def _normalize_sequence_ids(ids: Any) -> Optional[np.ndarray]:
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError("tag: sequence_ids must be one integer per batch row")
    return arr.astype(np.uint64)


# ---------------------------------------------------------------------------------------------
# Finding the routers.

# Router classes whose full distribution is a softmax over the logits (the recorder takes the
# softmax of the logits it is given) and those scoring experts with a sigmoid.
_SOFTMAX = {
    "Qwen2MoeTopKRouter",
    "Qwen3MoeTopKRouter",
    "Qwen3NextTopKRouter",
    "Qwen3_5MoeTopKRouter",
    "Qwen3VLMoeTextTopKRouter",
    "Qwen3OmniMoeThinkerTextTopKRouter",
    "OlmoeTopKRouter",
    "FlexOlmoTopKRouter",
    "MixtralTopKRouter",
    "MiniMaxTopKRouter",
    "GptOssTopKRouter",
    "GraniteMoeTopKRouter",
    "GraniteMoeSharedTopKRouter",
    "GraniteMoeHybridTopKRouter",
    "PhimoeTopKRouter",
    "Ernie4_5_MoeTopKRouter",
    "HunYuanMoEV1Gate",
    "JetMoeTopKGating",
    "DbrxRouter",
    "DeepseekV2TopkRouter",
}
_SIGMOID = {
    "DeepseekV3TopkRouter",
    "Glm4MoeTopkRouter",
    "ExaoneMoeTopkRouter",
    "SolarOpenTopkRouter",
    "Dots1TopkRouter",
    "MiniMaxM2TopKRouter",
    "AfmoeTokenChoiceRouter",
    "Lfm2MoeTopKRouter",
    "Llama4Router",
}
_ROUTER_CLASS = re.compile(r"(TopKRouter|TopkRouter|Router|Gate|Gating)$")
_LAYER = re.compile(r"(?:^|\.)(?:layers|blocks|h)\.(\d+)(?:\.|$)")


@dataclass
class Router:
    """One MoE layer's router as :func:`attach` hooks it."""

    layer: int  #: the model's own decoder layer number
    name: str  #: the module's qualified name in the model
    module: torch.nn.Module  #: the module hooked
    kind: str  #: how its output is read: "tuple", "llama4", "jetmoe" or "dbrx"
    num_experts: int
    top_k: int
    scoring: Optional[str]  #: "softmax", "sigmoid" or None (not recorded)


def _int_attr(m: torch.nn.Module, *names: str) -> Optional[int]:
    for n in names:
        v = getattr(m, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _experts_of(m: torch.nn.Module) -> Optional[int]:
    n = _int_attr(m, "num_experts", "num_local_experts", "n_routed_experts")
    if n is not None:
        return n
    for sub in (m, getattr(m, "layer", None), getattr(m, "wg", None), getattr(m, "gate", None)):
        w = getattr(sub, "weight", None) if sub is not None else None
        if isinstance(w, torch.Tensor) and w.ndim == 2:
            return int(w.shape[0])
    return None


def routers(model: torch.nn.Module) -> list[Router]:
    """Every MoE router of ``model`` that :func:`attach` hooks, in layer order.

    A router is a module of a decoder layer (``…layers.N…``) whose class name ends with
    ``Router``, ``TopKRouter``, ``Gate`` or ``Gating`` and which has a ``top_k``; JetMoE's
    attention-expert routers (mixture of attention heads) are left out, so there is one router
    per MoE layer. DBRX routes in its FFN module (``route_tokens_to_experts``), which is hooked
    instead of its logits-only router.
    """
    found: list[Router] = []
    for name, m in model.named_modules():
        cls = type(m).__name__
        layer_match = list(_LAYER.finditer(name))
        if not layer_match:
            continue
        layer = int(layer_match[-1].group(1))
        if cls == "DbrxFFN":
            k = _int_attr(m, "top_k")
            e = _experts_of(m.router) if hasattr(m, "router") else None
            if k and e:
                found.append(Router(layer, name, m, "dbrx", e, k, "softmax"))
            continue
        if cls == "DbrxRouter" or not _ROUTER_CLASS.search(cls) or "Norm" in cls:
            continue
        if cls == "JetMoeTopKGating" and ".self_attention." in f".{name}.":
            continue
        k = _int_attr(m, "top_k", "num_experts_per_tok")
        e = _experts_of(m)
        if not k or not e:
            continue
        kind = {"Llama4Router": "llama4", "JetMoeTopKGating": "jetmoe"}.get(cls, "tuple")
        scoring = "softmax" if cls in _SOFTMAX else "sigmoid" if cls in _SIGMOID else None
        found.append(Router(layer, name, m, kind, e, k, scoring))
    found.sort(key=lambda r: r.layer)
    layers = [r.layer for r in found]
    dup = sorted({x for x in layers if layers.count(x) > 1})
    if dup:
        raise ValueError(
            f"moescope.hf: more than one router found in decoder layer(s) {dup}: "
            + ", ".join(r.name for r in found if r.layer in dup)
        )
    return found


# ---------------------------------------------------------------------------------------------
# The model's spec.


def _text_config(config: Any) -> Any:
    for attr in ("text_config", "language_config"):
        sub = getattr(config, attr, None)
        if sub is not None and getattr(sub, "num_hidden_layers", None):
            return sub
    return config


def _shared_experts(cfg: Any) -> int:
    for key in ("n_shared_experts", "num_shared_expert", "num_shared_experts"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], int):
            return int(v[0])
    if (getattr(cfg, "shared_expert_intermediate_size", 0) or 0) > 0:
        return 1
    if str(getattr(cfg, "model_type", "")).startswith("llama4"):
        return 1
    return 0


def spec_from_model(model: torch.nn.Module, *, name: Optional[str] = None) -> dict:
    """The moescope model spec of ``model`` (a dict ``moescope.Recorder(model=...)`` takes),
    read from the routers :func:`attach` hooks: their layer numbers, expert count and top-k,
    so the recorder and the hooks always agree. ``shared_experts`` and ``num_hidden_layers``
    come from ``model.config``.

    Raises ``ValueError`` when the model has no MoE router moescope recognizes, or when its
    routers differ in expert count or top-k (one spec holds one value of each).
    """
    rs = routers(model)
    if not rs:
        raise ValueError(f"moescope.hf: no MoE router found in {type(model).__name__}")
    experts = {r.num_experts for r in rs}
    ks = {r.top_k for r in rs}
    if len(experts) != 1 or len(ks) != 1:
        raise ValueError(
            f"moescope.hf: routers differ in expert count {sorted(experts)} or top-k {sorted(ks)}; "
            "a moescope spec holds one of each"
        )
    config = getattr(model, "config", None)
    cfg = _text_config(config) if config is not None else None
    total = getattr(cfg, "num_hidden_layers", None) if cfg is not None else None
    if name is None:
        name = (
            (getattr(config, "_name_or_path", "") or getattr(config, "model_type", "") or "model")
            if config
            else "model"
        )
    spec = {
        "name": str(name),
        "num_experts": experts.pop(),
        "top_k": ks.pop(),
        "layers": [r.layer for r in rs],
        "shared_experts": _shared_experts(cfg) if cfg is not None else 0,
    }
    if isinstance(total, int) and total > max(spec["layers"]):
        spec["num_hidden_layers"] = total
    return spec


def spec_from_config(config: Any) -> dict:
    """``config`` (a transformers ``PretrainedConfig``) as the dict of its ``config.json``,
    for ``moescope.Recorder(model=...)``, which reads the MoE keys of every family it knows
    (expert count, top-k, MoE layers by ``first_k_dense_replace``, ``mlp_only_layers``,
    ``decoder_sparse_step``, ``moe_layers``, …). Prefer :func:`spec_from_model`, which reads
    the model's routers themselves."""
    d = config.to_dict()
    d.setdefault("model_type", getattr(config, "model_type", None))
    return d


def recorder_for(model: torch.nn.Module, **kwargs: Any) -> Any:
    """A ``moescope.Recorder`` for ``model`` (spec from :func:`spec_from_model`); keyword
    arguments go to the ``Recorder`` constructor."""
    import moescope

    return moescope.Recorder(model=spec_from_model(model), **kwargs)


# ---------------------------------------------------------------------------------------------
# Reading a router's output.


@dataclass
class _Routed:
    ids: torch.Tensor  # [N, k] integer
    weights: Optional[torch.Tensor]  # [N, k]
    logits: Optional[torch.Tensor]  # [N, E], or None
    scoring: Optional[str]  # how the router scores experts: "softmax", "sigmoid" or None


def _read_tuple(r: Router, out: Any) -> _Routed:
    if not isinstance(out, (tuple, list)):
        raise TypeError(f"{r.name}: expected a tuple output, got {type(out).__name__}")
    tensors = [t for t in out if isinstance(t, torch.Tensor)]
    ints = [t for t in tensors if not t.is_floating_point()]
    if not ints:
        raise TypeError(f"{r.name}: no integer expert-id tensor in the router's output")
    ids = ints[-1]
    ids = ids.reshape(-1, ids.shape[-1])
    floats = [t for t in tensors if t.is_floating_point()]
    logits = floats[0] if floats and floats[0].shape[-1] == r.num_experts else None
    weights = None
    for t in floats[1:] if logits is not None else floats:
        t2 = t.reshape(-1, t.shape[-1])
        if t2.shape == ids.shape:
            weights = t2
            break
        if t2.shape == (ids.shape[0], r.num_experts):
            weights = t2.gather(1, ids.long())
            break
    return _scored(r, ids, weights, logits)


def _read_llama4(r: Router, out: Any) -> _Routed:
    scores, logits = out  # scores: [N, E], sigmoid of the top-k logits, 0 elsewhere
    # The router's own rule (torch.topk of its logits, top_k along dim 1): the same op on the
    # same tensor, so the same ids; the weights are the router's own scores at those ids.
    ids = torch.topk(logits, r.top_k, dim=1).indices
    return _scored(r, ids, scores.gather(1, ids), logits)


def _read_jetmoe(r: Router, out: Any) -> _Routed:
    index_sorted, _batch_index, batch_gates, expert_size, logits = out
    # Undo the grouping: sorted slot j went to expert e(j) (expert_size[e] slots each, in
    # expert order) and came from flat slot index_sorted[j] = token * k + rank.
    experts = torch.repeat_interleave(
        torch.arange(len(expert_size), device=index_sorted.device),
        torch.as_tensor(expert_size, device=index_sorted.device),
    )
    flat = torch.empty_like(index_sorted)
    flat[index_sorted] = experts
    gates = torch.empty_like(batch_gates)
    gates[index_sorted] = batch_gates
    return _scored(r, flat.view(-1, r.top_k), gates.view(-1, r.top_k), logits)


def _scored(r: Router, ids: torch.Tensor, weights: Optional[torch.Tensor], logits: Optional[torch.Tensor]) -> _Routed:
    if logits is not None:
        logits = logits.reshape(-1, logits.shape[-1])
    return _Routed(ids, weights, logits, r.scoring)


# ---------------------------------------------------------------------------------------------
# The forward step in flight: which tokens count, with which language.

#: The language id that leaves a token out of every count (``moescope.EXCLUDED``).
EXCLUDED = 65535


@dataclass
class _Step:
    tokens: int  # rows * cols, the tokens each router of the step routes
    kept: int  # tokens counted (not padding, not skipped ids)
    langs: Any  # one language id for every token, or a uint16 array per token (EXCLUDED = left out)
    sequence_ids: Optional[np.ndarray]  # uint64 per token, or None


# The step of a forward whose tokens cannot be attributed (a problem already counted): skipped.
_SKIP = _Step(0, 0, EXCLUDED, None)
_SEQ = itertools.count(1)


def _first_tensor(args: tuple, kwargs: dict, name: str, position: int) -> Optional[torch.Tensor]:
    v = kwargs.get(name)
    if v is None and len(args) > position:
        v = args[position]
    return v if isinstance(v, torch.Tensor) else None


# Float dtypes the recorder reads itself (float32 in place; the others converted into buffers
# it keeps): bf16/fp16 models' weights and logits are passed without a copy here.
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


class Handle:
    """What :func:`attach` returns: the hooks, removable (``remove()``, or use the handle as a
    context manager). ``routers`` lists what is hooked; ``errors`` counts recording problems
    (each left the model's forward untouched; ``last_error`` is the latest);
    ``recorded_tokens`` counts the tokens passed to the recorder as counted (not padding, not
    skipped), summed over MoE layers."""

    def __init__(
        self,
        model: torch.nn.Module,
        recorder: Any,
        *,
        default_tag: Optional[str],
        skip_token_ids: Optional[Iterable[int]],
        scores: bool,
        cuda_to_cpu: bool,
    ):
        self.model = model
        self.recorder = recorder
        self.routers = routers(model)
        if not self.routers:
            raise ValueError(f"moescope.hf.attach: no MoE router found in {type(model).__name__}")
        self.default_tag = default_tag
        self.skip_token_ids = (
            torch.tensor(sorted({int(t) for t in skip_token_ids}), dtype=torch.long) if skip_token_ids else None
        )
        self.scores = scores
        self.cuda_to_cpu = cuda_to_cpu
        self.errors = 0
        self.recorded_tokens = 0
        self.last_error: Optional[BaseException] = None
        self._warned = False
        self._lock = threading.Lock()
        self._lang_cache: dict[str, int] = {}
        self._hooks: list[Any] = []
        self._patched: list[tuple[torch.nn.Module, str]] = []
        self._depth = self._check_spec()
        self._tls = threading.local()
        # The forward step in flight, per thread and task; per handle, since language ids are
        # the recorder's own (two recorders on one model intern tags independently).
        self._step_var: contextvars.ContextVar[Optional[_Step]] = contextvars.ContextVar(
            f"moescope_hf_step_{id(self):x}", default=None
        )
        try:
            self._hooks.append(model.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
            self._hooks.append(model.register_forward_hook(self._post_forward, with_kwargs=True, always_call=True))
            for r in self.routers:
                self._hook_router(r)
        except BaseException:
            self.remove()
            raise

    # -- setup ---------------------------------------------------------------------------------

    def _check_spec(self) -> dict[int, int]:
        """The recorder's MoE depth of each hooked layer, after checking that the recorder's
        spec is the model's."""
        want = spec_from_model(self.model)
        have = {
            "num_experts": getattr(self.recorder, "num_experts", None),
            "top_k": getattr(self.recorder, "top_k", None),
            "layers": getattr(self.recorder, "moe_layers", None),
        }
        for key, value in have.items():
            if value is None:
                raise TypeError(
                    f"moescope.hf.attach: the recorder has no {'moe_layers' if key == 'layers' else key}; "
                    "expected a moescope.Recorder"
                )
            if (list(value) if key == "layers" else value) != want[key]:
                raise ValueError(
                    f"moescope.hf.attach: the recorder's model spec has {key} = {value}, the model's "
                    f"routers {want[key]}; build the recorder with moescope.hf.recorder_for(model) "
                    "or Recorder(model=moescope.hf.spec_from_model(model))"
                )
        return {layer: depth for depth, layer in enumerate(want["layers"])}

    def _hook_router(self, r: Router) -> None:
        if r.kind == "dbrx":
            original = r.module.route_tokens_to_experts

            def route(router_logits: torch.Tensor, _orig: Callable = original, _r: Router = r) -> Any:
                weights, ids = _orig(router_logits)
                self._safe_record(_r, lambda: _scored(_r, ids, weights, router_logits))
                return weights, ids

            r.module.route_tokens_to_experts = route  # an instance attribute; removed by remove()
            self._patched.append((r.module, "route_tokens_to_experts"))
            return
        reader = {"tuple": _read_tuple, "llama4": _read_llama4, "jetmoe": _read_jetmoe}[r.kind]

        def hook(_module: torch.nn.Module, _args: Any, out: Any, _r: Router = r) -> None:
            self._safe_record(_r, lambda: reader(_r, out))

        self._hooks.append(r.module.register_forward_hook(hook))

    # -- per forward step --------------------------------------------------------------------

    def _pre_forward(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        try:
            step = self._step(args, kwargs)
        except Exception as e:  # noqa: BLE001 - never raise into the model's forward
            self._fail(e)
            step = _SKIP
        stack = self._tls.__dict__.setdefault("tokens", [])
        stack.append(self._step_var.set(step))

    def _post_forward(self, *_a: Any, **_k: Any) -> None:
        stack = self._tls.__dict__.get("tokens")
        if stack:
            try:
                self._step_var.reset(stack.pop())
            except ValueError:  # set in another context; the next forward sets its own
                pass

    def _lang_id(self, t: str) -> int:
        lid = self._lang_cache.get(t)
        if lid is None:
            lid = int(self.recorder.language(t))
            with self._lock:
                if len(self._lang_cache) < 4096:
                    self._lang_cache[t] = lid
        return lid

    def _step(self, args: tuple, kwargs: dict) -> Optional[_Step]:
        t = _TAG.get()
        if t is None:
            if self.default_tag is None:
                return None
            t = _Tag(self.default_tag, None)
        input_ids = _first_tensor(args, kwargs, "input_ids", 0)
        embeds = kwargs.get("inputs_embeds")
        if input_ids is not None and input_ids.ndim == 2:
            rows, cols = input_ids.shape
        elif isinstance(embeds, torch.Tensor) and embeds.ndim == 3:
            rows, cols = embeds.shape[:2]
        else:
            raise ValueError("the forward step has neither input_ids [B, T] nor inputs_embeds [B, T, H]")
        keep = None
        mask = _first_tensor(args, kwargs, "attention_mask", 1)
        if mask is not None and mask.ndim == 2:
            if mask.shape[0] != rows or mask.shape[1] < cols:
                raise ValueError(f"attention_mask of shape {tuple(mask.shape)} for a batch of {rows} x {cols}")
            # With a KV cache the mask covers the past too: this step's tokens are its last columns.
            keep = mask[:, mask.shape[1] - cols :].detach().to("cpu", torch.bool).reshape(-1)
        if self.skip_token_ids is not None and input_ids is not None:
            skip = torch.isin(input_ids.detach().cpu().reshape(-1), self.skip_token_ids)
            keep = ~skip if keep is None else keep & ~skip
        if keep is not None and bool(keep.all()):
            keep = None
        keep_np = None if keep is None else keep.numpy()
        tokens = rows * cols
        kept = tokens if keep_np is None else int(keep_np.sum())

        v = t.value
        if isinstance(v, str) and keep_np is None:
            langs: Any = self._lang_id(v)
        else:
            if isinstance(v, str):
                per_token = np.full(tokens, self._lang_id(v), dtype=np.uint16)
            elif isinstance(v, tuple):
                if len(v) != rows:
                    raise ValueError(f"tag has {len(v)} languages for a batch of {rows} rows")
                per_row = np.array([self._lang_id(x) for x in v], dtype=np.uint16)
                per_token = np.repeat(per_row, cols)
            elif v.ndim == 1:
                if v.shape[0] != rows:
                    raise ValueError(f"tag has {v.shape[0]} language ids for a batch of {rows} rows")
                per_token = np.repeat(v, cols).astype(np.uint16)
            else:
                if v.shape != (rows, cols):
                    raise ValueError(f"tag has language ids of shape {v.shape} for a batch of {rows} x {cols}")
                per_token = v.reshape(-1).astype(np.uint16)
            if keep_np is not None:
                per_token[~keep_np] = EXCLUDED
            langs = per_token
        if t.sequence_ids is not None:
            if t.sequence_ids.shape[0] != rows:
                raise ValueError(f"tag has {t.sequence_ids.shape[0]} sequence ids for a batch of {rows} rows")
            seq_rows = t.sequence_ids
        else:
            base = next(_SEQ) << 20
            seq_rows = np.arange(base, base + rows, dtype=np.uint64)
        return _Step(tokens, kept, langs, np.repeat(seq_rows, cols))

    # -- per router call ----------------------------------------------------------------------

    def _safe_record(self, r: Router, read: Callable[[], _Routed]) -> None:
        step = self._step_var.get()
        if step is _SKIP or (step is None and _TAG.get() is None and self.default_tag is None):
            return
        try:
            self._record(r, read(), step)
        except Exception as e:  # noqa: BLE001 - never raise into the model's forward
            self._fail(e)

    def _array(self, r: Router, x: torch.Tensor, integer: bool) -> torch.Tensor:
        x = x.detach()
        if x.device.type != "cpu":
            if not self.cuda_to_cpu:
                raise RuntimeError(
                    f"{r.name} output is on {x.device}; pass attach(..., cuda_to_cpu=True) to copy "
                    "it to the CPU (a device synchronization per MoE layer)"
                )
            x = x.cpu()
        if not integer and x.dtype not in _FLOAT_DTYPES:
            x = x.float()
        # The recorder reads a contiguous CPU tensor in place (its data_ptr): no copy here when
        # the router's output already is one, of the recorder's dtypes.
        return x.contiguous()

    def _record(self, r: Router, routed: _Routed, step: Optional[_Step]) -> None:
        n = routed.ids.shape[0]
        if step is None:
            # The router ran outside a hooked top-level forward (a submodule called directly):
            # no mask; one tag for every token, or nothing.
            t = _TAG.get()
            v = t.value if t is not None else self.default_tag
            if not isinstance(v, str):
                raise ValueError(f"{r.name} ran outside the model's forward, with a per-row tag")
            step = _Step(n, n, self._lang_id(v), None)
        elif n != step.tokens:
            raise ValueError(f"{r.name} routed {n} tokens in a forward step of {step.tokens} tokens")
        if step.kept == 0:
            return
        kwargs: dict[str, Any] = {}
        if routed.weights is not None:
            kwargs["weights"] = self._array(r, routed.weights, False)
        if self.scores and routed.logits is not None:
            if routed.scoring == "softmax":  # the recorder takes the softmax
                kwargs["logits"] = self._array(r, routed.logits, False)
            elif routed.scoring == "sigmoid":  # the scores, normalized per token by the recorder
                kwargs["probs"] = self._array(r, torch.sigmoid(routed.logits.detach().float()), False)
        if step.sequence_ids is not None:
            kwargs["sequence_ids"] = step.sequence_ids
        self.recorder.record(self._depth[r.layer], self._array(r, routed.ids, True), step.langs, **kwargs)
        with self._lock:
            self.recorded_tokens += step.kept

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = e
            first = not self._warned
            self._warned = True
        if first:
            warnings.warn(
                f"moescope.hf: a forward step was not recorded ({type(e).__name__}: {e}); the model "
                "ran normally. Further problems are counted in handle.errors without a warning.",
                RuntimeWarning,
                stacklevel=2,
            )

    # -- removal ----------------------------------------------------------------------------

    def remove(self) -> None:
        """Removes every hook (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for module, attr in self._patched:
            module.__dict__.pop(attr, None)
        self._patched.clear()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        layers = [r.layer for r in self.routers]
        return f"<moescope.hf.Handle {len(layers)} MoE layers {layers}, errors={self.errors}>"


def attach(
    model: torch.nn.Module,
    recorder: Any,
    *,
    default_tag: Optional[str] = None,
    skip_token_ids: Optional[Iterable[int]] = None,
    scores: bool = True,
    cuda_to_cpu: bool = False,
) -> Handle:
    """Hooks every MoE router of ``model`` so that each forward step's routing is recorded in
    ``recorder`` (a ``moescope.Recorder`` whose spec matches the model: see
    :func:`recorder_for`). Returns a :class:`Handle` (``handle.remove()``, or ``with``).

    - Languages come from the innermost :class:`tag` around the forward call; forward steps
      outside any ``tag`` are recorded under ``default_tag``, or not at all when it is ``None``.
    - Positions where the ``attention_mask`` passed to ``model`` is 0 (padding) are left out,
      and so are tokens whose input id is in ``skip_token_ids`` (e.g. BOS/EOS and chat-template
      tokens).
    - Per token the router's top-k ids and gate weights are recorded; with ``scores`` (the
      default) also its full distribution: the logits of softmax routers, the sigmoid scores of
      sigmoid routers when the recorder takes probabilities.
    - Router outputs on a GPU raise a counted recording problem unless ``cuda_to_cpu`` copies
      them to the CPU (one device synchronization per MoE layer).

    Raises ``ValueError`` at once (not during a forward) when the model has no router moescope
    recognizes or when the recorder's spec disagrees with the model's routers.
    """
    return Handle(
        model,
        recorder,
        default_tag=default_tag,
        skip_token_ids=skip_token_ids,
        scores=scores,
        cuda_to_cpu=cuda_to_cpu,
    )
