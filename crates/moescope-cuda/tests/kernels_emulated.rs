//! The kernels' own CUDA source, compiled for the CPU by a C++20 compiler against a small
//! stand-in for the CUDA runtime (`tests/emulator/`: a std::thread per GPU thread, barriers
//! for `__syncthreads` and warp shuffles, mutex-guarded atomics), run on generated cases and
//! compared with the kernels' CPU model (`moescope_cuda::reference`): exact counts and drops,
//! sums within 1e-5 relative. This checks the kernels' logic (shared-memory privatization,
//! the global fallback past 4 tags per block, grid-stride loops, warp top-k and softmax,
//! halves, padding, the enable flag and the active accumulator) on machines without a GPU;
//! the GPU suite (tests/gpu.rs) checks them on a device.
//!
//! Needs a C++20 compiler (`$CXX`, else `c++`); without one the test reports itself skipped,
//! or fails when `MOESCOPE_REQUIRE_CXX=1`.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use common::{sweep, Case, Mode, Shape};
use moescope_cuda::kernels::{grid_size, shared_bytes, SOURCE};
use moescope_cuda::{Aggregates, FloatType, IdType, Layout};

const SALT: u64 = 0x5eed;

fn skip(test: &str, why: &str) -> Option<PathBuf> {
    if std::env::var("MOESCOPE_REQUIRE_CXX").is_ok_and(|v| v == "1") {
        panic!("{test}: MOESCOPE_REQUIRE_CXX=1 but {why}");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
    None
}

/// Builds the emulator once per test binary run; `None` (after reporting) without a compiler.
fn emulator(test: &str) -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moescope-emulator");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emulator");
        let prelude = std::fs::read_to_string(here.join("prelude.h")).map_err(|e| e.to_string())?;
        let main = std::fs::read_to_string(here.join("main.cpp")).map_err(|e| e.to_string())?;
        let asm = r#"asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));"#;
        assert!(
            SOURCE.contains(asm),
            "the f16 conversion changed: update the emulator"
        );
        let kernels = SOURCE
            .replace(asm, "f = emu::half_to_float(h);")
            .replace(
                "extern __shared__ u64 smem[];",
                "u64* smem = emu::shared_mem();",
            )
            .replace(
                "extern \"C\" __global__ void __launch_bounds__(256, 4)",
                "void",
            );
        let src = dir.join("emulated.cpp");
        std::fs::write(&src, format!("{prelude}\n{kernels}\n{main}")).map_err(|e| e.to_string())?;
        let exe = dir.join("emulated");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args(["-std=c++20", "-O1", "-pthread", "-w", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .map_err(|e| format!("no C++ compiler ({cxx}: {e})"))?;
        if !out.status.success() {
            return Err(format!(
                "{cxx} could not build the emulator:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(exe)
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(e) if e.starts_with("no C++ compiler") => skip(test, e),
        Err(e) => panic!("{e}"),
    }
}

/// One launch on the emulator: the active accumulator afterwards.
fn run(
    exe: &PathBuf,
    case: &Case,
    layout: Layout,
    grid_cap: u32,
    enabled: bool,
    active: u64,
) -> Aggregates {
    let s = &case.shape;
    let (logits, data_dtype, weights): (bool, u64, Option<FloatType>) = match s.mode {
        Mode::TopK { id_type, weights } => (false, id_type as u64, weights),
        Mode::Logits(t) => (true, t as u64, None),
    };
    let mut buf: Vec<u8> = Vec::new();
    let header = [
        u64::from(logits),
        s.tokens as u64,
        case.layer as u64,
        layout.layers as u64,
        layout.tags as u64,
        layout.experts as u64,
        s.k as u64,
        data_dtype,
        weights.map_or(0, |t| t as u64),
        0,
        u64::from(weights.is_some()),
        1,
        u64::from(s.sequence_ids),
        if s.padding > 0 {
            case.valid() as u64
        } else {
            u64::MAX
        },
        SALT,
        u64::from(grid_size(s.tokens, logits, grid_cap)),
        shared_bytes(layout.experts, logits) as u64,
        u64::from(enabled),
        active,
        layout.words() as u64,
    ];
    for h in header {
        buf.extend(h.to_le_bytes());
    }
    let mut array = |bytes: Vec<u8>| {
        buf.extend((bytes.len() as u64).to_le_bytes());
        buf.extend(bytes);
    };
    let floats = |t: FloatType| -> Vec<u8> {
        match t {
            FloatType::F32 => case.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => case.raw16.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    };
    match s.mode {
        Mode::TopK { id_type, .. } => array(match id_type {
            IdType::I32 => case
                .ids
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
            IdType::I64 => case.ids.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            IdType::U32 => case
                .ids
                .iter()
                .flat_map(|&v| (v as u32).to_le_bytes())
                .collect(),
        }),
        Mode::Logits(t) => array(floats(t)),
    }
    array(weights.map_or_else(Vec::new, floats));
    array(case.tags.iter().flat_map(|v| v.to_le_bytes()).collect());
    array(case.seqs.iter().flat_map(|v| v.to_le_bytes()).collect());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moescope-emulator");
    let id = std::thread::current()
        .name()
        .unwrap_or("t")
        .replace("::", "_");
    let (input, output) = (dir.join(format!("{id}.in")), dir.join(format!("{id}.out")));
    std::fs::write(&input, buf).unwrap();
    let st = Command::new(exe).arg(&input).arg(&output).status().unwrap();
    assert!(st.success(), "emulator failed on {s:?}");
    let bytes = std::fs::read(&output).unwrap();
    let mut agg = Aggregates::zeroed(layout);
    for (w, b) in agg.words_mut().iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().unwrap());
    }
    agg
}

/// Counts exact, sums within 1e-5 relative (floor 1e-3).
fn assert_aggregates_match(got: &Aggregates, want: &Aggregates, what: &str) {
    let l = got.layout();
    let mut float = vec![false; l.words()];
    for layer in 0..l.layers {
        for tag in 0..l.tags {
            for e in 0..l.experts {
                float[l.prob_sum(layer, tag) + e] = true;
            }
            float[l.entropy(layer, tag)] = true;
            float[l.weight(layer, tag)] = true;
        }
    }
    for (i, is_float) in float.iter().enumerate() {
        if *is_float {
            let (a, b) = (got.get_f64(i), want.get_f64(i));
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-3),
                "{what}: word {i}: {a} vs {b}"
            );
        } else {
            assert_eq!(got.get(i), want.get(i), "{what}: word {i}");
        }
    }
}

#[test]
fn emulated_kernels_match_the_reference_over_the_sweep() {
    let test = "emulated_kernels_match_the_reference_over_the_sweep";
    let Some(exe) = emulator(test) else { return };
    let mut counted = 0;
    for (i, shape) in sweep().into_iter().enumerate() {
        // The emulator runs warp shuffles as OS-thread barriers: logits cases cost about 20 ms
        // per token, so beyond 64 tokens only one of them runs (the GPU suite covers the rest).
        let slow = matches!(shape.mode, Mode::Logits(_))
            && shape.tokens > 64
            && !(shape.tokens == 300 && matches!(shape.mode, Mode::Logits(FloatType::Bf16)));
        if shape.tokens > 1000 || slow {
            continue;
        }
        let case = Case::new(shape, 1000 + i as u64);
        let layout = Layout {
            layers: shape.layers,
            tags: 2 + common::CAP,
            experts: shape.experts,
        };
        let want = case.reference(layout, SALT);
        // A small grid cap makes blocks loop over several batches of tokens (and keeps the
        // emulator's thread count down); small launches also run with one block per batch.
        let cap = if shape.tokens <= 64 && i % 2 == 1 {
            528
        } else {
            2
        };
        let got = run(&exe, &case, layout, cap, true, (i % 2) as u64);
        assert_aggregates_match(&got, &want, &format!("case {i} {shape:?} cap {cap}"));
        counted += (0..layout.tags)
            .map(|g| want.tokens(case.layer, g))
            .sum::<u64>();
    }
    assert!(counted > 1000, "{counted} tokens counted");
}

#[test]
fn emulated_kernels_count_more_tags_than_a_block_privatizes() {
    let test = "emulated_kernels_count_more_tags_than_a_block_privatizes";
    let Some(exe) = emulator(test) else { return };
    for mode in [
        Mode::TopK {
            id_type: IdType::I64,
            weights: Some(FloatType::F32),
        },
        Mode::Logits(FloatType::F32),
    ] {
        let shape = Shape {
            tokens: 120,
            experts: 64,
            k: 4,
            layers: 2,
            mode,
            sequence_ids: true,
            faults: false,
            padding: 0,
        };
        let mut case = Case::new(shape, 9);
        // Ten languages interleaved: every block sees more than 4 tags.
        case.tags = (0..shape.tokens).map(|t| 2 + (t * 7 % 10) as u16).collect();
        let layout = Layout {
            layers: 2,
            tags: 12,
            experts: 64,
        };
        let want = case.reference(layout, SALT);
        assert!((2..12).all(|g| want.tokens(case.layer, g) > 0));
        let got = run(&exe, &case, layout, 528, true, 0);
        assert_aggregates_match(&got, &want, &format!("{mode:?}"));
    }
}

#[test]
fn emulated_kernels_honor_the_enable_flag() {
    let test = "emulated_kernels_honor_the_enable_flag";
    let Some(exe) = emulator(test) else { return };
    let shape = sweep()[14];
    let case = Case::new(shape, 5);
    let layout = Layout {
        layers: shape.layers,
        tags: 2 + common::CAP,
        experts: shape.experts,
    };
    let want = case.reference(layout, SALT);
    assert!(
        want.tokens(case.layer, 2) > 0,
        "the case counts when enabled"
    );
    let got = run(&exe, &case, layout, 2, false, 1);
    assert!(
        got.words().iter().all(|&w| w == 0),
        "a disabled launch counted"
    );
}
