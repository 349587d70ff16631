#!/usr/bin/env bash
# GPU check: one run that prints what the GPU path does on this machine, and says plainly
# what it could not check. On a machine without a GPU it exits 0 after printing the
# provider status and the list of unchecked items.
#
#   scripts/gpu_check.sh [--quick]        (--quick: batch 1 and 8 only, 2 timed iterations)
#
# What it prints:
#   1. `devices` and the CUDA provider status (usable, or why not)
#   2. parity of CUDA fp32 outputs against the CPU on every fixture (max |diff| <= 1e-3),
#      and of CUDA fp16 against CPU fp32 (the README's tolerance: per image cosine >= 0.999,
#      max |diff| <= 2 % of the output's largest magnitude)
#   3. a ViT-H/14-shaped random model: fully resident (fp32 and fp16) vs virtual_vram_gb
#      from the CPU (donor policy stream) vs --donor-policy execute, at batch 1, 8, 32, with
#      bytes streamed per pass and the upload/compute overlap achieved, against PyTorch (HF
#      transformers, fp32 and fp16) on the same GPU
#   4. micro-batching (--micro-batch 8) at batch 32
#
# Environment: DV_BIN (the distorch-vision binary; default target/release/distorch-vision,
# else .gpu-carry/distorch-vision, else built with cargo when cargo exists), PYTHON.
#
# Running it OFFLINE on a GPU machine with the ONNX Runtime GPU build carried in
# -------------------------------------------------------------------------------
# The GPU machine cannot download. Its Python already has the CUDA 13 + cuDNN 9 `nvidia-*`
# wheels (torch's), which the library finds through python3's `nvidia` package; only the
# GPU build of ONNX Runtime must be carried. A device call carries at most 64 MiB, and the
# wheel's libonnxruntime_providers_cuda.so is 284 MB (186 MB with zstd -19), so:
#
#   On the development machine (once):
#     pip download --no-deps onnxruntime-gpu==1.31.1 -d /tmp/ortgpu
#     mkdir -p /tmp/ortgpu/x && cd /tmp/ortgpu/x && unzip -q ../onnxruntime_gpu-1.31.1-*.whl 'onnxruntime/capi/*.so*'
#     mkdir -p $REPO/.gpu-carry        # git-ignored
#     tar -C /tmp/ortgpu/x --exclude=libonnxruntime_providers_cuda.so -cf - onnxruntime/capi \
#       | zstd -19 -T0 > $REPO/.gpu-carry/ort-rest.tar.zst
#     zstd -19 -T0 -c onnxruntime/capi/libonnxruntime_providers_cuda.so \
#       | split -b 60M - $REPO/.gpu-carry/cuda.zst.part-
#     cargo build --release && cp target/release/distorch-vision $REPO/.gpu-carry/   (if the
#       GPU machine has no cargo; with CARGO_TARGET_DIR elsewhere copy from there)
#   Then, in ONE warm lease, one device call per part (each call carries < 64 MiB; files a
#   call leaves outside the working tree's copied paths stay on the machine between calls):
#     run(carry=[".gpu-carry/cuda.zst.part-aa"], command="mkdir -p ~/carry && cp .gpu-carry/* ~/carry/")
#     run(carry=[".gpu-carry/cuda.zst.part-ab"], command="cp .gpu-carry/* ~/carry/")   ... -ad
#     run(carry=[".gpu-carry/ort-rest.tar.zst", ".gpu-carry/distorch-vision"],
#         command="cp .gpu-carry/* ~/carry/ && GPU_CARRY=~/carry scripts/gpu_check.sh")
#   This script reassembles from $GPU_CARRY (default .gpu-carry):
#     cat cuda.zst.part-* | zstd -d > .runtime/gpu/onnxruntime/capi/libonnxruntime_providers_cuda.so
#     zstd -dc ort-rest.tar.zst | tar -C .runtime/gpu -xf -
#   (Budget: the whole check is sized for a few minutes of device time; use --quick when
#   little is left.)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
quick=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $a (valid: --quick)" >&2; exit 2 ;;
  esac
done
unchecked=()
note() { unchecked+=("$1"); }
section() { printf '\n== %s ==\n' "$1"; }
tmp=${TMPDIR:-/tmp}/dv-gpu-check.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# --- the GPU build of ONNX Runtime, reassembled from carried parts when present ---
carry=${GPU_CARRY:-.gpu-carry}
capi=.runtime/gpu/onnxruntime/capi
if [ ! -f "$capi/libonnxruntime_providers_cuda.so" ] && ls "$carry"/cuda.zst.part-* >/dev/null 2>&1; then
  section "reassembling the ONNX Runtime GPU build from $carry"
  mkdir -p "$capi"
  if cat "$carry"/cuda.zst.part-* | zstd -dq > "$capi/libonnxruntime_providers_cuda.so.partial" \
     && mv "$capi/libonnxruntime_providers_cuda.so.partial" "$capi/libonnxruntime_providers_cuda.so"; then
    echo "providers_cuda: $(du -h "$capi/libonnxruntime_providers_cuda.so" | cut -f1)"
  else
    echo "reassembly of libonnxruntime_providers_cuda.so failed"; rm -f "$capi/libonnxruntime_providers_cuda.so.partial"
  fi
  [ -f "$carry/ort-rest.tar.zst" ] && zstd -dqc "$carry/ort-rest.tar.zst" | tar -C .runtime/gpu -xf -
fi
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for d in .runtime/gpu .runtime/cpu; do
    if [ -f "$d/onnxruntime/capi/libonnxruntime.so.1.31.1" ]; then
      export ORT_DYLIB_PATH="$root/$d/onnxruntime/capi/libonnxruntime.so.1.31.1"; break
    fi
  done
fi
echo "ONNX Runtime: ${ORT_DYLIB_PATH:-(default search)}"

# --- the binary ---
bin=${DV_BIN:-}
if [ -z "$bin" ]; then
  for c in target/release/distorch-vision "$carry/distorch-vision"; do
    [ -x "$c" ] && { bin=$c; break; }
  done
fi
if [ -z "$bin" ] && command -v cargo >/dev/null; then
  echo "building the release binary"; cargo build --release --quiet && bin=target/release/distorch-vision
fi
if [ -z "$bin" ]; then
  echo "gpu_check: no distorch-vision binary (set DV_BIN, build with cargo, or carry .gpu-carry/distorch-vision)"
  exit 1
fi
echo "binary: $bin"

section "devices"
"$bin" devices || true
status=$("$bin" devices --json 2>/dev/null)
usable=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"]["usable"])' 2>/dev/null || echo False)
gpus=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"]["gpus"])' 2>/dev/null || echo 0)
if [ "$usable" != "True" ]; then
  reason=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"]["reason"])' 2>/dev/null || echo unknown)
  section "not checked (CUDA provider not usable: $reason)"
  for item in "CUDA fp32 parity vs CPU on the fixtures (<= 1e-3)" "fp16 on CUDA" \
      "ViT-H/14 resident vs streamed (virtual_vram_gb) vs --donor-policy execute" \
      "throughput at batch 1/8/32 against PyTorch on the same GPU" \
      "streamed bytes per pass and upload/compute overlap" "micro-batch pipelining on GPUs" \
      "device-resident IoBinding hand-offs and cross-GPU copies"; do
    echo "  - $item"
  done
  exit 0
fi

# Compares two output files: prints the worst |diff| per tensor; exit 1 above the tolerance.
cat > "$tmp/cmp.py" <<'EOF'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8+n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = np.frombuffer(b[8+n+s:8+n+e], np.float32).reshape(v["shape"])
    return out
# With a 4th argument `rel`: |diff| relative to the reference's largest magnitude, and the
# per-image cosine must be >= 0.999.
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3]); worst = 0.0; ok = True
rel = len(sys.argv) > 4 and sys.argv[4] == "rel"
for k in a:
    d = float(np.abs(a[k] - b[k]).max())
    if rel:
        d /= max(float(np.abs(b[k]).max()), 1e-30)
        x = a[k].reshape(len(a[k]), -1).astype(np.float64); y = b[k].reshape(len(b[k]), -1).astype(np.float64)
        cos = float(min((x[i] @ y[i]) / (np.linalg.norm(x[i]) * np.linalg.norm(y[i]) + 1e-30) for i in range(len(x))))
        ok &= cos >= 0.999
        print(f"    {k:<28} max|diff|/max|ref| {d:.2e}  min cosine {cos:.6f}")
    else:
        print(f"    {k:<28} max|diff| {d:.2e}")
    worst = max(worst, d)
ok &= worst <= tol
print(f"    worst {worst:.2e} (tolerance {tol:g}{', cosine >= 0.999' if rel else ''}): {'OK' if ok else 'FAIL'}"); sys.exit(not ok)
EOF

section "parity: CUDA fp32 vs CPU on the fixtures"
fail=0
for f in tests/fixtures/models/*/; do
  name=$(basename "$f")
  enc() { "$bin" encode --model "$f/model.safetensors" --pixels "$f/pixels.safetensors" --graphs-dir "$tmp/graphs" "$@" 2>"$tmp/err"; }
  if enc --out "$tmp/$name.cpu.safetensors" --device cpu && enc --out "$tmp/$name.cuda.safetensors" --device cuda:0 --virtual-vram-gb 0; then
    echo "  $name"; "$py" "$tmp/cmp.py" "$tmp/$name.cuda.safetensors" "$tmp/$name.cpu.safetensors" 1e-3 || fail=1
    # Streamed weights (every block fed from pinned host memory) must match too.
    if enc --out "$tmp/$name.stream.safetensors" --device cuda:0 --virtual-vram-gb 128; then
      echo "  $name (all blocks streamed from the CPU)"; "$py" "$tmp/cmp.py" "$tmp/$name.stream.safetensors" "$tmp/$name.cpu.safetensors" 1e-3 || fail=1
    else echo "  $name streamed: ERROR $(tail -1 "$tmp/err")"; fail=1; fi
    if enc --out "$tmp/$name.micro.safetensors" --device cuda:0 --virtual-vram-gb 0 --micro-batch 1; then
      echo "  $name (--micro-batch 1)"; "$py" "$tmp/cmp.py" "$tmp/$name.micro.safetensors" "$tmp/$name.cpu.safetensors" 1e-3 || fail=1
    else echo "  $name micro-batch: ERROR $(tail -1 "$tmp/err")"; fail=1; fi
    if [ "$gpus" -ge 2 ]; then
      if enc --out "$tmp/$name.2gpu.safetensors" --device cuda:0 --expert-mode-allocations 'cuda:0,50%;cuda:1,50%'; then
        echo "  $name (split over cuda:0 and cuda:1)"; "$py" "$tmp/cmp.py" "$tmp/$name.2gpu.safetensors" "$tmp/$name.cpu.safetensors" 1e-3 || fail=1
      else echo "  $name 2-GPU split: ERROR $(tail -1 "$tmp/err")"; fail=1; fi
    fi
  else
    echo "  $name: ERROR $(tail -1 "$tmp/err")"; fail=1
  fi
done
[ "$gpus" -ge 2 ] || note "cross-GPU hand-off (this machine has $gpus GPU)"

section "parity: CUDA fp16 vs CPU fp32 on the fixtures"
for f in tests/fixtures/models/*/; do
  name=$(basename "$f")
  enc() { "$bin" encode --model "$f/model.safetensors" --pixels "$f/pixels.safetensors" --graphs-dir "$tmp/graphs" "$@" 2>"$tmp/err"; }
  [ -f "$tmp/$name.cpu.safetensors" ] || continue
  for mode in "resident:--virtual-vram-gb 0" "streamed:--virtual-vram-gb 128"; do
    label=${mode%%:*}
    # shellcheck disable=SC2086
    if enc --out "$tmp/$name.fp16.safetensors" --device cuda:0 --dtype fp16 ${mode#*:}; then
      echo "  $name fp16 ($label)"; "$py" "$tmp/cmp.py" "$tmp/$name.fp16.safetensors" "$tmp/$name.cpu.safetensors" 0.02 rel || fail=1
    else echo "  $name fp16 ($label): ERROR $(tail -1 "$tmp/err")"; fail=1; fi
  done
done

section "ViT-H/14-shaped random model (f16 file, fp32 compute)"
vith=$tmp/vit-h-14
"$py" scripts/make_random_model.py "$vith" --shape vit-h-14 --dtype f16 || { echo "cannot generate the model"; exit 1; }
batches="1 8 32"; iters=3
[ "$quick" = 1 ] && { batches="1 8"; iters=2; }
bench() { timeout 300 "$bin" bench --model "$vith/model.safetensors" --graphs-dir "$tmp/graphs" --no-whole --iters "$iters" --json "$@" 2>"$tmp/err"; }
cat > "$tmp/summ.py" <<'EOF'
import json, sys
r = json.load(sys.stdin); u = r["uploads"]; b = r["blocks"]; it = r["iters"]
ov = ""
if u["copy_s"] > 0:
    ov = "  overlap %.0f%% (copy %.1f ms, waited %.1f ms per pass)" % (
        100 * max(0.0, 1 - u["stall_s"] / u["copy_s"]), 1e3 * u["copy_s"] / it, 1e3 * u["stall_s"] / it)
print("%9.2f images/s  build %.1f s  streamed/pass %.2f GiB%s  copies %s" % (
    b["images_per_s"], b["session_build_s"], r["streamed_bytes_per_pass"] / 2**30, ov, r["device_copies"]))
EOF
for b in $batches; do
  echo "batch $b"
  for mode in "resident:--virtual-vram-gb 0" "resident fp16:--virtual-vram-gb 0 --dtype fp16" "stream 1GiB from cpu:--virtual-vram-gb 1" "execute 1GiB on cpu:--virtual-vram-gb 1 --donor-policy execute"; do
    label=${mode%%:*}; args=${mode#*:}
    if [ "$b" = 32 ] && [ "$label" = "execute 1GiB on cpu" ]; then continue; fi
    # shellcheck disable=SC2086
    if out=$(bench --device cuda:0 --batch-size "$b" $args); then
      printf '  %-22s' "$label"; printf '%s' "$out" | "$py" "$tmp/summ.py"
    else printf '  %-22s ERROR %s\n' "$label" "$(tail -1 "$tmp/err")"; fi
  done
  for dt in fp32 fp16; do
    if t=$(timeout 300 "$py" scripts/bench_torch.py "$vith" --device cuda --dtype "$dt" --batch-size "$b" --iters "$iters" 2>&1); then
      printf '  %-22s%s\n' "pytorch cuda $dt" "$t"
    else printf '  %-22s ERROR %s\n' "pytorch $dt" "$(printf '%s' "$t" | tail -1)"; fi
  done
done
if [ "$quick" = 0 ]; then
  echo "micro-batch 8 at batch 32 (streaming plan)"
  if out=$(bench --device cuda:0 --batch-size 32 --virtual-vram-gb 1 --micro-batch 8); then
    printf '  %-22s' "micro-batch 8"; printf '%s' "$out" | "$py" "$tmp/summ.py"
  else echo "  micro-batch: ERROR $(tail -1 "$tmp/err")"; fi
fi

section "not checked"
for item in "${unchecked[@]}"; do echo "  - $item"; done
[ "$fail" = 0 ] && echo "parity: all OK" || echo "parity: FAILURES above"
exit "$fail"
