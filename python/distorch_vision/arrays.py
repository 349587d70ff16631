"""Input buffers for the C calls (numpy arrays or torch tensors, no copy when already
contiguous f32 in host memory) and output tensors copied into numpy arrays."""

from __future__ import annotations

import ctypes as C
from typing import Any

import numpy as np

from .errors import DistorchError
from .library import DTYPES, Tensor


def is_torch(x: Any) -> bool:
    """True for a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


class F32Buffer:
    """A contiguous f32 view of an array for the duration of one call.

    Holds whatever object owns the memory, so the pointer stays valid while it lives.
    """

    def __init__(self, x: Any, what: str) -> None:
        if is_torch(x):
            t = x.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            if t.dtype != _torch_float32(t):
                t = t.float()
            if not t.is_contiguous():
                t = t.contiguous()
            self.owner = t
            self.shape = tuple(int(d) for d in t.shape)
            self.ptr = t.data_ptr()
            self.numel = t.numel()
        else:
            try:
                a = np.ascontiguousarray(x, dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise DistorchError(
                    "DV_ERR_INVALID_ARGUMENT",
                    f"{what}: cannot be read as an f32 array ({e}); pass a numpy array or a torch tensor",
                ) from None
            self.owner = a
            self.shape = a.shape
            self.ptr = a.ctypes.data
            self.numel = a.size

    def pointer(self) -> Any:
        """The data as ``float *`` for ctypes."""
        return C.cast(C.c_void_p(self.ptr), C.POINTER(C.c_float))


def _torch_float32(t: Any) -> Any:
    import torch  # only reached with a torch tensor in hand

    return torch.float32


def copy_tensor(t: Tensor) -> tuple[str, np.ndarray]:
    """Copies one borrowed ``dv_tensor`` into a numpy array (before its outputs are freed)."""
    name = t.name.decode()
    shape = tuple(t.shape[k] for k in range(t.ndim))
    dtype = DTYPES.get(t.dtype)
    if dtype is None:
        raise DistorchError(
            "DV_ERR_RUNTIME",
            f"output {name} has dtype code {t.dtype}, which this package does not know "
            f"(known: {sorted(DTYPES)})",
        )
    out = np.empty(shape, dtype=dtype)
    if out.nbytes != t.nbytes:
        raise DistorchError(
            "DV_ERR_SIZE_MISMATCH",
            f"output {name}: {t.nbytes} bytes for shape {list(shape)} of {dtype}",
        )
    if t.nbytes:
        C.memmove(out.ctypes.data, t.data, t.nbytes)
    return name, out
