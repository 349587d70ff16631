"""distorch-vision from Python: CLIP Vision encoders as per-block ONNX Runtime sessions placed
across GPUs and the CPU by a DisTorch2 planner, over the library's C ABI (ctypes).

    import distorch_vision as dv
    with dv.load("clip_vision_h.safetensors", device="cuda:0", virtual_vram_gb=2.0) as m:
        print(m.plan()["compute_device"])
        out = m.encode_images(image)          # IMAGE [B, H, W, C] in 0..1, crop="center"
        out.image_embeds, out["last_hidden_state"]
        m.encode_files(["a.jpg", "b.png"])    # files (or PIL images) of any sizes

The library (``libdistorch_vision.so``) is found in ``$DISTORCH_VISION_LIBRARY``, inside the
installed package (the wheel's ``distorch_vision/lib/``), or in the checkout's ``target/release``
(``scripts/setup.sh`` builds it). ONNX Runtime comes from this environment's ``onnxruntime`` or
``onnxruntime-gpu`` (the ``[cpu]`` / ``[gpu]`` extras).
"""

from .errors import (
    DistorchError,
    DistorchIOError,
    DoesNotFitError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidModelError,
    LibraryNotFoundError,
    NotFoundError,
    SizeMismatchError,
)
from .library import ABI_VERSION, devices, init, library_name, live_objects, version
from .library import find_library as library_path
from .model import Model, load
from .outputs import Outputs
from .paths import user_graphs_dir

__all__ = [
    "ABI_VERSION",
    "DistorchError",
    "DistorchIOError",
    "DoesNotFitError",
    "InvalidArgumentError",
    "InvalidHandleError",
    "InvalidModelError",
    "LibraryNotFoundError",
    "NotFoundError",
    "SizeMismatchError",
    "Model",
    "Outputs",
    "devices",
    "init",
    "library_name",
    "library_path",
    "live_objects",
    "load",
    "user_graphs_dir",
    "version",
]

__version__ = "0.1.0"
