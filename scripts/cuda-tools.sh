# NVRTC (libnvrtc.so.13) and ptxas from NVIDIA's PyPI wheels, for compiling and assembling
# moescope's CUDA kernels on machines without a GPU or a CUDA toolkit.
#
# Source it (`source scripts/cuda-tools.sh`): it installs the wheels `nvidia-cuda-nvrtc` and
# `nvidia-cuda-nvcc` (13.x, about 460 MB together) into a virtualenv cached under
# target/cuda-tools/ when they are missing, then puts their `lib` on LD_LIBRARY_PATH and their
# `bin` (ptxas) on PATH. Running it again installs nothing. Set MOESCOPE_CUDA_TOOLS to use
# another folder.
_moescope_cuda_tools() {
  local root venv site
  root="${MOESCOPE_CUDA_TOOLS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/cuda-tools}"
  venv="$root/venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== cuda-tools: creating $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian and Ubuntu ship venv (ensurepip) separately: install it like test.sh does.
      rm -rf "$venv"
      local sudo=""
      if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
      if command -v apt-get >/dev/null 2>&1; then
        echo "== cuda-tools: installing python3-venv (Debian package)"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null &&
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends python3-venv >/dev/null
      fi
      python3 -m venv "$venv" || {
        echo "error: cuda-tools: python3 -m venv failed: install Python 3 with venv (Debian: python3-venv)" >&2
        return 1
      }
    fi
  fi
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return 1
  if ! ls "$site"/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1 || [ ! -x "$site/nvidia/cu13/bin/ptxas" ]; then
    echo "== cuda-tools: installing nvidia-cuda-nvrtc and nvidia-cuda-nvcc 13.x (about 460 MB) into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      'nvidia-cuda-nvrtc>=13,<14' 'nvidia-cuda-nvcc>=13,<14' || return 1
  fi
  if ! ls "$site"/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1 || [ ! -x "$site/nvidia/cu13/bin/ptxas" ]; then
    echo "error: cuda-tools: libnvrtc.so.13 or ptxas missing under $site/nvidia/cu13 after install" >&2
    return 1
  fi
  export MOESCOPE_CUDA_TOOLS_LIB="$site/nvidia/cu13/lib"
  export MOESCOPE_CUDA_TOOLS_BIN="$site/nvidia/cu13/bin"
  export LD_LIBRARY_PATH="$MOESCOPE_CUDA_TOOLS_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$MOESCOPE_CUDA_TOOLS_BIN:$PATH"
}
_moescope_cuda_tools
