//! The Python module `moescope._moescope`, re-exported by the `moescope` package.
//!
//! A thin layer over the Rust crates: `recorder` wraps `moescope_core::Recorder` (reading
//! NumPy arrays and PyTorch CPU tensors in place, see `arrays`), `analysis` calls
//! `moescope_stats::analyze` and `diff` as the CLI does, and `serve` starts
//! `moescope_prometheus::serve_prometheus`. The Python-facing documentation is in the type
//! stubs (`python/moescope/_moescope.pyi`) and docs/PYTHON.md. This crate is built by maturin
//! (`pip install ./crates/moescope-py`), outside the root workspace.

use pyo3::prelude::*;

mod analysis;
// The one module with `unsafe`: slices of NumPy buffers (each block carries its SAFETY).
#[allow(unsafe_code)]
mod arrays;
mod errors;
mod recorder;
mod serve;

/// The native module.
#[pymodule]
fn _moescope(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The array conversions need NumPy: fail at import, naming it, rather than at first use.
    m.py().import("numpy")?;
    m.add_class::<recorder::PyRecorder>()?;
    m.add_class::<recorder::PyRecorded>()?;
    m.add_class::<serve::PyPrometheusServer>()?;
    m.add_function(wrap_pyfunction!(analysis::analyze, m)?)?;
    m.add_function(wrap_pyfunction!(analysis::diff, m)?)?;
    m.add_function(wrap_pyfunction!(serve::serve_prometheus, m)?)?;
    m.add_function(wrap_pyfunction!(data_address, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PRESETS", moescope_core::spec::PRESETS.to_vec())?;
    m.add(
        "DROP_REASONS",
        moescope_core::DropReason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>(),
    )?;
    m.add("GIL_RELEASE_MIN_SLOTS", recorder::GIL_RELEASE_MIN_SLOTS)?;
    Ok(())
}

/// The address of the memory `Recorder.record` reads for `array` (a NumPy array or a
/// PyTorch CPU tensor): equal to `array.ctypes.data` / `tensor.data_ptr()` when no copy is
/// made. For tests.
#[pyfunction]
#[pyo3(name = "_data_address")]
fn data_address(array: &Bound<'_, PyAny>) -> PyResult<usize> {
    Ok(arrays::view(array, "array")?.addr())
}
