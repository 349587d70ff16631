#!/usr/bin/env bash
# Installs what distorch-vision needs at run time and builds it:
#   - ONNX Runtime 1.31.1 (the CPU build from PyPI's `onnxruntime` wheel) into .runtime/cpu
#   - with --gpu: the GPU build (`onnxruntime-gpu`) and its CUDA 13 / cuDNN 9 wheels into .runtime/gpu
#   - with --openvino: the OpenVINO execution provider plugin (`onnxruntime-ep-openvino`, OpenVINO
#     and TBB inside) into .runtime/openvino, found there by the CPU engine `auto`/`openvino`
#   - the release binary (skip with --no-build)
# Idempotent: what is already installed is left as it is.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
gpu=0
openvino=0
build=1
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --openvino) openvino=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (valid: --gpu, --openvino, --no-build)" >&2; exit 2 ;;
  esac
done

# pip install --target into a temporary folder of its own, renamed when complete, so an
# interrupted install never looks finished and two setups running at once (checkouts sharing one
# .runtime) never mix their files: the first to finish wins, the other discards its copy.
# The second argument is the file whose presence marks a finished install, relative to the target.
install() {
  local target=$1 marker=$2; shift 2
  if [ -f "$target/$marker" ]; then
    echo "setup: $(basename "$target") runtime already in $target"
    return
  fi
  echo "setup: installing $* into $target"
  local tmp
  tmp=$(mktemp -d "$target.partial.XXXXXX")
  if ! PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$tmp" "$@"; then
    rm -rf "$tmp"
    echo "setup: installing $* failed (network? see pip's message above)" >&2
    exit 1
  fi
  if [ -f "$target/$marker" ]; then
    rm -rf "$tmp"
    return
  fi
  rm -rf "$target"
  mv -T "$tmp" "$target" 2>/dev/null || { rm -rf "$tmp"; [ -f "$target/$marker" ] || exit 1; }
}

mkdir -p "$root/.runtime"
ort_lib=onnxruntime/capi/libonnxruntime.so.1.31.1
install "$root/.runtime/cpu" "$ort_lib" onnxruntime==1.31.1
if [ "$gpu" = 1 ]; then
  install "$root/.runtime/gpu" "$ort_lib" onnxruntime-gpu==1.31.1 nvidia-cuda-runtime nvidia-cublas \
    nvidia-curand nvidia-cufft nvidia-cudnn-cu13
fi
if [ "$openvino" = 1 ]; then
  # --no-deps: the plugin loads into the ONNX Runtime above; it needs nothing else from PyPI.
  # The version is in the marker, so a checkout that pins another one installs it anew.
  install "$root/.runtime/openvino" onnxruntime_ep_openvino-1.8.1.dist-info/RECORD \
    --no-deps onnxruntime-ep-openvino==1.8.1
fi
if [ "$build" = 1 ]; then
  # cargo's own progress shows (the first build compiles every dependency: minutes).
  echo "setup: building the release binary (cargo build --release)"
  (cd "$root" && cargo build --release)
  echo "setup: built $root/target/release/distorch-vision"
fi
