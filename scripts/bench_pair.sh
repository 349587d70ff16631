#!/usr/bin/env bash
# Alternating rounds of benchmark legs on one model: each round runs every leg once, in an order
# rotated by one leg per round, so slow phases of a noisy machine fall on all of them; prints each
# round's images/s per leg, then the medians of each leg and of the per-round ratios the goals are
# stated in (contract §6.4, BENCHMARKS.md). Usage:
#   scripts/bench_pair.sh MODEL_DIR [--rounds N] [--batch-size N] [--iters N] [--legs a,b,...]
# MODEL_DIR holds model.safetensors + config.json (e.g. from scripts/make_random_model.py).
# Legs (default: all):
#   ours-mlas        distorch-vision bench, --cpu-engine mlas, fp32
#   ours-default     distorch-vision bench with the defaults (--cpu-engine auto, fp32: OpenVINO
#                    when its plugin is installed, else mlas)
#   ours-openvino    --cpu-engine openvino, fp32 (OpenVINO's f32 hint)
#   ours-bf16        --dtype bf16 (OpenVINO's bf16 hint; AMX or AVX512_BF16 CPUs)
#   ours-int8        --dtype int8 (mlas)
#   ov-f32           native OpenVINO on the whole graph, f32 hint (scripts/bench_openvino.py)
#   ov-default       native OpenVINO, no hint (its default: bf16 on AMX/AVX512_BF16 CPUs)
#   torch-fp32       Hugging Face transformers, fp32 (scripts/bench_torch.py)
#   torch-bf16       transformers under torch.autocast(bfloat16)
# A leg whose tool is missing (openvino, torch) or that cannot run here (bf16 without AMX /
# AVX512_BF16) prints no figure and leaves its ratios empty.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=${1:?usage: scripts/bench_pair.sh MODEL_DIR [--rounds N] [--batch-size N] [--iters N] [--legs a,b,...]}
shift
all_legs=ours-mlas,ours-default,ours-openvino,ours-bf16,ours-int8,ov-f32,ov-default,torch-fp32,torch-bf16
rounds=3 batch=8 iters=5 legs=$all_legs
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --legs) legs=$2; shift 2 ;;
    *) echo "bench_pair.sh: unknown option $1 (valid: --rounds, --batch-size, --iters, --legs)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a leg_list <<<"$legs"
for l in "${leg_list[@]}"; do
  case ",$all_legs," in *",$l,"*) ;; *) echo "bench_pair.sh: unknown leg $l (valid: $all_legs)" >&2; exit 2 ;; esac
done
py=${PYTHON:-python3}
bin=target/release/distorch-vision
[ -x "$bin" ] || scripts/setup.sh >/dev/null
threads=${DISTORCH_THREADS:-$(nproc)}
export DISTORCH_THREADS=$threads
graphs=${BENCH_DIR:-target/bench}/graphs

# images/s from the last JSON line of a leg's output, or nothing when it printed no figures.
ips() { tail -n 1 | "$py" -c 'import json,sys
try: print(json.loads(sys.stdin.read())["images_per_s"])
except Exception: print("")'; }
ours() {
  "$bin" bench --model "$dir/model.safetensors" --device cpu --no-whole --batch-size "$batch" \
    --iters "$iters" --json --graphs-dir "$graphs" "$@" 2>/dev/null \
    | "$py" -c 'import json,sys
try: print(json.load(sys.stdin)["blocks"]["images_per_s"])
except Exception: print("")'
}
ov() { "$py" scripts/bench_openvino.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" \
  --bin "$bin" --json "$@" 2>/dev/null | ips; }
torch() { "$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" \
  --json "$@" 2>/dev/null | ips; }
run_leg() {
  case "$1" in
    ours-mlas) ours --cpu-engine mlas ;;
    ours-default) ours ;;
    ours-openvino) ours --cpu-engine openvino ;;
    ours-bf16) ours --dtype bf16 ;;
    ours-int8) ours --dtype int8 ;;
    ov-f32) ov --precision f32 ;;
    ov-default) ov --precision default ;;
    torch-fp32) torch ;;
    torch-bf16) torch --dtype bf16-autocast ;;
  esac
}

echo "machine: $(scripts/cpu_info.sh); $threads threads, batch $batch, --iters $iters"
echo "model: $dir; legs: $legs"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
n=${#leg_list[@]}
for r in $(seq "$rounds"); do
  line="round $r:"
  for k in $(seq 0 $((n - 1))); do
    leg=${leg_list[$(((k + r - 1) % n))]}
    v=$(run_leg "$leg" || true)  # a leg that cannot run here prints no figure
    echo "$r $leg ${v:-}" >>"$results"
    line+=" $leg $( [ -n "$v" ] && printf '%.2f' "$v" || printf '–');"
  done
  echo "$line load $(cut -d' ' -f1 /proc/loadavg)"
done
"$py" - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict
by_round = defaultdict(dict)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 3:
        by_round[parts[0]][parts[1]] = float(parts[2])
legs = sorted({l for r in by_round.values() for l in r})
print("medians (images/s): " + ", ".join(
    f"{l} {statistics.median([r[l] for r in by_round.values() if l in r]):.2f}" for l in legs))
for a, b in [("ours-default", "torch-fp32"), ("ours-default", "ov-f32"), ("ours-mlas", "torch-fp32"),
             ("ours-openvino", "ov-f32"), ("ours-bf16", "ov-default"), ("ours-bf16", "torch-bf16"),
             ("ours-bf16", "ours-int8"), ("ours-int8", "torch-fp32")]:
    ratios = [r[a] / r[b] for r in by_round.values() if a in r and b in r]
    if ratios:
        print(f"median {a}/{b} over {len(ratios)} rounds: {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
EOF
