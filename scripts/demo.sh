#!/usr/bin/env bash
# The main job end to end on a bundled model: set up, inspect, plan, export, encode.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
bin=target/release/distorch-vision
model=tests/fixtures/models/clip_gelu_f16/model.safetensors
out=${1:-target/demo}
mkdir -p "$out"
set -x
$bin inspect --model "$model"
$bin plan --model "$model" --simulate-devices "cuda:0=24GiB,cuda:1=12GiB" --expert-mode-allocations "cuda:0,60%;cuda:1,30%;cpu,10%"
$bin export --model "$model"
$bin encode --model "$model" --pixels tests/fixtures/models/clip_gelu_f16/pixels.safetensors --out "$out/embeddings.safetensors"
