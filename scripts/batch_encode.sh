#!/usr/bin/env bash
# Encode a folder of images into sharded embeddings with sensible defaults.
#   scripts/batch_encode.sh MODEL IMAGES_DIR [OUT_DIR] [extra encode flags...]
# MODEL is a path or a name in the model folders (--comfyui / COMFYUI_PATH).
# Defaults: OUT_DIR=<IMAGES_DIR>.embeddings, shards of 1024 rows, batch 16, image_embeds only,
# --resume (re-running continues a killed run). Uses target/release/distorch-vision; runs
# scripts/setup.sh first when the binary or the ONNX Runtime library is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL IMAGES_DIR [OUT_DIR] [extra encode flags...]" >&2
  exit 2
fi
model=$1; images=$2; shift 2
out="${images%/}.embeddings"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then out=$1; shift; fi
bin="${CARGO_TARGET_DIR:-$root/target}/release/distorch-vision"
if [ ! -x "$bin" ] || [ ! -d "$root/.runtime" ]; then
  "$root/scripts/setup.sh"
fi
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release)
fi
lib="$root/.runtime/cpu/onnxruntime/capi/libonnxruntime.so.1.31.1"
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -f "$lib" ] && [ ! -d "$root/.runtime/gpu" ]; then
  export ORT_DYLIB_PATH="$lib"
fi
exec "$bin" encode --model "$model" --images "$images" --out "$out" \
  --shard-size "${SHARD_SIZE:-1024}" --batch-size "${BATCH_SIZE:-16}" \
  --outputs "${OUTPUTS:-image_embeds}" --resume "$@"
