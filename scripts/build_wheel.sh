#!/usr/bin/env bash
# Builds the wheel users install without Rust:
#   dist/distorch_vision-<version>-py3-none-manylinux_2_28_x86_64.whl
# holding the Python package, libdistorch_vision.so with distorch_vision.h and plugin.toml
# (distorch_vision/lib/), and the distorch-vision CLI (a script on PATH once installed).
#
# setuptools-rust builds the crate's cdylib and CLI (python/setup.py); cargo-zigbuild links them
# with zig against glibc 2.28, so they run on any manylinux_2_28 system although this machine's
# glibc is newer; `auditwheel show` then proves the tag. The tools are pinned in
# python/requirements-build.txt and installed once into ~/.cache/distorch-vision/build-tools-<hash>.
# Cargo builds into ~/.cache/distorch-vision/wheel-target (DISTORCH_WHEEL_TARGET_DIR overrides),
# profile `wheel`, so a rebuild from another clone on this machine recompiles only the crate.
# Prints the wheel's path last (stdout); everything else goes to stderr.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/distorch-vision"
glibc=2.28
arch=x86_64
say() { echo "build_wheel: $*" >&2; }

if [ "$(uname -m)" != "$arch" ] || [ "$(uname -s)" != Linux ]; then
  say "builds $arch Linux wheels only (this is $(uname -s) $(uname -m))"; exit 1
fi
command -v cargo >/dev/null || { say "cargo is missing: building the wheel needs a Rust toolchain"; exit 1; }

# --- the build tools, in a cached venv keyed by the pins ---------------------------------
req="$root/python/requirements-build.txt"
tools="$cache/build-tools-$(sha256sum "$req" | cut -c1-12)"
mkdir -p "$cache"
if [ ! -f "$tools/.complete" ]; then
  say "installing the build tools into $tools (from $req)"
  rm -rf "$tools"
  "$py" -m venv "$tools" || { say "'$py -m venv' failed; install Python >= 3.9 with venv"; exit 1; }
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" || {
    say "installing $req into $tools failed (network? see pip's message above)"; exit 1; }
  touch "$tools/.complete"
fi

# --- the build ------------------------------------------------------------------------------
export PATH="$tools/bin:$PATH"            # cargo-zigbuild, and `python3 -m ziglang` for zig
export CARGO=cargo-zigbuild               # setuptools-rust runs `$CARGO build` / `$CARGO rustc`
export CARGO_BUILD_TARGET="$arch-unknown-linux-gnu.$glibc"
export SETUPTOOLS_RUST_CARGO_PROFILE=wheel
export CARGO_TARGET_DIR="${DISTORCH_WHEEL_TARGET_DIR:-$cache/wheel-target}"
export ZIG_GLOBAL_CACHE_DIR="$cache/zig"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS   # another value would rebuild every dependency

out="$root/dist"
staging=$(mktemp -d "${TMPDIR:-/tmp}/dv-wheel.XXXXXX")
trap 'rm -rf "$staging"' EXIT
start=$(date +%s)
# One build at a time in the shared target dir (clones on one machine share it).
exec 9>"$cache/wheel-target.lock"
flock 9
rm -rf "$root/python/build"               # stale files there would be packed
say "building (cargo-zigbuild, target $CARGO_BUILD_TARGET, target dir $CARGO_TARGET_DIR)"
# --no-build-isolation: the pinned tools above, not whatever the index has today.
(cd "$root/python" && "$tools/bin/python" -m pip wheel --quiet --disable-pip-version-check \
  --no-build-isolation --no-deps --wheel-dir "$staging" .) >&2
rm -rf "$root/python/build"
flock -u 9
wheels=("$staging"/distorch_vision-*.whl)
[ -f "${wheels[0]}" ] || { say "pip wheel wrote no distorch_vision wheel into $staging"; exit 1; }
wheel=${wheels[0]}
tag="manylinux_${glibc//./_}_$arch"
case "$(basename "$wheel")" in
  *-py3-none-"$tag".whl) ;;
  *) say "$(basename "$wheel") is not tagged py3-none-$tag"; exit 1 ;;
esac

# auditwheel reads the symbol versions and linked libraries of every ELF file in the wheel and
# names the most compatible tag they allow; the wheel's own tag must be that or newer.
report=$("$tools/bin/auditwheel" show "$wheel" 2>&1) || { echo "$report" >&2; say "auditwheel show failed"; exit 1; }
# (It wraps its lines: join them first.)
allowed=$(tr -s ' \n' '  ' <<<"$report" | sed -n 's/.*consistent with the following platform tag: "\([^"]*\)".*/\1/p')
if [ -z "$allowed" ]; then
  echo "$report" >&2; say "auditwheel show named no platform tag"; exit 1
fi
allowed_minor=$(sed -n 's/^manylinux_2_\([0-9]*\)_.*/\1/p' <<<"$allowed")
[ "$allowed" = manylinux2014_$arch ] && allowed_minor=17
if [ -z "$allowed_minor" ] || [ "$allowed_minor" -gt "${glibc#2.}" ]; then
  echo "$report" >&2; say "auditwheel allows only $allowed, newer than $tag"; exit 1
fi

mkdir -p "$out"
rm -f "$out"/distorch_vision-*.whl
mv "$wheel" "$out/"
wheel="$out/$(basename "$wheel")"
say "auditwheel: consistent with $allowed (tagged $tag)"
say "$(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB, built in $(( $(date +%s) - start )) s"
echo "$wheel"
