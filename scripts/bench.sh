#!/usr/bin/env bash
# Benchmarks distorch-vision against Hugging Face transformers (torch, CPU fp32) on generated
# ViT-B/16- and ViT-L/14-shaped random-weight models (f32 and f16 files, made at run time),
# at batch 1 and 8, and appends rows to BENCHMARKS.md. Usage:
#   scripts/bench.sh [--iters N] [--shapes "vit-b-16 vit-l-14"] [--dtypes "f32 f16"] [--batches "1 8"]
# torch is optional (scripts/bench_torch.py says how to install it); without it only our
# figures are written.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
iters=5 shapes="vit-b-16 vit-l-14" dtypes="f32 f16" batches="1 8"
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) iters=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1 (valid: --iters, --shapes, --dtypes, --batches)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh >/dev/null
bin=target/release/distorch-vision
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
py=${PYTHON:-python3}
threads=${DISTORCH_THREADS:-$(nproc)}
export DISTORCH_THREADS=$threads
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $threads threads"
[ -f BENCHMARKS.md ] || printf '# Benchmarks\n\nRows appended by `scripts/bench.sh`; medians of timed batches after one warm-up.\n' > BENCHMARKS.md
{
  printf '\n## %s — %s\n\n' "$(date -u +%Y-%m-%d)" "$machine"
  printf '| model | file | batch | blocks img/s | whole img/s | blocks/whole | torch img/s | blocks/torch | load s | first output s | blocks peak RSS MiB |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
} >> BENCHMARKS.md
for shape in $shapes; do
  for dtype in $dtypes; do
    dir="$work/$shape-$dtype"
    [ -f "$dir/model.safetensors" ] || PYTHONPATH=.runtime/cpu "$py" scripts/make_random_model.py "$dir" --shape "$shape" --dtype "$dtype"
    for batch in $batches; do
      echo "bench: $shape $dtype batch $batch" >&2
      ours=$($bin bench --model "$dir/model.safetensors" --device cpu --batch-size "$batch" --iters "$iters" --json --graphs-dir "$work/graphs")
      torch=$("$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" --json | tail -n 1)
      OURS="$ours" TORCH="$torch" SHAPE="$shape" DTYPE="$dtype" "$py" - >> BENCHMARKS.md <<'PY'
import json, os
o = json.loads(os.environ["OURS"])
try:
    t = json.loads(os.environ["TORCH"])["images_per_s"]
except Exception:
    t = None
b, w = o["blocks"], o.get("whole") or {}
fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)
print(f"| {os.environ['SHAPE']} | {os.environ['DTYPE']} | {o['batch_size']} | {b['images_per_s']:.2f} | "
      f"{fmt(w.get('images_per_s'))} | {fmt(o.get('split_ratio'), '{:.3f}')} | {fmt(t)} | "
      f"{fmt(b['images_per_s'] / t if t else None, '{:.3f}')} | {b['session_build_s']:.2f} | "
      f"{b['first_output_s']:.2f} | {o['blocks_peak_rss_bytes'] / 2**20:.0f} |")
PY
    done
  done
done
# Process start to first embedding, export cached (the f16 ViT-L/14 target is ≤ 3 s).
for shape in $shapes; do
  dir="$work/$shape-f16"
  [ -f "$dir/model.safetensors" ] || continue
  PYTHONPATH=.runtime/cpu "$py" - "$dir" <<'PY'
import json, os, sys, numpy as np
d = sys.argv[1]; c = json.load(open(os.path.join(d, "config.json")))
x = np.zeros((1, 3, c["image_size"], c["image_size"]), "<f4").tobytes()
h = json.dumps({"pixel_values": {"dtype": "F32", "shape": [1, 3, c["image_size"], c["image_size"]], "data_offsets": [0, len(x)]}}).encode()
open(os.path.join(d, "one.safetensors"), "wb").write(len(h).to_bytes(8, "little") + h + x)
PY
  $bin encode --model "$dir/model.safetensors" --pixels "$dir/one.safetensors" --out "$dir/one.out.safetensors" --device cpu --graphs-dir "$work/graphs" 2>/dev/null
  t0=$(date +%s.%N)
  $bin encode --model "$dir/model.safetensors" --pixels "$dir/one.safetensors" --out "$dir/one.out.safetensors" --device cpu --graphs-dir "$work/graphs" 2>/dev/null
  t1=$(date +%s.%N)
  printf '
%s f16: process start to first embedding (export cached, 1 image): %.2f s
' "$shape" "$("$py" -c "print($t1 - $t0)")" >> BENCHMARKS.md
done
echo "bench: rows appended to BENCHMARKS.md" >&2
