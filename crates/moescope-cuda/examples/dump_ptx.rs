//! Prints the kernels' PTX for one architecture (default sm_90): `cargo run -p moescope-cuda
//! --example dump_ptx -- sm_100`. Needs NVRTC (`source scripts/cuda-tools.sh`).
fn main() {
    let arch = std::env::args().nth(1).unwrap_or_else(|| "sm_90".into());
    let arch: &'static str = Box::leak(arch.into_boxed_str());
    match moescope_cuda::kernels::compile_ptx(arch) {
        Ok(ptx) => print!("{ptx}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
