"""moescope's exceptions.

Every error the native module raises on purpose is a :class:`MoescopeError`. The subclasses
also derive from the built-in exception a Python caller would expect (``ValueError`` for bad
values, ``OSError`` for a socket that cannot be bound), so ``except ValueError`` works too.
Wrong argument types (a float array where ids are expected, a CUDA tensor) raise ``TypeError``
and bad shapes raise ``ValueError``, before anything is recorded.
"""


class MoescopeError(Exception):
    """Base class of moescope's own errors."""


class ConfigError(MoescopeError, ValueError):
    """An invalid model spec or recorder setting (an unknown preset, a bad window, ...)."""


class RecordError(MoescopeError, ValueError):
    """A batch the recorder could not take at all: lengths that do not match the model, an MoE
    depth out of range, too many tokens, or (``strict=True``) a bad value in the batch.

    Nothing of the batch was counted. Without ``strict``, the recorder's drop counters
    (``Recorder.dropped()``) count the batch's tokens under the reason, as the Rust recorder
    does; with ``strict``, the strict check itself counts nothing."""


class SnapshotError(MoescopeError, ValueError):
    """A snapshot that cannot be read or written: bad JSON, another format, counts that do not
    fit the model, or a file that cannot be read or written."""


class AnalysisError(MoescopeError, ValueError):
    """``analyze`` or ``diff`` refused its input (an unknown reference language, bad options,
    snapshots of different model shapes)."""


class ServeError(MoescopeError, OSError):
    """The Prometheus endpoint could not start (the address is taken or invalid)."""


__all__ = [
    "MoescopeError",
    "ConfigError",
    "RecordError",
    "SnapshotError",
    "AnalysisError",
    "ServeError",
]
