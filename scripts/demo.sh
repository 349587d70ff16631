#!/usr/bin/env bash
# The main job end to end on bundled defaults: set up, inspect and plan a bundled model,
# export its per-block graphs, encode the bundled sample images into sharded embeddings,
# and print each image's nearest neighbours.
#
# Usage: scripts/demo.sh [OUT]
#   OUT  folder for the demo's outputs (default: target/demo of the checkout). It must be new,
#        empty, or a folder an earlier demo run made (it holds .distorch-vision-demo): the demo
#        never deletes anything it did not write, and refuses any other folder.
set -euo pipefail
usage() { sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then
  echo "demo.sh: at most one argument (OUT), got $#" >&2; usage >&2; exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
marker_name=.distorch-vision-demo
if [ $# -eq 1 ]; then
  # Relative to where the user is, not to the checkout.
  case "$1" in /*) out=$1 ;; *) out=$PWD/$1 ;; esac
  ours=0
else
  out=$root/target/demo
  ours=1 # target/ is the build's own folder (earlier demo runs wrote here without a marker)
fi
marker=$out/$marker_name

# Checked before anything is built or written.
if [ -e "$out" ] || [ -L "$out" ]; then
  if [ ! -d "$out" ]; then
    echo "demo.sh: $out exists and is not a folder; give a new or empty folder" >&2
    exit 1
  fi
  [ -f "$marker" ] && ours=1
  if [ "$ours" = 0 ] && [ -n "$(ls -A "$out")" ]; then
    echo "demo.sh: $out is not empty and was not made by demo.sh (no $marker_name in it);" \
      "the demo never deletes what it did not write: give a new or empty folder" >&2
    exit 1
  fi
fi

cd "$root"
scripts/setup.sh
bin=target/release/distorch-vision
model=tests/fixtures/models/clip_gelu_f16/model.safetensors
mkdir -p "$out"
touch "$marker"
# An earlier demo's embeddings: only the files it wrote (the encode refuses anything else).
if [ -d "$out/embeddings" ]; then
  rm -f "$out/embeddings/index.json" "$out/embeddings"/shard-*.safetensors
  rmdir "$out/embeddings" 2>/dev/null || true
fi
set -x
$bin devices
$bin inspect --model "$model"
$bin plan --model "$model" --simulate-devices "cuda:0=24GiB,cuda:1=12GiB" --expert-mode-allocations "cuda:0,60%;cuda:1,30%;cpu,10%"
$bin export --model "$model"
$bin encode --model "$model" --device cpu --images tests/fixtures/images --out "$out/embeddings" --shard-size 16 --outputs image_embeds
PYTHONPATH=.runtime/cpu python3 scripts/nearest_neighbours.py "$out/embeddings" -k 3
