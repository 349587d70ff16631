#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the ONNX Runtime library (scripts/setup.sh) and
# valgrind (tests/valgrind.rs runs the hosts under memcheck), then the Rust unit and
# integration tests (which also run the exported graphs through the stock onnxruntime Python
# package, and the C and Python plugin hosts).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh --no-build

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
