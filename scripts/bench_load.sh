#!/usr/bin/env bash
# Load time of one model per CPU engine, in alternating rounds (contract §6.4): each round loads
# it with every block on OpenVINO with its compile cache emptied first (cold), again with the
# cache it just filled (cached), and on MLAS; prints each round and the medians, and the ratio
# cached OpenVINO / MLAS. A load is `distorch-vision bench`'s session build (the model opened,
# the export reused, the OpenVINO plugin registered, every block's session built), one process
# per load. Usage:
#   scripts/bench_load.sh MODEL_DIR [--rounds N] [--dtype fp32|bf16]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=${1:?usage: scripts/bench_load.sh MODEL_DIR [--rounds N] [--dtype fp32|bf16]}
shift
rounds=3 dtype=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    *) echo "bench_load.sh: unknown option $1 (valid: --rounds, --dtype)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
bin=target/release/distorch-vision
[ -x "$bin" ] || scripts/setup.sh >/dev/null
graphs=${BENCH_DIR:-target/bench}/graphs
load() {
  "$bin" bench --model "$dir/model.safetensors" --device cpu --no-whole --batch-size 1 --iters 1 \
    --json --graphs-dir "$graphs" "$@" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["blocks"]["session_build_s"])'
}
# The export first (not timed).
"$bin" export --model "$dir/model.safetensors" --graphs-dir "$graphs" >/dev/null
echo "machine: $(scripts/cpu_info.sh); ${DISTORCH_THREADS:-$(nproc)} threads"
echo "model: $dir, dtype $dtype"
cold=() cached=() mlas=()
for r in $(seq "$rounds"); do
  rm -rf "$graphs"/*/openvino-cache
  c=$(load --cpu-engine openvino --dtype "$dtype")
  w=$(load --cpu-engine openvino --dtype "$dtype")
  m=$(load --cpu-engine mlas --dtype "$( [ "$dtype" = bf16 ] && echo fp32 || echo "$dtype")")
  cold+=("$c") cached+=("$w") mlas+=("$m")
  printf 'round %d: openvino cold %.2f s, openvino cached %.2f s, mlas %.2f s; load %s\n' \
    "$r" "$c" "$w" "$m" "$(cut -d' ' -f1 /proc/loadavg)"
done
"$py" - "${cold[*]}" "${cached[*]}" "${mlas[*]}" <<'EOF'
import statistics, sys
cold, cached, mlas = ([float(x) for x in a.split()] for a in sys.argv[1:4])
m = statistics.median
print(f"medians: openvino cold {m(cold):.2f} s, openvino cached {m(cached):.2f} s, mlas {m(mlas):.2f} s")
print(f"median per-round ratio cached openvino / mlas: {m([c / x for c, x in zip(cached, mlas)]):.2f}; "
      f"cold / mlas: {m([c / x for c, x in zip(cold, mlas)]):.2f}")
EOF
