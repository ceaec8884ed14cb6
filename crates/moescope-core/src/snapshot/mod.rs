//! The `moescope.snapshot/v1` interchange format: the per-language routing counts of a window.
//!
//! A [`Snapshot`] is what the live recorder hands to the metric functions every few seconds, and
//! what any stack (moescope itself, a PyTorch hook script, a converted SGLang dump) writes to
//! disk for offline analysis. It holds raw counts, never derived metrics, so snapshots can be
//! merged ([`LanguageCounts::add_scaled`]) and every metric recomputed from them.
//!
//! # JSON shape
//! ```json
//! { "format": "moescope.snapshot/v1",
//!   "model": { "name": "qwen3-30b-a3b", "num_experts": 128, "top_k": 8, "layers": [0, 1, 47] },
//!   "window": { "start_unix_ms": 0, "end_unix_ms": 0 },
//!   "languages": { "he": { "tokens": 0, "chars": 0, "words": 0,
//!       "layers": [ { "tokens": 0, "expert_tokens": [0, 0], "prob_sum": null,
//!                     "prob_tokens": 0, "selection_entropy_sum_bits": null } ],
//!       "halves": [ { "layers": [] }, { "layers": [] } ] } },
//!   "buckets": [ { "window": { "start_unix_ms": 0, "end_unix_ms": 0 }, "languages": {} } ] }
//! ```
//! `"format"` is always the first key written. `window`, `buckets`, `chars`, `words`, `halves`
//! and `topk_weight_sum` are optional; a layer's `tokens` may be left out and then reads as
//! `sum(expert_tokens) / model.top_k`. Unknown keys are ignored when reading, so a later v1
//! writer may add fields without breaking older readers.
//!
//! # Invariants (checked by [`Snapshot::validate`], which the readers call)
//! The model is a valid [`ModelSpec`]; every language key is 1–35 ASCII letters, digits or `-`;
//! every language (in the window and in each bucket) has one layer entry per `model.layers`,
//! each with `model.num_experts` expert counts (and as many `prob_sum` numbers when present);
//! `halves`, when present, has exactly two halves shaped the same way; every number is finite and
//! ≥ 0; windows have start ≤ end and buckets are ordered oldest first. Errors name the offending
//! field by its JSON path, e.g. `languages.he.layers[3].expert_tokens`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::spec::ModelSpec;

mod files;
mod json_format;
mod validate;

pub use files::SnapshotFiles;

/// Collections deserialized with a cap on their length, checked as elements arrive.
mod bounded {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};

    use super::{BucketCounts, LanguageCounts, MAX_SNAPSHOT_BUCKETS, MAX_SNAPSHOT_LANGUAGES};

    struct Capped<T>(usize, PhantomData<T>);

    impl<'de> Visitor<'de> for Capped<BTreeMap<String, LanguageCounts>> {
        type Value = BTreeMap<String, LanguageCounts>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object of at most {} languages", self.0)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, LanguageCounts>()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!(
                        "more than {} languages; at most {} are accepted",
                        self.0, self.0
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    impl<'de> Visitor<'de> for Capped<Vec<BucketCounts>> {
        type Value = Vec<BucketCounts>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {} buckets", self.0)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(bucket) = seq.next_element::<BucketCounts>()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!(
                        "more than {} buckets; at most {} are accepted",
                        self.0, self.0
                    )));
                }
                out.push(bucket);
            }
            Ok(out)
        }
    }

    pub(super) fn languages<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, LanguageCounts>, D::Error> {
        d.deserialize_map(Capped::<BTreeMap<String, LanguageCounts>>(
            MAX_SNAPSHOT_LANGUAGES,
            PhantomData,
        ))
    }

    pub(super) fn buckets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BucketCounts>, D::Error> {
        d.deserialize_seq(Capped::<Vec<BucketCounts>>(
            MAX_SNAPSHOT_BUCKETS,
            PhantomData,
        ))
    }
}

use json_format::NumberArraysInline;
pub use validate::is_valid_language_key;

/// Most languages a snapshot (its window, and each bucket) may hold: far above what a recorder
/// tracks (at most 1 026 slots), low enough that a hostile file cannot make the reader allocate
/// without bound.
pub const MAX_SNAPSHOT_LANGUAGES: usize = 4_096;

/// Most buckets a snapshot may hold (a recorder's window has at most 100 000).
pub const MAX_SNAPSHOT_BUCKETS: usize = 100_000;

/// The value of the `"format"` key of every snapshot file this module reads or writes.
pub const SNAPSHOT_FORMAT: &str = "moescope.snapshot/v1";

/// The per-language routing counts of one model over one window. See the [module docs](self).
///
/// Serializing always writes `"format": "moescope.snapshot/v1"` first; deserializing with serde
/// directly accepts a missing `format` and does not validate, while [`Snapshot::from_json_str`]
/// and [`Snapshot::read_json`] check the format and call [`Snapshot::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The model whose router was recorded.
    pub model: ModelSpec,
    /// The time range the counts cover, when known.
    pub window: Option<WindowRange>,
    /// Keyed by normalized language tag ("en", "he", "ja", "und", "other").
    pub languages: BTreeMap<String, LanguageCounts>,
    /// The rolling window's buckets, oldest first, each with its own counts (for the spread of a
    /// metric across buckets). Empty when not recorded; omitted from JSON when empty.
    pub buckets: Vec<BucketCounts>,
}

/// A time range in Unix milliseconds, start ≤ end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRange {
    /// Start of the range (inclusive), Unix milliseconds.
    pub start_unix_ms: u64,
    /// End of the range, Unix milliseconds.
    pub end_unix_ms: u64,
}

/// The counts of one bucket of the rolling window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// The bucket's time range.
    pub window: WindowRange,
    /// Keyed like [`Snapshot::languages`].
    #[serde(default, deserialize_with = "bounded::languages")]
    pub languages: BTreeMap<String, LanguageCounts>,
}

/// The counts of one language in a window (or bucket).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanguageCounts {
    /// Content tokens (sampling-weighted estimate) of this language in the window.
    pub tokens: f64,
    /// Characters of the text those tokens came from, when the caller passed text lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chars: Option<f64>,
    /// Whitespace-separated segments of that text, when the caller passed text lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<f64>,
    /// One entry per MoE layer, in the order of `model.layers`.
    pub layers: Vec<LayerCounts>,
    /// Split-half control: exactly two halves when present (JSON: an array of two objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halves: Option<[HalfCounts; 2]>,
}

/// One half of a language's tokens (split by a hash of the sequence id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HalfCounts {
    /// One entry per MoE layer, in the order of `model.layers`.
    pub layers: Vec<LayerCounts>,
}

/// The counts of one language in one MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCounts {
    /// Tokens recorded in this layer (weighted). Optional in JSON: when absent it is
    /// sum(expert_tokens) / top_k. (Deserialized on its own, outside a [`Snapshot`], an absent
    /// value reads as NaN, meaning "not known yet"; the snapshot readers fill it in.)
    #[serde(default = "absent_tokens")]
    pub tokens: f64,
    /// n_e: weighted (token, slot) assignments per routed expert; E numbers.
    pub expert_tokens: Vec<f64>,
    /// Sum over tokens of the router probability per expert (E numbers), when recorded.
    #[serde(default)]
    pub prob_sum: Option<Vec<f64>>,
    /// Tokens whose probabilities are in prob_sum (default 0).
    #[serde(default)]
    pub prob_tokens: f64,
    /// Sum over those tokens of -Σ_e π log2 π.
    #[serde(default)]
    pub selection_entropy_sum_bits: Option<f64>,
    /// Sum over tokens of the top-k gate weights (optional, omitted when None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_weight_sum: Option<f64>,
}

/// NaN marks a layer `tokens` absent from the JSON (JSON itself cannot hold a NaN).
fn absent_tokens() -> f64 {
    f64::NAN
}

/// Why a snapshot could not be read, written or accepted. Every variant names the file or field.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The text is not JSON, or a value has the wrong type or shape. `message` is serde's, with
    /// line and column.
    #[error("invalid snapshot JSON{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    Json {
        /// JSON path of the field being read, when known (e.g. `languages.he.halves`).
        path: Option<String>,
        /// What the parser said.
        message: String,
    },
    /// The snapshot parsed but breaks an invariant.
    #[error("invalid snapshot: {field}: {reason}")]
    Invalid {
        /// JSON path of the offending field, e.g. `languages.he.layers[3].expert_tokens`.
        field: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
}

impl SnapshotError {
    /// The JSON path of the field this error is about, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            SnapshotError::Io { .. } => None,
            SnapshotError::Json { path, .. } => path.as_deref(),
            SnapshotError::Invalid { field, .. } => Some(field),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Snapshot {
    /// An empty snapshot of `model`: no window, no languages, no buckets.
    pub fn new(model: ModelSpec) -> Snapshot {
        Snapshot {
            model,
            window: None,
            languages: BTreeMap::new(),
            buckets: Vec::new(),
        }
    }

    /// The snapshot as pretty-printed JSON, `"format"` first. Arrays of numbers stay on one line
    /// (`"expert_tokens": [3.0, 0.5, …]`), so a file reads one layer per few lines.
    pub fn to_json_string(&self) -> String {
        let mut buf = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut buf, NumberArraysInline::default());
        // Serializing this type cannot fail (string keys, no failing Serialize impls); the
        // fallback keeps the "never panics" promise without hiding an error silently.
        match self.serialize(&mut ser) {
            Ok(()) => String::from_utf8(buf).unwrap_or_default(),
            Err(e) => format!(
                "{{\"format\": \"{SNAPSHOT_FORMAT}\", \"error\": {:?}}}",
                e.to_string()
            ),
        }
    }

    /// Writes [`Snapshot::to_json_string`] (and a final newline) to `path`, through a temporary
    /// file in the same directory renamed over `path`, so a reader never sees half a file.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the path. Never panics.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), SnapshotError> {
        let path = path.as_ref();
        let io_err = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let write = || -> io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(self.to_json_string().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(e)
        })
    }

    /// Parses and validates a snapshot.
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] for a missing or other `format` (checked first, so a file of
    /// another version says so rather than failing on a shape difference) and for every broken
    /// invariant ([`Snapshot::validate`]); [`SnapshotError::Json`] for a syntax error or a value
    /// of the wrong type or shape, with its JSON path. Never panics.
    pub fn from_json_str(json: &str) -> Result<Snapshot, SnapshotError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let parsed = serde_path_to_error::deserialize::<_, SnapshotRepr>(&mut de)
            .map_err(|e| {
                let path = e.path().to_string();
                SnapshotError::Json {
                    path: (path != ".").then_some(path),
                    message: e.into_inner().to_string(),
                }
            })
            .and_then(|repr| {
                de.end().map_err(|e| SnapshotError::Json {
                    path: None,
                    message: e.to_string(),
                })?;
                Ok(repr)
            });
        let repr = match parsed {
            Ok(repr) => repr,
            Err(err) => {
                // A file of another format version may differ in shape: report the version.
                // Only the `format` key is kept; the rest is skipped without allocating.
                #[derive(Deserialize)]
                struct FormatOnly {
                    format: Option<Value>,
                }
                if let Ok(FormatOnly { format }) = serde_json::from_str::<FormatOnly>(json) {
                    check_format(format.as_ref())?;
                }
                return Err(err);
            }
        };
        check_format(repr.format.as_ref())?;
        let snapshot = repr.into_snapshot();
        snapshot.validate()?;
        Ok(snapshot)
    }

    /// Reads and validates a snapshot file.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the path when it cannot be read; otherwise as
    /// [`Snapshot::from_json_str`]. Never panics.
    pub fn read_json(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Snapshot::from_json_str(&text)
    }

    /// Every layer entry of the snapshot (window, halves, buckets), for filling in defaults.
    fn layers_mut(&mut self) -> impl Iterator<Item = &mut LayerCounts> {
        self.languages
            .values_mut()
            .chain(
                self.buckets
                    .iter_mut()
                    .flat_map(|b| b.languages.values_mut()),
            )
            .flat_map(|lang| {
                let halves = lang
                    .halves
                    .iter_mut()
                    .flatten()
                    .flat_map(|h| h.layers.iter_mut());
                lang.layers.iter_mut().chain(halves)
            })
    }
}

impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = 3 + usize::from(self.window.is_some()) + usize::from(!self.buckets.is_empty());
        let mut s = serializer.serialize_struct("Snapshot", fields)?;
        s.serialize_field("format", SNAPSHOT_FORMAT)?;
        s.serialize_field("model", &self.model)?;
        match &self.window {
            Some(window) => s.serialize_field("window", window)?,
            None => s.skip_field("window")?,
        }
        s.serialize_field("languages", &self.languages)?;
        if self.buckets.is_empty() {
            s.skip_field("buckets")?;
        } else {
            s.serialize_field("buckets", &self.buckets)?;
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Snapshot {
    /// Reads the fields and fills in absent layer `tokens`; neither checks `format` nor
    /// validates (use [`Snapshot::from_json_str`] for that).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SnapshotRepr::deserialize(deserializer).map(SnapshotRepr::into_snapshot)
    }
}

/// The on-disk form: a [`Snapshot`] plus its `format` key.
#[derive(Deserialize)]
struct SnapshotRepr {
    #[serde(default)]
    format: Option<Value>,
    model: ModelSpec,
    #[serde(default)]
    window: Option<WindowRange>,
    #[serde(default, deserialize_with = "bounded::languages")]
    languages: BTreeMap<String, LanguageCounts>,
    #[serde(default, deserialize_with = "bounded::buckets")]
    buckets: Vec<BucketCounts>,
}

impl SnapshotRepr {
    fn into_snapshot(self) -> Snapshot {
        let mut snapshot = Snapshot {
            model: self.model,
            window: self.window,
            languages: self.languages,
            buckets: self.buckets,
        };
        let top_k = f64::from(snapshot.model.top_k);
        for layer in snapshot.layers_mut() {
            if layer.tokens.is_nan() {
                // With top_k = 0 this is NaN or infinite; validate() rejects model.top_k first.
                layer.tokens = layer.expert_tokens.iter().sum::<f64>() / top_k;
            }
        }
        snapshot
    }
}

fn check_format(format: Option<&Value>) -> Result<(), SnapshotError> {
    match format {
        Some(Value::String(s)) if s == SNAPSHOT_FORMAT => Ok(()),
        None | Some(Value::Null) => Err(invalid(
            "format",
            format!("missing; expected \"{SNAPSHOT_FORMAT}\""),
        )),
        Some(other) => Err(invalid(
            "format",
            format!("expected \"{SNAPSHOT_FORMAT}\", found {other}"),
        )),
    }
}

impl LayerCounts {
    /// All-zero counts for `num_experts` experts; no probabilities, entropy or gate weights.
    pub fn zeroed(num_experts: u32) -> LayerCounts {
        LayerCounts {
            tokens: 0.0,
            expert_tokens: vec![0.0; num_experts as usize],
            prob_sum: None,
            prob_tokens: 0.0,
            selection_entropy_sum_bits: None,
            topk_weight_sum: None,
        }
    }

    /// Adds `weight` × every count of `other` to `self` (for merging buckets, replicas or
    /// sampling strata). An optional sum present on one side only is kept (None counts as zero),
    /// so `prob_sum` stays paired with `prob_tokens`. Vectors of different lengths are extended
    /// with zeros to the longer one. Never panics.
    pub fn add_scaled(&mut self, other: &LayerCounts, weight: f64) {
        self.tokens += weight * other.tokens;
        add_vec_scaled(&mut self.expert_tokens, &other.expert_tokens, weight);
        if let Some(other_probs) = &other.prob_sum {
            add_vec_scaled(
                self.prob_sum.get_or_insert_with(Vec::new),
                other_probs,
                weight,
            );
        }
        self.prob_tokens += weight * other.prob_tokens;
        add_opt_scaled(
            &mut self.selection_entropy_sum_bits,
            other.selection_entropy_sum_bits,
            weight,
        );
        add_opt_scaled(&mut self.topk_weight_sum, other.topk_weight_sum, weight);
    }
}

fn add_vec_scaled(target: &mut Vec<f64>, other: &[f64], weight: f64) {
    if target.len() < other.len() {
        target.resize(other.len(), 0.0);
    }
    for (t, o) in target.iter_mut().zip(other) {
        *t += weight * o;
    }
}

fn add_opt_scaled(target: &mut Option<f64>, other: Option<f64>, weight: f64) {
    if let Some(o) = other {
        *target.get_or_insert(0.0) += weight * o;
    }
}

fn add_layers_scaled(target: &mut Vec<LayerCounts>, other: &[LayerCounts], weight: f64) {
    for (i, o) in other.iter().enumerate() {
        if i == target.len() {
            target.push(LayerCounts::zeroed(0));
        }
        target[i].add_scaled(o, weight);
    }
}

impl LanguageCounts {
    /// All-zero counts shaped for `spec`: one zeroed layer per MoE layer, no halves, no text
    /// lengths.
    pub fn zeroed(spec: &ModelSpec) -> LanguageCounts {
        LanguageCounts {
            tokens: 0.0,
            chars: None,
            words: None,
            layers: vec![LayerCounts::zeroed(spec.num_experts); spec.moe_layers.len()],
            halves: None,
        }
    }

    /// Adds `weight` × every count of `other` (tokens, chars, words, layers, halves) to `self`,
    /// with the same rules as [`LayerCounts::add_scaled`]: what only one side has is kept, and a
    /// shorter layer list is extended. Never panics.
    pub fn add_scaled(&mut self, other: &LanguageCounts, weight: f64) {
        self.tokens += weight * other.tokens;
        add_opt_scaled(&mut self.chars, other.chars, weight);
        add_opt_scaled(&mut self.words, other.words, weight);
        add_layers_scaled(&mut self.layers, &other.layers, weight);
        if let Some(other_halves) = &other.halves {
            let halves = self.halves.get_or_insert_with(|| {
                [
                    HalfCounts { layers: Vec::new() },
                    HalfCounts { layers: Vec::new() },
                ]
            });
            for (half, other_half) in halves.iter_mut().zip(other_halves) {
                add_layers_scaled(&mut half.layers, &other_half.layers, weight);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        ModelSpec::new("tiny", 4, 2, vec![1, 3]).unwrap()
    }

    fn layer(expert_tokens: [f64; 4]) -> LayerCounts {
        LayerCounts {
            tokens: expert_tokens.iter().sum::<f64>() / 2.0,
            expert_tokens: expert_tokens.to_vec(),
            ..LayerCounts::zeroed(4)
        }
    }

    #[test]
    fn zeroed_shapes_follow_the_spec() {
        let lc = LanguageCounts::zeroed(&spec());
        assert_eq!(lc.layers.len(), 2);
        assert_eq!(lc.layers[1].expert_tokens, vec![0.0; 4]);
        assert!(lc.halves.is_none() && lc.chars.is_none());
        assert_eq!(LayerCounts::zeroed(3).expert_tokens.len(), 3);
        let s = Snapshot::new(spec());
        assert!(s.languages.is_empty() && s.buckets.is_empty() && s.window.is_none());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn layer_add_scaled_weights_every_count() {
        let mut a = LayerCounts {
            tokens: 2.0,
            expert_tokens: vec![1.0, 3.0, 0.0, 0.0],
            prob_sum: Some(vec![0.5, 0.5, 0.5, 0.5]),
            prob_tokens: 2.0,
            selection_entropy_sum_bits: None,
            topk_weight_sum: Some(1.0),
        };
        let b = LayerCounts {
            tokens: 1.0,
            expert_tokens: vec![0.0, 1.0, 1.0, 0.0],
            prob_sum: None,
            prob_tokens: 0.0,
            selection_entropy_sum_bits: Some(1.5),
            topk_weight_sum: Some(0.25),
        };
        a.add_scaled(&b, 2.0);
        assert_eq!(a.tokens, 4.0);
        assert_eq!(a.expert_tokens, vec![1.0, 5.0, 2.0, 0.0]);
        // Some + None keeps Some unchanged; None + Some becomes the scaled value.
        assert_eq!(a.prob_sum, Some(vec![0.5; 4]));
        assert_eq!(a.prob_tokens, 2.0);
        assert_eq!(a.selection_entropy_sum_bits, Some(3.0));
        assert_eq!(a.topk_weight_sum, Some(1.5));

        let mut c = LayerCounts::zeroed(2);
        let d = LayerCounts {
            prob_sum: Some(vec![0.25, 0.75, 1.0]),
            prob_tokens: 1.0,
            ..LayerCounts::zeroed(3)
        };
        c.add_scaled(&d, 0.5);
        assert_eq!(c.expert_tokens.len(), 3);
        assert_eq!(c.prob_sum, Some(vec![0.125, 0.375, 0.5]));
        assert_eq!(c.prob_tokens, 0.5);
    }

    #[test]
    fn language_add_scaled_merges_halves_and_text_lengths() {
        let s = spec();
        let mut a = LanguageCounts::zeroed(&s);
        a.tokens = 10.0;
        a.chars = Some(40.0);
        a.layers[0] = layer([4.0, 4.0, 2.0, 0.0]);
        let mut b = LanguageCounts::zeroed(&s);
        b.tokens = 3.0;
        b.words = Some(2.0);
        b.layers[0] = layer([1.0, 0.0, 0.0, 1.0]);
        b.halves = Some([
            HalfCounts {
                layers: vec![layer([1.0, 0.0, 0.0, 0.0]), layer([0.0; 4])],
            },
            HalfCounts {
                layers: vec![layer([0.0, 0.0, 0.0, 1.0]), layer([0.0; 4])],
            },
        ]);
        a.add_scaled(&b, 0.5);
        assert_eq!(a.tokens, 11.5);
        assert_eq!((a.chars, a.words), (Some(40.0), Some(1.0)));
        assert_eq!(a.layers[0].expert_tokens, vec![4.5, 4.0, 2.0, 0.5]);
        assert_eq!(a.layers[0].tokens, 5.5);
        let halves = a.halves.as_ref().unwrap();
        assert_eq!(halves[0].layers[0].expert_tokens, vec![0.5, 0.0, 0.0, 0.0]);
        assert_eq!(halves[1].layers[0].expert_tokens, vec![0.0, 0.0, 0.0, 0.5]);
        assert_eq!(halves[1].layers.len(), 2);
        let snap = Snapshot {
            languages: BTreeMap::from([("he".to_string(), a)]),
            ..Snapshot::new(s)
        };
        assert!(snap.validate().is_ok(), "{:?}", snap.validate());
    }

    #[test]
    fn json_has_format_first_and_number_arrays_inline() {
        let mut s = Snapshot::new(spec());
        let mut lc = LanguageCounts::zeroed(&s.model);
        lc.layers[0] = layer([1.5, 0.0, 2.5, 0.0]);
        s.languages.insert("en".into(), lc);
        let json = s.to_json_string();
        assert!(
            json.starts_with("{\n  \"format\": \"moescope.snapshot/v1\",\n  \"model\": {"),
            "{json}"
        );
        assert!(json.contains("\"layers\": [1, 3]"), "{json}");
        assert!(
            json.contains("\"expert_tokens\": [1.5, 0.0, 2.5, 0.0],"),
            "{json}"
        );
        assert!(json.contains("\"prob_sum\": null,"), "{json}");
        assert!(json.contains("\"languages\": {\n    \"en\": {"), "{json}");
        assert!(!json.contains("window") && !json.contains("buckets") && !json.contains("topk"));
        // Generic serde output agrees with the pretty one.
        let compact: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(compact, serde_json::from_str::<Value>(&json).unwrap());
        assert_eq!(Snapshot::from_json_str(&json).unwrap(), s);
    }

    #[test]
    fn formatter_handles_empty_and_nested_containers() {
        let v: Value = serde_json::from_str(
            r#"{"a": [], "b": {}, "c": [[1, 2], [], {"d": [true, null, "x"]}], "e": [1, {"f": 2}]}"#,
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut buf, NumberArraysInline::default());
        v.serialize(&mut ser).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v, "{text}");
        assert!(text.contains("\"a\": [],"), "{text}");
        assert!(text.contains("\"b\": {},"), "{text}");
        assert!(text.contains("[1, 2]"), "{text}");
        assert!(text.contains("\"d\": [true, null, \"x\"]"), "{text}");
    }

    #[test]
    fn serde_deserialize_fills_missing_layer_tokens() {
        let json = r#"{"model": {"name": "m", "num_experts": 2, "top_k": 2, "layers": [0]},
            "languages": {"ja": {"tokens": 3, "layers": [{"expert_tokens": [4, 2]}]}}}"#;
        let s: Snapshot = serde_json::from_str(json).unwrap();
        assert_eq!(s.languages["ja"].layers[0].tokens, 3.0);
        // Without a format key only the checked reader refuses it.
        let err = Snapshot::from_json_str(json).unwrap_err();
        assert_eq!(err.field(), Some("format"));
    }
}
