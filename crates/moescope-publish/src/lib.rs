//! moescope-publish: what moescope publishes, independent of where it goes.
//!
//! A [`Publisher`] turns a [`Recorder`]'s rolling window into a [`Publication`] every few
//! seconds: the metrics of the [`CATALOGUE`] (one typed [`Metric`] per entry; names, units and
//! help texts defined once, docs/METRICS.md lists them) with their label values, the collapse
//! flag through per-language detectors with hysteresis, the totals, drop counters and the
//! monitor's own cost. [`spawn`] runs it in a thread and hands each round to every [`Sink`].
//! The statistics come from `moescope-stats` ([`moescope_stats::live_analysis`]); this crate
//! only maps them to samples, and depends on no exporter: the Prometheus sink and endpoint are
//! in `moescope-prometheus`, the OpenTelemetry sink in `moescope-otel`.
//!
//! ```
//! use std::sync::Arc;
//! use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
//! use moescope_publish::{Metric, Publisher, PublisherConfig};
//!
//! let recorder = Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0, 1])?)?);
//! let en = recorder.language("en");
//! recorder.record(&RouterBatch::at_depth(1, &[0u32, 1, 2, 3], Languages::All(en)))?;
//!
//! let mut publisher = Publisher::new(recorder.clone(), PublisherConfig::default())?;
//! let round = publisher.collect();
//! // Four tokens spread over four experts: 2 bits of usage entropy in layer 1.
//! let h = round.publication.value(Metric::UsageEntropyBits, &["tiny", "1", "en"]);
//! assert_eq!(h, Some(2.0));
//!
//! // A setting out of range is refused where it is given, naming the field.
//! let bad = PublisherConfig { lsi_threshold: 1.0, ..PublisherConfig::default() };
//! let err = Publisher::new(recorder, bad).err().unwrap();
//! assert_eq!(err.field, "lsi_threshold");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Recorder`]: moescope_core::Recorder

#![warn(missing_docs)]

pub mod publication;
pub mod publisher;
pub mod sink;

pub use moescope_stats::{ConfigError, LanguageSelection, LayerDetail, LayerSelection};
pub use publication::{Descriptor, Kind, Metric, Publication, Sample, Summary, CATALOGUE};
pub use publisher::{spawn, Publisher, PublisherConfig, PublisherThread, Round};
pub use sink::Sink;
