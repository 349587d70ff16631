"""Finding ``libdistorch_vision`` and binding its C ABI (``distorch_vision.h``) with ctypes.

This is the package's only boundary to the library: every other module calls the functions
bound here, through :func:`lib` and :func:`check`.
"""

from __future__ import annotations

import atexit
import ctypes as C
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from .errors import DistorchError, LibraryNotFoundError

#: The ABI version this package speaks (``DV_ABI_VERSION`` of the header).
ABI_VERSION = 1

#: ``DV_CROP_*`` codes of ``dv_encode_image``.
CROP_CODES = {"center": 0, "none": 1}

#: ``DV_DTYPE_*`` codes of output tensors → numpy dtype names.
DTYPES = {1: "float32", 2: "int64"}

ENV_LIBRARY = "DISTORCH_VISION_LIBRARY"
SETUP_HINT = (
    "install the distorch-vision wheel (it carries {name}), or run `scripts/setup.sh` in a "
    "distorch-vision checkout (it builds target/release/{name}), or set " + ENV_LIBRARY
    + " to the library's path"
)

PACKAGE_DIR = Path(__file__).resolve().parent


class LoadOptions(C.Structure):
    """``dv_load_options``, its newest version (the header's fields, in order; the library reads
    as many as ``struct_size`` covers). tests/integration/capi_sync.rs holds it to the header."""

    _fields_ = [
        ("struct_size", C.c_size_t),
        ("clip_vision", C.c_char_p),
        ("device", C.c_char_p),
        ("virtual_vram_gb", C.c_double),
        ("donor_device", C.c_char_p),
        ("expert_mode_allocations", C.c_char_p),
        ("eject_models", C.c_int32),
        ("graphs_dir", C.c_char_p),
        ("comfyui_path", C.c_char_p),
        ("extra_model_paths", C.c_char_p),
        # version 2
        ("dtype", C.c_char_p),
        # version 3
        ("donor_policy", C.c_char_p),
        # version 4
        ("micro_batch", C.c_size_t),
        # version 5
        ("cpu_engine", C.c_char_p),
        ("openvino_ep", C.c_char_p),
    ]


class Tensor(C.Structure):
    """``dv_tensor`` (held to the header like :class:`LoadOptions`)."""

    _fields_ = [
        ("struct_size", C.c_size_t),
        ("name", C.c_char_p),
        ("data", C.c_void_p),
        ("dtype", C.c_int32),
        ("ndim", C.c_size_t),
        ("shape", C.POINTER(C.c_int64)),
        ("numel", C.c_size_t),
        ("nbytes", C.c_size_t),
    ]


_u64, _st, _sz = C.c_uint64, C.c_int32, C.c_size_t
_fp = C.POINTER(C.c_float)
_i64p = C.POINTER(C.c_int64)
_str_out = C.POINTER(C.c_void_p)

# name → (restype, argtypes), as the header declares them (tests/integration/capi_sync.rs
# checks); every one must be exported.
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "dv_version": (C.c_char_p, []),
    "dv_abi_version": (C.c_uint32, []),
    "dv_status_string": (C.c_char_p, [_st]),
    "dv_last_error": (C.c_char_p, []),
    "dv_init": (_st, [C.c_char_p]),
    "dv_list_devices": (_st, [_str_out]),
    "dv_string_free": (_st, [C.c_void_p]),
    "dv_live_objects": (_st, [C.POINTER(_sz), C.POINTER(_sz), C.POINTER(_sz)]),
    "dv_load_options_init": (_st, [C.POINTER(LoadOptions), _sz]),
    "dv_model_load": (_st, [C.POINTER(LoadOptions), C.POINTER(_u64)]),
    "dv_model_unload": (_st, [_u64]),
    "dv_model_plan_json": (_st, [_u64, _str_out]),
    "dv_model_plan_text": (_st, [_u64, _str_out]),
    "dv_model_outputs_json": (_st, [_u64, _str_out]),
    "dv_model_info_json": (_st, [_u64, _str_out]),
    "dv_model_image_size": (_st, [_u64, C.POINTER(C.c_uint32)]),
    "dv_encode_pixels": (_st, [_u64, _fp, _sz, _sz, _sz, _sz, _sz, C.c_char_p, _sz, C.POINTER(_u64)]),
    "dv_encode_image": (
        _st,
        [_u64, _fp, _sz, _sz, _sz, _sz, _sz, C.c_int32, C.c_char_p, _sz, C.POINTER(_u64)],
    ),
    "dv_outputs_count": (_st, [_u64, C.POINTER(_sz)]),
    "dv_outputs_get_index": (_st, [_u64, _sz, C.POINTER(Tensor)]),
    "dv_outputs_free": (_st, [_u64]),
}

# Bound when the library has them (added to the C ABI after version 1 shipped).
_OPTIONAL: dict[str, tuple[Any, list[Any]]] = {
    "dv_shutdown": (_st, []),
    # used by distorch_vision.ray: encoded file bytes → 3×S×S pixels, as the CLI's encode --images
    "dv_preprocess_encoded": (
        _st, [_u64, C.c_char_p, _sz, C.c_char_p, C.c_int32, _fp, _sz],
    ),
    # SigLIP2 naflex models: patching, patches with their grids, encoded bytes → patches
    "dv_model_patching": (_st, [_u64, C.POINTER(C.c_uint32), C.POINTER(C.c_uint32)]),
    "dv_encode_patches": (
        _st, [_u64, _fp, _sz, _sz, _sz, _sz, _i64p, _sz, C.c_char_p, _sz, C.POINTER(_u64)],
    ),
    "dv_preprocess_encoded_patches": (
        _st, [_u64, C.c_char_p, _sz, C.c_char_p, _fp, _sz, _i64p],
    ),
    # used by distorch_vision.ray's resume: the weights' content id, family, config, dtype
    "dv_model_identity_json": (_st, [_u64, _str_out]),
}


def library_name() -> str:
    """The library's file name on this OS (as in plugin.toml)."""
    if sys.platform == "darwin":
        return "libdistorch_vision.dylib"
    if sys.platform == "win32":
        return "distorch_vision.dll"
    return "libdistorch_vision.so"


def checkout_root() -> Optional[Path]:
    """The distorch-vision checkout this package sits in (``<root>/python/distorch_vision``)."""
    root = PACKAGE_DIR.parent.parent
    try:
        if 'name = "distorch-vision"' in (root / "Cargo.toml").read_text():
            return root
    except OSError:
        pass
    return None


def candidates() -> list[tuple[str, Path]]:
    """Where the library is looked for, in order, with where each place came from."""
    name = library_name()
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return [(ENV_LIBRARY, Path(env))]
    out = [("inside the installed package", PACKAGE_DIR / "lib" / name)]
    root = checkout_root()
    if root is not None:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
        if not target.is_absolute():
            target = root / target
        out.append(("the checkout's release build", target / "release" / name))
    return out


def find_library() -> Path:
    """The first candidate that exists, else :class:`LibraryNotFoundError` naming setup.sh."""
    tried = candidates()
    for _, path in tried:
        if path.is_file():
            return path
    looked = ", ".join(f"{p} ({where})" for where, p in tried)
    raise LibraryNotFoundError(
        f"{library_name()} not found (looked in: {looked}); "
        + SETUP_HINT.format(name=library_name())
    )


class Library:
    """The loaded library with its functions bound."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.cdll = C.CDLL(str(path))
        except OSError as e:
            raise LibraryNotFoundError(
                f"cannot load {path}: {e}; " + SETUP_HINT.format(name=library_name())
            ) from None
        for name, (res, args) in _SIGNATURES.items():
            try:
                f = getattr(self.cdll, name)
            except AttributeError:
                raise LibraryNotFoundError(
                    f"{path} does not export {name}: it is older than this package; rebuild it ("
                    + SETUP_HINT.format(name=library_name())
                    + ")"
                ) from None
            f.restype, f.argtypes = res, args
        for name, (res, args) in _OPTIONAL.items():
            f = getattr(self.cdll, name, None)
            if f is not None:
                f.restype, f.argtypes = res, args
        abi = self.cdll.dv_abi_version()
        if abi != ABI_VERSION:
            raise LibraryNotFoundError(
                f"{path} has C ABI version {abi}; this package speaks version {ABI_VERSION}"
            )
        self.shut_down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cdll, name)

    def has(self, name: str) -> bool:
        """True when the library exports ``name``."""
        return getattr(self.cdll, name, None) is not None

    def check(self, status: int, what: str = "") -> None:
        """Raises :class:`DistorchError` with the status name and message unless ``status`` is DV_OK."""
        if status == 0:
            return
        name = (self.cdll.dv_status_string(status) or b"DV_ERR_UNKNOWN").decode()
        msg = (self.cdll.dv_last_error() or b"").decode(errors="replace")
        raise DistorchError(name, f"{what}: {msg}" if what and not msg else msg)

    def take_string(self, p: C.c_void_p) -> str:
        """Copies a library-owned string out and frees it."""
        try:
            if not p.value:
                raise DistorchError("DV_ERR_RUNTIME", "the library returned NULL instead of a string")
            return C.string_at(p.value).decode()
        finally:
            self.cdll.dv_string_free(p)

    def call_string(self, fn: str, *args: Any) -> str:
        """Calls ``fn(*args, char **out)`` and returns the string it hands back."""
        p = C.c_void_p()
        self.check(getattr(self.cdll, fn)(*args, C.byref(p)), fn)
        return self.take_string(p)

    def shutdown(self) -> None:
        """``dv_shutdown()`` when the library has it (an orderly exit of ONNX Runtime's threads)."""
        if self.shut_down:
            return
        self.shut_down = True
        f = getattr(self.cdll, "dv_shutdown", None)
        if f is not None:
            f()


_lock = threading.Lock()
_lib: Optional[Library] = None


def _interpreter_onnxruntime() -> Optional[str]:
    """libonnxruntime of this interpreter's ``onnxruntime`` package (``onnxruntime`` or
    ``onnxruntime-gpu``, any version: the library refuses one too old), if it has one."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.origin:
        return None
    return newest_onnxruntime(Path(spec.origin).parent / "capi")


def newest_onnxruntime(folder: Path) -> Optional[str]:
    """The newest ``libonnxruntime.so.<version>`` in ``folder`` (else ``libonnxruntime.so``),
    as the library's own search picks one."""
    best: Optional[tuple[tuple[int, ...], Path]] = None
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for p in entries:
        rest = p.name[len("libonnxruntime.so"):] if p.name.startswith("libonnxruntime.so") else None
        if rest is None or not p.is_file():
            continue
        parts = rest[1:].split(".") if rest.startswith(".") else ([] if rest == "" else None)
        if parts is None or not all(x.isdigit() for x in parts):
            continue
        version = tuple(int(x) for x in parts)
        if best is None or version > best[0]:
            best = (version, p)
    return str(best[1]) if best else None


def lib() -> Library:
    """The library, loaded on first use (so ``import distorch_vision`` never fails for it)."""
    global _lib
    with _lock:
        if _lib is None:
            path = find_library()
            loaded = Library(path)
            # A library copied into site-packages cannot see a checkout's .runtime/; the
            # library's own search asks `python3`, which may not be this interpreter.
            if (
                path.parent == PACKAGE_DIR / "lib"
                and not os.environ.get("ORT_DYLIB_PATH")
                and (ort := _interpreter_onnxruntime())
            ):
                loaded.dv_init(ort.encode())  # a failure resurfaces, with its message, at load
            atexit.register(loaded.shutdown)
            _lib = loaded
        return _lib


def init(ort_library: Optional[str] = None) -> None:
    """Loads ONNX Runtime now (``dv_init``); optional, the first load does it.

    ``ort_library`` is the path of ``libonnxruntime.so.<version>`` (1.31 or newer) or its folder;
    None uses the library's search (``ORT_DYLIB_PATH``, the checkout's ``.runtime/``, the
    ``onnxruntime`` package of this environment or of ``python3``).
    """
    L = lib()
    L.check(L.dv_init(ort_library.encode() if ort_library else None), "dv_init")


def version() -> str:
    """The library's version string."""
    return lib().dv_version().decode()


def devices() -> list[dict]:
    """The devices this process sees: ``[{"device", "name", "total_bytes", "free_bytes", …}]``."""
    L = lib()
    return json.loads(L.call_string("dv_list_devices"))


def live_objects() -> dict[str, int]:
    """Counts of the library's live models, outputs and strings (for leak checks)."""
    L = lib()
    m, o, s = C.c_size_t(), C.c_size_t(), C.c_size_t()
    L.check(L.dv_live_objects(C.byref(m), C.byref(o), C.byref(s)), "dv_live_objects")
    return {"models": m.value, "outputs": o.value, "strings": s.value}
