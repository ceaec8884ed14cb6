//! Shared by the CPU and GPU suites: random routing cases, the CPU recorder fed the same
//! tokens, and snapshot comparison.
#![allow(dead_code)]

use moescope_core::{
    DropReason, LangId, Languages, ManualClock, ModelSpec, Recorder, RouterBatch, Snapshot,
};
use moescope_cuda::reference::{
    self, bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, Step, TokenTags, TAG_EXCLUDED,
};
use moescope_cuda::{Aggregates, FloatType, IdType, Layout};

/// Languages every case's recorder interns, in order (ids 2, 3, 4).
pub const TAGS: [&str; 3] = ["he", "en", "sw"];
/// The recorder's language cap: tags ≥ 2 + CAP are out of range on the device.
pub const CAP: usize = 4;

/// moescope's deterministic generator, with the draws the cases use.
pub struct Gen(moescope_core::rng::Rng);
impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(moescope_core::rng::Rng::new(seed))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n as usize) as u64
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.0.next_f64() * 2.0 - 1.0) as f32
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The routing input of one case.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    TopK {
        id_type: IdType,
        weights: Option<FloatType>,
    },
    Logits(FloatType),
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub tokens: usize,
    pub experts: usize,
    pub k: usize,
    pub layers: usize,
    pub mode: Mode,
    pub sequence_ids: bool,
    /// Inject bad values (out-of-range ids, NaN, excluded and unknown tags).
    pub faults: bool,
    /// Leave this many trailing tokens as padding (valid-token count).
    pub padding: usize,
}

/// One case's data, as the device sees it (raw element bits) and as the CPU sees it.
pub struct Case {
    pub shape: Shape,
    pub layer: usize,
    /// Ids as i64 (the device copy is converted to the case's id type).
    pub ids: Vec<i64>,
    /// Weights or logits rounded to the case's dtype, as f32.
    pub values: Vec<f32>,
    /// The same values in the case's dtype: f32 bits (as u32) or 16-bit.
    pub raw16: Vec<u16>,
    pub tags: Vec<u16>,
    pub seqs: Vec<u64>,
}

pub fn spec(shape: &Shape) -> ModelSpec {
    ModelSpec::new(
        "case",
        shape.experts as u32,
        shape.k as u32,
        (0..shape.layers as u32).collect(),
    )
    .unwrap()
}

pub fn recorder(shape: &Shape) -> Recorder {
    let r = Recorder::builder(spec(shape))
        .clock(ManualClock::new(1_700_000_000_000))
        .max_languages(CAP)
        .seed(7)
        .build()
        .unwrap();
    for t in TAGS {
        r.language(t);
    }
    r
}

fn round(x: f32, t: FloatType) -> (f32, u16) {
    match t {
        FloatType::F32 => (x, 0),
        FloatType::F16 => {
            let h = f32_to_f16(x);
            (f16_to_f32(h), h)
        }
        FloatType::Bf16 => {
            let h = f32_to_bf16(x);
            (bf16_to_f32(h), h)
        }
    }
}

impl Case {
    pub fn new(shape: Shape, seed: u64) -> Case {
        let mut g = Gen::new(seed);
        let (t, e, k) = (shape.tokens, shape.experts, shape.k);
        let layer = g.below(shape.layers as u64) as usize;
        let faults = shape.faults;
        let tags = (0..t)
            .map(|_| {
                if faults && g.chance(20) {
                    TAG_EXCLUDED
                } else if faults && g.chance(20) {
                    (2 + CAP + g.below(5) as usize) as u16 // past the tag capacity
                } else {
                    2 + g.below(TAGS.len() as u64) as u16
                }
            })
            .collect();
        let seqs = (0..t).map(|_| g.below(64)).collect();
        let mut ids = Vec::new();
        let mut values = Vec::new();
        let mut raw16 = Vec::new();
        let mut push = |x: f32, dtype: FloatType| {
            let (v, h) = round(x, dtype);
            values.push(v);
            raw16.push(h);
        };
        match shape.mode {
            Mode::TopK { id_type, weights } => {
                for _ in 0..t {
                    // Distinct ids per row, like a router's top-k.
                    let start = g.below(e as u64) as usize;
                    let step = 1 + 2 * g.below(e as u64 / 2) as usize; // odd: a cycle
                    let mut row: Vec<i64> =
                        (0..k).map(|j| ((start + j * step) % e) as i64).collect();
                    if faults && g.chance(15) {
                        let j = g.below(k as u64) as usize;
                        row[j] = match id_type {
                            IdType::U32 => e as i64 + g.below(3) as i64,
                            _ => {
                                if g.chance(500) {
                                    -1
                                } else {
                                    e as i64
                                }
                            }
                        };
                    }
                    ids.extend(row);
                    if let Some(wt) = weights {
                        for _ in 0..k {
                            let mut w = g.unit().abs() / k as f32;
                            if faults && g.chance(5) {
                                w = f32::NAN;
                            } else if faults && g.chance(5) {
                                w = -w - 0.01;
                            }
                            push(w, wt);
                        }
                    }
                }
            }
            Mode::Logits(dt) => {
                for _ in 0..t {
                    let nan = faults && g.chance(15);
                    let nan_at = g.below(e as u64) as usize;
                    for j in 0..e {
                        let x = if nan && j == nan_at {
                            f32::NAN
                        } else {
                            4.0 * g.unit()
                        };
                        push(x, dt);
                    }
                }
            }
        }
        Case {
            shape,
            layer,
            ids,
            values,
            raw16,
            tags,
            seqs,
        }
    }

    pub fn valid(&self) -> usize {
        self.shape.tokens - self.shape.padding.min(self.shape.tokens)
    }

    fn k(&self) -> usize {
        self.shape.k
    }

    /// What the CPU model of the kernels counts.
    pub fn reference(&self, layout: Layout, salt: u64) -> Aggregates {
        let mut agg = Aggregates::zeroed(layout);
        self.reference_into(&mut agg, salt);
        agg
    }

    pub fn reference_into(&self, agg: &mut Aggregates, salt: u64) {
        let step = Step {
            layer: self.layer,
            tokens: self.shape.tokens,
            tags: TokenTags::PerToken(&self.tags),
            sequence_ids: self.shape.sequence_ids.then_some(&self.seqs[..]),
            salt,
            valid: Some(self.valid()),
        };
        match self.shape.mode {
            Mode::TopK { weights, .. } => {
                let w = weights.map(|_| &self.values[..]);
                reference::count_topk(agg, &step, &self.ids, self.k(), w)
            }
            Mode::Logits(_) => reference::count_logits(agg, &step, &self.values, self.k()),
        }
    }

    /// Feeds the valid tokens to `record`, one call (as the serving path would without a GPU).
    /// Without sequence ids the recorder picks its own halves: compare full counts only.
    pub fn record(&self, r: &Recorder) {
        let n = self.valid();
        let (e, k) = (self.shape.experts, self.k());
        let langs: Vec<LangId> = self.tags[..n]
            .iter()
            .map(|&g| LangId::from_index(g))
            .collect();
        let mut ids = self.ids.clone();
        if let Mode::Logits(_) = self.shape.mode {
            ids = (0..n)
                .flat_map(|t| reference::topk_by_logit(&self.values[t * e..(t + 1) * e], k))
                .map(i64::from)
                .collect();
        }
        let ids = &ids[..n * k];
        let mut batch = RouterBatch::at_depth(self.layer, ids, Languages::PerToken(&langs));
        if self.shape.sequence_ids {
            batch = batch.sequence_ids(&self.seqs[..n]);
        }
        match self.shape.mode {
            Mode::TopK {
                weights: Some(_), ..
            } => {
                batch = batch.topk_weights(&self.values[..n * k]);
            }
            Mode::TopK { weights: None, .. } => {}
            Mode::Logits(_) => batch = batch.logits(&self.values[..n * e]),
        }
        r.record(&batch).unwrap();
    }
}

/// Relative tolerance of probability, entropy and weight sums.
pub const REL: f64 = 1e-5;

fn close(a: f64, b: f64) -> bool {
    // Relative to the larger magnitude, with a floor of 1e-3 for sums near zero.
    (a - b).abs() <= REL * a.abs().max(b.abs()).max(1e-3)
}

/// Asserts two snapshots agree: counts exactly (halves too when `halves`), sums within
/// [`REL`]. Returns the number of tokens compared.
pub fn assert_snapshots_match(got: &Snapshot, want: &Snapshot, halves: bool, what: &str) -> f64 {
    let names = |s: &Snapshot| s.languages.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: languages");
    let mut tokens = 0.0;
    for (tag, w) in &want.languages {
        let g = &got.languages[tag];
        tokens += w.tokens;
        for (l, (gl, wl)) in g.layers.iter().zip(&w.layers).enumerate() {
            let at = format!("{what}: {tag} layer {l}");
            assert_eq!(gl.tokens, wl.tokens, "{at}: tokens");
            assert_eq!(gl.expert_tokens, wl.expert_tokens, "{at}: expert_tokens");
            assert_eq!(gl.prob_tokens, wl.prob_tokens, "{at}: prob_tokens");
            let opt = |a: Option<f64>, b: Option<f64>, f: &str| match (a, b) {
                (Some(a), Some(b)) => assert!(close(a, b), "{at}: {f} {a} vs {b}"),
                (None, None) => {}
                (a, b) => panic!("{at}: {f} {a:?} vs {b:?}"),
            };
            opt(gl.topk_weight_sum, wl.topk_weight_sum, "topk_weight_sum");
            opt(
                gl.selection_entropy_sum_bits,
                wl.selection_entropy_sum_bits,
                "selection_entropy_sum_bits",
            );
            match (&gl.prob_sum, &wl.prob_sum) {
                (Some(a), Some(b)) => {
                    for (j, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(close(*x, *y), "{at}: prob_sum[{j}] {x} vs {y}");
                    }
                }
                (None, None) => {}
                (a, b) => panic!("{at}: prob_sum {:?} vs {:?}", a.is_some(), b.is_some()),
            }
        }
        if halves {
            let (gh, wh) = (g.halves.as_ref().unwrap(), w.halves.as_ref().unwrap());
            for h in 0..2 {
                for (l, (gl, wl)) in gh[h].layers.iter().zip(&wh[h].layers).enumerate() {
                    assert_eq!(gl.tokens, wl.tokens, "{what}: {tag} half {h} layer {l}");
                    assert_eq!(
                        gl.expert_tokens, wl.expert_tokens,
                        "{what}: {tag} half {h} layer {l}"
                    );
                }
            }
        }
    }
    tokens
}

/// Asserts the two recorders counted the same drops.
pub fn assert_drops_match(got: &Recorder, want: &Recorder, what: &str) {
    for &reason in DropReason::ALL {
        assert_eq!(
            got.dropped(reason),
            want.dropped(reason),
            "{what}: drops {reason:?}"
        );
    }
}

/// The sweep both suites run: every dtype, T from 1 to 16384, E from 8 to 256, k from 1 to 8.
pub fn sweep() -> Vec<Shape> {
    use FloatType::*;
    use IdType::*;
    let mut v = Vec::new();
    let topk = |id_type, weights| Mode::TopK { id_type, weights };
    let dims = [
        (1, 8, 1),
        (7, 8, 2),
        (64, 64, 4),
        (300, 128, 8),
        (4096, 128, 8),
        (1000, 256, 8),
        (16384, 128, 8),
        (513, 32, 6),
    ];
    let modes = [
        topk(I32, None),
        topk(I64, Some(F32)),
        topk(U32, Some(Bf16)),
        topk(I32, Some(F16)),
        Mode::Logits(F32),
        Mode::Logits(Bf16),
        Mode::Logits(F16),
    ];
    for (i, &(tokens, experts, k)) in dims.iter().enumerate() {
        for (j, &mode) in modes.iter().enumerate() {
            v.push(Shape {
                tokens,
                experts,
                k,
                layers: 3,
                mode,
                sequence_ids: (i + j) % 2 == 0,
                faults: (i + j) % 3 != 0,
                padding: if (i + j) % 4 == 1 { tokens / 3 } else { 0 },
            });
        }
    }
    v
}

/// A monitor for the GPU suite and benchmarks: with `MOESCOPE_CUDA_PTX_DIR` set, the kernels
/// come from `<dir>/<arch>.ptx` (compiled beforehand by scripts/gpu-check.sh, for GPU
/// machines without NVRTC); otherwise NVRTC compiles them.
pub fn new_monitor(
    r: std::sync::Arc<Recorder>,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    config: moescope_cuda::MonitorConfig,
) -> Result<moescope_cuda::CudaMonitor, moescope_cuda::CudaError> {
    use moescope_cuda::{arch_for, CudaError, CudaMonitor};
    let Some(dir) = std::env::var_os("MOESCOPE_CUDA_PTX_DIR") else {
        return CudaMonitor::new(r, stream.clone(), config);
    };
    let (major, minor) = stream.context().compute_capability()?;
    let arch = arch_for(major, minor).ok_or(CudaError::UnsupportedDevice { major, minor })?;
    let path = std::path::Path::new(&dir).join(format!("{arch}.ptx"));
    let path = if path.exists() {
        path
    } else {
        std::path::Path::new(&dir).join("compute_80.ptx")
    };
    let ptx = std::fs::read_to_string(&path).map_err(|e| CudaError::Compile {
        arch,
        log: format!("{}: {e}", path.display()),
    })?;
    CudaMonitor::from_ptx(r, stream.clone(), config, ptx)
}
