//! Reading a Hugging Face `config.json` into a [`ModelSpec`]: the keys of every MoE family,
//! with errors that name the config key.

use std::path::Path;

use serde_json::{Map, Value};

use super::{ModelSpec, SpecError, MAX_LAYERS};

impl ModelSpec {
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
    // Checked before anything is sized by it.
    if total > MAX_LAYERS {
        return Err(cfg.error(
            "num_hidden_layers",
            format!("must be at most {MAX_LAYERS}, got {total}"),
        ));
    }
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
    fn a_huge_layer_count_is_refused_before_allocating() {
        let err = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 4294967295}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("num_hidden_layers"));
        assert!(err.to_string().contains("at most 16384"), "{err}");
        let big = ModelSpec::from_hf_config_str(
            r#"{"num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 16384}"#,
            "m",
        )
        .unwrap();
        assert_eq!(big.num_moe_layers(), 16_384);
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
