#!/usr/bin/env bash
# GPU check: parity and speed of the CUDA path on this machine in one run, saying plainly what
# it could not check. The whole log goes to $OUT/gpu_check.log (without $OUT:
# target/gpu_check.log); a short summary is printed last.
#
#   scripts/gpu_check.sh [--quick | --full]       (default --quick)
#
# Needs: a CUDA driver and GPU; ONNX Runtime's GPU build (`scripts/setup.sh --gpu`, or the
# parts of scripts/gpu_carry.sh in $GPU_CARRY); the CUDA 13 / cuDNN 9 libraries (python3's
# `nvidia-*` wheels, as torch installs them, or DISTORCH_CUDA_LIB_DIRS); python3 with numpy;
# torch + transformers for the PyTorch rows (optional).
#
# Sections, in order, with their time budgets (--quick / --full). A run that would not fit in
# its section's budget, or in the whole budget (DV_GPU_CHECK_BUDGET_S: 330 s / 570 s), is
# skipped, and its row in the summary says so; every run has its own timeout.
#   1. carry: when $GPU_CARRY (default .gpu-carry) holds parts, SHA256SUMS checked first, then
#      the GPU build reassembled into $GPU_RUNTIME (default .runtime/gpu) with zstd, else xz,
#      else python3's lzma, and checked again                           ~30 s (not cut)
#   2. libraries: the CUDA provider's NEEDED list, where each was found; `devices` and the
#      CUDA provider status                                               15 s / 15 s
#   3. parity on every fixture (tests/fixtures/models): CPU fp32 reference with this runtime;
#      CUDA fp32 resident and all blocks streamed (max |diff| <= 1e-3); CUDA fp16 resident
#      (per-image cosine >= 0.999, max |diff| <= 2 % of the largest output); the C ABI plugin
#      on one fixture. --full adds fp16 streamed, --micro-batch 1, and a 2-GPU split when
#      there are two GPUs                                               100 s / 150 s
#   4. ViT-H/14-shaped random model (f16 file, fp32 compute unless fp16), batch 8 then 1
#      (--full: 1, 8, 32): resident fp32; resident fp16; "vv1 stream" = --virtual-vram-gb 1:
#      1 GiB of the 1.18 GiB of weights (for this model the planner homes 28 of its 34 blocks,
#      embed..layer.26, on the CPU) uploaded to the GPU from pinned memory every pass;
#      "vv1 execute" = the same 28 blocks run on the CPU instead (--donor-policy execute).
#      The plan's own count is printed with each row.                   110 s / 225 s
#   5. micro-batching: batch 32 on a plan with two exec segments (--virtual-vram-gb 0.05
#      --donor-policy execute: embed + layer.00 on the CPU, the rest on cuda:0), without and
#      with --micro-batch 8, so the CPU/GPU overlap shows as a speed-up     45 s / 60 s
#   6. PyTorch (HF transformers) on the same GPU, fp32 and fp16, same batches   30 s / 75 s
#
# Exit status: 0 every check that ran passed (also on a machine without a CUDA driver or GPU,
# where the summary lists what was not checked); 1 a parity check failed or a run errored;
# 3 the carried GPU build is incomplete or corrupt, or could not be reassembled; 4 a GPU is
# present but the CUDA provider cannot be used (the summary says why).
#
# Environment: DV_BIN (the binary; default $GPU_CARRY/distorch-vision, then
# target/release/distorch-vision, else built with cargo), DV_PLUGIN (the C ABI library;
# default beside DV_BIN), PYTHON, GPU_CARRY, GPU_RUNTIME, ORT_DYLIB_PATH, OUT.
# DV_GPU_CHECK_DRY_RUN=1 rehearses the script itself without a GPU: every "CUDA" run goes to
# the CPU (model shape DV_GPU_CHECK_SHAPE, default vit-b-16); its figures mean nothing.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
quick=1
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --full) quick=0 ;;
    -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $a (valid: --quick, --full)" >&2; exit 2 ;;
  esac
done
mode=$([ "$quick" = 1 ] && echo quick || echo full)
dry=${DV_GPU_CHECK_DRY_RUN:-0}
dev=cuda:0; shape=vit-h-14; tdev=cuda
if [ "$dry" = 1 ]; then dev=cpu; shape=${DV_GPU_CHECK_SHAPE:-vit-b-16}; tdev=cpu; mode="$mode DRY RUN on the CPU"; fi
budget=${DV_GPU_CHECK_BUDGET_S:-$([ "$quick" = 1 ] && echo 330 || echo 570)}
case "$budget" in ''|*[!0-9]*) echo "gpu_check.sh: DV_GPU_CHECK_BUDGET_S must be whole seconds, not '$budget'" >&2; exit 2 ;; esac
outdir=${OUT:-$root/target}
mkdir -p "$outdir"
log=$outdir/gpu_check.log
results=$outdir/gpu_check_results.jsonl
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dv-gpu-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/summary"
: > "$tmp/unchecked"
: > "$results"

# --- helpers (state shared with the summary goes through files: main runs in a pipe) ---
summ() { printf '%-12s %s\n' "$1" "$2" >> "$tmp/summary"; }
note() { printf '  - %s\n' "$1" >> "$tmp/unchecked"; }
section() { printf '\n== %s (%s s left) ==\n' "$1" "$(( t_end - SECONDS ))"; }
t_end=$(( SECONDS + budget ))
sec_end=$t_end
# budget N: the current section may use N more seconds (never past the whole budget).
budget_section() { sec_end=$(( SECONDS + $1 )); [ "$sec_end" -le "$t_end" ] || sec_end=$t_end; }
# timed CAP MIN CMD...: runs CMD under a timeout of min(CAP, what is left); returns 125
# without running it when less than MIN seconds are left, 124 when it timed out.
timed() {
  local cap=$1 min=$2 left; shift 2
  left=$(( sec_end - SECONDS ))
  [ "$left" -ge "$min" ] || return 125
  [ "$left" -lt "$cap" ] && cap=$left
  timeout -k 5 "$cap" "$@"
}
why() { # the reason for a non-zero status of timed, with the last line of $tmp/err
  case "$1" in
    125) echo "skipped (time budget)" ;;
    124|137) echo "TIMEOUT" ;;
    *) echo "ERROR: $(tail -1 "$tmp/err" 2>/dev/null)" ;;
  esac
}
sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
  else "$py" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"; fi
}
# unxz OUT FILE...: the concatenated FILEs, xz-compressed, into OUT: zstd (when built with xz
# support), else xz, else python3's lzma. Prints the tool that worked.
unxz() {
  local out=$1 how; shift
  for how in zstd xz python3-lzma; do
    case $how in
      zstd) command -v zstd >/dev/null || continue; cat "$@" | zstd -dcq > "$out" 2>"$tmp/err" ;;
      xz) command -v xz >/dev/null || continue; cat "$@" | xz -dc > "$out" 2>"$tmp/err" ;;
      python3-lzma) cat "$@" | "$py" -c 'import lzma,shutil,sys
shutil.copyfileobj(lzma.LZMAFile(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)' > "$out" 2>"$tmp/err" ;;
    esac && { echo "$how"; return 0; }
    echo "  $how could not decompress: $(tail -1 "$tmp/err")" >&2
  done
  echo "  no decompressor worked (zstd with xz support, xz, python3's lzma)" >&2
  return 1
}

main() {
  echo "gpu_check.sh --$mode: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${budget} s, log $log"

  # ---------------------------------------------------------------- 1. carry
  local carry=${GPU_CARRY:-.gpu-carry} rt=${GPU_RUNTIME:-.runtime/gpu}
  local capi=$rt/onnxruntime/capi
  if [ -f "$carry/SHA256SUMS" ] || ls "$carry"/cuda.so.xz.part-* >/dev/null 2>&1; then
    section "1. carry: $carry -> $capi"
    if [ ! -f "$carry/SHA256SUMS" ]; then
      echo "SHA256SUMS missing in $carry (scripts/gpu_carry.sh writes it beside the parts)"
      summ carry "FAILED: SHA256SUMS missing in $carry"; return 3
    fi
    local sum name got bad=() missing=() parts=()
    while read -r sum name; do
      case "$name" in capi/*) continue ;; cuda.so.xz.part-*) parts+=("$carry/$name") ;; esac
      if [ ! -f "$carry/$name" ]; then missing+=("$name"); continue; fi
      got=$(sha256 "$carry/$name")
      if [ "$got" = "$sum" ]; then echo "  $name: sha256 OK"
      else echo "  $name: sha256 $got, expected $sum"; bad+=("$name"); fi
    done < "$carry/SHA256SUMS"
    if [ ${#missing[@]} -gt 0 ] || [ ${#bad[@]} -gt 0 ]; then
      [ ${#missing[@]} -eq 0 ] || echo "missing: ${missing[*]} (on a device lease: the machine was fresh at some call; carry again from the first call)"
      [ ${#bad[@]} -eq 0 ] || echo "corrupt: ${bad[*]} (carry it again; if it stays corrupt, rebuild with scripts/gpu_carry.sh)"
      local what=()
      [ ${#missing[@]} -eq 0 ] || what+=("missing ${missing[*]}")
      [ ${#bad[@]} -eq 0 ] || what+=("corrupt ${bad[*]}")
      summ carry "FAILED: $(IFS=';'; echo "${what[*]}" | sed 's/;/; /g')"
      return 3
    fi
    mkdir -p "$capi"
    local lib tool ok=1
    # Libraries already in place and intact are kept (a second run on a warm machine).
    for lib in libonnxruntime_providers_cuda.so libonnxruntime.so.1.31.1 libonnxruntime_providers_shared.so; do
      sum=$(awk -v n="capi/$lib" '$2 == n { print $1 }' "$carry/SHA256SUMS")
      [ -n "$sum" ] || { echo "SHA256SUMS has no line for capi/$lib"; summ carry "FAILED: SHA256SUMS has no capi/$lib"; return 3; }
      if [ -f "$capi/$lib" ] && [ "$(sha256 "$capi/$lib")" = "$sum" ]; then continue; fi
      case $lib in
        libonnxruntime_providers_cuda.so)
          echo "reassembling $lib from ${#parts[@]} pieces"
          tool=$(unxz "$capi/$lib.partial" "${parts[@]}") && mv "$capi/$lib.partial" "$capi/$lib" || ok=0 ;;
        *)
          echo "unpacking ort-rest.tar.xz"
          tool=$(unxz "$tmp/ort-rest.tar" "$carry/ort-rest.tar.xz") && tar -C "$rt" -xf "$tmp/ort-rest.tar" || ok=0 ;;
      esac
      [ "$ok" = 1 ] || { rm -f "$capi/$lib.partial"; echo "reassembly of $lib failed"; summ carry "FAILED: could not decompress ($lib): no zstd with xz support, xz or python3 lzma worked"; return 3; }
      got=$(sha256 "$capi/$lib")
      if [ "$got" != "$sum" ]; then
        echo "$lib reassembled with $tool: sha256 $got, expected $sum"
        summ carry "FAILED: reassembled $lib does not match SHA256SUMS"; return 3
      fi
      echo "  $lib: $(du -h "$capi/$lib" | cut -f1), sha256 OK (decompressed with $tool)"
    done
    summ carry "OK: ${#parts[@]} pieces and ort-rest verified; libraries reassembled in $capi, sha256 OK"
  fi
  if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    local d
    for d in "$rt" .runtime/gpu .runtime/cpu; do
      if [ -f "$d/onnxruntime/capi/libonnxruntime.so.1.31.1" ]; then
        export ORT_DYLIB_PATH="$root/$d/onnxruntime/capi/libonnxruntime.so.1.31.1"; break
      fi
    done
  fi
  echo "ONNX Runtime: ${ORT_DYLIB_PATH:-(default search)}"

  # --- the binary: explicit path, run bit restored (a carry may drop it) ---
  bin=${DV_BIN:-}
  if [ -z "$bin" ]; then
    for c in "$carry/distorch-vision" target/release/distorch-vision; do
      [ -f "$c" ] && { bin=$c; break; }
    done
  fi
  if [ -z "$bin" ] && command -v cargo >/dev/null; then
    echo "building the release binary"; cargo build --release --quiet && bin=target/release/distorch-vision
  fi
  if [ -z "$bin" ] || [ ! -f "$bin" ]; then
    echo "no distorch-vision binary (set DV_BIN, build with cargo, or carry it with scripts/gpu_carry.sh)"
    summ binary "FAILED: no distorch-vision binary"; return 1
  fi
  if [ ! -x "$bin" ]; then
    chmod +x "$bin" 2>/dev/null || { cp "$bin" "$tmp/distorch-vision" && chmod +x "$tmp/distorch-vision" && bin=$tmp/distorch-vision; }
  fi
  case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
  plugin=${DV_PLUGIN:-$(dirname "$bin")/libdistorch_vision.so}
  echo "binary: $bin"
  "$py" -c 'import numpy' 2>/dev/null || echo "$py has no numpy: the output comparisons will fail (set PYTHON)"

  # ---------------------------------------------------------------- 2. libraries, devices
  budget_section 15
  section "2. libraries and devices"
  local provider
  provider=$(dirname "${ORT_DYLIB_PATH:-/nonexistent/x}")/libonnxruntime_providers_cuda.so
  if [ -f "$provider" ]; then
    # Where the binary looks (runtime::gpu::libs): DISTORCH_CUDA_LIB_DIRS, python3's nvidia
    # wheels, then the system linker path (LD_LIBRARY_PATH, ld.so.cache, default folders).
    local dirs needed missing_libs=() n found ldc
    dirs=$(
      [ -n "${DISTORCH_CUDA_LIB_DIRS:-}" ] && tr ':' '\n' <<<"$DISTORCH_CUDA_LIB_DIRS"
      "$py" -c 'import glob, os, nvidia
for p in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(p, "*", "lib"))): print(d)' 2>/dev/null
      dirname "$provider"
      [ -n "${LD_LIBRARY_PATH:-}" ] && tr ':' '\n' <<<"$LD_LIBRARY_PATH"
      printf '%s\n' /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib)
    ldc=$(command -v ldconfig || ls /sbin/ldconfig /usr/sbin/ldconfig 2>/dev/null | head -1)
    if command -v readelf >/dev/null; then
      needed=$(readelf -d "$provider" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    else
      needed=$(objdump -p "$provider" 2>/dev/null | awk '$1 == "NEEDED" { print $2 }')
    fi
    echo "NEEDED by $(basename "$provider"):"
    for n in $needed; do
      found=$(while read -r d; do [ -e "$d/$n" ] && { echo "$d"; break; }; done <<<"$dirs")
      [ -n "$found" ] || [ -z "$ldc" ] || found=$("$ldc" -p 2>/dev/null | awk -v n="$n" '$1 == n { print "ld.so.cache: " $NF; exit }')
      printf '  %-28s %s\n' "$n" "${found:-NOT FOUND}"
      [ -n "$found" ] || missing_libs+=("$n")
    done
    [ -n "$needed" ] || echo "  (no readelf or objdump here to read it)"
    if [ ${#missing_libs[@]} -eq 0 ]; then summ libraries "provider NEEDED: all $(wc -w <<<"$needed") found"
    else summ libraries "provider NEEDED not found: ${missing_libs[*]}"; fi
  else
    echo "no $provider (the ONNX Runtime in use is not the GPU build)"
    summ libraries "no GPU build of ONNX Runtime at $(dirname "${ORT_DYLIB_PATH:-?}")"
  fi
  "$bin" devices 2>"$tmp/err" || echo "devices: $(tail -1 "$tmp/err")"
  local status usable gpus reason
  status=$("$bin" devices --json 2>/dev/null)
  usable=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"]["usable"])' 2>/dev/null || echo False)
  gpus=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"]["gpus"])' 2>/dev/null || echo 0)
  reason=$(printf '%s' "$status" | "$py" -c 'import json,sys;print(json.load(sys.stdin)["cuda_provider"].get("reason") or "")' 2>/dev/null || echo "devices --json failed")
  if [ "$usable" = True ]; then summ provider "CUDA provider: usable ($gpus GPU)"
  else summ provider "CUDA provider: not usable: ${reason:-unknown}"; fi
  if [ "$dry" = 1 ]; then
    echo "DRY RUN: the CUDA rows below run on the CPU (--device cpu); no GPU figure comes from this run"
    summ dry-run "every CUDA row ran on the CPU: no GPU figures"; usable=True; gpus=1
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
rel = len(sys.argv) > 4 and sys.argv[4] == "rel"; cmin = 1.0
for k in a:
    d = float(np.abs(a[k] - b[k]).max())
    if rel:
        d /= max(float(np.abs(b[k]).max()), 1e-30)
        x = a[k].reshape(len(a[k]), -1).astype(np.float64); y = b[k].reshape(len(b[k]), -1).astype(np.float64)
        cos = float(min((x[i] @ y[i]) / (np.linalg.norm(x[i]) * np.linalg.norm(y[i]) + 1e-30) for i in range(len(x))))
        ok &= cos >= 0.999; cmin = min(cmin, cos)
        print(f"    {k:<28} max|diff|/max|ref| {d:.2e}  min cosine {cos:.6f}")
    else:
        print(f"    {k:<28} max|diff| {d:.2e}")
    worst = max(worst, d)
ok &= worst <= tol
print(f"    worst {worst:.2e} (tolerance {tol:g}{', cosine >= 0.999' if rel else ''}): {'OK' if ok else 'FAIL'}")
print(f"RESULT {worst:.2e} {cmin:.6f}", file=sys.stderr); sys.exit(not ok)
EOF

  # ---------------------------------------------------------------- 3. parity
  budget_section $([ "$quick" = 1 ] && echo 100 || echo 150)
  section "3. parity on the fixtures"
  local fail=0 n_ok=0 n_bad=0 n_err=0 n_skip=0 worst32=0 worst16=0 cos16=1 n32=0 n16=0 f fx rc
  # check LABEL CANDIDATE REF TOL [rel]: compares, counts, keeps the worst figures.
  check() {
    local label=$1 r
    echo "  $label"
    "$py" "$tmp/cmp.py" "$2" "$3" "$4" ${5:-} 2>"$tmp/res"
    local ok=$?
    r=$(sed -n 's/^RESULT //p' "$tmp/res")
    # No RESULT line: the comparison itself broke (numpy missing, unreadable output).
    [ -n "$r" ] || { echo "    ERROR: $(tail -1 "$tmp/res")"; n_err=$((n_err + 1)); fail=1; return; }
    if [ "$ok" = 0 ]; then n_ok=$((n_ok + 1)); else n_bad=$((n_bad + 1)); fail=1; fi
    if [ -n "${5:-}" ]; then
      n16=$((n16 + 1))
      worst16=$(awk -v a="$worst16" -v b="${r% *}" 'BEGIN { print (b > a) ? b : a }')
      cos16=$(awk -v a="$cos16" -v b="${r#* }" 'BEGIN { print (b < a) ? b : a }')
    else
      n32=$((n32 + 1))
      worst32=$(awk -v a="$worst32" -v b="${r% *}" 'BEGIN { print (b > a) ? b : a }')
    fi
  }
  enc() { timed 60 10 "$bin" encode --model "$fx/model.safetensors" --pixels "$fx/pixels.safetensors" --graphs-dir "$tmp/graphs" "$@" 2>"$tmp/err"; }
  local refs=0 runs
  for f in tests/fixtures/models/*/; do
    fx=${f%/}; name=$(basename "$fx")
    if enc --out "$tmp/$name.cpu.safetensors" --device cpu; then refs=$((refs + 1))
    else rc=$?; echo "  $name CPU reference: $(why $rc)"; [ $rc = 125 ] && n_skip=$((n_skip + 1)) || { n_err=$((n_err + 1)); fail=1; }; continue; fi
    [ "$usable" = True ] || continue
    runs=("fp32 resident|1e-3||--virtual-vram-gb 0" "fp32 all blocks streamed|1e-3||--virtual-vram-gb 128"
          "fp16 resident|0.02|rel|--virtual-vram-gb 0 --dtype fp16")
    [ "$quick" = 1 ] || runs+=("fp16 all blocks streamed|0.02|rel|--virtual-vram-gb 128 --dtype fp16"
                               "fp32 --micro-batch 1|1e-3||--virtual-vram-gb 0 --micro-batch 1")
    [ "$quick" = 1 ] || [ "$gpus" -lt 2 ] || runs+=("fp32 split over cuda:0 and cuda:1|1e-3||--expert-mode-allocations cuda:0,50%;cuda:1,50%")
    local r label tol rel args
    for r in "${runs[@]}"; do
      IFS='|' read -r label tol rel args <<<"$r"
      # shellcheck disable=SC2086
      if enc --out "$tmp/$name.cuda.safetensors" --device "$dev" $args; then
        check "$name CUDA $label" "$tmp/$name.cuda.safetensors" "$tmp/$name.cpu.safetensors" "$tol" $rel
      else
        rc=$?; echo "  $name CUDA $label: $(why $rc)"
        [ $rc = 125 ] && n_skip=$((n_skip + 1)) || { n_err=$((n_err + 1)); fail=1; }
      fi
    done
  done
  echo "CPU references with this runtime: $refs fixtures"
  # The C ABI plugin (as a Python host loads it) on one fixture.
  fx=tests/fixtures/models/clip_quickgelu_f32
  local pdev=cpu
  [ "$usable" = True ] && pdev=$dev
  if [ -f "$plugin" ] && [ -f "$tmp/clip_quickgelu_f32.cpu.safetensors" ]; then
    if timed 60 10 "$py" scripts/encode_with_plugin.py --plugin "$plugin" ${ORT_DYLIB_PATH:+--ort-library "$ORT_DYLIB_PATH"} \
        --model "$fx/model.safetensors" --pixels "$fx/pixels.safetensors" --out "$tmp/plugin" --device "$pdev" \
        --virtual-vram-gb 0 --graphs-dir "$tmp/graphs" >"$tmp/plugin.log" 2>"$tmp/err"; then
      check "clip_quickgelu_f32 plugin on $pdev" "$tmp/plugin/outputs.safetensors" "$tmp/clip_quickgelu_f32.cpu.safetensors" 1e-3
    else rc=$?; echo "  plugin on $pdev: $(why $rc)"; [ $rc = 125 ] && n_skip=$((n_skip + 1)) || { n_err=$((n_err + 1)); fail=1; }; fi
  else
    echo "  plugin: not run (no $plugin, or no CPU reference)"; note "the C ABI plugin (no $plugin)"
  fi
  summ parity "$n_ok OK, $n_bad FAIL, $n_err ERROR, $n_skip skipped; CPU refs $refs$([ "$n32" = 0 ] || echo "; fp32 ($n32) worst |diff| $worst32")$([ "$n16" = 0 ] || echo "; fp16 ($n16) worst |diff|/max $worst16, min cosine $cos16")"

  if [ "$usable" != True ]; then
    for item in "CUDA fp32 parity vs CPU on the fixtures (<= 1e-3), resident and streamed" "fp16 on CUDA" \
        "ViT-H/14 resident vs streamed (virtual_vram_gb) vs --donor-policy execute" \
        "throughput at batch 1/8/32 against PyTorch on the same GPU" \
        "streamed bytes per pass and upload/compute overlap" "micro-batch pipelining across CPU and GPU segments" \
        "device-resident IoBinding hand-offs and cross-GPU copies"; do
      note "$item"
    done
    printf '\n== not checked (CUDA provider not usable: %s) ==\n' "${reason:-unknown}"
    cat "$tmp/unchecked"
    # No driver or no GPU: nothing to check here. A GPU the provider cannot use: a failure.
    if [ "$gpus" -gt 0 ] 2>/dev/null; then return 4; fi
    return "$fail"
  fi
  [ "$gpus" -ge 2 ] || note "cross-GPU hand-off (this machine has $gpus GPU)"

  # ---------------------------------------------------------------- 4. ViT-H
  budget_section $([ "$quick" = 1 ] && echo 110 || echo 225)
  section "4. $shape-shaped random model"
  local vith=$tmp/$shape iters batches b mode label args out
  if ! timed 90 20 "$py" scripts/make_random_model.py "$vith" --shape "$shape" --dtype f16 2>"$tmp/err"; then
    echo "cannot generate the model: $(why $?)"; summ "$shape" "not run: cannot generate the model"; note "ViT-H/14 rows"; return 1
  fi
  iters=$([ "$quick" = 1 ] && echo 2 || echo 3)
  batches=$([ "$quick" = 1 ] && echo "8 1" || echo "1 8 32")
  bench() { timed "$([ "$quick" = 1 ] && echo 120 || echo 300)" 30 "$bin" bench --model "$vith/model.safetensors" --graphs-dir "$tmp/graphs" --no-whole --iters "$iters" --json "$@" 2>"$tmp/err"; }
  cat > "$tmp/summ.py" <<'EOF'
import json, sys
r = json.load(sys.stdin); u = r["uploads"]; b = r["blocks"]; it = r["iters"]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"label": sys.argv[2], **r}) + "\n")
ov = ""
if u["copy_s"] > 0:
    ov = "  overlap %.0f%% (copy %.1f ms, waited %.1f ms per pass)" % (
        100 * max(0.0, 1 - u["stall_s"] / u["copy_s"]), 1e3 * u["copy_s"] / it, 1e3 * u["stall_s"] / it)
print("%9.2f images/s  build %.1f s  streamed/pass %.2f GiB%s  copies %s" % (
    b["images_per_s"], b["session_build_s"], r["streamed_bytes_per_pass"] / 2**30, ov, r["device_copies"]))
with open(sys.argv[3], "w") as f:
    f.write("%.1f" % b["images_per_s"])
EOF
  # The plan behind a row, in words: how many blocks are homed where, and where they run.
  plan_words() {
    "$bin" plan --model "$vith/model.safetensors" --device "$dev" --json "$@" 2>/dev/null | DEV=$dev "$py" -c '
import json, sys
b = json.load(sys.stdin)["blocks"]; off = [x for x in b if x["home"] == "cpu"]
import os; dev = os.environ["DEV"]
if not off: print("all %d blocks on %s" % (len(b), dev)); sys.exit()
how = "streamed to " + dev if all(x["exec"] != "cpu" for x in off) else "run on the CPU"
print("%d of %d blocks (%s..%s, %.2f GiB) homed on the CPU, %s" % (len(off), len(b), off[0]["name"], off[-1]["name"], sum(x["bytes"] for x in off) / 2**30, how))' || echo "plan unavailable"
  }
  echo "vv1 stream:  $(plan_words --virtual-vram-gb 1)"
  echo "vv1 execute: $(plan_words --virtual-vram-gb 1 --donor-policy execute)"
  local row
  for b in $batches; do
    echo "batch $b"
    row="b$b:"
    for mode in "resident fp32:--virtual-vram-gb 0" "resident fp16:--virtual-vram-gb 0 --dtype fp16" \
        "vv1 stream:--virtual-vram-gb 1" "vv1 execute:--virtual-vram-gb 1 --donor-policy execute"; do
      label=${mode%%:*}; args=${mode#*:}
      [ "$b" = 32 ] && [ "$label" = "vv1 execute" ] && continue   # minutes of CPU time
      # shellcheck disable=SC2086
      if out=$(bench --device "$dev" --batch-size "$b" $args); then
        printf '  %-16s' "$label"; printf '%s' "$out" | "$py" "$tmp/summ.py" "$results" "$label b$b" "$tmp/ips"
        row="$row $label $(cat "$tmp/ips");"
      else
        rc=$?; printf '  %-16s %s\n' "$label" "$(why $rc)"; row="$row $label $(why $rc | cut -c1-24);"
        [ $rc = 125 ] || fail=1
      fi
    done
    summ "$shape" "${row%;} (images/s)"
  done

  # ---------------------------------------------------------------- 5. micro-batching
  budget_section $([ "$quick" = 1 ] && echo 45 || echo 60)
  section "5. micro-batching on two exec segments"
  local mb_args="--virtual-vram-gb 0.05 --donor-policy execute" one two mb_plan
  mb_plan=$(plan_words $mb_args)
  echo "plan: $mb_plan"
  one=""; two=""
  # shellcheck disable=SC2086
  if out=$(bench --device "$dev" --batch-size 32 $mb_args); then
    printf '  %-16s' "no micro-batch"; printf '%s' "$out" | "$py" "$tmp/summ.py" "$results" "2 segments b32" "$tmp/ips"; one=$(cat "$tmp/ips")
  else rc=$?; echo "  no micro-batch: $(why $rc)"; [ $rc = 125 ] || fail=1; fi
  # shellcheck disable=SC2086
  if [ -n "$one" ] && out=$(bench --device "$dev" --batch-size 32 $mb_args --micro-batch 8); then
    printf '  %-16s' "micro-batch 8"; printf '%s' "$out" | "$py" "$tmp/summ.py" "$results" "2 segments b32 micro-batch 8" "$tmp/ips"; two=$(cat "$tmp/ips")
  elif [ -n "$one" ]; then rc=$?; echo "  micro-batch 8: $(why $rc)"; [ $rc = 125 ] || fail=1; fi
  if [ -n "$one" ] && [ -n "$two" ]; then
    summ micro-batch "batch 32 ($mb_plan): $one -> $two images/s with --micro-batch 8 (x$(awk -v a="$one" -v b="$two" 'BEGIN { printf "%.2f", b / a }'))"
  else
    summ micro-batch "not measured (see the log)"; note "micro-batch pipelining across CPU and GPU segments"
  fi

  # ---------------------------------------------------------------- 6. PyTorch
  budget_section $([ "$quick" = 1 ] && echo 30 || echo 75)
  section "6. PyTorch (HF transformers) on the same GPU"
  local dt t
  row=""
  for b in $batches; do
    for dt in fp32 fp16; do
      if t=$(timed 120 20 "$py" scripts/bench_torch.py "$vith" --device "$tdev" --dtype "$dt" --batch-size "$b" --iters "$iters" 2>&1); then
        printf '  %-22s%s\n' "pytorch $tdev $dt b$b" "$t"; row="$row $dt b$b: $(printf '%s' "$t" | tail -1 | cut -c1-40);"
      else
        rc=$?; printf '  %-22s %s %s\n' "pytorch $dt b$b" "$(why $rc)" "$(printf '%s' "$t" | tail -1)"
        row="$row $dt b$b: $(why $rc | cut -c1-24);"
      fi
    done
  done
  row=${row%;}; summ pytorch "${row:- not run}"
  return "$fail"
}

main 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ -s "$results" ] || rm -f "$results"
{
  printf '\n== summary: gpu_check.sh --%s, %d s; exit %d; whole log %s ==\n' "$mode" "$SECONDS" "$rc" "$log"
  cat "$tmp/summary"
  if [ -s "$tmp/unchecked" ]; then echo "not checked:"; cat "$tmp/unchecked"; fi
  case $rc in
    0) echo "result: every check that ran passed" ;;
    1) echo "result: FAILURES (parity or errored runs; see the log)" ;;
    3) echo "result: the carried GPU build is incomplete or corrupt: nothing ran on the GPU" ;;
    4) echo "result: a GPU is here but the CUDA provider cannot be used: nothing ran on the GPU" ;;
    *) echo "result: exit $rc" ;;
  esac
} | tee -a "$log"
exit "$rc"
