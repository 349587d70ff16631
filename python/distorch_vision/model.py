"""A loaded model (``dv_model``): load, plan, encode, close."""

from __future__ import annotations

import ctypes as C
import json
import os
import sys
import threading
import warnings
from typing import Any, Iterable, NoReturn, Optional, Sequence, Union

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
        patch, count = C.c_uint32(0), C.c_uint32(0)
        if L.has("dv_model_patching"):
            L.check(L.dv_model_patching(handle, C.byref(patch), C.byref(count)), "dv_model_patching")
        self._patching = (int(patch.value), int(count.value))
        self._output_names = tuple(json.loads(L.call_string("dv_model_outputs_json", handle)))
        self._info = json.loads(L.call_string("dv_model_info_json", handle))

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
        """The input size S: encode_pixels takes [B, 3, S, S]. 0 for a SigLIP2 naflex model,
        which takes patches of a grid per image (:attr:`patch_size`, :attr:`num_patches`)."""
        return self._image_size

    @property
    def naflex(self) -> bool:
        """True for a SigLIP2 naflex model: images keep their aspect ratio and become a grid of
        at most :attr:`num_patches` patches; token outputs hold ``num_patches`` rows an image,
        the first ``rows * cols`` (``spatial_shapes``) its patches, the rest zero."""
        return self._patching[1] > 0

    @property
    def patch_size(self) -> int:
        """A naflex model's patch side P in pixels (a patch is 3·P² floats); 0 otherwise."""
        return self._patching[0]

    @property
    def num_patches(self) -> int:
        """The most patches a naflex model cuts an image into; 0 otherwise."""
        return self._patching[1]

    @property
    def output_names(self) -> tuple[str, ...]:
        """What an encode returns by default (contract §3 order); others only on request."""
        return self._output_names

    @property
    def info(self) -> dict:
        """What the model is: ``path``, ``family`` (e.g. ``"SigLIP so400m/14-384"``), ``kind``
        (``"clip"``, ``"siglip"``, ``"siglip2"`` (naflex), ``"dinov2"``, ``"dinov3"``),
        ``image_size``, ``patch_size``,
        ``hidden_size``, ``num_layers``, ``tokens``, ``llava``, ``outputs`` and ``on_request``
        (outputs computed only when named)."""
        return dict(self._info)

    @property
    def family(self) -> str:
        """The model family, as ``distorch-vision inspect`` names it."""
        return self._info["family"]

    @property
    def kind(self) -> str:
        """``"clip"``, ``"siglip"``, ``"siglip2"`` (naflex), ``"dinov2"`` or ``"dinov3"``."""
        return self._info["kind"]

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
        _need_torch(as_torch)
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

    def encode_patches(
        self,
        patches: Any,
        spatial_shapes: Any,
        outputs: Union[None, str, Sequence[str]] = None,
        batch_size: int = 0,
        as_torch: bool = False,
    ) -> Outputs:
        """Encodes a SigLIP2 naflex model's patches, as Hugging Face's processor gives them.

        ``patches``: [B, T, 3·P²] f32 (T ≤ :attr:`num_patches`), image i's first
        ``rows * cols`` rows its flattened patches (row, column, channel), the rest padding.
        ``spatial_shapes``: [B, 2] integers, each image's grid (rows, cols).
        The result holds ``spatial_shapes`` (int64) besides the outputs; token outputs have
        :attr:`num_patches` rows an image, zero after its own. Other arguments as
        :meth:`encode_pixels`.
        """
        _need_torch(as_torch)
        buf = F32Buffer(patches, "patches")
        if len(buf.shape) != 3:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"patches has shape {list(buf.shape)}; encode_patches takes [B, T, 3·P²] "
                "(flattened patches) with spatial_shapes [B, 2]",
            )
        try:
            shapes = np.ascontiguousarray(
                spatial_shapes.detach().cpu().numpy() if hasattr(spatial_shapes, "detach")
                else spatial_shapes, dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT", f"spatial_shapes cannot be read as integers ({e})"
            ) from None
        b, t, d = buf.shape
        L = lib()
        out = C.c_uint64(0)
        L.check(
            L.dv_encode_patches(
                self.handle, buf.pointer(), buf.numel, b, t, d,
                shapes.ctypes.data_as(C.POINTER(C.c_int64)), shapes.size,
                _output_list(outputs), _batch(batch_size), C.byref(out),
            ),
            "dv_encode_patches",
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
        """Encodes a ComfyUI IMAGE batch: [B, H, W, C] floats in 0..1; C = 3 or 4 (alpha
        dropped), or 1 (grey, broadcast to RGB as ComfyUI does).

        uint8 images (0..255) are scaled by 1/255; other integer types raise
        :class:`DistorchError`, and floats above 1.5 warn (0..255 floats need dividing by 255).

        The library preprocesses it exactly as ComfyUI's ``clip_preprocess`` (contract §4):
        ``crop="center"`` (or True) scales the short side to S and crops the centre,
        ``crop="none"`` (or False) resizes to S×S. A single [H, W, C] image is taken as B = 1.
        A naflex model takes ComfyUI's ``siglip2_preprocess`` instead (contract §4b: the
        aspect ratio kept, ``crop`` without effect) and returns what :meth:`encode_patches`
        does. Other arguments as :meth:`encode_pixels`.
        """
        code = _crop_code(crop)
        _need_torch(as_torch)
        buf = F32Buffer(_image_floats(images), "images")
        shape = buf.shape
        if len(shape) == 3:
            shape = (1,) + tuple(shape)
        if len(shape) != 4:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"images has shape {list(buf.shape)}; encode_images takes an IMAGE [B, H, W, C] "
                "(floats in 0..1, C = 1, 3 or 4)",
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

    def preprocess_encoded(self, data: bytes, name: str = "image", crop: Union[str, bool] = "center") -> np.ndarray:
        """One encoded image file's bytes (PNG, JPEG, WebP, BMP, GIF, TIFF) → [3, S, S] f32
        pixels, by the library's decoder and contract §4 preprocessing, exactly as the CLI's
        ``encode --images``. An unreadable image raises naming ``name``."""
        L = lib()
        if not L.has("dv_preprocess_encoded"):
            raise DistorchError(
                "DV_ERR_RUNTIME", f"{L.path} does not export dv_preprocess_encoded; rebuild it (scripts/setup.sh)"
            )
        code = _crop_code(crop)
        s = self.image_size
        out = np.empty((3, s, s), dtype=np.float32)
        data = bytes(data)
        L.check(
            L.dv_preprocess_encoded(self.handle, data, len(data), name.encode(), code,
                                    out.ctypes.data_as(C.POINTER(C.c_float)), out.size),
            "dv_preprocess_encoded",
        )
        return out

    def preprocess_encoded_patches(self, data: bytes, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """One encoded image file's bytes → a SigLIP2 naflex model's [num_patches, 3·P²] padded
        patch rows and the image's grid [2] (rows, cols, int64), as the CLI's ``encode --images``
        (contract §4b). An unreadable image raises naming ``name``."""
        L = lib()
        if not L.has("dv_preprocess_encoded_patches"):
            raise DistorchError(
                "DV_ERR_RUNTIME",
                f"{L.path} does not export dv_preprocess_encoded_patches; rebuild it (scripts/setup.sh)",
            )
        out = np.empty((self.num_patches, 3 * self.patch_size ** 2), dtype=np.float32)
        grid = np.zeros(2, dtype=np.int64)
        data = bytes(data)
        L.check(
            L.dv_preprocess_encoded_patches(self.handle, data, len(data), name.encode(),
                                            out.ctypes.data_as(C.POINTER(C.c_float)), out.size,
                                            grid.ctypes.data_as(C.POINTER(C.c_int64))),
            "dv_preprocess_encoded_patches",
        )
        return out, grid

    def encode_files(
        self,
        files: Union[Any, Sequence[Any]],
        crop: Union[str, bool] = "center",
        outputs: Union[None, str, Sequence[str]] = None,
        batch_size: int = 0,
        as_torch: bool = False,
    ) -> Outputs:
        """Encodes image files of any sizes: paths (``str`` / ``os.PathLike``) or PIL images,
        one or a list, rows in the order given.

        Each is decoded and preprocessed by the library exactly as the CLI's ``encode --images``
        does it (EXIF orientation, RGB, resize and crop to the model's size, its mean/std); a
        PIL image is oriented by its EXIF and handed over as lossless PNG. A file that cannot
        be read raises (``FileNotFoundError`` for a missing one, ``ValueError`` for one that is
        not an image) naming it. A SigLIP2 naflex model cuts each image into its own patch grid
        (``crop`` has no effect) and the result holds ``spatial_shapes``. Other arguments as
        :meth:`encode_pixels`.
        """
        _need_torch(as_torch)
        if isinstance(files, (str, os.PathLike)) or hasattr(files, "mode"):
            files = [files]
        files = list(files)
        if not files:
            raise DistorchError("DV_ERR_INVALID_ARGUMENT", "files is empty; give at least one path or PIL image")
        if self.naflex:
            # Each image keeps its aspect ratio: its own grid, padded to num_patches rows.
            prepared = [self.preprocess_encoded_patches(*_file_bytes(item, i)) for i, item in enumerate(files)]
            return self.encode_patches(np.stack([p for p, _ in prepared]), np.stack([g for _, g in prepared]),
                                       outputs=outputs, batch_size=batch_size, as_torch=as_torch)
        s = self.image_size
        pixels = np.empty((len(files), 3, s, s), dtype=np.float32)
        for i, item in enumerate(files):
            data, name = _file_bytes(item, i)
            pixels[i] = self.preprocess_encoded(data, name, crop)
        return self.encode_pixels(pixels, outputs=outputs, batch_size=batch_size, as_torch=as_torch)

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
        if self.closed:
            state = "closed"
        elif self.naflex:
            state = f"naflex patch_size={self.patch_size} num_patches={self.num_patches}"
        else:
            state = f"image_size={self.image_size}"
        return f"<distorch_vision.Model {self.clip_vision!r} {state}>"


def _need_torch(as_torch: bool) -> None:
    """``as_torch=True`` needs PyTorch: said before any work is done."""
    if not as_torch:
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            "as_torch=True returns torch tensors, but PyTorch is not installed in this Python "
            f"({sys.executable}); install it (pip install torch), or leave as_torch=False for "
            "numpy arrays", name="torch",
        ) from None


def _file_bytes(item: Any, i: int) -> tuple[bytes, str]:
    """An encode_files item as encoded image bytes and a name for messages: a path is read as
    it is; a PIL image is oriented as its EXIF says (as ComfyUI's LoadImage does) and written
    as lossless PNG, so the library's decoder sees exactly its pixels."""
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        try:
            with open(path, "rb") as f:
                return f.read(), path
        except FileNotFoundError:
            raise DistorchError("DV_ERR_NOT_FOUND", f"{path}: no such file") from None
        except OSError as e:
            raise DistorchError("DV_ERR_IO", f"{path}: {e.strerror or e}") from None
    if hasattr(item, "save") and hasattr(item, "mode"):  # a PIL image
        import io

        from PIL import ImageOps

        img = ImageOps.exif_transpose(item)
        if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue(), getattr(item, "filename", None) or f"image {i}"
    raise DistorchError(
        "DV_ERR_INVALID_ARGUMENT",
        f"files[{i}] is a {type(item).__name__}; valid: a path (str or os.PathLike) or a PIL image",
    )


def _predates(path: Any, version: int, fields: str) -> NoReturn:
    raise DistorchError(
        "DV_ERR_RUNTIME", f"{path} predates dv_load_options version {version} ({fields}); rebuild it (scripts/setup.sh)"
    )


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
    cpu_engine: Optional[str] = None,
    openvino_ep: Optional[PathLike] = None,
) -> Model:
    """Loads a CLIP Vision model: the loader inputs of contract §1 as keyword arguments.

    ``clip_vision``: a ``.safetensors`` path, or a name in ``<comfyui_path>/models/clip_vision``
    (default ``$COMFYUI_PATH``) and the ``clip_vision:`` folders of ``extra_model_paths``.
    ``device``: ``"cpu"``, ``"cuda:N"`` or ``"xpu:N"`` (Intel GPU N, through OpenVINO); None =
    ``cuda:0`` when a CUDA GPU exists, else ``cpu``.
    ``virtual_vram_gb``: GiB of weights moved off ``device`` onto ``donor_device`` (0–128).
    ``expert_mode_allocations``: e.g. ``"cuda:0,60%;cpu,*"``; when set it alone decides placement.
    ``eject_models``: release other loaded models from ``device`` first (a bool; strings such
    as ``"false"`` raise rather than read as True).
    ``dtype``: ``"fp32"`` (default, ComfyUI parity), ``"fp16"`` (GPUs), ``"int8"`` (CPU) or
    ``"bf16"`` (OpenVINO on CPUs with AMX or AVX512_BF16).
    ``donor_policy``: blocks homed on the CPU while ``device`` is a GPU: ``"stream"`` their
    weights to the GPU each pass (default, as DisTorch) or ``"execute"`` them on the CPU.
    ``cpu_engine``: what runs the CPU blocks: ``"auto"`` (default: OpenVINO when its ONNX Runtime
    plugin is installed and the dtype runs there, else ``"mlas"``), ``"mlas"`` or ``"openvino"``.
    ``openvino_ep``: the OpenVINO plugin library or a folder holding it (default: searched,
    ``DISTORCH_OPENVINO_EP`` first; the ``openvino`` extra of this package installs it).
    ``graphs_dir``: where exported block graphs are kept (default: the library's).
    ``micro_batch``: cut each encode into micro-batches of N images that flow through the
    plan's device segments concurrently (the CLI's ``--micro-batch``); None = off.
    Bad values raise :class:`DistorchError` naming the field and the valid choices.
    """
    L = lib()
    o = LoadOptions()
    # Sentinels: a library that knows version 4 resets micro_batch to 0, version 5 cpu_engine to NULL.
    o.micro_batch, o.cpu_engine = 1, b"?"
    L.check(L.dv_load_options_init(C.byref(o), C.sizeof(o)), "dv_load_options_init")
    if micro_batch is not None and o.micro_batch != 0:
        _predates(L.path, 4, "micro_batch")
    if (cpu_engine, openvino_ep) != (None, None) and o.cpu_engine is not None:
        _predates(L.path, 5, "cpu_engine, openvino_ep")
    o.micro_batch, o.cpu_engine = 0, None
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
    o.donor_policy = _text("donor_policy", donor_policy)
    o.cpu_engine = _text("cpu_engine", cpu_engine)
    o.openvino_ep = _text("openvino_ep", openvino_ep)
    o.comfyui_path = _text("comfyui_path", comfyui_path)
    o.extra_model_paths = _text("extra_model_paths", extra_model_paths)
    o.graphs_dir = _text("graphs_dir", graphs_dir)
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
