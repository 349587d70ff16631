#!/usr/bin/env bash
# The main job end to end on bundled defaults: set up, inspect and plan a bundled model,
# export its per-block graphs, encode the bundled sample images into sharded embeddings,
# and print each image's nearest neighbours.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
bin=target/release/distorch-vision
model=tests/fixtures/models/clip_gelu_f16/model.safetensors
out=${1:-target/demo}
rm -rf "$out"
mkdir -p "$out"
set -x
$bin devices
$bin inspect --model "$model"
$bin plan --model "$model" --simulate-devices "cuda:0=24GiB,cuda:1=12GiB" --expert-mode-allocations "cuda:0,60%;cuda:1,30%;cpu,10%"
$bin export --model "$model"
$bin encode --model "$model" --device cpu --images tests/fixtures/images --out "$out/embeddings" --shard-size 16 --outputs image_embeds
PYTHONPATH=.runtime/cpu python3 scripts/nearest_neighbours.py "$out/embeddings" -k 3
