"""moescope: live per-language routing health for Mixture-of-Experts models.

Record each MoE layer's top-k expert ids per language from NumPy arrays or PyTorch CPU
tensors (read in place, no copy), read the rolling window as a ``moescope.snapshot/v1``
dict, analyze it exactly as ``moescope analyze`` does, and serve the live metrics to
Prometheus::

    import numpy as np
    import moescope

    rec = moescope.Recorder("olmoe-1b-7b")          # 64 experts, top-8, 16 MoE layers
    en = rec.language("en")
    ids = np.random.randint(0, 64, size=(32, 8))    # 32 tokens' top-8 experts
    rec.record(0, ids, en)                          # MoE depth 0, all tokens English
    snap = rec.snapshot()
    assert snap["languages"]["en"]["layers"][0]["tokens"] == 32

See docs/PYTHON.md for the semantics (depth vs layer number, language forms, errors and
counted drops, zero-copy, the GIL).
"""

from ._errors import (
    AnalysisError,
    ConfigError,
    MoescopeError,
    RecordError,
    ServeError,
    SnapshotError,
)
from ._moescope import (
    DROP_REASONS,
    GIL_RELEASE_MIN_SLOTS,
    PRESETS,
    PrometheusServer,
    Recorded,
    Recorder,
    __version__,
    analyze,
    diff,
    serve_prometheus,
)

#: Language id that excludes tokens from every count (special tokens, padding).
EXCLUDED = 65535
#: Language id of untagged or invalid tags.
UND = 0
#: Language id of valid tags past the cap on tracked languages or outside the allowlist.
OTHER = 1

__all__ = [
    "Recorder",
    "Recorded",
    "PrometheusServer",
    "analyze",
    "diff",
    "serve_prometheus",
    "MoescopeError",
    "ConfigError",
    "RecordError",
    "SnapshotError",
    "AnalysisError",
    "ServeError",
    "PRESETS",
    "DROP_REASONS",
    "GIL_RELEASE_MIN_SLOTS",
    "EXCLUDED",
    "UND",
    "OTHER",
    "__version__",
]
