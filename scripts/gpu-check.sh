#!/usr/bin/env bash
# Builds, on any machine (no GPU or CUDA toolkit needed), everything the CUDA path's GPU check
# runs, into target/gpu-check/ (ignored by git):
#   bin/gpu_suite     the GPU correctness suite (crates/moescope-cuda/tests/gpu.rs)
#   bin/gpu_bench     the kernel benchmark (crates/moescope-cuda/benches/gpu.rs)
#   bin/cuda_monitor  the example stack with a captured graph (examples/cuda_monitor.rs)
#   ptx/*.ptx         the kernels compiled by NVRTC for sm_80, sm_90, sm_100 and compute_80,
#                     used when the GPU machine has no libnvrtc.so.13
#   baselines.py      the PyTorch baselines and the comparison table
#   run.sh            runs all of it
# Copy the folder to a machine with an NVIDIA GPU (compute capability 8.0+), the CUDA 13
# driver, glibc 2.34 or later, Python 3 and PyTorch, and run `bash gpu-check/run.sh` there: it prints the suite's
# results and the benchmark table, and writes results.md next to itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-tools.sh
out=target/gpu-check
rm -rf "$out"
mkdir -p "$out/bin" "$out/ptx"

# The executable cargo built for target $1 (kind $2) from a --message-format=json stream.
exe_of() {
  python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("name") == name and kind in t.get("kind", []) and m.get("executable"):
        print(m["executable"])
' "$1" "$2"
}

echo "== building the GPU suite, the benchmark and the example (release)"
suite=$(cargo test --release --locked -p moescope-cuda --test gpu --no-run --message-format=json | exe_of gpu test)
bench=$(cargo bench --locked -p moescope-cuda --bench gpu --no-run --message-format=json | exe_of gpu bench)
example=$(cargo build --release --locked --features cuda --example cuda_monitor --message-format=json | exe_of cuda_monitor example)
for f in "$suite" "$bench" "$example"; do
  [ -x "$f" ] || { echo "error: a binary was not built ($f)" >&2; exit 1; }
done
cp "$suite" "$out/bin/gpu_suite"
cp "$bench" "$out/bin/gpu_bench"
cp "$example" "$out/bin/cuda_monitor"

echo "== compiling the kernels to PTX with NVRTC"
cargo build --release --locked -q -p moescope-cuda --example dump_ptx
for arch in sm_80 sm_90 sm_100 compute_80; do
  target/release/examples/dump_ptx "$arch" > "$out/ptx/$arch.ptx"
done
cp crates/moescope-cuda/benches/baselines.py "$out/baselines.py"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# The CUDA path's GPU check: correctness suite, example, benchmarks with PyTorch baselines.
# Needs an NVIDIA GPU (8.0+), the driver, Python 3 with PyTorch (CUDA). Exit status: the
# suite's.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# NVRTC: the system's or PyTorch's libnvrtc.so.13 if there is one, else the bundled PTX.
nvrtc_dir=""
for d in $(python3 -c 'import glob, site, sys
paths = site.getsitepackages() + [site.getusersitepackages()]
print(" ".join(sorted({p.rsplit("/", 1)[0] for s in paths for p in glob.glob(s + "/nvidia/cu13/lib/libnvrtc.so.13")})))' 2>/dev/null) \
         /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu; do
  if [ -e "$d/libnvrtc.so.13" ]; then nvrtc_dir="$d"; break; fi
done
export MOESCOPE_REQUIRE_GPU=1
if [ -n "$nvrtc_dir" ]; then
  echo "== NVRTC: $nvrtc_dir/libnvrtc.so.13"
  rust_env=(env "LD_LIBRARY_PATH=$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
else
  echo "== NVRTC not found: the kernels come from $here/ptx"
  rust_env=(env "MOESCOPE_CUDA_PTX_DIR=$here/ptx")
fi
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv 2>/dev/null || true

echo "== GPU correctness suite"
"${rust_env[@]}" "$here/bin/gpu_suite" --test-threads=1 --nocapture
suite=$?

echo "== example: cuda_monitor"
if [ -n "$nvrtc_dir" ]; then
  "${rust_env[@]}" "$here/bin/cuda_monitor" || echo "example failed: $?"
else
  echo "skipped: the example compiles its own kernel with NVRTC"
fi

echo "== benchmark: moescope kernels"
"${rust_env[@]}" "$here/bin/gpu_bench" --json "$here/moescope_bench.json" || echo "benchmark failed: $?"
echo "== benchmark: PyTorch baselines and the comparison"
python3 "$here/baselines.py" --moescope "$here/moescope_bench.json" --out "$here/results.md" \
  || echo "baselines failed: $?"
echo "== suite exit status: $suite"
exit $suite
RUN
chmod +x "$out/run.sh"
strip --strip-debug "$out"/bin/* 2>/dev/null || true
du -sh "$out" | sed "s/^/   /"
echo "== ready: copy $out to the GPU machine and run: bash $(basename "$out")/run.sh"
