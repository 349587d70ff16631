#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the ONNX Runtime library and its OpenVINO plugin
# (scripts/setup.sh --openvino) and
# valgrind (tests/valgrind.rs runs the hosts under memcheck), then the Rust unit and
# integration tests (one `integration` binary from tests/integration/, plus one binary for each
# tests/*.rs that needs a process of its own; they also run the exported graphs through the
# stock onnxruntime Python package, and the C and Python plugin hosts), then the Python package
# and ComfyUI node tests (pytest) in a virtual environment made from
# python/requirements-test.txt and cached in ~/.cache/distorch-vision/venv-<hash>, with two small
# tool environments for the Ray tests cached beside it (s3-server-<hash>, clip-retrieval-<hash>).
# The Python code's habits (ruff, mypy) run first, from python/requirements-lint.txt in
# lint-<hash>.
#
# The Python tests load the debug library and CLI that `cargo test` has just built (no second,
# optimised compile of the crate: the tests check results, and ONNX Runtime does the math).
# DISTORCH_TEST_VENV=DIR uses an existing environment instead of the cached one.
#
# Last, scripts/test_install.sh builds the wheel (scripts/build_wheel.sh: manylinux_2_28,
# release code, its own cached target dir) and tests it installed as users install it, in
# fresh virtual environments outside the clone: [cpu], no extra, [gpu], and `cargo install`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/distorch-vision"

# cached_venv REQUIREMENTS PREFIX [PIP OPTION...]: a virtual environment made from a
# requirements file, cached in $cache/<prefix>-<hash of the file>; it is complete only once its
# marker exists, so an interrupted one is made again. Prints its path.
cached_venv() {
  local req=$1 prefix=$2 venv; shift 2
  venv="$cache/$prefix-$(sha256sum "$req" | cut -c1-12)"
  if [ ! -f "$venv/.complete" ]; then
    echo "test: creating the Python environment $venv (from $req)" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2 || { echo "test: '$py -m venv' failed; install Python ≥ 3.9 with venv" >&2; return 1; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" -r "$req" >&2 || {
      echo "test: installing $req into $venv failed (network? see pip's message above)" >&2; return 1; }
    touch "$venv/.complete"
  else
    echo "test: reusing the Python environment $venv" >&2
  fi
  echo "$venv"
}

# Habits first, warnings denied (they need no ONNX Runtime; clippy and rustdoc share the
# dependency checks): formatting, lints, documentation; then the Python code's (ruff, mypy;
# their caches outside the checkout).
cargo fmt --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
lint=$(cached_venv "$root/python/requirements-lint.txt" lint)
"$lint/bin/ruff" check --no-cache --config python/pyproject.toml python comfyui
"$lint/bin/mypy" --config-file python/pyproject.toml --cache-dir "$lint/mypy-cache" python comfyui
# ONNX Runtime, and the OpenVINO plugin (tests/integration/openvino.rs: parity on any CPU,
# bf16 where the CPU has AMX or AVX512_BF16).
scripts/setup.sh --no-build --openvino

# valgrind, from the distribution's packages when missing (Debian/Ubuntu, as root).
if ! valgrind --version >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "error: valgrind is missing and cannot be installed here (needs root and apt-get);" \
            "install it (apt-get install valgrind) and run again" >&2
        exit 1
    fi
    echo "installing valgrind (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends valgrind; } >&2; then
        echo "error: apt-get could not install valgrind; install it and run again" >&2
        exit 1
    fi
    valgrind --version >/dev/null 2>&1 || { echo "error: valgrind still does not run after installing it" >&2; exit 1; }
fi

cargo test --all-targets 2>&1

# --- Python: the package over the C ABI, and the ComfyUI node -------------------------------
if [ -n "${DISTORCH_TEST_VENV:-}" ]; then
  venv=$DISTORCH_TEST_VENV
else
  venv=$(cached_venv "$root/python/requirements-test.txt" venv)
fi
# Tools the Ray tests run in processes of their own, each a complete pinned closure installed
# without resolving (--no-deps): moto's S3-compatible server, and clip-retrieval's reader with
# autofaiss (numpy<2 and pandas<3, which the test venv above cannot hold).
s3=$(cached_venv "$root/python/requirements-s3-server.txt" s3-server --no-deps)
clip=$(cached_venv "$root/python/requirements-clip-retrieval.txt" clip-retrieval --no-deps)
export DISTORCH_TEST_S3_SERVER_PYTHON="$s3/bin/python"
export DISTORCH_TEST_CLIP_RETRIEVAL_PYTHON="$clip/bin/python"

# Uplift the debug cdylib and CLI that cargo test built (a no-op compile).
cargo build --lib --bins --quiet
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target="$root/$target" ;; esac
export DISTORCH_VISION_LIBRARY="$target/debug/libdistorch_vision.so"
export DISTORCH_VISION_CLI="$target/debug/distorch-vision"
"$venv/bin/python" -m pytest -p no:cacheprovider "$root/python/tests" -q

# --- The wheel, installed as a user installs it ----------------------------------------------
"$root/scripts/test_install.sh" "$venv"
