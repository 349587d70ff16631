"""Test setup: the package from this checkout, every dependency present (a missing one stops
the run with the reason, never a skip), exports in a temporary folder.

With ``DISTORCH_TEST_INSTALLED=1`` (scripts/test_install.sh, which runs a copy of these tests
outside the clone) the package is the one installed in this Python instead, and exports go
where an installed package puts them by default; ``DISTORCH_TEST_CHECKOUT`` names the clone
whose fixtures the tests read."""

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

INSTALLED = os.environ.get("DISTORCH_TEST_INSTALLED") == "1"
ROOT = Path(os.environ.get("DISTORCH_TEST_CHECKOUT") or Path(__file__).resolve().parents[2])
if not INSTALLED:
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

if INSTALLED:
    _spec = importlib.util.find_spec("distorch_vision")
    if _spec is None or _spec.origin is None or Path(_spec.origin).resolve().is_relative_to(ROOT):
        raise pytest.UsageError(
            f"DISTORCH_TEST_INSTALLED=1 needs distorch_vision installed outside {ROOT}, "
            f"found {_spec.origin if _spec else 'none'}")
else:
    # Exported graphs go to a folder of this run (removed at exit), not the checkout's graphs/.
    if "DISTORCH_GRAPHS_DIR" not in os.environ:
        _graphs = tempfile.mkdtemp(prefix="dv-pytest-graphs-")
        os.environ["DISTORCH_GRAPHS_DIR"] = _graphs
        atexit.register(shutil.rmtree, _graphs, ignore_errors=True)


@pytest.fixture(scope="session")
def library_path():
    """The library under test; a missing one fails every test with the package's message."""
    import distorch_vision as dv

    return dv.library_path()


@pytest.fixture(scope="session")
def ray_local(library_path):
    """One local Ray instance for the in-process Ray tests (2 CPUs, ``address="local"``: never
    a cluster left on the machine), its files and token in a temporary folder; the environment
    the actors inherit names the library under test and a dummy S3 identity (moto accepts any)."""
    import shutil

    from ray_helpers import ray_env, short_tmp

    tmp = short_tmp("dvray-")
    saved = dict(os.environ)
    env = ray_env(tmp)  # from the current environment (graphs folder of this run included)
    os.environ.clear()
    os.environ.update(env, DISTORCH_VISION_LIBRARY=str(library_path),
                      AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_EC2_METADATA_DISABLED="true")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
