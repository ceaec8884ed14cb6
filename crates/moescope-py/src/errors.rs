//! The Python exception classes (defined in `moescope/_errors.py`, so that each also derives
//! from the built-in exception a caller expects) and the conversions of the Rust errors.

use pyo3::PyErr;

pyo3::import_exception!(moescope._errors, ConfigError);
pyo3::import_exception!(moescope._errors, RecordError);
pyo3::import_exception!(moescope._errors, SnapshotError);
pyo3::import_exception!(moescope._errors, AnalysisError);
pyo3::import_exception!(moescope._errors, ServeError);

/// A `ConfigError` with `msg`.
pub(crate) fn config(msg: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(msg.to_string())
}

/// A `RecordError` with `msg`.
pub(crate) fn record(msg: impl std::fmt::Display) -> PyErr {
    RecordError::new_err(msg.to_string())
}

/// A `SnapshotError` with `msg`.
pub(crate) fn snapshot(msg: impl std::fmt::Display) -> PyErr {
    SnapshotError::new_err(msg.to_string())
}

/// An `AnalysisError` with `msg`.
pub(crate) fn analysis(msg: impl std::fmt::Display) -> PyErr {
    AnalysisError::new_err(msg.to_string())
}

/// A `ServeError` with `msg`.
pub(crate) fn serve(msg: impl std::fmt::Display) -> PyErr {
    ServeError::new_err(msg.to_string())
}
