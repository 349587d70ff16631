#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the ONNX Runtime library (scripts/setup.sh),
# then the Rust unit and integration tests (which also run the exported graphs through the
# stock onnxruntime Python package, and the C and Python plugin hosts).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Habits first, warnings denied (they need no ONNX Runtime; clippy and rustdoc share the
# dependency checks): formatting, lints, documentation.
cargo fmt --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
scripts/setup.sh --no-build
cargo test --all-targets 2>&1
