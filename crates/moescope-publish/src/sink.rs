//! The one interface between the publisher and a monitoring system.

use crate::publication::Publication;

/// Receives every round of a publisher: turns a [`Publication`] into some monitoring system's
/// instruments (Prometheus in `moescope-prometheus`, OpenTelemetry in `moescope-otel`).
pub trait Sink: Send {
    /// Shows `publication` (replacing the previous round).
    fn publish(&mut self, publication: &Publication);
}
