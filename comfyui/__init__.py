"""ComfyUI custom node: CLIPVisionLoaderDisTorch2MultiGPU backed by distorch-vision.

Link or copy this folder into ``ComfyUI/custom_nodes/``. The ``distorch_vision`` package is
taken from the checkout this folder belongs to (``../python``, following a symlink), else
from the Python environment (``pip install ./python``).
"""

import sys
from pathlib import Path

_checkout_python = Path(__file__).resolve().parent.parent / "python"
if (_checkout_python / "distorch_vision" / "__init__.py").is_file():
    if str(_checkout_python) not in sys.path:
        sys.path.insert(0, str(_checkout_python))
try:
    import distorch_vision  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        "distorch-vision's ComfyUI node needs the distorch_vision package: link this folder from a "
        "distorch-vision checkout (it uses ../python), or `pip install <checkout>/python` into "
        f"ComfyUI's Python environment ({e})"
    ) from e

# After the check above, so a missing package gets its message rather than a bare ImportError.
from .clip_vision_node import CLIPVisionLoaderDisTorch2MultiGPU, DisTorchClipVision, Output  # noqa: E402

NODE_CLASS_MAPPINGS = {
    "CLIPVisionLoaderDisTorch2MultiGPU": CLIPVisionLoaderDisTorch2MultiGPU,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPVisionLoaderDisTorch2MultiGPU": "Load CLIP Vision (DisTorch2, MultiGPU)",
}

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "CLIPVisionLoaderDisTorch2MultiGPU",
    "DisTorchClipVision",
    "Output",
]
