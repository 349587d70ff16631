#!/usr/bin/env bash
# Compares two builds of distorch-vision on one model: `bench --json` of build A and build B in
# turn, round after round, then the medians of each build's figures and of the per-round ratio
# B/A. Meant for "did this change make us slower?": the baseline runs in the same window as the
# change, so machine drift shows in both. Each bench also reports blocks/whole (the split
# pipeline against one whole-model session in the same process), a ratio that should not move.
# Usage:
#   scripts/bench_builds.sh BIN_A BIN_B MODEL.safetensors [--rounds N] [--batch N] [--iters N]
# Example (the build at a commit against the working tree):
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
#   cargo build --release
#   scripts/bench_builds.sh /tmp/old/target/release/distorch-vision target/release/distorch-vision \
#       target/bench/vit-b-16-f32/model.safetensors --rounds 5 --batch 8
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
a=$1 b=$2 model=$3
shift 3
rounds=5 batch=8 iters=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    *) echo "bench_builds.sh: unknown option $1 (valid: --rounds, --batch, --iters)" >&2; exit 2 ;;
  esac
done
for f in "$a" "$b"; do
  [ -x "$f" ] || { echo "bench_builds.sh: $f is not an executable distorch-vision build" >&2; exit 2; }
done
[ -f "$model" ] || { echo "bench_builds.sh: model $model not found" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Builds copied out of a checkout do not find its ONNX Runtime on their own.
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -f "$root/.runtime/cpu/onnxruntime/capi/libonnxruntime.so.1.31.1" ]; then
  export ORT_DYLIB_PATH="$root/.runtime/cpu/onnxruntime/capi/libonnxruntime.so.1.31.1"
fi
graphs=$(mktemp -d)
trap 'rm -rf "$graphs"' EXIT
echo "machine: $("$root/scripts/cpu_info.sh"); DISTORCH_THREADS=${DISTORCH_THREADS:-all cores}" >&2
for r in $(seq "$rounds"); do
  # Separate graph folders: builds with different export formats must not share exports.
  "$a" bench --model "$model" --device cpu --batch-size "$batch" --iters "$iters" --json --graphs-dir "$graphs/a" > "$graphs/a-$r.json"
  "$b" bench --model "$model" --device cpu --batch-size "$batch" --iters "$iters" --json --graphs-dir "$graphs/b" > "$graphs/b-$r.json"
  cut -d' ' -f1 /proc/loadavg > "$graphs/load-$r"
  echo "bench_builds: round $r of $rounds done" >&2
done
DIR="$graphs" ROUNDS="$rounds" python3 - <<'PY'
import json, os, statistics
d, n = os.environ["DIR"], int(os.environ["ROUNDS"])
read = lambda name: json.load(open(os.path.join(d, name)))
fig = {"A": [], "B": []}
for r in range(1, n + 1):
    a, b = read(f"a-{r}.json"), read(f"b-{r}.json")
    load = open(os.path.join(d, f"load-{r}")).read().strip()
    for k, j in (("A", a), ("B", b)):
        fig[k].append((j["blocks"]["images_per_s"], (j.get("whole") or {}).get("images_per_s"), j.get("split_ratio")))
    ra, rb = a.get("split_ratio") or float("nan"), b.get("split_ratio") or float("nan")
    print(f"round {r}: A blocks {a['blocks']['images_per_s']:.2f} img/s (blocks/whole {ra:.3f}), "
          f"B blocks {b['blocks']['images_per_s']:.2f} img/s (blocks/whole {rb:.3f}); "
          f"B/A {b['blocks']['images_per_s'] / a['blocks']['images_per_s']:.3f}; load {load}")
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")
for k in ("A", "B"):
    f = fig[k]
    print(f"median {k}: blocks {med([x[0] for x in f]):.2f} img/s, whole {med([x[1] for x in f]):.2f} img/s, blocks/whole {med([x[2] for x in f]):.3f}")
print(f"median B/A (blocks img/s, per round): {med([b[0] / a[0] for a, b in zip(fig['A'], fig['B'])]):.3f}")
PY
