#!/usr/bin/env bash
# The product as a user installs it: the wheel alone, in fresh virtual environments made in an
# empty temporary folder (cwd outside the clone, PYTHONPATH unset, no checkout on sys.path).
# scripts/test.sh runs it with the Python test environment as $1 (the node's tests take torch
# and transformers from it, for their Hugging Face references).
#   1. scripts/build_wheel.sh: the manylinux_2_28 wheel (auditwheel show proves the tag)
#   2. <wheel>[cpu]: `distorch-vision --version`, `encode` of a fixture by the CLI, the same
#      load + encode through the Python package (max diff 0), exports in the user cache, the
#      node's own tests against the installed package, nothing written into site-packages or
#      the clone
#   3. `cargo install --path .`: a CLI that works outside the checkout
#   4. the bare wheel: the one message naming both extras and every place looked in; then an
#      ONNX Runtime older than 1.31 refused with its version and the one needed
#   5. <wheel>[gpu]: onnxruntime-gpu's library found, `devices` reports the CUDA provider in the
#      build and no driver (this machine has no GPU)
# Third-party wheels are pinned in python/requirements-install-test.txt and downloaded once into
# ~/.cache/distorch-vision/wheelhouse-*; the installs read only that folder (no index).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
test_venv=${1:?usage: scripts/test_install.sh PYTHON_TEST_VENV}
py=${PYTHON:-python3}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/distorch-vision"
old_ort=1.30.0    # older than the C API distorch-vision needs (1.31)
passed=0
say() { echo "test_install: $*"; }
fail() { echo "test_install: FAILED: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t_all=$(now)

# --- 1. the wheel --------------------------------------------------------------------------
t=$(now)
wheel=$("$root/scripts/build_wheel.sh" | tail -1)
[ -f "$wheel" ] || fail "scripts/build_wheel.sh gave no wheel"
version=$(basename "$wheel" | cut -d- -f2)
wheel_kib=$(du -k "$wheel" | cut -f1)
say "wheel $(basename "$wheel"): $wheel_kib KiB, build step $(since "$t") s"
ok "wheel built, tagged and checked by auditwheel show"

# --- the pinned third-party wheels, downloaded once -----------------------------------------
req="$root/python/requirements-install-test.txt"
pyver=$("$py" -c 'import sys; print("%d%d" % sys.version_info[:2])')
wh="$cache/wheelhouse-py$pyver-$({ cat "$req"; echo "$old_ort"; } | sha256sum | cut -c1-12)"
if [ ! -f "$wh/.complete" ]; then
  say "downloading the pinned wheels into $wh (once)"
  rm -rf "$wh"
  "$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: -d "$wh" -r "$req" \
    && "$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
      -d "$wh" "onnxruntime==$old_ort" \
    || fail "downloading $req failed (network? see pip's message above)"
  touch "$wh/.complete"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dv-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
case "$work/" in "$root"/*) fail "the temporary folder $work is inside the clone" ;; esac
cache_home="$work/cache"        # this run's user cache: where exports must go
fixture_model="$root/tests/fixtures/models/clip_quickgelu_f32/model.safetensors"
images=("$root/tests/fixtures/images/plain_64x48.jpg" "$root/tests/fixtures/images/portrait_45x77.png")

# Runs a command as a user of VENV would: its bin first on PATH, nothing of the checkout or of
# the test setup in the environment, cwd the empty work folder.
in_venv() {
  local venv=$1; shift
  (cd "$work" && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV -u DISTORCH_VISION_LIBRARY \
    -u DISTORCH_VISION_CLI -u ORT_DYLIB_PATH -u DISTORCH_GRAPHS_DIR -u LD_LIBRARY_PATH \
    PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" XDG_CACHE_HOME="$cache_home" "$@")
}
# A fresh venv with the wheel (and an extra) installed from the wheelhouse; prints its seconds.
make_venv() {
  local venv=$1 spec=$2 t
  "$py" -m venv "$venv" || fail "'$py -m venv' failed"
  t=$(now)
  in_venv "$venv" python -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$wh" -c "$req" "$spec" || fail "pip install $spec failed"
  since "$t"
}
site_of() { in_venv "$1" python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

# --- 2. <wheel>[cpu] -------------------------------------------------------------------------
cpu="$work/cpu"
secs=$(make_venv "$cpu" "$wheel[cpu]")
say "pip install <wheel>[cpu]: $secs s"
cpu_install_s=$secs
cpu_site=$(site_of "$cpu")
marker="$work/marker"
touch "$marker"

out=$(in_venv "$cpu" distorch-vision --version)
[ "$out" = "distorch-vision $version" ] || fail "--version printed '$out', want 'distorch-vision $version'"
[ "$(in_venv "$cpu" sh -c 'command -v distorch-vision')" = "$cpu/bin/distorch-vision" ] \
  || fail "distorch-vision on PATH is not the venv's console script"
ok "distorch-vision --version: $out (the venv's script on PATH)"

in_venv "$cpu" distorch-vision encode --model "$fixture_model" --images "${images[@]}" \
  --out "$work/cli_images.safetensors" -q || fail "distorch-vision encode --images failed"
in_venv "$cpu" distorch-vision preprocess --model "$fixture_model" --images "${images[@]}" \
  --out "$work/pixels.safetensors" -q || fail "distorch-vision preprocess failed"
in_venv "$cpu" distorch-vision encode --model "$fixture_model" --pixels "$work/pixels.safetensors" \
  --out "$work/cli_pixels.safetensors" -q || fail "distorch-vision encode --pixels failed"
ok "distorch-vision encode of a fixture (images and pixels)"

# The package: load + encode the same pixels; every output identical to the CLI's.
in_venv "$cpu" python - "$fixture_model" "$work" "$version" "$root" <<'EOF' || fail "the Python package's encode differs from the CLI's (above)"
import json, struct, sys
from pathlib import Path
import numpy as np
import distorch_vision as dv

model, work, version, root = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])

def read(path):
    """A safetensors file of F32 tensors (no safetensors package in a user's environment)."""
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        s, e = t["data_offsets"]
        out[name] = np.frombuffer(b[8 + n + s:8 + n + e], "<f4").reshape(t["shape"])
    return out

for m in ("distorch_vision", "numpy"):
    f = Path(sys.modules[m].__file__).resolve()
    assert not f.is_relative_to(root) and f.is_relative_to(Path(sys.prefix).resolve()), (m, f)
assert dv.version() == version == dv.__version__, (dv.version(), version, dv.__version__)
lib = Path(dv.library_path()).resolve()
assert lib.parent.name == "lib" and lib.parent.parent.name == "distorch_vision", lib
(pixels,) = read(work / "pixels.safetensors").values()
with dv.load(model, device="cpu") as m:
    ours = m.encode_pixels(np.ascontiguousarray(pixels))
for cli_file in ("cli_pixels.safetensors", "cli_images.safetensors"):
    cli = read(work / cli_file)
    assert sorted(cli) == sorted(ours), (sorted(cli), sorted(ours))
    for name, a in cli.items():
        d = float(np.max(np.abs(a - ours[name])))
        print(f"  {name} {list(a.shape)}: max |package - CLI {cli_file}| = {d}")
        assert d == 0.0, name
EOF
ok "load + encode through the package: max diff 0 against the CLI"
ls "$cache_home"/distorch-vision/graphs/model-*/manifest.json >/dev/null 2>&1 \
  || fail "no export under $cache_home/distorch-vision/graphs (installed, exports go to the user cache)"
ok "exports in the user cache ($cache_home/distorch-vision/graphs)"

# The node's own tests, on a copy of the tests outside the clone, the node folder copied into
# a custom_nodes folder, the installed package. torch, transformers and pytest come from the
# test venv through a .pth appended after this venv's own packages (so distorch_vision, numpy
# and onnxruntime stay this venv's), removed afterwards.
cp -r "$root/python/tests" "$work/tests"
rm -rf "$work/tests/__pycache__" "$work/tests"/*/__pycache__
overlay="$cpu_site/zz-dv-test-tools.pth"
"$test_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$overlay"
in_venv "$cpu" env DISTORCH_TEST_INSTALLED=1 DISTORCH_TEST_CHECKOUT="$root" \
  python -m pytest -q -p no:cacheprovider "$work/tests/test_comfyui_node.py" \
  || fail "the node's tests against the installed package"
rm -f "$overlay"
ok "the node's tests against the installed package"

written=$( { find "$cpu_site" -type f -newer "$marker" ! -path "$overlay"
             find "$root" -path "$root/.git" -prune -o -type f -newer "$marker" -print; } | head -20)
[ -z "$written" ] || fail "written into site-packages or the clone:
$written"
ok "nothing written into site-packages or the clone"

# --- 3. the crate: what `cargo package` ships, and `cargo install --path .` ---------------------
files=$(cd "$root" && cargo package --list --allow-dirty --quiet 2>/dev/null) || fail "cargo package --list failed"
for want in Cargo.toml Cargo.lock src/lib.rs src/main.rs distorch_vision.h plugin.toml README.md; do
  grep -qx "$want" <<<"$files" || fail "cargo package leaves out $want"
done
extra=$(grep -vE '^(src/.*\.rs|Cargo\.toml|Cargo\.toml\.orig|Cargo\.lock|\.cargo_vcs_info\.json|README\.md|distorch_vision\.h|plugin\.toml|docs/[a-z-]+\.md)$' <<<"$files" || true)
[ -z "$extra" ] || fail "cargo package ships files the build does not need:
$extra"
meta=$(cd "$root" && cargo metadata --no-deps --format-version 1 --offline)
"$py" -c 'import json,sys; p=json.loads(sys.argv[1])["packages"][0]; missing=[k for k in ("license","description","repository") if not p.get(k)]; sys.exit(f"Cargo.toml lacks {missing}" if missing else 0)' "$meta" \
  || fail "crate metadata"
ok "cargo package: $(wc -l <<<"$files") files (sources, header, plugin.toml, docs), license/description/repository set"

# --debug with the clone's target dir: the build test.sh has just made (a release install
# compiles the same sources with optimisations).
t=$(now)
cargo install --quiet --locked --debug --path "$root" --root "$work/cargo" \
  --target-dir "${CARGO_TARGET_DIR:-$root/target}" 2>&1 | grep -v "^warning: be sure to add" || true
[ -x "$work/cargo/bin/distorch-vision" ] || fail "cargo install --path . installed no distorch-vision"
out=$(in_venv "$cpu" "$work/cargo/bin/distorch-vision" --version)
[ "$out" = "distorch-vision $version" ] || fail "the cargo-installed CLI printed '$out'"
# Outside the checkout it finds ONNX Runtime through python3 (here the [cpu] venv's).
in_venv "$cpu" "$work/cargo/bin/distorch-vision" encode --model "$fixture_model" \
  --pixels "$work/pixels.safetensors" --out "$work/cargo.safetensors" -q \
  || fail "the cargo-installed CLI cannot encode"
ok "cargo install --path . gives a working CLI ($(since "$t") s)"

# --- 4. the bare wheel -------------------------------------------------------------------------
bare="$work/bare"
secs=$(make_venv "$bare" "$wheel")
say "pip install <wheel> (no extra): $secs s"
bare_site=$(site_of "$bare")
set +e
err=$(in_venv "$bare" distorch-vision encode --model "$fixture_model" --images "${images[0]}" \
  --out "$work/bare.safetensors" 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] || fail "bare install: encode exited $rc, want 1 ($err)"
[ "$(wc -l <<<"$err")" = 1 ] || fail "bare install: more than one line on stderr:
$err"
for want in 'distorch-vision[cpu]' 'distorch-vision[gpu]' \
  "$bare_site/onnxruntime/capi/libonnxruntime.so*" "$bare/bin/libonnxruntime.so*" "python3 on PATH"; do
  grep -qF -- "$want" <<<"$err" || fail "bare install: the message lacks '$want':
$err"
done
say "  $err"
in_venv "$bare" python - "$fixture_model" "$bare_site" <<'EOF' || fail "bare install: the package's load error (above)"
import sys
import distorch_vision as dv
model, site = sys.argv[1], sys.argv[2]
try:
    dv.load(model, device="cpu")
except dv.DistorchError as e:
    msg = e.message
else:
    sys.exit("load succeeded without ONNX Runtime")
for want in ("distorch-vision[cpu]", "distorch-vision[gpu]", f"{site}/onnxruntime/capi/libonnxruntime.so*",
             f"{site}/distorch_vision/lib/libonnxruntime.so*"):
    assert want in msg, (want, msg)
EOF
ok "bare install: one message naming both extras and every place looked in (CLI and package)"

in_venv "$bare" python -m pip install --quiet --disable-pip-version-check --no-index \
  --find-links "$wh" "onnxruntime==$old_ort" || fail "pip install onnxruntime==$old_ort"
set +e
err=$(in_venv "$bare" distorch-vision encode --model "$fixture_model" --images "${images[0]}" \
  --out "$work/old.safetensors" 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "ONNX Runtime $old_ort at $bare_site/onnxruntime/capi/" <<<"$err" \
  && grep -qF "needs: 1.31 or newer" <<<"$err" \
  || fail "onnxruntime $old_ort: exit $rc, message: $err"
say "  $err"
in_venv "$bare" python - "$fixture_model" "$old_ort" <<'EOF' || fail "onnxruntime $old_ort: the package's load error (above)"
import sys
import distorch_vision as dv
try:
    dv.load(sys.argv[1], device="cpu")
except dv.DistorchError as e:
    assert f"ONNX Runtime {sys.argv[2]} at" in e.message and "1.31 or newer" in e.message, e.message
else:
    sys.exit("load succeeded with an ONNX Runtime too old")
EOF
ok "ONNX Runtime $old_ort refused with its version and the one needed (CLI and package)"

# --- 5. <wheel>[gpu] ---------------------------------------------------------------------------
gpu="$work/gpu"
secs=$(make_venv "$gpu" "$wheel[gpu]")
say "pip install <wheel>[gpu]: $secs s"
gpu_site=$(site_of "$gpu")
in_venv "$gpu" distorch-vision devices --json >"$work/devices.json" || fail "devices --json failed"
in_venv "$gpu" python - "$work/devices.json" "$gpu_site" <<'EOF' || fail "devices in the [gpu] venv (above)"
import json, sys
status = json.load(open(sys.argv[1]))["cuda_provider"]
site = sys.argv[2]
print("  ", {k: status[k] for k in ("driver", "provider_in_build", "ort_library", "reason")})
assert status["ort_library"].startswith(f"{site}/onnxruntime/capi/libonnxruntime.so."), status
assert status["provider_in_build"] is True and status["driver"] is False, status
missing = [l["name"] for l in status["libraries"] if not (l["path"] or "").startswith(f"{site}/nvidia/")]
assert not missing, f"CUDA libraries not found in the venv's nvidia wheels: {missing}"
assert "no CUDA driver" in status["reason"], status
EOF
in_venv "$gpu" distorch-vision encode --model "$fixture_model" --pixels "$work/pixels.safetensors" \
  --device cpu --out "$work/gpu_venv.safetensors" -q || fail "encode on cpu in the [gpu] venv"
ok "[gpu]: onnxruntime-gpu found, CUDA provider in the build, its libraries found, no driver"

rm -rf "$work"     # gigabytes of venvs: part of the step's time
say "wheel $wheel_kib KiB; pip install [cpu] $cpu_install_s s; all install checks $(since "$t_all") s"
say "$passed passed, 0 failed"
