//! `moescope.Recorder`: the Rust recorder behind a Python class.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moescope_core::spec::PRESETS;
use moescope_core::{
    DropReason, ExpertId, LangId, Languages, ModelSpec, Recorded, Recorder, RouterBatch,
    SamplingConfig, SamplingRate, Segment, WindowConfig, DEFAULT_MAX_LANGUAGES,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use crate::arrays::{view, Dtype, Elem, View};
use crate::errors;

/// Batches of at least this many routed slots (tokens × k) are recorded with the GIL
/// released; smaller ones take about a microsecond, less than releasing and retaking it.
pub const GIL_RELEASE_MIN_SLOTS: usize = 2048;

/// Scratch space a `Recorder` keeps between calls, so that converting languages and sequence
/// ids allocates only while it grows.
#[derive(Default)]
struct Scratch {
    langs: LangBufs,
    sequence_ids: Vec<u64>,
    /// Gate weights converted to float32 (from float16, bfloat16 or float64).
    weights: Vec<f32>,
    /// Router logits or probabilities converted to float32.
    scores: Vec<f32>,
}

/// Per-token languages or segments, read from `langs`.
#[derive(Default)]
struct LangBufs {
    langs: Vec<LangId>,
    segments: Vec<Segment>,
}

/// Records MoE routing decisions per language into a rolling window (a Rust
/// `moescope_core::Recorder`). Thread-safe; `record` releases the GIL for large batches.
#[pyclass(frozen, name = "Recorder", module = "moescope")]
pub struct PyRecorder {
    pub(crate) inner: Arc<Recorder>,
    strict: bool,
    scratch: Mutex<Scratch>,
}

/// What one `Recorder.record` call did; every token of the batch is in exactly one field.
#[pyclass(frozen, get_all, name = "Recorded", module = "moescope", eq)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PyRecorded {
    /// Tokens counted.
    pub recorded: u32,
    /// Tokens skipped by sampling.
    pub sampled_out: u32,
    /// Tokens of the excluded language id (65535).
    pub excluded: u32,
    /// Tokens dropped for bad values (counted by reason in `Recorder.dropped()`).
    pub dropped: u32,
}

#[pymethods]
impl PyRecorded {
    fn __repr__(&self) -> String {
        format!(
            "Recorded(recorded={}, sampled_out={}, excluded={}, dropped={})",
            self.recorded, self.sampled_out, self.excluded, self.dropped
        )
    }
}

impl From<Recorded> for PyRecorded {
    fn from(r: Recorded) -> Self {
        PyRecorded {
            recorded: r.recorded,
            sampled_out: r.sampled_out,
            excluded: r.excluded,
            dropped: r.dropped,
        }
    }
}

/// `json.dumps(obj)`.
pub(crate) fn json_dumps(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = obj.py();
    py.import(pyo3::intern!(py, "json"))?
        .call_method1(pyo3::intern!(py, "dumps"), (obj,))?
        .extract()
}

/// `json.loads(text)`.
pub(crate) fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(pyo3::intern!(py, "json"))?
        .call_method1(pyo3::intern!(py, "loads"), (text,))
}

fn spec_from_dict(dict: &Bound<'_, PyDict>, name: Option<&str>) -> PyResult<ModelSpec> {
    let json = json_dumps(dict.as_any())?;
    // A moescope spec (the `model` object of a snapshot) has `top_k` and `layers`; anything
    // else is read as a Hugging Face config.json.
    if dict.contains("top_k")? && dict.contains("layers")? {
        return serde_json::from_str::<ModelSpec>(&json)
            .map_err(|e| errors::config(format!("model spec dict: {e}")));
    }
    let mut label = None;
    for key in ["_name_or_path", "model_type"] {
        if let Some(v) = dict.get_item(key)? {
            if let Ok(s) = v.extract::<String>() {
                if !s.trim().is_empty() {
                    label = Some(s.trim().to_string());
                    break;
                }
            }
        }
    }
    let label = name.map(str::to_string).or(label);
    ModelSpec::from_hf_config_str(&json, label.as_deref().unwrap_or("model"))
        .map_err(errors::config)
}

/// The model spec of the `model` argument: a preset name, a config.json path (or a model
/// directory holding one), a dict (a moescope spec or a Hugging Face config), or an object
/// with `to_dict()` (a `transformers` config).
pub(crate) fn model_spec(model: &Bound<'_, PyAny>, name: Option<&str>) -> PyResult<ModelSpec> {
    let py = model.py();
    let mut spec = if let Ok(dict) = model.cast::<PyDict>() {
        spec_from_dict(dict, name)?
    } else if let Ok(s) = model.cast::<PyString>() {
        let s = s.to_cow()?;
        if PRESETS.contains(&s.as_ref()) {
            ModelSpec::preset(&s).map_err(errors::config)?
        } else {
            spec_from_path(PathBuf::from(s.as_ref()), &s)?
        }
    } else if model.hasattr(pyo3::intern!(py, "__fspath__"))? {
        let path: PathBuf = model.extract()?;
        let shown = path.display().to_string();
        spec_from_path(path, &shown)?
    } else if model.hasattr(pyo3::intern!(py, "to_dict"))? {
        let dict = model.call_method0(pyo3::intern!(py, "to_dict"))?;
        let dict = dict.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err("model: to_dict() did not return a dict".to_string())
        })?;
        spec_from_dict(dict, name)?
    } else {
        return Err(PyTypeError::new_err(format!(
            "model: expected a preset name ({}), a config.json path, a dict or a transformers \
             config, got {}",
            PRESETS.join(", "),
            model.get_type().name()?
        )));
    };
    if let Some(name) = name {
        spec.name = name.to_string();
    }
    Ok(spec)
}

fn spec_from_path(path: PathBuf, shown: &str) -> PyResult<ModelSpec> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path
    };
    if !file.exists() {
        return Err(errors::config(format!(
            "model {shown:?} is neither a preset ({}) nor an existing config.json file or model \
             directory",
            PRESETS.join(", ")
        )));
    }
    ModelSpec::from_hf_config(&file).map_err(errors::config)
}

fn parse_rate(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<SamplingRate> {
    if let Ok(s) = obj.cast::<PyString>() {
        if s.to_cow()? == "all" {
            return Ok(SamplingRate::All);
        }
    } else if let Ok(dict) = obj.cast::<PyDict>() {
        if dict.len() == 1 {
            if let Some(t) = dict.get_item("target_tokens_per_second")? {
                return Ok(SamplingRate::TargetTokensPerSecond(t.extract()?));
            }
            if let Some(r) = dict.get_item("rate")? {
                return Ok(SamplingRate::Fixed(r.extract()?));
            }
        }
    } else if let Ok(r) = obj.extract::<f64>() {
        return Ok(SamplingRate::Fixed(r));
    }
    Err(errors::config(format!(
        "{what}: expected a rate in (0, 1], \"all\", {{\"rate\": r}} or \
         {{\"target_tokens_per_second\": n}}, got {}",
        obj.repr()?
    )))
}

/// `sampling=`: a rate, `"all"`, `{"target_tokens_per_second": n}`, or
/// `{"default": <rate>, "languages": {tag: <rate>}}`.
fn parse_sampling(obj: Option<&Bound<'_, PyAny>>) -> PyResult<SamplingConfig> {
    let Some(obj) = obj else {
        return Ok(SamplingConfig::default());
    };
    let cfg_err = |e: moescope_core::SamplingError| errors::config(format!("sampling: {e}"));
    if let Ok(dict) = obj.cast::<PyDict>() {
        if dict.contains("default")? || dict.contains("languages")? {
            let default = match dict.get_item("default")? {
                Some(d) => parse_rate(&d, "sampling.default")?,
                None => SamplingRate::All,
            };
            let mut cfg = SamplingConfig::new(default).map_err(cfg_err)?;
            if let Some(langs) = dict.get_item("languages")? {
                let langs = langs.cast::<PyDict>().map_err(|_| {
                    errors::config("sampling.languages: expected a dict {tag: rate}")
                })?;
                for (tag, rate) in langs.iter() {
                    let tag: String = tag.extract()?;
                    let rate = parse_rate(&rate, &format!("sampling.languages[{tag:?}]"))?;
                    cfg = cfg.with_language(&tag, rate).map_err(cfg_err)?;
                }
            }
            return Ok(cfg);
        }
    }
    SamplingConfig::new(parse_rate(obj, "sampling")?).map_err(cfg_err)
}

/// The languages of a batch, before they borrow the scratch space.
enum LangArg {
    All(LangId),
    PerToken,
    Segments,
}

fn lang_id(v: i64, what: &str) -> PyResult<LangId> {
    u16::try_from(v).map(LangId::from_index).map_err(|_| {
        PyValueError::new_err(format!(
            "{what}: language id {v} is out of range (ids come from Recorder.language(tag); \
             65535 excludes tokens)"
        ))
    })
}

fn fill_langs<T: Copy + Display + TryInto<u16>>(src: &[T], dst: &mut Vec<LangId>) -> PyResult<()> {
    dst.clear();
    dst.reserve(src.len());
    for (i, &v) in src.iter().enumerate() {
        match v.try_into() {
            Ok(id) => dst.push(LangId::from_index(id)),
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "langs[{i}]: language id {v} is out of range (ids come from \
                     Recorder.language(tag); 65535 excludes tokens)"
                )))
            }
        }
    }
    Ok(())
}

fn fill_u64<T: Copy + Into<i128>>(src: &[T], dst: &mut Vec<u64>) {
    dst.clear();
    dst.extend(src.iter().map(|&v| v.into() as u64));
}

impl PyRecorder {
    fn lang_of(&self, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<LangId> {
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(self.inner.language(&s.to_cow()?));
        }
        let v: i64 = obj.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}: expected a language id (int) or a tag (str), got {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        lang_id(v, what)
    }

    /// Reads `langs` into `scratch` (or returns the one id of the batch).
    fn read_langs(&self, langs: &Bound<'_, PyAny>, scratch: &mut LangBufs) -> PyResult<LangArg> {
        if let Ok(s) = langs.cast::<PyString>() {
            return Ok(LangArg::All(self.inner.language(&s.to_cow()?)));
        }
        // An exact int only: extracting an int from an array or tensor goes through
        // `__index__`, which raises (costly) for more than one element.
        if let Ok(v) = langs.cast::<PyInt>() {
            return Ok(LangArg::All(lang_id(v.extract()?, "langs")?));
        }
        let seq = if let Ok(l) = langs.cast::<PyList>() {
            Some(l.as_sequence().clone())
        } else {
            langs
                .cast::<PyTuple>()
                .ok()
                .map(|t| t.as_sequence().clone())
        };
        if let Some(seq) = seq {
            let first_is_pair = seq.len()? > 0
                && seq
                    .get_item(0)
                    .is_ok_and(|f| f.cast::<PyTuple>().is_ok() || f.cast::<PyList>().is_ok());
            if first_is_pair {
                scratch.segments.clear();
                for (i, item) in seq.try_iter()?.enumerate() {
                    let item = item?;
                    let what = format!("langs[{i}]");
                    let n = item.len().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "{what}: expected a segment (lang, tokens) or (lang, tokens, \
                             sequence_id)"
                        ))
                    })?;
                    if !(2..=3).contains(&n) {
                        return Err(PyTypeError::new_err(format!(
                            "{what}: expected a segment (lang, tokens) or (lang, tokens, \
                             sequence_id), got {n} items"
                        )));
                    }
                    let lang = self.lang_of(&item.get_item(0)?, &what)?;
                    let tokens: u32 = item.get_item(1)?.extract().map_err(|_| {
                        PyValueError::new_err(format!(
                            "{what}: the token count must be an int in 0..2**32"
                        ))
                    })?;
                    let sequence_id = if n == 3 {
                        let s = item.get_item(2)?;
                        if s.is_none() {
                            None
                        } else {
                            Some(s.extract::<u64>().map_err(|_| {
                                PyValueError::new_err(format!(
                                    "{what}: the sequence id must be None or an int in 0..2**64"
                                ))
                            })?)
                        }
                    } else {
                        None
                    };
                    scratch.segments.push(Segment {
                        lang,
                        tokens,
                        sequence_id,
                    });
                }
                return Ok(LangArg::Segments);
            }
        }
        let a = view(langs, "langs")?;
        if a.ndim() == 0 {
            // A 0-d array or a NumPy integer scalar: one language for the whole batch.
            let v: i64 = langs.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "langs: expected a language id (int) or tag (str), got a scalar of dtype {}",
                    a.dtype_name()
                ))
            })?;
            return Ok(LangArg::All(lang_id(v, "langs")?));
        }
        let dst = &mut scratch.langs;
        match a.dtype() {
            Dtype::U16 => fill_langs(a.slice::<u16>()?, dst)?,
            Dtype::I64 => fill_langs(a.slice::<i64>()?, dst)?,
            Dtype::I32 => fill_langs(a.slice::<i32>()?, dst)?,
            Dtype::I16 => fill_langs(a.slice::<i16>()?, dst)?,
            Dtype::U8 => fill_langs(a.slice::<u8>()?, dst)?,
            Dtype::U32 => fill_langs(a.slice::<u32>()?, dst)?,
            Dtype::U64 => fill_langs(a.slice::<u64>()?, dst)?,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::Other => {
                return Err(PyTypeError::new_err(format!(
                    "langs: expected one language id or tag, a per-token integer array, or a \
                     list of (lang, tokens) segments; got an array of dtype {}",
                    a.dtype_name()
                )))
            }
        }
        Ok(LangArg::PerToken)
    }

    /// Checks every value of the batch before anything is recorded (`strict=True`).
    #[allow(clippy::too_many_arguments)]
    fn strict_check<I: ExpertId + Display>(
        &self,
        ids: &[I],
        langs: &Languages<'_>,
        weights: Option<&[f32]>,
        logits: Option<&[f32]>,
        probs: Option<&[f32]>,
    ) -> PyResult<()> {
        let spec = self.inner.spec();
        let (e, k) = (spec.num_experts as u64, spec.top_k as usize);
        if let Some(i) = ids.iter().position(|id| id.expert_index() >= e) {
            return Err(errors::record(format!(
                "strict: topk_ids: expert id {} (token {}, slot {}) is out of range: the \
                 model has {e} routed experts",
                ids[i],
                i / k,
                i % k
            )));
        }
        let known = |id: LangId| id == LangId::EXCLUDED || self.inner.registry().tag(id).is_some();
        let unknown = match *langs {
            Languages::All(id) => (!known(id)).then_some(id),
            Languages::PerToken(ids) => ids.iter().copied().find(|&id| !known(id)),
            Languages::Segments(segs) => segs.iter().map(|s| s.lang).find(|&id| !known(id)),
        };
        if let Some(id) = unknown {
            return Err(errors::record(format!(
                "strict: langs: language id {} was never issued by Recorder.language",
                id.index()
            )));
        }
        if let Some(w) = weights {
            if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(errors::record(format!(
                    "strict: weights: {} (token {}, slot {}) is not a finite weight ≥ 0",
                    w[i],
                    i / k,
                    i % k
                )));
            }
        }
        let experts = e as usize;
        if let Some(l) = logits {
            if let Some(i) = l.iter().position(|v| !v.is_finite()) {
                return Err(errors::record(format!(
                    "strict: logits: {} (token {}, expert {}) is not finite",
                    l[i],
                    i / experts,
                    i % experts
                )));
            }
        }
        if let Some(p) = probs {
            if let Some(i) = p.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(errors::record(format!(
                    "strict: probs: {} (token {}, expert {}) is not a finite probability ≥ 0",
                    p[i],
                    i / experts,
                    i % experts
                )));
            }
            if let Some(t) = p
                .chunks(experts)
                .position(|row| row.iter().sum::<f32>() <= 0.0)
            {
                return Err(errors::record(format!(
                    "strict: probs: the row of token {t} sums to 0"
                )));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record_ids<I: ExpertId + Display>(
        &self,
        py: Python<'_>,
        depth: usize,
        ids: &[I],
        langs: Languages<'_>,
        weights: Option<&[f32]>,
        logits: Option<&[f32]>,
        probs: Option<&[f32]>,
        sequence_ids: Option<&[u64]>,
    ) -> PyResult<PyRecorded> {
        if self.strict {
            self.strict_check(ids, &langs, weights, logits, probs)?;
        }
        let mut batch = RouterBatch::at_depth(depth, ids, langs);
        if let Some(w) = weights {
            batch = batch.topk_weights(w);
        }
        if let Some(l) = logits {
            batch = batch.logits(l);
        }
        if let Some(p) = probs {
            batch = batch.probabilities(p);
        }
        if let Some(s) = sequence_ids {
            batch = batch.sequence_ids(s);
        }
        let recorder = &*self.inner;
        let result = if ids.len() >= GIL_RELEASE_MIN_SLOTS {
            py.detach(|| recorder.record(&batch))
        } else {
            recorder.record(&batch)
        };
        result.map(PyRecorded::from).map_err(|e| match e {
            moescope_core::RecordError::LayerOutOfRange { .. } => {
                errors::record(format!("{e} (in Python: Recorder.depth_of(layer_number))"))
            }
            other => errors::record(other),
        })
    }
}

fn float_arg<'py>(
    obj: Option<&Bound<'py, PyAny>>,
    name: &'static str,
) -> PyResult<Option<View<'py>>> {
    obj.filter(|o| !o.is_none())
        .map(|o| view(o, name))
        .transpose()
}

fn convert<T: Elem + Into<f64>>(src: &[T], dst: &mut Vec<f32>) {
    dst.clear();
    dst.extend(src.iter().map(|&v| v.into() as f32));
}

/// The values of a float argument as float32: float32 read in place; float16, bfloat16 and
/// float64 converted into `buf` (kept by the recorder between calls).
fn floats<'a>(
    a: &'a Option<View<'_>>,
    name: &str,
    buf: &'a mut Vec<f32>,
) -> PyResult<Option<&'a [f32]>> {
    let Some(a) = a else { return Ok(None) };
    match a.dtype() {
        Dtype::F32 => return a.slice::<f32>().map(Some),
        Dtype::F16 => convert(a.slice::<half::f16>()?, buf),
        Dtype::BF16 => convert(a.slice::<half::bf16>()?, buf),
        Dtype::F64 => convert(a.slice::<f64>()?, buf),
        _ => {
            return Err(PyTypeError::new_err(format!(
                "{name}: expected a float array (float32 is read in place; float16, bfloat16 \
                 and float64 are converted), got dtype {}; convert with .float() (torch) or \
                 .astype(numpy.float32)",
                a.dtype_name()
            )))
        }
    }
    Ok(Some(buf.as_slice()))
}

#[pymethods]
impl PyRecorder {
    /// See `moescope.Recorder` in the type stubs for the parameters.
    #[new]
    #[pyo3(signature = (
        model,
        *,
        window_seconds = 300.0,
        buckets = 30,
        sampling = None,
        allowed_languages = None,
        languages = None,
        max_languages = DEFAULT_MAX_LANGUAGES,
        seed = None,
        writer_stripes = None,
        name = None,
        strict = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Bound<'_, PyAny>,
        window_seconds: f64,
        buckets: usize,
        sampling: Option<&Bound<'_, PyAny>>,
        allowed_languages: Option<Vec<String>>,
        languages: Option<Vec<String>>,
        max_languages: usize,
        seed: Option<u64>,
        writer_stripes: Option<usize>,
        name: Option<&str>,
        strict: bool,
    ) -> PyResult<Self> {
        let spec = model_spec(model, name)?;
        if !(window_seconds.is_finite() && window_seconds > 0.0) {
            return Err(errors::config(format!(
                "window_seconds: must be a positive number of seconds, got {window_seconds}"
            )));
        }
        if buckets == 0 {
            return Err(errors::config("buckets: must be at least 1, got 0"));
        }
        let bucket_ms = window_seconds * 1000.0 / buckets as f64;
        if (bucket_ms - bucket_ms.round()).abs() > 1e-6 || bucket_ms.round() < 1.0 {
            return Err(errors::config(format!(
                "window_seconds / buckets must be a whole number of milliseconds (≥ 1), got \
                 {window_seconds} s / {buckets} = {bucket_ms} ms"
            )));
        }
        let mut builder = Recorder::builder(spec)
            .window(WindowConfig {
                bucket_ms: bucket_ms.round() as u64,
                buckets,
            })
            .max_languages(max_languages)
            .sampling(parse_sampling(sampling)?);
        let allow = match (allowed_languages, languages) {
            (Some(_), Some(_)) => {
                return Err(errors::config(
                    "allowed_languages and languages are the same setting: pass one",
                ))
            }
            (a, b) => a.or(b),
        };
        if let Some(list) = allow {
            builder = builder.allowed_languages(list);
        }
        if let Some(seed) = seed {
            builder = builder.seed(seed);
        }
        if let Some(n) = writer_stripes {
            builder = builder.writer_stripes(n);
        }
        let recorder = builder.build().map_err(errors::config)?;
        Ok(PyRecorder {
            inner: Arc::new(recorder),
            strict,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// The id of a language tag, interned the first time (invalid tags give `und`'s id 0,
    /// tags past the cap or outside the allowlist `other`'s id 1). Call it once per request.
    fn language(&self, tag: &str) -> u16 {
        self.inner.language(tag).index() as u16
    }

    /// Records one MoE layer's routing decisions for one step. See the type stubs.
    #[pyo3(signature = (depth, topk_ids, langs, *, weights = None, logits = None, probs = None, sequence_ids = None))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        depth: i64,
        topk_ids: &Bound<'_, PyAny>,
        langs: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
        logits: Option<&Bound<'_, PyAny>>,
        probs: Option<&Bound<'_, PyAny>>,
        sequence_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRecorded> {
        let depth = usize::try_from(depth).map_err(|_| {
            PyValueError::new_err(format!(
                "depth: {depth} is negative; MoE depths are 0..{} (Recorder.depth_of maps a \
                 layer number to its depth)",
                self.inner.spec().num_moe_layers()
            ))
        })?;
        let k = self.inner.spec().top_k as usize;
        let ids = view(topk_ids, "topk_ids")?;
        if !ids.dtype().is_integer() {
            return Err(PyTypeError::new_err(format!(
                "topk_ids: expected an integer dtype (int64, int32, uint32, uint16, int16, \
                 uint8, uint64), got {}",
                ids.dtype_name()
            )));
        }
        if ids.ndim() == 0 {
            return Err(PyValueError::new_err(
                "topk_ids: expected an array of shape (tokens, top_k), got a scalar",
            ));
        }
        if ids.ndim() >= 2 && ids.last_dim() != k {
            return Err(PyValueError::new_err(format!(
                "topk_ids: shape {}: the last dimension must be the model's top_k = {k}",
                ids.shape_text()
            )));
        }
        let (w_arr, l_arr, p_arr) = (
            float_arg(weights, "weights")?,
            float_arg(logits, "logits")?,
            float_arg(probs, "probs")?,
        );
        if l_arr.is_some() && p_arr.is_some() {
            return Err(PyValueError::new_err(
                "pass logits or probs, not both (probabilities are the softmax of the logits)",
            ));
        }

        let mut guard = self.scratch.try_lock().ok();
        let mut spare = Scratch::default(); // another thread holds the scratch: allocate
        let Scratch {
            langs: lang_bufs,
            sequence_ids: seq_buf,
            weights: w_buf,
            scores: s_buf,
        } = guard.as_deref_mut().unwrap_or(&mut spare);
        let w = floats(&w_arr, "weights", w_buf)?;
        let (l, p) = if l_arr.is_some() {
            (floats(&l_arr, "logits", s_buf)?, None)
        } else {
            (None, floats(&p_arr, "probs", s_buf)?)
        };

        let seq_arr = sequence_ids
            .filter(|o| !o.is_none())
            .map(|o| view(o, "sequence_ids"))
            .transpose()?;
        if let Some(a) = &seq_arr {
            let dst = &mut *seq_buf;
            match a.dtype() {
                Dtype::U64 => fill_u64(a.slice::<u64>()?, dst),
                Dtype::I64 => fill_u64(a.slice::<i64>()?, dst),
                Dtype::I32 => fill_u64(a.slice::<i32>()?, dst),
                Dtype::U32 => fill_u64(a.slice::<u32>()?, dst),
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "sequence_ids: expected an integer array (int64 or uint64), got dtype {}",
                        a.dtype_name()
                    )))
                }
            }
        }
        let lang_arg = self.read_langs(langs, lang_bufs)?;
        let langs = match lang_arg {
            LangArg::All(id) => Languages::All(id),
            LangArg::PerToken => Languages::PerToken(&lang_bufs.langs),
            LangArg::Segments => Languages::Segments(&lang_bufs.segments),
        };
        let seq = seq_arr.as_ref().map(|_| seq_buf.as_slice());
        match ids.dtype() {
            Dtype::I64 => self.record_ids(py, depth, ids.slice::<i64>()?, langs, w, l, p, seq),
            Dtype::I32 => self.record_ids(py, depth, ids.slice::<i32>()?, langs, w, l, p, seq),
            Dtype::U32 => self.record_ids(py, depth, ids.slice::<u32>()?, langs, w, l, p, seq),
            Dtype::U16 => self.record_ids(py, depth, ids.slice::<u16>()?, langs, w, l, p, seq),
            Dtype::I16 => self.record_ids(py, depth, ids.slice::<i16>()?, langs, w, l, p, seq),
            Dtype::U8 => self.record_ids(py, depth, ids.slice::<u8>()?, langs, w, l, p, seq),
            Dtype::U64 => self.record_ids(py, depth, ids.slice::<u64>()?, langs, w, l, p, seq),
            // Refused above; kept as an error rather than a panic.
            _ => Err(PyTypeError::new_err(format!(
                "topk_ids: unsupported dtype {}",
                ids.dtype_name()
            ))),
        }
    }

    /// Records a request's text length (characters, whitespace-separated words) for the
    /// tokenization statistics; call it once per request.
    fn record_text(&self, lang: &Bound<'_, PyAny>, chars: u64, words: u64) -> PyResult<()> {
        let id = self.lang_of(lang, "lang")?;
        self.inner.record_text(id, chars, words);
        Ok(())
    }

    /// The MoE depth (0-based) of the model's layer number `layer`.
    ///
    /// Raises `ValueError` when that layer is not an MoE layer of the model.
    fn depth_of(&self, layer: u32) -> PyResult<usize> {
        let spec = self.inner.spec();
        spec.depth_of(layer).ok_or_else(|| {
            PyValueError::new_err(format!(
                "layer {layer} is not an MoE layer of {}: its MoE layers are {}",
                spec.name,
                layer_ranges(&spec.moe_layers)
            ))
        })
    }

    /// The model's layer number of the MoE layer at `depth`.
    fn layer_of(&self, depth: usize) -> PyResult<u32> {
        let spec = self.inner.spec();
        spec.moe_layers.get(depth).copied().ok_or_else(|| {
            PyValueError::new_err(format!(
                "depth {depth} is out of range: {} has {} MoE layers (depths 0..{})",
                spec.name,
                spec.num_moe_layers(),
                spec.num_moe_layers()
            ))
        })
    }

    /// The model spec as a dict (the `model` object of a snapshot).
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = serde_json::to_string(self.inner.spec()).map_err(errors::config)?;
        json_loads(py, &json)
    }

    /// Routed experts E.
    #[getter]
    fn num_experts(&self) -> u32 {
        self.inner.spec().num_experts
    }

    /// Experts per token k.
    #[getter]
    fn top_k(&self) -> u32 {
        self.inner.spec().top_k
    }

    /// The model's layer numbers of its MoE layers, in depth order.
    #[getter]
    fn moe_layers(&self) -> Vec<u32> {
        self.inner.spec().moe_layers.clone()
    }

    /// Whether `record` checks every value first and raises instead of dropping.
    #[getter]
    fn strict(&self) -> bool {
        self.strict
    }

    /// The interned languages: `{tag: id}` (with `und` and `other`).
    fn languages<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (id, tag) in self.inner.registry().languages() {
            d.set_item(tag.as_str(), id.index() as u16)?;
        }
        Ok(d)
    }

    /// Tokens dropped so far: `{reason: count}` for every reason, or the count of one reason.
    #[pyo3(signature = (reason = None))]
    fn dropped<'py>(&self, py: Python<'py>, reason: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        match reason {
            Some(r) => {
                let found = DropReason::ALL
                    .iter()
                    .find(|d| d.as_str() == r)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "unknown drop reason {r:?}; reasons: {}",
                            DropReason::ALL
                                .iter()
                                .map(|d| d.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                Ok(self.inner.dropped(*found).into_pyobject(py)?.into_any())
            }
            None => {
                let d = PyDict::new(py);
                for reason in DropReason::ALL {
                    d.set_item(reason.as_str(), self.inner.dropped(*reason))?;
                }
                Ok(d.into_any())
            }
        }
    }

    /// The window as a `moescope.snapshot/v1` dict (the Rust snapshot's JSON). With
    /// `buckets=True`, the per-bucket counts are included.
    #[pyo3(signature = (*, buckets = false))]
    fn snapshot<'py>(&self, py: Python<'py>, buckets: bool) -> PyResult<Bound<'py, PyAny>> {
        let json = self.snapshot_json(py, buckets);
        json_loads(py, &json)
    }

    /// The window as `moescope.snapshot/v1` JSON text.
    #[pyo3(signature = (*, buckets = false))]
    fn snapshot_json(&self, py: Python<'_>, buckets: bool) -> String {
        let recorder = &*self.inner;
        py.detach(|| {
            if buckets {
                recorder.snapshot_with_buckets().to_json_string()
            } else {
                recorder.snapshot().to_json_string()
            }
        })
    }

    /// Writes the window's snapshot to `path` atomically (`moescope analyze` reads it).
    fn write_snapshot(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let recorder = &*self.inner;
        py.detach(|| recorder.write_snapshot(&path))
            .map_err(errors::snapshot)
    }

    /// Folds recent records into the window and rotates it (snapshots do it too).
    fn upkeep(&self, py: Python<'_>) {
        let recorder = &*self.inner;
        py.detach(|| recorder.upkeep());
    }

    /// Bytes the recorder holds for counts now.
    fn allocated_bytes(&self) -> usize {
        self.inner.allocated_bytes()
    }

    fn __repr__(&self) -> String {
        let spec = self.inner.spec();
        format!(
            "Recorder(model={:?}, experts={}, top_k={}, moe_layers={})",
            spec.name,
            spec.num_experts,
            spec.top_k,
            spec.num_moe_layers()
        )
    }
}

/// `3..=60` or `0, 2, 4` for messages.
fn layer_ranges(layers: &[u32]) -> String {
    match (layers.first(), layers.last()) {
        (Some(a), Some(b)) if (*b - *a) as usize + 1 == layers.len() => format!("{a}..={b}"),
        _ => layers
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}
