//! `moescope.serve_prometheus`: a recorder's statistics at `http://ADDR/metrics`.

use std::sync::Mutex;
use std::time::Duration;

use moescope_prometheus::PrometheusExport;
use moescope_publish::PublisherConfig;
use pyo3::prelude::*;

use crate::errors;
use crate::recorder::PyRecorder;

/// A running Prometheus endpoint and the publisher thread feeding it. `stop()` (or leaving a
/// `with` block) shuts both down; so does garbage collection of the object.
#[pyclass(frozen, name = "PrometheusServer", module = "moescope")]
pub struct PyPrometheusServer {
    export: Mutex<Option<PrometheusExport>>,
    address: String,
}

#[pymethods]
impl PyPrometheusServer {
    /// The bound address, `host:port` (the real port when 0 was asked for).
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// `http://host:port/metrics`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }

    /// Whether the endpoint is still serving.
    #[getter]
    fn running(&self) -> bool {
        self.export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Stops the endpoint and the publisher (waits for their threads). Idempotent.
    fn stop(&self, py: Python<'_>) {
        let export = self
            .export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        py.detach(move || drop(export));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stop(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "PrometheusServer(url={:?}, running={})",
            self.url(),
            self.running()
        )
    }
}

/// Serves `recorder`'s statistics at `http://ADDR/metrics`, published every
/// `interval_seconds` by a background thread. Returns the running server.
#[pyfunction]
#[pyo3(signature = (recorder, addr = "127.0.0.1:9464", *, interval_seconds = 5.0, reference = "en", model_label = None))]
pub(crate) fn serve_prometheus(
    py: Python<'_>,
    recorder: &Bound<'_, PyRecorder>,
    addr: &str,
    interval_seconds: f64,
    reference: &str,
    model_label: Option<String>,
) -> PyResult<PyPrometheusServer> {
    if !(interval_seconds.is_finite() && interval_seconds >= 0.001) {
        return Err(errors::config(format!(
            "interval_seconds: must be at least 0.001, got {interval_seconds}"
        )));
    }
    let config = PublisherConfig {
        interval: Duration::from_secs_f64(interval_seconds),
        reference: reference.to_string(),
        model_label,
        ..PublisherConfig::default()
    };
    let rec = recorder.get().inner.clone();
    let addr = addr.to_string();
    let export = py
        .detach(move || moescope_prometheus::serve_prometheus(rec, &addr, config))
        .map_err(errors::serve)?;
    let address = export.endpoint.local_addr().to_string();
    Ok(PyPrometheusServer {
        export: Mutex::new(Some(export)),
        address,
    })
}
