//! The shape of a Mixture-of-Experts model's router: how many routed experts, how many each token
//! picks, and which of the model's layers are MoE layers.
//!
//! Every other part of moescope sizes its counters from a [`ModelSpec`]: a recorder keeps
//! `num_experts` counters per MoE layer, a [`Snapshot`](crate::Snapshot) has one entry per MoE layer,
//! and the metrics label each MoE layer with the model's own layer number (`layer="47"`), not
//! its depth index.
//!
//! # Invariants
//! A spec that passed [`ModelSpec::validate`] (every constructor here validates) has a non-empty
//! name, `1 <= num_experts <= 65536`, `1 <= top_k <= num_experts`, a non-empty, strictly
//! increasing list of MoE layer numbers, and, when `num_hidden_layers` is known, every MoE layer
//! number below it. Shared (always-active) experts are not routed, so they are not counted in
//! `num_experts` and not monitored.
//!
//! # Where specs come from
//! - [`ModelSpec::preset`] for the models of the paper and a few common ones ([`PRESETS`]);
//! - [`ModelSpec::from_hf_config`] for any Hugging Face `config.json` of the Qwen2-MoE / Qwen3-MoE,
//!   OLMoE, Mixtral, DeepSeek-V2/V3 (and GLM-4.5 style), Nemotron-H (hybrid pattern), HunYuan and
//!   Llama-4 families;
//! - [`ModelSpec::new`] for anything else.
//!
//! Nothing here panics: every failure is a [`SpecError`] naming the offending field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest accepted number of routed experts.
pub const MAX_EXPERTS: u32 = 65_536;

/// Names accepted by [`ModelSpec::preset`].
pub const PRESETS: &[&str] = &[
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "olmoe-1b-7b",
    "mixtral-8x7b",
    "deepseek-v3",
];

/// The router shape of an MoE model. See the [module docs](self) for its invariants.
///
/// Serialized as the `model` object of a snapshot (`"layers"` is the JSON name of `moe_layers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Model name, used as the `model` label of every metric.
    pub name: String,
    /// Routed experts E (shared experts excluded).
    pub num_experts: u32,
    /// Experts selected per token (k).
    pub top_k: u32,
    /// The model's own layer numbers of its MoE layers, in depth order (strictly increasing).
    #[serde(rename = "layers")]
    pub moe_layers: Vec<u32>,
    /// Shared (always-active, unrouted) experts; not monitored, kept for the record.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_experts: u32,
    /// Total decoder layers (dense + MoE), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a model spec could not be built or is not valid. Every variant names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field of the spec breaks an invariant. `field` is the JSON name (`name`, `num_experts`,
    /// `top_k`, `layers`, `num_hidden_layers`).
    #[error("invalid model spec: {field}: {reason}")]
    Invalid {
        /// JSON name of the field.
        field: &'static str,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// [`ModelSpec::preset`] was given a name not in [`PRESETS`].
    #[error("unknown model preset {name:?}; known presets: {}", PRESETS.join(", "))]
    UnknownPreset {
        /// The name asked for.
        name: String,
    },
    /// The config file could not be read.
    #[error("cannot read model config {}: {source}", path.display())]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config is not JSON (or not a JSON object); `message` has serde's line and column.
    #[error("model config {origin}: not a JSON object: {message}")]
    Json {
        /// The file path, or the name given to [`ModelSpec::from_hf_config_str`].
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// A key of the config is missing, has the wrong type, or yields an invalid spec. `field` is
    /// the config key (e.g. `num_experts_per_tok`, `text_config.hybrid_override_pattern`).
    #[error("model config {origin}: {field}: {reason}")]
    Config {
        /// The file path, or the name given to [`ModelSpec::from_hf_config_str`].
        origin: String,
        /// The config key at fault.
        field: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
}

impl SpecError {
    /// The field (or config key) this error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Invalid { field, .. } => Some(field),
            SpecError::Config { field, .. } => Some(field),
            SpecError::UnknownPreset { .. } | SpecError::Io { .. } | SpecError::Json { .. } => None,
        }
    }
}

fn invalid(field: &'static str, reason: String) -> SpecError {
    SpecError::Invalid { field, reason }
}

impl ModelSpec {
    /// Builds and validates a spec with no shared experts and an unknown total layer count.
    ///
    /// # Errors
    /// [`SpecError::Invalid`] when the spec breaks an invariant (see [`ModelSpec::validate`]).
    /// Never panics.
    pub fn new(
        name: impl Into<String>,
        num_experts: u32,
        top_k: u32,
        moe_layers: Vec<u32>,
    ) -> Result<ModelSpec, SpecError> {
        let spec = ModelSpec {
            name: name.into(),
            num_experts,
            top_k,
            moe_layers,
            shared_experts: 0,
            num_hidden_layers: None,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Records `n` shared (always-active, unrouted) experts.
    #[must_use]
    pub fn with_shared_experts(mut self, n: u32) -> Self {
        self.shared_experts = n;
        self
    }

    /// Records the total number of decoder layers (dense and MoE). Call [`ModelSpec::validate`]
    /// afterwards if the MoE layer numbers might not all be below `n`.
    #[must_use]
    pub fn with_num_hidden_layers(mut self, n: u32) -> Self {
        self.num_hidden_layers = Some(n);
        self
    }

    /// Checks the invariants listed in the [module docs](self).
    ///
    /// # Errors
    /// The first broken invariant, as [`SpecError::Invalid`] naming the field. Never panics.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        if self.num_experts == 0 || self.num_experts > MAX_EXPERTS {
            return Err(invalid(
                "num_experts",
                format!(
                    "must be between 1 and {MAX_EXPERTS}, got {}",
                    self.num_experts
                ),
            ));
        }
        if self.top_k == 0 || self.top_k > self.num_experts {
            return Err(invalid(
                "top_k",
                format!(
                    "must be between 1 and num_experts ({}), got {}",
                    self.num_experts, self.top_k
                ),
            ));
        }
        if self.moe_layers.is_empty() {
            return Err(invalid("layers", "must list at least one MoE layer".into()));
        }
        for (i, pair) in self.moe_layers.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                return Err(invalid(
                    "layers",
                    format!(
                        "must be strictly increasing, but layers[{}] = {} follows layers[{}] = {}",
                        i + 1,
                        pair[1],
                        i,
                        pair[0]
                    ),
                ));
            }
        }
        if let Some(total) = self.num_hidden_layers {
            // Strictly increasing, so the last layer is the largest.
            let last_index = self.moe_layers.len() - 1;
            let last = self.moe_layers[last_index];
            if last >= total {
                return Err(invalid(
                    "layers",
                    format!(
                        "layers[{last_index}] = {last} is not below num_hidden_layers ({total})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of MoE layers L.
    pub fn num_moe_layers(&self) -> usize {
        self.moe_layers.len()
    }

    /// Depth index (0..L) of the MoE layer with the model's own layer number `layer_number`, or
    /// `None` when that layer is not an MoE layer. O(log L).
    pub fn depth_of(&self, layer_number: u32) -> Option<usize> {
        self.moe_layers.binary_search(&layer_number).ok()
    }

    /// A spec for a well-known model, from its published Hugging Face config. See [`PRESETS`].
    ///
    /// | preset | layers (MoE) | routed experts | top-k | shared |
    /// |---|---|---|---|---|
    /// | `qwen3-30b-a3b` | 48 (0..=47) | 128 | 8 | 0 |
    /// | `qwen3-235b-a22b` | 94 (0..=93) | 128 | 8 | 0 |
    /// | `olmoe-1b-7b` | 16 (0..=15) | 64 | 8 | 0 |
    /// | `mixtral-8x7b` | 32 (0..=31) | 8 | 2 | 0 |
    /// | `deepseek-v3` | 61 (3..=60) | 256 | 8 | 1 |
    ///
    /// # Errors
    /// [`SpecError::UnknownPreset`], listing the known names. Never panics.
    pub fn preset(name: &str) -> Result<ModelSpec, SpecError> {
        let (experts, top_k, total, first_moe, shared) = match name {
            "qwen3-30b-a3b" => (128, 8, 48, 0, 0),
            "qwen3-235b-a22b" => (128, 8, 94, 0, 0),
            "olmoe-1b-7b" => (64, 8, 16, 0, 0),
            "mixtral-8x7b" => (8, 2, 32, 0, 0),
            "deepseek-v3" => (256, 8, 61, 3, 1),
            _ => {
                return Err(SpecError::UnknownPreset {
                    name: name.to_string(),
                })
            }
        };
        let spec = ModelSpec::new(name, experts, top_k, (first_moe..total).collect())?
            .with_shared_experts(shared)
            .with_num_hidden_layers(total);
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a Hugging Face `config.json`. The name is the config's `_name_or_path`, else its
    /// `model_type`, else the name of the directory holding the file. See
    /// [`ModelSpec::from_hf_config_str`] for the keys read.
    ///
    /// # Errors
    /// [`SpecError::Io`] naming the path when the file cannot be read; otherwise as
    /// [`ModelSpec::from_hf_config_str`]. Never panics.
    pub fn from_hf_config(path: impl AsRef<Path>) -> Result<ModelSpec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let root = parse_object(&text, &origin)?;
        let name = ["_name_or_path", "model_type"]
            .iter()
            .filter_map(|key| root.get(*key).and_then(Value::as_str))
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| directory_name(path))
            .unwrap_or_else(|| "model".to_string());
        spec_from_config(&root, name, &origin)
    }

    /// Reads the text of a Hugging Face `config.json`, naming the model `name`.
    ///
    /// Keys read (from the top level, or from `text_config` when the top level has no expert
    /// count, as multimodal configs nest them):
    /// - routed experts: `num_experts` (Qwen2-MoE, Qwen3-MoE, OLMoE, HunYuan), `num_local_experts`
    ///   (Mixtral, Llama-4), `n_routed_experts` (DeepSeek-V2/V3, GLM-4.5, Nemotron-H);
    /// - top-k: `num_experts_per_tok`, else `moe_topk` (HunYuan; a per-layer list must hold one value);
    /// - `num_hidden_layers` (required);
    /// - MoE layers, by the first rule whose keys are present:
    ///   1. `hybrid_override_pattern` (Nemotron-H): one character per layer, `E` = MoE layer;
    ///      its length must equal `num_hidden_layers`;
    ///   2. `moe_layers` (Llama-4): the list itself;
    ///   3. `interleave_moe_layer_step` s (Llama-4): layers s−1, 2s−1, …;
    ///   4. `first_k_dense_replace` / `moe_layer_freq` (DeepSeek, defaults 0 and 1): layer i is
    ///      MoE iff i ≥ first_k_dense_replace and i % moe_layer_freq == 0;
    ///   5. otherwise the Qwen-MoE rule (also right for Mixtral and OLMoE, whose layers are all
    ///      MoE): layer i is MoE iff i is not in `mlp_only_layers` (default none) and
    ///      (i + 1) % `decoder_sparse_step` (default 1) == 0;
    /// - shared experts: `n_shared_experts` (DeepSeek, Nemotron-H), `num_shared_expert`
    ///   (HunYuan), else 1 when `shared_expert_intermediate_size` > 0 (Qwen2-MoE), else 1 for
    ///   Llama-4 (`model_type` `llama4`/`llama4_text`, which always has one), else 0.
    ///
    /// `null` values read as absent. Unknown keys are ignored.
    ///
    /// # Errors
    /// [`SpecError::Json`] when the text is not a JSON object; [`SpecError::Config`] naming the
    /// config key when a required key is missing (listing the keys looked for), a value has the
    /// wrong type or range, the pattern has the wrong length, no layer is MoE, or the resulting
    /// spec is invalid (e.g. `num_experts_per_tok` > the expert count). Never panics.
    pub fn from_hf_config_str(json: &str, name: &str) -> Result<ModelSpec, SpecError> {
        let origin = format!("<{name}>");
        let root = parse_object(json, &origin)?;
        spec_from_config(&root, name.to_string(), &origin)
    }
}

fn parse_object(text: &str, origin: &str) -> Result<Map<String, Value>, SpecError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(SpecError::Json {
            origin: origin.to_string(),
            message: format!(
                "expected an object at the top level, found {}",
                kind(&other)
            ),
        }),
        Err(e) => Err(SpecError::Json {
            origin: origin.to_string(),
            message: e.to_string(),
        }),
    }
}

fn directory_name(path: &Path) -> Option<String> {
    let parent = path.parent()?;
    let parent = if parent.as_os_str().is_empty() {
        std::env::current_dir().ok()?
    } else {
        parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
    };
    let name = parent.file_name()?.to_string_lossy().trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The config section being read, with the prefix that names its keys in errors.
struct Section<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
    origin: &'a str,
}

impl Section<'_> {
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, key: &str, reason: String) -> SpecError {
        SpecError::Config {
            origin: self.origin.to_string(),
            field: self.path(key),
            reason,
        }
    }

    /// The value of `key`, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn as_u32(&self, field: &str, v: &Value) -> Result<u32, SpecError> {
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        let n = n.ok_or_else(|| {
            self.error(
                field,
                format!("expected a non-negative integer, found {}", kind(v)),
            )
        })?;
        u32::try_from(n).map_err(|_| self.error(field, format!("{n} is too large")))
    }

    fn u32_opt(&self, key: &str) -> Result<Option<u32>, SpecError> {
        self.get(key).map(|v| self.as_u32(key, v)).transpose()
    }

    /// An integer, or (HunYuan style) a non-empty per-layer list holding one value throughout.
    fn uniform_u32_opt(&self, key: &str) -> Result<Option<u32>, SpecError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return self.as_u32(key, v).map(Some);
        };
        let mut value = None;
        for (i, item) in items.iter().enumerate() {
            let n = self.as_u32(&format!("{key}[{i}]"), item)?;
            match value {
                None => value = Some(n),
                Some(first) if first != n => {
                    return Err(self.error(
                        key,
                        format!(
                            "per-layer values differ ({key}[0] = {first}, {key}[{i}] = {n}); \
                             moescope needs one value for all layers"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        value
            .map(Some)
            .ok_or_else(|| self.error(key, "is an empty list".into()))
    }

    fn u32_list_opt(&self, key: &str) -> Result<Option<Vec<u32>>, SpecError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.error(
                key,
                format!("expected a list of layer numbers, found {}", kind(v)),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.as_u32(&format!("{key}[{i}]"), item))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The first present key of `keys` and its value.
    fn first_u32(&self, keys: &[&'static str]) -> Result<Option<(&'static str, u32)>, SpecError> {
        for key in keys {
            if let Some(n) = self.uniform_u32_opt(key)? {
                return Ok(Some((key, n)));
            }
        }
        Ok(None)
    }
}

const EXPERT_KEYS: &[&str] = &["num_experts", "num_local_experts", "n_routed_experts"];
const TOP_K_KEYS: &[&str] = &["num_experts_per_tok", "moe_topk"];

fn spec_from_config(
    root: &Map<String, Value>,
    name: String,
    origin: &str,
) -> Result<ModelSpec, SpecError> {
    let top = Section {
        map: root,
        prefix: "",
        origin,
    };
    let nested = match root.get("text_config") {
        Some(Value::Object(map)) if !EXPERT_KEYS.iter().any(|k| top.has(k)) => Some(Section {
            map,
            prefix: "text_config.",
            origin,
        }),
        _ => None,
    };
    let cfg = nested.as_ref().unwrap_or(&top);

    let (experts_key, num_experts) = cfg.first_u32(EXPERT_KEYS)?.ok_or_else(|| {
        let where_ = if nested.is_some() {
            " at the top level and in text_config"
        } else {
            ""
        };
        top.error(
            EXPERT_KEYS[0],
            format!(
                "no routed expert count found (looked for {}{where_}); is this an MoE model?",
                EXPERT_KEYS.join(", ")
            ),
        )
    })?;
    let (top_k_key, top_k) = cfg.first_u32(TOP_K_KEYS)?.ok_or_else(|| {
        cfg.error(
            TOP_K_KEYS[0],
            format!(
                "missing: the number of experts selected per token (also looked for {})",
                cfg.path(TOP_K_KEYS[1])
            ),
        )
    })?;
    let total = cfg
        .u32_opt("num_hidden_layers")?
        .ok_or_else(|| cfg.error("num_hidden_layers", "missing".into()))?;
    let (layers_key, moe_layers) = moe_layers_from_config(cfg, total)?;
    if moe_layers.is_empty() {
        return Err(cfg.error(
            layers_key,
            format!("no layer of the {total} (num_hidden_layers) is an MoE layer"),
        ));
    }

    let model_type = root
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let shared = if let Some(n) = cfg.u32_opt("n_shared_experts")? {
        n
    } else if let Some(n) = cfg.uniform_u32_opt("num_shared_expert")? {
        n
    } else {
        // Qwen2-MoE states its shared expert by its size; Llama-4 always has one.
        let qwen_shared = cfg
            .u32_opt("shared_expert_intermediate_size")?
            .is_some_and(|size| size > 0);
        u32::from(qwen_shared || model_type.starts_with("llama4"))
    };

    let spec = ModelSpec {
        name,
        num_experts,
        top_k,
        moe_layers,
        shared_experts: shared,
        num_hidden_layers: Some(total),
    };
    spec.validate().map_err(|e| match e {
        SpecError::Invalid { field, reason } => {
            let key = match field {
                "num_experts" => experts_key,
                "top_k" => top_k_key,
                "layers" => layers_key,
                other => other,
            };
            cfg.error(key, reason)
        }
        other => other,
    })?;
    Ok(spec)
}

/// The MoE layer numbers and the config key whose rule produced them.
fn moe_layers_from_config(
    cfg: &Section<'_>,
    total: u32,
) -> Result<(&'static str, Vec<u32>), SpecError> {
    if let Some(v) = cfg.get("hybrid_override_pattern") {
        const KEY: &str = "hybrid_override_pattern";
        let Value::String(pattern) = v else {
            return Err(cfg.error(KEY, format!("expected a string, found {}", kind(v))));
        };
        let len = pattern.chars().count();
        if len != total as usize {
            return Err(cfg.error(
                KEY,
                format!(
                    "has {len} characters but num_hidden_layers is {total} (one character per layer)"
                ),
            ));
        }
        let layers = pattern
            .chars()
            .zip(0u32..)
            .filter(|(c, _)| *c == 'E')
            .map(|(_, i)| i)
            .collect();
        return Ok((KEY, layers));
    }
    if let Some(layers) = cfg.u32_list_opt("moe_layers")? {
        return Ok(("moe_layers", layers));
    }
    if let Some(step) = cfg.u32_opt("interleave_moe_layer_step")? {
        const KEY: &str = "interleave_moe_layer_step";
        if step == 0 {
            return Err(cfg.error(KEY, "must be at least 1, got 0".into()));
        }
        return Ok((KEY, (step - 1..total).step_by(step as usize).collect()));
    }
    if cfg.has("first_k_dense_replace") || cfg.has("moe_layer_freq") {
        let first_dense = cfg.u32_opt("first_k_dense_replace")?.unwrap_or(0);
        let freq = cfg.u32_opt("moe_layer_freq")?.unwrap_or(1);
        if freq == 0 {
            return Err(cfg.error("moe_layer_freq", "must be at least 1, got 0".into()));
        }
        let key = if cfg.has("first_k_dense_replace") {
            "first_k_dense_replace"
        } else {
            "moe_layer_freq"
        };
        let layers = (first_dense..total).filter(|i| i % freq == 0).collect();
        return Ok((key, layers));
    }
    let step = cfg.u32_opt("decoder_sparse_step")?.unwrap_or(1);
    if step == 0 {
        return Err(cfg.error("decoder_sparse_step", "must be at least 1, got 0".into()));
    }
    let mlp_only = cfg.u32_list_opt("mlp_only_layers")?.unwrap_or_default();
    let key = if mlp_only.is_empty() {
        "decoder_sparse_step"
    } else {
        "mlp_only_layers"
    };
    let layers = (0..total)
        .filter(|i| !mlp_only.contains(i) && (i + 1) % step == 0)
        .collect();
    Ok((key, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_published_configs() {
        let q = ModelSpec::preset("qwen3-30b-a3b").unwrap();
        assert_eq!(
            (q.num_experts, q.top_k, q.num_hidden_layers),
            (128, 8, Some(48))
        );
        assert_eq!(q.moe_layers, (0..48).collect::<Vec<_>>());
        let q = ModelSpec::preset("qwen3-235b-a22b").unwrap();
        assert_eq!((q.num_experts, q.top_k, q.num_moe_layers()), (128, 8, 94));
        let o = ModelSpec::preset("olmoe-1b-7b").unwrap();
        assert_eq!((o.num_experts, o.top_k, o.num_moe_layers()), (64, 8, 16));
        let m = ModelSpec::preset("mixtral-8x7b").unwrap();
        assert_eq!((m.num_experts, m.top_k, m.num_moe_layers()), (8, 2, 32));
        let d = ModelSpec::preset("deepseek-v3").unwrap();
        assert_eq!((d.num_experts, d.top_k, d.shared_experts), (256, 8, 1));
        assert_eq!(d.num_moe_layers(), 58);
        assert_eq!((d.moe_layers[0], d.moe_layers[57]), (3, 60));
        assert_eq!(d.num_hidden_layers, Some(61));
        for name in PRESETS {
            assert_eq!(&ModelSpec::preset(name).unwrap().name, name);
        }
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let err = ModelSpec::preset("gpt-5").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"gpt-5\""), "{msg}");
        for name in PRESETS {
            assert!(msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn validate_names_each_field() {
        let cases: Vec<(ModelSpec, &str, &str)> = vec![
            (
                ModelSpec {
                    name: " ".into(),
                    ..base()
                },
                "name",
                "must not be empty",
            ),
            (
                ModelSpec {
                    num_experts: 0,
                    ..base()
                },
                "num_experts",
                "got 0",
            ),
            (
                ModelSpec {
                    num_experts: 70_000,
                    top_k: 1,
                    ..base()
                },
                "num_experts",
                "got 70000",
            ),
            (
                ModelSpec { top_k: 0, ..base() },
                "top_k",
                "must be between 1 and num_experts (128), got 0",
            ),
            (
                ModelSpec {
                    top_k: 129,
                    ..base()
                },
                "top_k",
                "got 129",
            ),
            (
                ModelSpec {
                    moe_layers: vec![],
                    ..base()
                },
                "layers",
                "at least one",
            ),
            (
                ModelSpec {
                    moe_layers: vec![0, 2, 2],
                    ..base()
                },
                "layers",
                "layers[2] = 2 follows layers[1] = 2",
            ),
            (
                ModelSpec {
                    moe_layers: vec![3, 1],
                    ..base()
                },
                "layers",
                "strictly increasing",
            ),
            (
                ModelSpec {
                    moe_layers: vec![0, 4],
                    num_hidden_layers: Some(4),
                    ..base()
                },
                "layers",
                "layers[1] = 4 is not below num_hidden_layers (4)",
            ),
        ];
        for (spec, field, reason) in cases {
            let err = spec.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid model spec: {field}: ")),
                "{msg}"
            );
            assert!(msg.contains(reason), "{msg}");
        }
        assert!(base().validate().is_ok());
    }

    fn base() -> ModelSpec {
        ModelSpec::new("m", 128, 8, vec![0, 1, 2]).unwrap()
    }

    #[test]
    fn new_validates_and_builders_set_fields() {
        assert!(ModelSpec::new("", 8, 2, vec![0]).is_err());
        assert!(ModelSpec::new("m", 8, 9, vec![0]).is_err());
        let s = ModelSpec::new("m", 8, 2, vec![1, 3])
            .unwrap()
            .with_shared_experts(2)
            .with_num_hidden_layers(4);
        assert_eq!((s.shared_experts, s.num_hidden_layers), (2, Some(4)));
        assert!(s.validate().is_ok());
        assert!(s.with_num_hidden_layers(3).validate().is_err());
    }

    #[test]
    fn depth_of_maps_layer_numbers_to_depth() {
        let d = ModelSpec::preset("deepseek-v3").unwrap();
        assert_eq!(d.depth_of(0), None);
        assert_eq!(d.depth_of(2), None);
        assert_eq!(d.depth_of(3), Some(0));
        assert_eq!(d.depth_of(60), Some(57));
        assert_eq!(d.depth_of(61), None);
        let s = ModelSpec::new("m", 4, 1, vec![1, 3, 5]).unwrap();
        assert_eq!(s.depth_of(3), Some(1));
        assert_eq!(s.depth_of(4), None);
    }

    #[test]
    fn serde_uses_layers_and_skips_defaults() {
        let s = ModelSpec::new("m", 4, 1, vec![1, 3]).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"name":"m","num_experts":4,"top_k":1,"layers":[1,3]}"#
        );
        let back: ModelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let full = s.with_shared_experts(1).with_num_hidden_layers(4);
        let json = serde_json::to_string(&full).unwrap();
        assert!(
            json.ends_with(r#""shared_experts":1,"num_hidden_layers":4}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), full);
    }

    #[test]
    fn config_number_types_are_checked() {
        let err = ModelSpec::from_hf_config_str(
            r#"{"num_experts": "128", "num_experts_per_tok": 8, "num_hidden_layers": 2}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("num_experts"));
        assert!(err.to_string().contains("found string \"128\""), "{err}");
        let err = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2.5}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("num_hidden_layers"));
        let err = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 4,
                "mlp_only_layers": [0, "x"]}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("mlp_only_layers[1]"));
        // Integral floats are accepted.
        let s = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 4.0, "num_experts_per_tok": 2, "num_hidden_layers": 2}"#,
            "m",
        )
        .unwrap();
        assert_eq!(s.num_experts, 4);
    }

    #[test]
    fn hunyuan_per_layer_lists_must_be_uniform() {
        let s = ModelSpec::from_hf_config_str(
            r#"{"model_type": "hunyuan_v1_moe", "num_experts": 64, "moe_topk": [8, 8, 8],
                "num_shared_expert": [1, 1, 1], "num_hidden_layers": 3}"#,
            "hy",
        )
        .unwrap();
        assert_eq!((s.num_experts, s.top_k, s.shared_experts), (64, 8, 1));
        assert_eq!(s.moe_layers, vec![0, 1, 2]);
        let err = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 64, "moe_topk": [8, 2], "num_hidden_layers": 2}"#,
            "hy",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("moe_topk"));
        assert!(err.to_string().contains("moe_topk[1] = 2"), "{err}");
    }

    #[test]
    fn not_an_object_is_a_json_error() {
        let err = ModelSpec::from_hf_config_str("[1, 2]", "m").unwrap_err();
        assert!(matches!(err, SpecError::Json { .. }), "{err}");
        let err = ModelSpec::from_hf_config_str("{\"a\": ", "m").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
