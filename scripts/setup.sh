#!/usr/bin/env bash
# Installs what distorch-vision needs at run time and builds it:
#   - ONNX Runtime 1.31.1 (the CPU build from PyPI's `onnxruntime` wheel) into .runtime/cpu
#   - with --gpu: the GPU build (`onnxruntime-gpu`) and its CUDA 13 / cuDNN 9 wheels into .runtime/gpu
#   - the release binary (skip with --no-build)
# Idempotent: what is already installed is left as it is.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
gpu=0
build=1
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (valid: --gpu, --no-build)" >&2; exit 2 ;;
  esac
done

# pip install --target into a temporary folder, renamed when complete, so an interrupted
# install never looks finished.
install() {
  local target=$1; shift
  if [ -f "$target/onnxruntime/capi/libonnxruntime.so.1.31.1" ]; then
    echo "setup: $(basename "$target") runtime already in $target"
    return
  fi
  echo "setup: installing $* into $target"
  rm -rf "$target.partial"
  PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$target.partial" "$@"
  rm -rf "$target"
  mv "$target.partial" "$target"
}

mkdir -p "$root/.runtime"
install "$root/.runtime/cpu" onnxruntime==1.31.1
if [ "$gpu" = 1 ]; then
  install "$root/.runtime/gpu" onnxruntime-gpu==1.31.1 nvidia-cuda-runtime nvidia-cublas \
    nvidia-curand nvidia-cufft nvidia-cudnn-cu13
fi
if [ "$build" = 1 ]; then
  # cargo's own progress shows (the first build compiles every dependency: minutes).
  echo "setup: building the release binary (cargo build --release)"
  (cd "$root" && cargo build --release)
  echo "setup: built $root/target/release/distorch-vision"
fi
