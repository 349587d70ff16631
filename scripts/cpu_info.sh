#!/usr/bin/env bash
# One line naming this machine for benchmark rows: CPU model, cores, the SIMD/matrix units the
# runtimes pick kernels by (from /proc/cpuinfo), and the load average when it was taken (on a
# shared machine the load says how far the figures can be trusted).
set -euo pipefail
model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
have=()
for f in avx2:AVX2 avx512f:AVX-512 avx512_vnni:AVX512-VNNI avx_vnni:AVX-VNNI avx512_bf16:AVX512_BF16 amx_tile:AMX; do
  case "$flags" in *" ${f%%:*} "*) have+=("${f#*:}") ;; esac
done
[ ${#have[@]} -gt 0 ] || have=(none of AVX2/AVX-512/VNNI/AMX)
printf '%s, %s cores, flags: %s; load average %s\n' "$model" "$(nproc)" "${have[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)"
