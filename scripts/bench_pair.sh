#!/usr/bin/env bash
# Paired rounds against Hugging Face transformers: one `distorch-vision bench` then one
# `scripts/bench_torch.py` per round, alternating, so slow phases of a noisy machine fall on
# both; prints each round's ratio and the median ratio. Usage:
#   scripts/bench_pair.sh MODEL_DIR [--rounds N] [--batch-size N] [--iters N] [--dtype fp32|int8]
# MODEL_DIR holds model.safetensors + config.json (e.g. from scripts/make_random_model.py).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=${1:?usage: scripts/bench_pair.sh MODEL_DIR [--rounds N] [--batch-size N] [--iters N] [--dtype D]}
shift
rounds=6 batch=8 iters=5 dtype=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    *) echo "bench_pair.sh: unknown option $1 (valid: --rounds, --batch-size, --iters, --dtype)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
bin=target/release/distorch-vision
[ -x "$bin" ] || scripts/setup.sh >/dev/null
ratios=()
for r in $(seq "$rounds"); do
  ours=$($bin bench --model "$dir/model.safetensors" --device cpu --dtype "$dtype" --no-whole \
    --batch-size "$batch" --iters "$iters" --json --graphs-dir "${BENCH_DIR:-target/bench}/graphs" 2>/dev/null \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["blocks"]["images_per_s"])')
  torch=$("$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --json | tail -n 1 \
    | "$py" -c 'import json,sys
try: print(json.loads(sys.stdin.read())["images_per_s"])
except Exception: print("")')
  if [ -z "$torch" ]; then echo "bench_pair.sh: torch is not installed (see scripts/bench_torch.py)" >&2; exit 1; fi
  ratio=$("$py" -c "print(f'{$ours / $torch:.3f}')")
  ratios+=("$ratio")
  printf 'round %d: distorch-vision %.2f images/s, torch %.2f images/s, ratio %s\n' "$r" "$ours" "$torch" "$ratio"
done
"$py" -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'median ratio over {len(r)} rounds: {statistics.median(r):.3f}')" "${ratios[@]}"
