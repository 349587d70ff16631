#!/usr/bin/env bash
# Paired rounds against OpenVINO and Hugging Face transformers: each round runs one
# `distorch-vision bench`, one `scripts/bench_openvino.py` and one `scripts/bench_torch.py`, in
# turn, so slow phases of a noisy machine fall on all three; prints each round's ratios
# ours/OpenVINO and ours/torch and their medians. Usage:
#   scripts/bench_pair.sh MODEL_DIR [--rounds N] [--batch-size N] [--iters N] [--dtype fp32|int8]
# MODEL_DIR holds model.safetensors + config.json (e.g. from scripts/make_random_model.py).
# OpenVINO and torch are each optional (a missing one leaves its column empty); with --dtype
# int8 the OpenVINO leg runs its own int8 model (scripts/quantize_openvino.py) when it exists.
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
case "$dtype" in fp32|int8) ;; *) echo "bench_pair.sh: --dtype $dtype (valid: fp32, int8)" >&2; exit 2 ;; esac
py=${PYTHON:-python3}
bin=target/release/distorch-vision
[ -x "$bin" ] || scripts/setup.sh >/dev/null
threads=${DISTORCH_THREADS:-$(nproc)}
export DISTORCH_THREADS=$threads
ov_args=()
[ "$dtype" = int8 ] && ov_args=(--int8)
# images/s from a JSON line on stdin, or nothing when the leg printed no figures.
ips() { tail -n 1 | "$py" -c 'import json,sys
try: print(json.loads(sys.stdin.read())["images_per_s"])
except Exception: print("")'; }
ratio() { [ -n "$2" ] && "$py" -c "print(f'{$1 / $2:.3f}')" || echo ""; }
echo "machine: $(scripts/cpu_info.sh); $threads threads, batch $batch, --iters $iters, ours --dtype $dtype"
ov_r=() torch_r=()
for r in $(seq "$rounds"); do
  ours=$($bin bench --model "$dir/model.safetensors" --device cpu --dtype "$dtype" --no-whole \
    --batch-size "$batch" --iters "$iters" --json --graphs-dir "${BENCH_DIR:-target/bench}/graphs" 2>/dev/null \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["blocks"]["images_per_s"])')
  ov=$("$py" scripts/bench_openvino.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" \
    --bin "$bin" "${ov_args[@]}" --json | ips)
  torch=$("$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" --json | ips)
  ro=$(ratio "$ours" "$ov") rt=$(ratio "$ours" "$torch")
  [ -n "$ro" ] && ov_r+=("$ro")
  [ -n "$rt" ] && torch_r+=("$rt")
  f2() { [ -n "$1" ] && printf '%.2f' "$1" || printf '–'; }
  printf 'round %d: distorch-vision %.2f images/s, OpenVINO %s images/s, torch %s images/s; ours/OpenVINO %s, ours/torch %s; load %s\n' \
    "$r" "$ours" "$(f2 "$ov")" "$(f2 "$torch")" "${ro:-–}" "${rt:-–}" "$(cut -d' ' -f1 /proc/loadavg)"
done
med() { "$py" -c "import statistics,sys; r=[float(x) for x in sys.argv[2:]]; print(f'median {sys.argv[1]} over {len(r)} rounds: {statistics.median(r):.3f}' if r else f'{sys.argv[1]}: no figures (not installed?)')" "$@"; }
med ours/OpenVINO "${ov_r[@]}"
med ours/torch "${torch_r[@]}"
