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
  printf '| model | file | batch | blocks img/s | whole img/s | blocks/whole | torch img/s | blocks/torch | load s | first output s | blocks peak RSS MiB | RSS budget MiB |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
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
      f"{b['first_output_s']:.2f} | {o['blocks_peak_rss_bytes'] / 2**20:.0f} | {o['rss_budget_bytes'] / 2**20:.0f} |")
PY
    done
  done
done
# int8 (ONNX Runtime dynamic quantisation) against torch fp32, and its accuracy against our
# fp32 (image_embeds cosine) on the same random pixels.
for shape in $shapes; do
  dir="$work/$shape-f32"
  [ -f "$dir/model.safetensors" ] || continue
  for batch in $batches; do
    q=$($bin bench --model "$dir/model.safetensors" --device cpu --dtype int8 --no-whole --batch-size "$batch" --iters "$iters" --json --graphs-dir "$work/graphs")
    t=$("$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" --json | tail -n 1)
    Q="$q" T="$t" "$py" -c 'import json,os
q=json.loads(os.environ["Q"]); 
try: t=json.loads(os.environ["T"])["images_per_s"]
except Exception: t=None
i=q["blocks"]["images_per_s"]
print("\n%s f32 file, --dtype int8, batch %d: %.2f images/s; torch fp32 %s images/s; ratio %s" % (os.environ.get("SHAPE","%s" % q["model"]), q["batch_size"], i, "%.2f" % t if t else "-", "%.2f" % (i / t) if t else "-"))' >> BENCHMARKS.md
  done
  PYTHONPATH=.runtime/cpu "$py" - "$dir" <<'PY'
import json, os, sys, numpy as np
d = sys.argv[1]; c = json.load(open(os.path.join(d, "config.json"))); s = c["image_size"]
x = np.random.default_rng(1).uniform(-2, 2, (8, 3, s, s)).astype("<f4").tobytes()
h = json.dumps({"pixel_values": {"dtype": "F32", "shape": [8, 3, s, s], "data_offsets": [0, len(x)]}}).encode()
open(os.path.join(d, "eight.safetensors"), "wb").write(len(h).to_bytes(8, "little") + h + x)
PY
  for dt in fp32 int8; do
    $bin encode --model "$dir/model.safetensors" --pixels "$dir/eight.safetensors" --out "$dir/eight.$dt.safetensors" --outputs image_embeds --device cpu --dtype $dt --graphs-dir "$work/graphs" 2>/dev/null
  done
  PYTHONPATH=.runtime/cpu "$py" - "$dir" "$shape" >> BENCHMARKS.md <<'PY'
import json, sys, numpy as np
def load(p):
    b = open(p, "rb").read(); n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); i = h["image_embeds"]
    s, e = i["data_offsets"]; return np.frombuffer(b[8 + n + s:8 + n + e], "<f4").reshape(i["shape"])
a, q = load(sys.argv[1] + "/eight.fp32.safetensors"), load(sys.argv[1] + "/eight.int8.safetensors")
cos = (a * q).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(q, axis=1)
print(f"{sys.argv[2]} int8 image_embeds cosine against fp32 on 8 random images: min {cos.min():.5f}, mean {cos.mean():.5f}")
PY
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
