"""Type stubs of the native module ``moescope._moescope`` (re-exported by ``moescope``)."""

import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__version__: str
#: The model presets ``Recorder(model=...)`` accepts by name.
PRESETS: List[str]
#: The reasons of ``Recorder.dropped()``, in counter order.
DROP_REASONS: List[str]
#: Batches of at least this many routed slots (tokens × top_k) are recorded with the GIL
#: released; smaller ones (about a microsecond) keep it.
GIL_RELEASE_MIN_SLOTS: int

# A NumPy array or a PyTorch CPU tensor (read in place); other array-likes are copied by
# numpy.asarray.
ArrayLike = Any
# A language: an id from Recorder.language(tag), or the tag itself (interned on the call).
Lang = Union[int, str]
# The languages of a batch: one for every token, one per token (an integer array), or
# contiguous segments (lang, tokens) / (lang, tokens, sequence_id) in token order.
Langs = Union[Lang, ArrayLike, Sequence[Union[Tuple[Lang, int], Tuple[Lang, int, Optional[int]]]]]
# A sampling rate: a fraction in [1e-6, 1], "all", {"rate": r}, {"target_tokens_per_second": n}.
Rate = Union[float, Literal["all"], Mapping[str, float]]
# Model: a preset name, a config.json path or model directory, a dict (a moescope spec with
# name/num_experts/top_k/layers, or a Hugging Face config), or a transformers config object.
Model = Union[str, "os.PathLike[str]", Mapping[str, Any], Any]

class Recorded:
    """What one ``Recorder.record`` call did; every token is in exactly one field."""

    recorded: int
    sampled_out: int
    excluded: int
    dropped: int

class Recorder:
    """Records MoE routing decisions per language into a rolling window.

    Thread-safe (share one per model). ``record`` reads NumPy arrays and PyTorch CPU tensors
    in place and releases the GIL for batches of at least ``GIL_RELEASE_MIN_SLOTS`` slots.
    """

    def __init__(
        self,
        model: Model,
        *,
        window_seconds: float = 300.0,
        buckets: int = 30,
        sampling: Optional[Union[Rate, Mapping[str, Any]]] = None,
        allowed_languages: Optional[Sequence[str]] = None,
        languages: Optional[Sequence[str]] = None,
        max_languages: int = 32,
        seed: Optional[int] = None,
        writer_stripes: Optional[int] = None,
        name: Optional[str] = None,
        strict: bool = False,
    ) -> None:
        """Builds a recorder for ``model``.

        - ``window_seconds`` / ``buckets``: the rolling window (default 5 minutes in 30
          buckets of 10 s); a bucket must be a whole number of milliseconds.
        - ``sampling``: a default rate (see ``Rate``), or
          ``{"default": Rate, "languages": {tag: Rate}}``; default: every token.
        - ``allowed_languages`` (alias ``languages``): only these tags get series of their
          own, the others count as ``other``.
        - ``max_languages``: the cap on tracked languages (1..=1024); later tags count as
          ``other``.
        - ``seed``: the hash seed of sequence sampling and split halves.
        - ``writer_stripes``: threads that can record at the same instant (default: 2 × CPUs).
        - ``name``: the model label (default: the preset's or config's name).
        - ``strict``: check every value of a batch before recording it and raise
          ``RecordError`` on the first bad one (out-of-range expert id, NaN, unknown language),
          recording nothing; default: drop bad tokens and count them, as the Rust recorder.

        Raises ``ConfigError`` (a ``ValueError``) naming the bad setting.
        """

    def language(self, tag: str) -> int:
        """The id of a language tag, interned the first time; call it once per request.
        Invalid tags give ``UND`` (0); tags past the cap or outside the allowlist ``OTHER`` (1)."""

    def record(
        self,
        depth: int,
        topk_ids: ArrayLike,
        langs: Langs,
        *,
        weights: Optional[ArrayLike] = None,
        logits: Optional[ArrayLike] = None,
        probs: Optional[ArrayLike] = None,
        sequence_ids: Optional[ArrayLike] = None,
    ) -> Recorded:
        """Records one MoE layer's routing decisions for one step.

        - ``depth``: the MoE layer's depth, 0 for the model's first MoE layer (not the model's
          layer number when some layers are dense: ``depth_of(layer_number)`` maps it).
        - ``topk_ids``: ``(tokens, top_k)`` (or flat ``tokens * top_k``), C-contiguous, of
          dtype int64, int32, uint32, uint16, int16, uint8 or uint64; read in place.
        - ``langs``: see ``Langs``.
        - ``weights``: the top-k gate weights, shaped like ``topk_ids``.
        - ``logits`` or ``probs``: the router's scores over the routed experts,
          ``(tokens, num_experts)`` (softmax is taken of logits).
          Float arguments: float32 is read in place; float16, bfloat16 and float64 are
          converted into a buffer the recorder keeps.
        - ``sequence_ids``: one integer per token (keeps sampling and split halves consistent
          across layers and steps).

        Raises ``TypeError`` (an unsupported dtype, a tensor not on the CPU) or ``ValueError`` (shape,
        strides, negative depth, language id out of range) before anything is recorded, and
        ``RecordError`` for a batch the recorder refuses (lengths that do not match, depth out
        of range, too many tokens: its tokens are counted in ``dropped()``, as in Rust). Bad
        values inside a batch (expert id out of range, NaN) drop those tokens only, counted in
        ``dropped()`` and in the returned ``Recorded``, unless the recorder is ``strict``.
        """

    def record_text(self, lang: Lang, chars: int, words: int) -> None:
        """Records a request's text length for the tokenization statistics (once per request)."""

    def depth_of(self, layer: int) -> int:
        """The MoE depth of the model's layer number ``layer``; ``ValueError`` if that layer
        is not an MoE layer."""

    def layer_of(self, depth: int) -> int:
        """The model's layer number of the MoE layer at ``depth``."""

    @property
    def model(self) -> Dict[str, Any]:
        """The model spec (the ``model`` object of a snapshot)."""

    @property
    def num_experts(self) -> int: ...
    @property
    def top_k(self) -> int: ...
    @property
    def moe_layers(self) -> List[int]:
        """The model's layer numbers of its MoE layers, in depth order."""

    @property
    def strict(self) -> bool: ...
    def languages(self) -> Dict[str, int]:
        """The interned languages ``{tag: id}``, with ``und`` and ``other``."""

    def dropped(self, reason: Optional[str] = None) -> Any:
        """Tokens dropped so far: ``{reason: count}``, or one reason's count (an int)."""

    def snapshot(self, *, buckets: bool = False) -> Dict[str, Any]:
        """The window as a ``moescope.snapshot/v1`` dict (the Rust snapshot's JSON)."""

    def snapshot_json(self, *, buckets: bool = False) -> str:
        """The window as ``moescope.snapshot/v1`` JSON text."""

    def write_snapshot(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the snapshot to ``path`` atomically; ``SnapshotError`` if it cannot."""

    def upkeep(self) -> None:
        """Folds recent records into the window and rotates it (snapshots do it too)."""

    def allocated_bytes(self) -> int: ...

Snapshot = Union[Mapping[str, Any], str, "os.PathLike[str]", Recorder]

def analyze(
    snapshot: Snapshot,
    reference: str = "en",
    *,
    lsi_threshold: float = 0.2,
    all_pairs: bool = False,
    top_k: Optional[int] = None,
    active_alpha: float = 0.1,
    theta_bits: Optional[float] = None,
    min_deep_tokens: Optional[float] = None,
) -> Dict[str, Any]:
    """The ``moescope.analysis/v1`` document, equal to ``moescope analyze --format json``.

    ``snapshot``: a snapshot dict, JSON text, a path, or a ``Recorder`` (its window now).
    Raises ``SnapshotError`` for an unreadable snapshot, ``AnalysisError`` for bad options
    or an unknown reference language."""

def diff(
    base: Snapshot,
    candidate: Snapshot,
    reference: str = "en",
    *,
    lsi_threshold: float = 0.2,
    tolerance_bits: float = 0.1,
    strict: bool = False,
    theta_bits: Optional[float] = None,
    min_deep_tokens: Optional[float] = None,
) -> Dict[str, Any]:
    """The ``moescope.diff/v1`` document, equal to ``moescope diff --format json``;
    ``result["regression"]`` is the verdict (the CLI's exit code 1)."""

class PrometheusServer:
    """A running ``/metrics`` endpoint and its publisher thread."""

    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def stop(self) -> None:
        """Stops the endpoint and the publisher; idempotent."""

    def __enter__(self) -> "PrometheusServer": ...
    def __exit__(self, *args: object) -> bool: ...

def serve_prometheus(
    recorder: Recorder,
    addr: str = "127.0.0.1:9464",
    *,
    interval_seconds: float = 5.0,
    reference: str = "en",
    model_label: Optional[str] = None,
) -> PrometheusServer:
    """Serves ``recorder``'s statistics at ``http://addr/metrics`` (port 0: any free port),
    published every ``interval_seconds``. ``ServeError`` (an ``OSError``) if the address
    cannot be bound."""
