"""ComfyUI custom node: a CLIP Vision loader (DisTorch2, MultiGPU) backed by distorch-vision.

Copy or clone this folder into ``ComfyUI/custom_nodes/`` and ``pip install -r requirements.txt``
in ComfyUI's Python (ComfyUI-Manager does both): the ``distorch_vision`` package comes from that
environment. Linked from a distorch-vision checkout, it uses the checkout's ``../python``
(following the symlink) instead. It never writes into this folder or the checkout: exported
graphs go to the user cache (``dv.user_graphs_dir()``). The node registers as
``DistorchVisionCLIPVisionLoader``, and as ComfyUI-MultiGPU's
``CLIPVisionLoaderDisTorch2MultiGPU`` when no other node pack provides that key (see
``registration``).
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
        "distorch-vision's ComfyUI node needs the distorch_vision package in ComfyUI's Python "
        "environment: `pip install -r requirements.txt` in this folder (or install the "
        "distorch-vision wheel), or link this folder from a distorch-vision checkout, which "
        f"uses its ../python ({e})"
    ) from e

# After the check above, so a missing package gets its message rather than a bare ImportError.
from .clip_vision_node import (  # noqa: E402
    CLIPVisionLoaderDisTorch2MultiGPU,
    DisTorchClipVision,
    DistorchVisionCLIPVisionLoader,
    Output,
)
from .registration import NODE_KEY, SEED_KEY, mappings  # noqa: E402

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(
    DistorchVisionCLIPVisionLoader, CLIPVisionLoaderDisTorch2MultiGPU, Path(__file__).parent
)

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "NODE_KEY",
    "SEED_KEY",
    "CLIPVisionLoaderDisTorch2MultiGPU",
    "DistorchVisionCLIPVisionLoader",
    "DisTorchClipVision",
    "Output",
]
