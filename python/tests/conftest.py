"""Test setup: the package from this checkout, every dependency present (a missing one stops
the run with the reason, never a skip), exports in a temporary folder."""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

_NEEDED = {
    "numpy": "numpy",
    "torch": "torch",
    "transformers": "transformers",
    "safetensors": "safetensors (installed with transformers)",
    "PIL": "pillow",
}
_missing = [pkg for mod, pkg in _NEEDED.items() if importlib.util.find_spec(mod) is None]
if _missing:
    raise pytest.UsageError(
        f"the Python tests need {', '.join(_missing)}, missing from {sys.executable}; "
        "run scripts/test.sh (it makes the environment from python/requirements-test.txt) or "
        "`pip install -r python/requirements-test.txt`"
    )

# Exported graphs go to a folder of this run, not the checkout's graphs/.
os.environ.setdefault("DISTORCH_GRAPHS_DIR", tempfile.mkdtemp(prefix="dv-pytest-graphs-"))


@pytest.fixture(scope="session")
def library_path():
    """The library under test; a missing one fails every test with the package's message."""
    import distorch_vision as dv

    return dv.library_path()
