#!/usr/bin/env bash
# Benchmarks distorch-vision against OpenVINO (our whole-graph export, f32 hint, same threads) and
# Hugging Face transformers (torch, CPU fp32) on generated ViT-B/16- and ViT-L/14-shaped
# random-weight models (f32 and f16 files, made at run time), at batch 1 and 8, and appends rows
# to BENCHMARKS.md. Each row takes --rounds paired rounds (ours, OpenVINO, torch in turn, as
# scripts/bench_pair.sh) and reports the medians of the figures and of the per-round ratios.
# Usage:
#   scripts/bench.sh [--iters N] [--rounds N] [--shapes "vit-b-16 vit-l-14"] [--dtypes "f32 f16"] [--batches "1 8"]
# torch and OpenVINO are optional (scripts/bench_torch.py, scripts/bench_openvino.py say how to
# install them); without one its columns are empty.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
iters=5 rounds=1 shapes="vit-b-16 vit-l-14" dtypes="f32 f16" batches="1 8"
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    *) echo "bench.sh: unknown option $1 (valid: --iters, --rounds, --shapes, --dtypes, --batches)" >&2; exit 2 ;;
  esac
done
scripts/setup.sh >/dev/null
bin=target/release/distorch-vision
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
py=${PYTHON:-python3}
threads=${DISTORCH_THREADS:-$(nproc)}
export DISTORCH_THREADS=$threads
machine="$(scripts/cpu_info.sh); $threads threads"
[ -f BENCHMARKS.md ] || printf '# Benchmarks\n\nRows appended by `scripts/bench.sh`; medians of timed batches after one warm-up.\n' > BENCHMARKS.md
{
  printf '\n## %s — %s\n\n' "$(date -u +%Y-%m-%d)" "$machine"
  printf 'Medians over %s paired round(s) per row (ours, OpenVINO, torch in turn); ratios are medians of the per-round ratios.\n\n' "$rounds"
  printf '| model | file | batch | blocks img/s | whole img/s | blocks/whole | OpenVINO img/s | blocks/OpenVINO | torch img/s | blocks/torch | load s | first output s | blocks peak RSS MiB | RSS budget MiB | load avg |\n'
  printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
} >> BENCHMARKS.md
for shape in $shapes; do
  for dtype in $dtypes; do
    dir="$work/$shape-$dtype"
    [ -f "$dir/model.safetensors" ] || PYTHONPATH=.runtime/cpu "$py" scripts/make_random_model.py "$dir" --shape "$shape" --dtype "$dtype"
    for batch in $batches; do
      echo "bench: $shape $dtype batch $batch" >&2
      ours="" ov="" torch=""
      for r in $(seq "$rounds"); do
        ours+="$($bin bench --model "$dir/model.safetensors" --device cpu --batch-size "$batch" --iters "$iters" --json --graphs-dir "$work/graphs")"$'\n\x1e\n'
        ov+="$("$py" scripts/bench_openvino.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" --bin "$bin" --json | tail -n 1)"$'\n\x1e\n'
        torch+="$("$py" scripts/bench_torch.py "$dir" --batch-size "$batch" --iters "$iters" --threads "$threads" --json | tail -n 1)"$'\n\x1e\n'
      done
      OURS="$ours" OV="$ov" TORCH="$torch" SHAPE="$shape" DTYPE="$dtype" "$py" - >> BENCHMARKS.md <<'PY'
import json, os, statistics
def rows(k):
    # One JSON document per round, one per line or pretty-printed over several (`bench --json`);
    # a round whose tool printed no JSON gives None.
    out = []
    for chunk in os.environ[k].split("\n\x1e\n")[:-1]:
        try:
            out.append(json.loads(chunk))
        except Exception:
            out.append(None)
    return out
os_, ovs, ts = rows("OURS"), rows("OV"), rows("TORCH")
ips = lambda r: r["images_per_s"] if r and "images_per_s" in r else None
med = lambda v: statistics.median(v) if v else None
blocks = [o["blocks"]["images_per_s"] for o in os_]
whole = [(o.get("whole") or {}).get("images_per_s") for o in os_]
ov, t = [ips(r) for r in ovs], [ips(r) for r in ts]
ratio = lambda other: med([b / x for b, x in zip(blocks, other) if x])
o = os_[-1]
fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)
print(f"| {os.environ['SHAPE']} | {os.environ['DTYPE']} | {o['batch_size']} | {med(blocks):.2f} | "
      f"{fmt(med([w for w in whole if w]))} | {fmt(ratio(whole), '{:.3f}')} | {fmt(med([x for x in ov if x]))} | "
      f"{fmt(ratio(ov), '{:.3f}')} | {fmt(med([x for x in t if x]))} | {fmt(ratio(t), '{:.3f}')} | "
      f"{o['blocks']['session_build_s']:.2f} | {o['blocks']['first_output_s']:.2f} | "
      f"{o['blocks_peak_rss_bytes'] / 2**20:.0f} | {o['rss_budget_bytes'] / 2**20:.0f} | "
      f"{open('/proc/loadavg').read().split()[0]} |")
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
    # OpenVINO's own int8 (NNCF, scripts/quantize_openvino.py), when made.
    if [ -f "$dir/ov-int8/model.xml" ]; then
      o=$("$py" scripts/bench_openvino.py "$dir" --int8 --batch-size "$batch" --iters "$iters" --threads "$threads" --bin "$bin" --json | tail -n 1)
      O="$o" I="$q" "$py" -c 'import json,os
o=json.loads(os.environ["O"])["images_per_s"]; i=json.loads(os.environ["I"])["blocks"]["images_per_s"]
print("OpenVINO int8 (NNCF) batch %d: %.2f images/s; ours int8 / OpenVINO int8 %.2f; load average %s" % (json.loads(os.environ["I"])["batch_size"], o, i / o, open("/proc/loadavg").read().split()[0]))' >> BENCHMARKS.md
    fi
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
