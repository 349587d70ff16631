"""A loaded model (``dv_model``): load, plan, encode, close."""

from __future__ import annotations

import ctypes as C
import json
import os
import threading
import warnings
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from .arrays import F32Buffer, copy_tensor
from .errors import DistorchError
from .library import CROP_CODES, LoadOptions, Tensor, lib
from .outputs import Outputs

PathLike = Union[str, "os.PathLike[str]"]


def _opt(value: Any) -> Optional[bytes]:
    return None if value is None else os.fspath(value).encode()


def _image_floats(images: Any) -> Any:
    """A ComfyUI IMAGE as floats in 0..1: uint8 (0..255) is scaled by 1/255, other integer and
    bool types are refused (their scale is unknown), and floats far above 1 draw a warning
    (0..255 floats give wrong embeddings without any error)."""
    from .arrays import is_torch

    if is_torch(images):
        import torch

        if images.dtype == torch.uint8:
            return images.detach().float() / 255.0
        if not images.dtype.is_floating_point:
            _reject_image_dtype(str(images.dtype).replace("torch.", ""))
        peak = float(images.detach().max()) if images.numel() else 0.0
    else:
        if not isinstance(images, np.ndarray):
            try:
                images = np.asarray(images)
            except (TypeError, ValueError):
                return images  # F32Buffer reports what cannot be read
        if images.dtype == np.uint8:
            return images.astype(np.float32) * np.float32(1.0 / 255.0)
        if images.dtype.kind in "biu":
            _reject_image_dtype(str(images.dtype))
        if images.dtype.kind != "f":
            return images  # F32Buffer reports what cannot be read
        peak = float(images.max()) if images.size else 0.0
    if peak > 1.5:
        warnings.warn(
            f"images has values up to {peak:g}; encode_images takes floats in 0..1 (a ComfyUI IMAGE) "
            "or uint8 in 0..255: divide 0..255 floats by 255",
            UserWarning,
            stacklevel=3,
        )
    return images


def _reject_image_dtype(dtype: str) -> None:
    raise DistorchError(
        "DV_ERR_INVALID_ARGUMENT",
        f"images has dtype {dtype}; valid: floats in 0..1 (a ComfyUI IMAGE) or uint8 in 0..255",
    )


def _flag(name: str, value: Any) -> int:
    """A strict bool: a string such as "false" would otherwise read as True."""
    if isinstance(value, (bool, np.bool_)):
        return 1 if value else 0
    raise DistorchError(
        "DV_ERR_INVALID_ARGUMENT", f"{name} is {value!r}; valid: True or False (a bool)"
    )


def _text(name: str, value: Any) -> Optional[bytes]:
    """An optional string or path argument; anything else names the field."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return _opt(value)
    raise DistorchError(
        "DV_ERR_INVALID_ARGUMENT", f"{name} is {value!r}; valid: a string (or None for the default)"
    )


def _output_list(outputs: Union[None, str, Iterable[str]]) -> Optional[bytes]:
    """None = every output the model returns by default; a name or names otherwise."""
    if outputs is None:
        return None
    if isinstance(outputs, str):
        return outputs.encode()
    return ",".join(outputs).encode()


def _crop_code(crop: Union[str, bool]) -> int:
    # ComfyUI's encode_image passes crop=True/False; CLIPVisionEncode's combo says center/none.
    if crop is True:
        return CROP_CODES["center"]
    if crop is False:
        return CROP_CODES["none"]
    code = CROP_CODES.get(str(crop).lower()) if isinstance(crop, str) else None
    if code is None:
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"crop is {crop!r}; valid: 'center' (or True), 'none' (or False)",
        )
    return code


class Model:
    """A CLIP Vision model loaded by the library, its blocks placed by the DisTorch2 planner.

    Use as a context manager or call :meth:`close`. Several threads may encode at once.
    """

    def __init__(self, handle: int, clip_vision: str) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self.clip_vision = clip_vision
        L = lib()
        size = C.c_uint32(0)
        L.check(L.dv_model_image_size(handle, C.byref(size)), "dv_model_image_size")
        self._image_size = int(size.value)
        self._output_names = tuple(json.loads(L.call_string("dv_model_outputs_json", handle)))

    # ------------------------------------------------------------------ properties

    @property
    def handle(self) -> int:
        """The library's model id; raises once the model is closed."""
        if not self._handle:
            raise DistorchError("DV_ERR_INVALID_HANDLE", f"model {self.clip_vision} is closed")
        return self._handle

    @property
    def closed(self) -> bool:
        return not self._handle

    @property
    def image_size(self) -> int:
        """The input size S: encode_pixels takes [B, 3, S, S]."""
        return self._image_size

    @property
    def output_names(self) -> tuple[str, ...]:
        """What an encode returns by default (contract §3 order); others only on request."""
        return self._output_names

    def plan(self) -> dict:
        """The placement plan (contract §5.4): compute_device, mode, model_bytes, blocks, devices, warnings."""
        return json.loads(lib().call_string("dv_model_plan_json", self.handle))

    def plan_table(self) -> str:
        """The plan as the table the CLI's ``plan`` prints."""
        return lib().call_string("dv_model_plan_text", self.handle)

    def identity(self) -> dict:
        """What decides this model's rows: ``model_id`` (content hash of the weights, the
        export's id), ``family``, ``config`` and ``dtype`` — what a sharded ``encode --resume``
        compares."""
        L = lib()
        if not L.has("dv_model_identity_json"):
            raise DistorchError("DV_ERR_RUNTIME",
                                f"{L.path} does not export dv_model_identity_json; rebuild it (scripts/setup.sh)")
        return json.loads(L.call_string("dv_model_identity_json", self.handle))

    # ------------------------------------------------------------------ encoding

    def encode_pixels(
        self,
        pixels: Any,
        outputs: Union[None, str, Sequence[str]] = None,
        batch_size: int = 0,
        as_torch: bool = False,
    ) -> Outputs:
        """Encodes preprocessed pixels, NCHW f32 [B, 3, S, S] (as the CLI's ``encode --pixels``).

        ``pixels``: a numpy array or torch tensor (not copied when contiguous f32 on the CPU).
        ``outputs``: None for the model's default outputs, else names (a list or "a,b").
        ``batch_size``: images per forward pass, 0 = the library's default.
        Returns numpy arrays by name, or torch tensors with ``as_torch=True``.
        """
        buf = F32Buffer(pixels, "pixels")
        if len(buf.shape) != 4:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"pixels has shape {list(buf.shape)}; encode_pixels takes "
                f"[B, 3, {self.image_size}, {self.image_size}] (NCHW f32, preprocessed)",
            )
        b, c, h, w = buf.shape
        L = lib()
        out = C.c_uint64(0)
        L.check(
            L.dv_encode_pixels(
                self.handle, buf.pointer(), buf.numel, b, c, h, w,
                _output_list(outputs), _batch(batch_size), C.byref(out),
            ),
            "dv_encode_pixels",
        )
        return _collect(out.value, as_torch)

    def encode_images(
        self,
        images: Any,
        crop: Union[str, bool] = "center",
        outputs: Union[None, str, Sequence[str]] = None,
        batch_size: int = 0,
        as_torch: bool = False,
    ) -> Outputs:
        """Encodes a ComfyUI IMAGE batch: [B, H, W, C] floats in 0..1, C = 3 or 4.

        uint8 images (0..255) are scaled by 1/255; other integer types raise
        :class:`DistorchError`, and floats above 1.5 warn (0..255 floats need dividing by 255).

        The library preprocesses it exactly as ComfyUI's ``clip_preprocess`` (contract §4):
        ``crop="center"`` (or True) scales the short side to S and crops the centre,
        ``crop="none"`` (or False) resizes to S×S. A single [H, W, C] image is taken as B = 1.
        Other arguments as :meth:`encode_pixels`.
        """
        code = _crop_code(crop)
        buf = F32Buffer(_image_floats(images), "images")
        shape = buf.shape
        if len(shape) == 3:
            shape = (1,) + tuple(shape)
        if len(shape) != 4:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"images has shape {list(buf.shape)}; encode_images takes an IMAGE [B, H, W, C] "
                "(floats in 0..1, C = 3 or 4)",
            )
        b, h, w, c = shape
        L = lib()
        out = C.c_uint64(0)
        L.check(
            L.dv_encode_image(
                self.handle, buf.pointer(), buf.numel, b, h, w, c, code,
                _output_list(outputs), _batch(batch_size), C.byref(out),
            ),
            "dv_encode_image",
        )
        return _collect(out.value, as_torch)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Unloads the model (its sessions and buffers). Calling it again is a no-op."""
        with self._lock:
            handle, self._handle = self._handle, 0
        if handle:
            L = lib()
            if not L.shut_down:
                L.check(L.dv_model_unload(handle), "dv_model_unload")

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: the library may already be gone

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"image_size={self.image_size}"
        return f"<distorch_vision.Model {self.clip_vision!r} {state}>"


def _batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"batch_size is {batch_size!r}; valid: an integer ≥ 1, or 0 for the default",
        )
    return batch_size


def _collect(handle: int, as_torch: bool) -> Outputs:
    """Copies every tensor of an outputs object into numpy (or torch), then frees it."""
    L = lib()
    res = Outputs()
    try:
        n = C.c_size_t(0)
        L.check(L.dv_outputs_count(handle, C.byref(n)), "dv_outputs_count")
        for i in range(n.value):
            t = Tensor()
            t.struct_size = C.sizeof(Tensor)
            L.check(L.dv_outputs_get_index(handle, i, C.byref(t)), "dv_outputs_get_index")
            name, arr = copy_tensor(t)
            res[name] = arr
    finally:
        L.dv_outputs_free(handle)
    if as_torch:
        import torch

        for k in list(res):
            res[k] = torch.from_numpy(res[k])
    return res


def load(
    clip_vision: PathLike,
    device: Optional[str] = None,
    virtual_vram_gb: float = 4.0,
    donor_device: str = "cpu",
    expert_mode_allocations: str = "",
    eject_models: bool = True,
    dtype: Optional[str] = None,
    comfyui_path: Optional[PathLike] = None,
    extra_model_paths: Optional[PathLike] = None,
    graphs_dir: Optional[PathLike] = None,
    donor_policy: Optional[str] = None,
    micro_batch: Optional[int] = None,
) -> Model:
    """Loads a CLIP Vision model: the loader inputs of contract §1 as keyword arguments.

    ``clip_vision``: a ``.safetensors`` path, or a name in ``<comfyui_path>/models/clip_vision``
    (default ``$COMFYUI_PATH``) and the ``clip_vision:`` folders of ``extra_model_paths``.
    ``device``: ``"cpu"`` or ``"cuda:N"``; None = ``cuda:0`` when a GPU exists, else ``cpu``.
    ``virtual_vram_gb``: GiB of weights moved off ``device`` onto ``donor_device`` (0–128).
    ``expert_mode_allocations``: e.g. ``"cuda:0,60%;cpu,*"``; when set it alone decides placement.
    ``eject_models``: release other loaded models from ``device`` first (a bool; strings such
    as ``"false"`` raise rather than read as True).
    ``dtype``: ``"fp32"`` (default, ComfyUI parity), ``"fp16"`` (CUDA) or ``"int8"`` (CPU).
    ``graphs_dir``: where exported block graphs are kept (default: the library's).
    ``donor_policy``: blocks homed on the CPU while ``device`` is a GPU: ``"stream"`` their
    weights each pass (default) or ``"execute"`` them on the CPU.
    ``micro_batch``: cut each encode into micro-batches of N images that flow through the
    plan's device segments concurrently (the CLI's ``--micro-batch``); None = off.
    Bad values raise :class:`DistorchError` naming the field and the valid choices.
    """
    L = lib()
    o = LoadOptions()
    o.micro_batch = 1  # a sentinel: a library that knows version 4 resets it to 0
    L.check(L.dv_load_options_init(C.byref(o), C.sizeof(o)), "dv_load_options_init")
    if o.micro_batch != 0 and (donor_policy is not None or micro_batch is not None):
        raise DistorchError(
            "DV_ERR_RUNTIME",
            f"{L.path} predates dv_load_options version 4 (donor_policy, micro_batch); rebuild it (scripts/setup.sh)",
        )
    o.micro_batch = 0
    name = os.fspath(clip_vision)
    o.clip_vision = name.encode()
    o.device = _text("device", device)
    try:
        if isinstance(virtual_vram_gb, (str, bytes, bool)):
            raise TypeError  # float("4") or float(True) would hide a wrong argument
        o.virtual_vram_gb = float(virtual_vram_gb)
    except (TypeError, ValueError):
        raise DistorchError(
            "DV_ERR_INVALID_ARGUMENT",
            f"virtual_vram_gb is {virtual_vram_gb!r}; valid: a number from 0.0 to 128.0",
        ) from None
    o.donor_device = _text("donor_device", donor_device)
    o.expert_mode_allocations = _text("expert_mode_allocations", expert_mode_allocations)
    o.eject_models = _flag("eject_models", eject_models)
    o.dtype = _text("dtype", dtype)
    o.comfyui_path = _text("comfyui_path", comfyui_path)
    o.extra_model_paths = _text("extra_model_paths", extra_model_paths)
    o.graphs_dir = _text("graphs_dir", graphs_dir)
    o.donor_policy = _text("donor_policy", donor_policy)
    if micro_batch is not None:
        if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"micro_batch is {micro_batch!r}; valid: an integer ≥ 1, or None (off)",
            )
        o.micro_batch = micro_batch
    h = C.c_uint64(0)
    L.check(L.dv_model_load(C.byref(o), C.byref(h)), "dv_model_load")
    try:
        return Model(h.value, name)
    except BaseException:
        L.dv_model_unload(h.value)
        raise
