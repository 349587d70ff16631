"""Copies the checkout's release library into the package when building a wheel, so a
non-editable `pip install ./python` carries it (run `scripts/setup.sh` first). Editable
installs and imports from the checkout find it in target/release instead."""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
NAMES = {"darwin": "libdistorch_vision.dylib", "win32": "distorch_vision.dll"}
LIB = NAMES.get(sys.platform, "libdistorch_vision.so")


def release_library():
    target = Path(os.environ.get("CARGO_TARGET_DIR") or HERE.parent / "target")
    if not target.is_absolute():
        target = HERE.parent / target
    return target / "release" / LIB


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = release_library()
        if lib.is_file():
            dest = Path(self.build_lib) / "distorch_vision" / "lib"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, dest / LIB)
        else:
            print(f"distorch-vision: {lib} not built; the installed package will ask for "
                  "scripts/setup.sh (or DISTORCH_VISION_LIBRARY)", file=sys.stderr)


class PlatformDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=PlatformDistribution)
