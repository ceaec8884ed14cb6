//! Every kernel compiles with the real NVRTC and assembles with ptxas for sm_80, sm_90 and
//! sm_100, with no register spills and at most `MAX_REGISTERS` registers per thread.
//!
//! Needs `libnvrtc.so.13` on the library path and `ptxas` on PATH (`source
//! scripts/cuda-tools.sh`). Without them the test reports itself skipped, or fails when
//! `MOESCOPE_REQUIRE_NVRTC=1` (as scripts/test.sh sets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use moescope_cuda::kernels::{self, KERNELS, MAX_REGISTERS, TEST_ARCHS};

fn required() -> bool {
    std::env::var("MOESCOPE_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// `None` (after reporting the skip) when the tools are missing and not required.
fn tools(test: &str) -> Option<PathBuf> {
    let ptxas = std::env::var_os("MOESCOPE_CUDA_TOOLS_BIN")
        .map(|d| PathBuf::from(d).join("ptxas"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    let ptxas_ok = Command::new(&ptxas)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = match (kernels::nvrtc_available(), ptxas_ok) {
        (true, true) => return Some(ptxas),
        (false, _) => "NVRTC (libnvrtc.so.13)",
        (true, false) => "ptxas",
    };
    if required() {
        panic!(
            "{missing} not found and MOESCOPE_REQUIRE_NVRTC=1: run `source scripts/cuda-tools.sh` \
             (installs the nvidia-cuda-nvrtc and nvidia-cuda-nvcc wheels under target/cuda-tools)"
        );
    }
    // Straight to stderr, past the test harness's capture, so the skip is visible.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {missing} not found ({test})");
    None
}

/// Per kernel: (registers, spill stores + spill loads, stack frame bytes).
fn assemble(ptxas: &PathBuf, arch: &str, ptx: &str) -> BTreeMap<String, (u32, u32, u32)> {
    let dir = std::env::temp_dir().join(format!("moescope-ptxas-{}-{arch}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("moescope.ptx");
    std::fs::write(&src, ptx).unwrap();
    let out = Command::new(ptxas)
        .args([&format!("-arch={arch}"), "-v"])
        .arg(&src)
        .arg("-o")
        .arg(dir.join("moescope.cubin"))
        .output()
        .expect("ptxas runs");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ptxas -arch={arch} failed:\n{log}");
    std::fs::remove_dir_all(&dir).ok();
    // ptxas info    : Compiling entry function 'moescope_count_topk' for 'sm_90'
    // ptxas info    : Function properties for moescope_count_topk
    //     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    // ptxas info    : Used 30 registers, used 1 barriers, 496 bytes cmem[0]
    let mut found = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut frame = (0, 0);
    let num_before = |line: &str, word: &str| -> u32 {
        let i = line
            .find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        line[..i]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_owned);
        } else if line.contains("bytes stack frame") {
            frame = (
                num_before(line, "bytes stack frame"),
                num_before(line, "bytes spill stores") + num_before(line, "bytes spill loads"),
            );
        } else if line.contains("Used") && line.contains("registers") {
            let name = current
                .take()
                .unwrap_or_else(|| panic!("registers before a function name:\n{log}"));
            found.insert(name, (num_before(line, "registers"), frame.1, frame.0));
        }
    }
    assert!(!found.is_empty(), "could not read ptxas -v output:\n{log}");
    found
}

#[test]
fn kernels_compile_and_assemble_for_every_arch() {
    let Some(ptxas) = tools("kernels_compile_and_assemble_for_every_arch") else {
        return;
    };
    for arch in TEST_ARCHS {
        let ptx = kernels::compile_ptx(arch).unwrap_or_else(|e| panic!("{e}"));
        for k in KERNELS {
            assert!(
                ptx.contains(&format!(".entry {k}(")),
                "{arch}: {k} missing from the PTX"
            );
        }
        let info = assemble(&ptxas, arch, &ptx);
        for k in KERNELS {
            let (regs, spills, frame) = info[k];
            println!(
                "{arch} {k}: {regs} registers, {spills} spill bytes, {frame} bytes stack frame"
            );
            assert_eq!(spills, 0, "{arch} {k}: register spills");
            assert_eq!(frame, 0, "{arch} {k}: local memory (stack frame)");
            assert!(
                regs <= MAX_REGISTERS,
                "{arch} {k}: {regs} registers > {MAX_REGISTERS}"
            );
        }
        assert_eq!(
            info.len(),
            KERNELS.len(),
            "{arch}: unexpected functions {info:?}"
        );
    }
}

#[test]
fn compiling_without_nvrtc_is_an_error_not_a_panic() {
    if kernels::nvrtc_available() {
        println!("skipped: NVRTC is present (compiling_without_nvrtc_is_an_error_not_a_panic)");
        return;
    }
    assert_eq!(
        kernels::compile_ptx("sm_90"),
        Err(moescope_cuda::CudaError::LibraryMissing {
            library: "libnvrtc.so.13"
        })
    );
}
