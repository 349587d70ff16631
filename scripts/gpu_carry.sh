#!/usr/bin/env bash
# Builds what a GPU machine without internet access needs for scripts/gpu_check.sh, as parts
# small enough for a transfer limit per call (the device tool here: 64 MiB a call, the
# tracked working tree included), and prints the calls that carry them.
#
#   scripts/gpu_carry.sh [--no-build] [--limit-mib N]
#
# Into the git-ignored .gpu-carry/ (downloads under .gpu-carry/download/):
#   cuda.so.xz.part-aa, -ab, ...  libonnxruntime_providers_cuda.so of onnxruntime-gpu==1.31.1
#                                 (284 MB), xz -9, cut so that every call carries about the same
#   ort-rest.tar.xz               onnxruntime/capi/libonnxruntime.so.1.31.1 and
#                                 libonnxruntime_providers_shared.so (all the provider needs)
#   distorch-vision, libdistorch_vision.so   the release build, stripped copies
#   SHA256SUMS                    every carried file, and the reassembled libraries as capi/NAME
# Then prints each call's size (tracked tree + untracked files git does not ignore +
# carried files) and the exact calls. Exits non-zero when a call would exceed --limit-mib
# (default 60, under the 64 MiB hard limit).
#
# Needs: python3 with pip (download), xz, sha256sum, strip, cargo (unless --no-build). The
# xz -9 compression takes a few minutes and is cached (redone when the download changes).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
build=1
limit_mib=60
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --limit-mib) limit_mib=${2:?--limit-mib needs a number}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_carry.sh: unknown option $1 (valid: --no-build, --limit-mib N)" >&2; exit 2 ;;
  esac
  shift
done
case "$limit_mib" in ''|*[!0-9]*) echo "gpu_carry.sh: --limit-mib must be a whole number of MiB, not '$limit_mib'" >&2; exit 2 ;; esac
for tool in xz sha256sum strip git; do
  command -v "$tool" >/dev/null || { echo "gpu_carry.sh: '$tool' is needed and not on PATH" >&2; exit 1; }
done

version=1.31.1
carry=.gpu-carry
dl=$carry/download
remote=/tmp/dv-gpu-carry   # where each call on the GPU machine collects the parts
mkdir -p "$dl"
git check-ignore -q "$carry" || { echo "gpu_carry.sh: $carry is not git-ignored; it would travel with the tree" >&2; exit 1; }

# --- 1. the wheel (any CPython tag: only its native libraries are used, which do not link libpython) ---
whl=$(ls "$dl"/onnxruntime_gpu-"$version"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ]; then
  echo "downloading onnxruntime-gpu==$version (about 256 MB)"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dl" "onnxruntime-gpu==$version"
  whl=$(ls "$dl"/onnxruntime_gpu-"$version"-*.whl | head -1)
fi
echo "wheel: $whl"

# --- 2. the three libraries used (not the Python binding, not TensorRT) ---
capi=$dl/capi
"$py" - "$whl" "$capi" <<'EOF'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
names = ["libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"]
with zipfile.ZipFile(whl) as z:
    for n in names:
        info = z.getinfo("onnxruntime/capi/" + n)
        dst = os.path.join(out, n)
        if os.path.exists(dst) and os.path.getsize(dst) == info.file_size:
            continue
        with z.open(info) as src, open(dst + ".partial", "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
        os.chmod(dst + ".partial", 0o755)
        os.replace(dst + ".partial", dst)
EOF
provider=$capi/libonnxruntime_providers_cuda.so
provider_sha=$(sha256sum "$provider" | cut -d' ' -f1)

# --- 3. the provider: xz -9 (cached by the source's sha256), cut into pieces ---
xzfile=$dl/libonnxruntime_providers_cuda.so.xz
if [ "$(cat "$xzfile.source-sha256" 2>/dev/null)" != "$provider_sha" ]; then
  echo "compressing $(basename "$provider") with xz -9 (a few minutes)"
  xz -9 -T0 -c "$provider" > "$xzfile.partial"
  mv "$xzfile.partial" "$xzfile"
  echo "$provider_sha" > "$xzfile.source-sha256"
fi
# --- 4. the rest of the runtime ---
tar -C "$dl" --owner=0 --group=0 --transform 's,^capi,onnxruntime/capi,' -cf - \
  capi/libonnxruntime.so.$version capi/libonnxruntime_providers_shared.so \
  | xz -9 -c > "$carry/ort-rest.tar.xz"

# --- 5. the release build, stripped copies ---
target=${CARGO_TARGET_DIR:-target}
if [ "$build" = 1 ]; then
  echo "building the release binary and library (cargo build --release)"
  cargo build --release --quiet
fi
for f in distorch-vision libdistorch_vision.so; do
  [ -f "$target/release/$f" ] || { echo "gpu_carry.sh: $target/release/$f missing (build with cargo build --release)" >&2; exit 1; }
  cp "$target/release/$f" "$carry/$f"
done
strip --strip-all "$carry/distorch-vision"
strip --strip-unneeded "$carry/libdistorch_vision.so"

# --- 6. the calls: sizes, then pieces so that every call carries about the same ---
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
size_of() { local s=0 f; for f in "$@"; do s=$(( s + $(stat -c %s "$f") )); done; echo "$s"; }
# What travels with every call: tracked files as they are on disk, and untracked files that
# git does not ignore.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | sort -zu \
  | xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
limit_bytes=$(( limit_mib * 1048576 ))
rest=(ort-rest.tar.xz distorch-vision libdistorch_vision.so)
rest_bytes=$(cd "$carry" && size_of "${rest[@]}")
xz_bytes=$(stat -c %s "$xzfile")
# Room per call: the limit less the tree, SHA256SUMS (< 4 KiB) and 1 MiB of margin.
room=$(( limit_bytes - tree_bytes - 4096 - 1048576 ))
[ "$room" -gt "$rest_bytes" ] || { echo "gpu_carry.sh: the tree ($(mib "$tree_bytes") MiB) leaves no room under ${limit_mib} MiB" >&2; exit 1; }
n=$(( (xz_bytes + rest_bytes + room - 1) / room ))
piece_bytes=$(( (xz_bytes + rest_bytes + n - 1) / n ))
rm -f "$carry"/cuda.so.xz.part-* "$carry"/SHA256SUMS
split -b "$piece_bytes" "$xzfile" "$carry/cuda.so.xz.part-"
mapfile -t parts < <(cd "$carry" && ls cuda.so.xz.part-*)
# One piece per call; the rest rides with the last (smallest) piece when it fits.
calls=("${parts[@]}")
last=$(( ${#calls[@]} - 1 ))
if [ $(( $(stat -c %s "$carry/${parts[$last]}") + rest_bytes )) -le "$room" ]; then
  calls[last]="${calls[$last]} ${rest[*]}"
else
  calls+=("${rest[*]}")
fi

# --- 7. checksums: carried files by name, reassembled libraries as capi/NAME ---
(
  cd "$carry"
  sha256sum cuda.so.xz.part-* ort-rest.tar.xz distorch-vision libdistorch_vision.so
  cd download
  sha256sum capi/libonnxruntime_providers_cuda.so capi/libonnxruntime.so.$version capi/libonnxruntime_providers_shared.so
) > "$carry/SHA256SUMS.partial"
mv "$carry/SHA256SUMS.partial" "$carry/SHA256SUMS"

# --- 8. the calls, printed ---
echo
echo "provider $(mib "$(stat -c %s "$provider")") MiB, xz $(mib "$xz_bytes") MiB in ${#parts[@]} pieces of <= $(mib "$piece_bytes") MiB"
echo "tree that travels with every call: $(mib "$tree_bytes") MiB (tracked + untracked-not-ignored files of"
echo "this checkout: run this script in the checkout whose session makes the device calls)"
echo
echo "Device calls, back to back (the machine is given back after ~30 s idle; if a call says a"
echo "part is missing, the machine was fresh: start again from call 1):"
over=0
n=${#calls[@]}
for i in "${!calls[@]}"; do
  read -r -a files <<<"${calls[$i]}"
  files+=(SHA256SUMS)
  bytes=$(( tree_bytes + $(cd "$carry" && size_of "${files[@]}") ))
  [ "$bytes" -le "$limit_bytes" ] || over=1
  carry_json=""
  for f in "${files[@]}"; do carry_json+="${carry_json:+, }\"$carry/$f\""; done
  # Checks what has arrived so far (earlier calls' pieces too); the reassembled libraries'
  # lines (capi/...) are checked by gpu_check.sh.
  copy="mkdir -p $remote && cp $(printf "$carry/%s " "${files[@]}")$remote/ && (cd $remote && sha256sum -c --ignore-missing SHA256SUMS)"
  if [ "$i" -lt $(( n - 1 )) ]; then
    cmd=$copy
    t=120
  else
    # gpu_check.sh checks SHA256SUMS itself, and runs even when a copy failed, so that its
    # summary says what is missing or corrupt.
    cmd="mkdir -p $remote && cp $(printf "$carry/%s " "${files[@]}")$remote/; GPU_CARRY=$remote DV_BIN=$remote/distorch-vision scripts/gpu_check.sh --quick"
    t=420   # gpu_check.sh --quick budgets 330 s; the rest is copying and margin
  fi
  echo
  echo "call $(( i + 1 ))/$n: $(mib "$bytes") MiB (tree $(mib "$tree_bytes") + carried $(mib $(( bytes - tree_bytes ))))$([ "$bytes" -le "$limit_bytes" ] || echo "  OVER ${limit_mib} MiB")"
  echo "  files: $(for f in "${files[@]}"; do printf '%s %s MiB; ' "$f" "$(mib "$(stat -c %s "$carry/$f")")"; done)"
  echo "  run(timeout_s=$t, carry=[$carry_json],"
  echo "      command=\"$cmd\")"
done
echo
echo "The last call writes its whole log to \$OUT/gpu_check.log and prints a summary last; hand the"
echo "machine back afterwards unless another call follows at once (files stay only while it is warm)."
if [ "$over" = 1 ]; then
  echo "gpu_carry.sh: a call exceeds ${limit_mib} MiB; make the tree smaller or lower the piece size" >&2
  exit 1
fi
