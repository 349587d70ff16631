"""The wheel: the ``distorch_vision`` package with the crate's cdylib (``lib/libdistorch_vision.so``,
loaded with ctypes), its header and ``plugin.toml`` beside it, and the ``distorch-vision`` CLI as a
script on PATH. setuptools-rust builds both Rust targets from ``../Cargo.toml``.

``scripts/build_wheel.sh`` is the one command: it sets ``CARGO=cargo-zigbuild`` and
``CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu.2.28`` so the code links against glibc 2.28, and
the wheel is tagged ``manylinux_2_28`` from that target. A plain ``pip install ./python`` builds
for this machine's glibc and is tagged ``linux_x86_64`` (usable here only).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustBin, RustExtension
from setuptools_rust.build import build_rust

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = ROOT / "Cargo.toml"
LIB = {"darwin": "libdistorch_vision.dylib", "win32": "distorch_vision.dll"}.get(
    sys.platform, "libdistorch_vision.so")
# Shipped beside the library: a host's plugin folder is the library, its header and manifest.
PLUGIN_FILES = ("distorch_vision.h", "plugin.toml")


def crate_version() -> str:
    """``version`` of Cargo.toml's ``[package]`` (tomllib is 3.11+; the line is simple)."""
    text = MANIFEST.read_text()
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
    if not m:
        sys.exit(f"no version in the [package] table of {MANIFEST}")
    return m.group(1)


def manylinux_tag() -> str | None:
    """``manylinux_2_28_x86_64`` when cargo-zigbuild links for ``<arch>-unknown-linux-gnu.2.28``."""
    m = re.fullmatch(r"(\w+)-unknown-linux-gnu\.2\.(\d+)", os.environ.get("CARGO_BUILD_TARGET", ""))
    return f"manylinux_2_{m.group(2)}_{m.group(1)}" if m else None


class BuildRust(build_rust):
    """The cdylib keeps its own file name (setuptools-rust would add the interpreter's
    extension-module suffix, as for a Python module; ctypes loads ours by name)."""

    def get_dylib_ext_path(self, ext: RustExtension, target_fname: str) -> str:
        build_ext = self.get_finalized_command("build_ext")
        path = Path(build_ext.get_ext_fullpath(target_fname))
        return str(path.with_name(LIB))


class BuildPy(build_py):
    """Copies the header and plugin.toml into ``distorch_vision/lib/`` beside the library."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "distorch_vision" / "lib"
        dest.mkdir(parents=True, exist_ok=True)
        for name in PLUGIN_FILES:
            shutil.copy2(ROOT / name, dest / name)


class BdistWheel(bdist_wheel):
    """``py3-none-<platform>``: no Python extension module, any Python 3 (ctypes only); the
    platform is the glibc the code was linked for."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", manylinux_tag() or plat


setup(
    version=crate_version(),
    rust_extensions=[
        # `cargo build` first: the library (rlib + cdylib, as Cargo.toml lists them) and the
        # CLI in one pass; the cdylib step below then finds the same unit fresh.
        RustBin("distorch-vision", path=str(MANIFEST)),
        RustExtension(
            "distorch_vision.lib.libdistorch_vision",
            path=str(MANIFEST),
            binding=Binding.NoBinding,
            args=["--crate-type", "rlib,cdylib"],
        ),
    ],
    cmdclass={"build_rust": BuildRust, "build_py": BuildPy, "bdist_wheel": BdistWheel},
    zip_safe=False,
)
