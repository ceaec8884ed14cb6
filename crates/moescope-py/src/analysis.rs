//! `moescope.analyze` and `moescope.diff`: the documents of `moescope analyze --format json`
//! and `moescope diff --format json`, from the same library functions the CLI calls.

use std::path::PathBuf;

use moescope_core::Snapshot;
use moescope_stats::{AnalysisConfig, CollapseConfig, DiffConfig};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors;
use crate::recorder::{json_dumps, json_loads, PyRecorder};

/// The snapshot of `obj`: a `Recorder` (its window now), a snapshot dict, JSON text, or a path.
pub(crate) fn load_snapshot(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Snapshot> {
    let py = obj.py();
    if let Ok(r) = obj.cast::<PyRecorder>() {
        let recorder = r.get().inner.clone();
        return Ok(py.detach(|| recorder.snapshot()));
    }
    let parse = |text: &str, origin: &str| {
        Snapshot::from_json_str(text).map_err(|e| errors::snapshot(format!("{origin}: {e}")))
    };
    if obj.cast::<PyDict>().is_ok() {
        return parse(&json_dumps(obj)?, what);
    }
    let path: PathBuf = if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_cow()?;
        if s.trim_start().starts_with('{') {
            return parse(&s, what);
        }
        PathBuf::from(s.as_ref())
    } else if obj.hasattr(pyo3::intern!(py, "__fspath__"))? {
        obj.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a snapshot dict, JSON text, a path or a Recorder, got {}",
            obj.get_type().name()?
        )));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| errors::snapshot(format!("cannot read {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

fn collapse(theta_bits: Option<f64>, min_deep_tokens: Option<f64>) -> CollapseConfig {
    CollapseConfig {
        theta_bits: theta_bits.unwrap_or(CollapseConfig::DEFAULT.theta_bits),
        min_deep_tokens: min_deep_tokens.unwrap_or(CollapseConfig::DEFAULT.min_deep_tokens),
        ..CollapseConfig::default()
    }
}

/// The `moescope.analysis/v1` document of a snapshot, as `moescope analyze --format json`
/// prints it.
#[pyfunction]
#[pyo3(signature = (
    snapshot,
    reference = "en",
    *,
    lsi_threshold = AnalysisConfig::DEFAULT_LSI_THRESHOLD,
    all_pairs = false,
    top_k = None,
    active_alpha = AnalysisConfig::DEFAULT_ACTIVE_ALPHA,
    theta_bits = None,
    min_deep_tokens = None,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn analyze<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, PyAny>,
    reference: &str,
    lsi_threshold: f64,
    all_pairs: bool,
    top_k: Option<usize>,
    active_alpha: f64,
    theta_bits: Option<f64>,
    min_deep_tokens: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let snap = load_snapshot(snapshot, "snapshot")?;
    let config = AnalysisConfig {
        lsi_threshold,
        active_alpha,
        top_k,
        all_pairs,
        collapse: collapse(theta_bits, min_deep_tokens),
        ..AnalysisConfig::new(reference)
    };
    let json = py.detach(|| {
        moescope_stats::analyze(&snap, &config)
            .map_err(|e| e.to_string())
            .and_then(|a| serde_json::to_string(&a).map_err(|e| e.to_string()))
    });
    json_loads(py, &json.map_err(errors::analysis)?)
}

/// The `moescope.diff/v1` document of a base and a candidate snapshot, as
/// `moescope diff --format json` prints it (`regression` is its exit code's verdict).
#[pyfunction]
#[pyo3(signature = (
    base,
    candidate,
    reference = "en",
    *,
    lsi_threshold = AnalysisConfig::DEFAULT_LSI_THRESHOLD,
    tolerance_bits = DiffConfig::DEFAULT.tolerance_bits,
    strict = false,
    theta_bits = None,
    min_deep_tokens = None,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn diff<'py>(
    py: Python<'py>,
    base: &Bound<'py, PyAny>,
    candidate: &Bound<'py, PyAny>,
    reference: &str,
    lsi_threshold: f64,
    tolerance_bits: f64,
    strict: bool,
    theta_bits: Option<f64>,
    min_deep_tokens: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    if !tolerance_bits.is_finite() || tolerance_bits < 0.0 {
        return Err(errors::analysis(format!(
            "tolerance_bits {tolerance_bits} is not ≥ 0"
        )));
    }
    let snaps = [
        ("base", load_snapshot(base, "base")?),
        ("candidate", load_snapshot(candidate, "candidate")?),
    ];
    let config = AnalysisConfig {
        lsi_threshold,
        collapse: collapse(theta_bits, min_deep_tokens),
        ..AnalysisConfig::new(reference)
    };
    let dc = DiffConfig {
        tolerance_bits,
        strict,
    };
    let json = py.detach(|| {
        let mut analyses = Vec::with_capacity(2);
        for (role, snap) in &snaps {
            analyses
                .push(moescope_stats::analyze(snap, &config).map_err(|e| format!("{role}: {e}"))?);
        }
        let d = moescope_stats::diff(&analyses[0], &analyses[1], &dc).map_err(|e| e.to_string())?;
        serde_json::to_string(&d).map_err(|e| e.to_string())
    });
    json_loads(py, &json.map_err(errors::analysis)?)
}
