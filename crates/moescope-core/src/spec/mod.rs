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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod hf_config;

/// Largest accepted number of routed experts.
pub const MAX_EXPERTS: u32 = 65_536;

/// Largest accepted number of layers (`num_hidden_layers`, and MoE layers): far above any
/// published model (DeepSeek-V3 has 61), low enough that a hostile config cannot make the
/// reader allocate gigabytes.
pub const MAX_LAYERS: u32 = 16_384;

/// Names accepted by [`ModelSpec::preset`].
pub const PRESETS: &[&str] = &{
    let mut names = [""; PRESET_TABLE.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = PRESET_TABLE[i].0;
        i += 1;
    }
    names
};

/// The presets, from their published Hugging Face configs: name, routed experts, top-k, total
/// layers, first MoE layer, shared experts.
const PRESET_TABLE: [(&str, u32, u32, u32, u32, u32); 5] = [
    ("qwen3-30b-a3b", 128, 8, 48, 0, 0),
    ("qwen3-235b-a22b", 128, 8, 94, 0, 0),
    ("olmoe-1b-7b", 64, 8, 16, 0, 0),
    ("mixtral-8x7b", 8, 2, 32, 0, 0),
    ("deepseek-v3", 256, 8, 61, 3, 1),
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
        if self.moe_layers.len() > MAX_LAYERS as usize {
            return Err(invalid(
                "layers",
                format!(
                    "lists {} MoE layers; at most {MAX_LAYERS} are accepted",
                    self.moe_layers.len()
                ),
            ));
        }
        if let Some(total) = self.num_hidden_layers.filter(|&n| n > MAX_LAYERS) {
            return Err(invalid(
                "num_hidden_layers",
                format!("must be at most {MAX_LAYERS}, got {total}"),
            ));
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
        let Some(&(_, experts, top_k, total, first_moe, shared)) =
            PRESET_TABLE.iter().find(|p| p.0 == name)
        else {
            return Err(SpecError::UnknownPreset {
                name: name.to_string(),
            });
        };
        let spec = ModelSpec::new(name, experts, top_k, (first_moe..total).collect())?
            .with_shared_experts(shared)
            .with_num_hidden_layers(total);
        spec.validate()?;
        Ok(spec)
    }
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
}
