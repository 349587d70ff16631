#!/usr/bin/env python3
"""Encode images through the distorch-vision plugin the way a Python host would: ctypes only
(numpy used when present, PIL when present for image folders).

  encode_with_plugin.py --model M.safetensors --pixels P.safetensors --out DIR
  encode_with_plugin.py --model M.safetensors --images FOLDER --out DIR   (needs PIL)

--pixels takes a safetensors file with one NCHW f32 tensor of preprocessed pixels (as the
CLI's `encode --pixels`); --images loads every image of a folder as float 0..1 HWC, stacks
those of one size into a ComfyUI IMAGE batch and calls dv_encode_image (which resizes,
crops and normalises). Writes DIR/outputs.safetensors (always) and DIR/<name>.npy (with
numpy), and prints each output's shape.
"""

import argparse
import ctypes as C
import json
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:  # optional
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


# --------------------------------------------------------------------------- the C ABI
# Its own bindings, not the distorch_vision package's: this host runs without numpy or
# site-packages (tests/valgrind.rs runs it with `python -S`), which the package needs;
# tests/integration/capi_mirrors.rs holds these structs and signatures to the header.

class LoadOptions(C.Structure):
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


DV_OK = 0
DV_CROP = {"center": 0, "none": 1}
ABI_VERSION = 1


class PluginError(RuntimeError):
    pass


def library_name():
    """The library file for this OS, from plugin.toml."""
    key = {"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux")
    try:
        import tomllib  # Python 3.11+

        with open(ROOT / "plugin.toml", "rb") as f:
            return tomllib.load(f)["plugin"]["library"][key]
    except Exception:
        return {"linux": "libdistorch_vision.so", "macos": "libdistorch_vision.dylib",
                "windows": "distorch_vision.dll"}[key]


def find_plugin():
    env = os.environ.get("DISTORCH_VISION_PLUGIN")
    if env:
        return Path(env)
    name = library_name()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for sub in ("release", "debug", "debug/deps", "release/deps"):
        p = target / sub / name
        if p.is_file():
            return p
    raise SystemExit(f"{name} not found under {target}; build it or pass --plugin")


class Plugin:
    def __init__(self, path):
        self.lib = lib = C.CDLL(str(path))
        u64, st, sz = C.c_uint64, C.c_int32, C.c_size_t
        fp = C.POINTER(C.c_float)
        sigs = {
            "dv_version": (C.c_char_p, []),
            "dv_abi_version": (C.c_uint32, []),
            "dv_status_string": (C.c_char_p, [st]),
            "dv_last_error": (C.c_char_p, []),
            "dv_init": (st, [C.c_char_p]),
            "dv_string_free": (st, [C.c_void_p]),
            "dv_load_options_init": (st, [C.POINTER(LoadOptions), sz]),
            "dv_model_load": (st, [C.POINTER(LoadOptions), C.POINTER(u64)]),
            "dv_model_unload": (st, [u64]),
            "dv_model_plan_json": (st, [u64, C.POINTER(C.c_void_p)]),
            "dv_model_image_size": (st, [u64, C.POINTER(C.c_uint32)]),
            "dv_encode_pixels": (st, [u64, fp, sz, sz, sz, sz, sz, C.c_char_p, sz, C.POINTER(u64)]),
            "dv_encode_image": (st, [u64, fp, sz, sz, sz, sz, sz, C.c_int32, C.c_char_p, sz,
                                     C.POINTER(u64)]),
            "dv_outputs_count": (st, [u64, C.POINTER(sz)]),
            "dv_outputs_get_index": (st, [u64, sz, C.POINTER(Tensor)]),
            "dv_outputs_free": (st, [u64]),
        }
        for name, (res, args) in sigs.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        if lib.dv_abi_version() != ABI_VERSION:
            raise PluginError(f"plugin ABI {lib.dv_abi_version()}, this script speaks {ABI_VERSION}")

    def check(self, status, what):
        if status != DV_OK:
            name = self.lib.dv_status_string(status).decode()
            msg = self.lib.dv_last_error().decode(errors="replace")
            raise PluginError(f"{what}: {name}: {msg}")

    def take_string(self, p):
        s = C.string_at(p.value).decode()
        self.check(self.lib.dv_string_free(p), "dv_string_free")
        return s

    def init(self, ort_library=None):
        self.check(self.lib.dv_init(ort_library.encode() if ort_library else None), "dv_init")

    def load(self, clip_vision, **kw):
        o = LoadOptions()
        self.check(self.lib.dv_load_options_init(C.byref(o), C.sizeof(o)), "options")
        o.clip_vision = str(clip_vision).encode()
        for k in ("device", "donor_device", "expert_mode_allocations", "graphs_dir", "dtype",
                  "donor_policy"):
            if kw.get(k) is not None:
                setattr(o, k, str(kw[k]).encode())
        if kw.get("virtual_vram_gb") is not None:
            o.virtual_vram_gb = kw["virtual_vram_gb"]
        if kw.get("eject_models") is not None:
            o.eject_models = 1 if kw["eject_models"] else 0
        h = C.c_uint64(0)
        self.check(self.lib.dv_model_load(C.byref(o), C.byref(h)), "dv_model_load")
        return h.value

    def plan(self, model):
        p = C.c_void_p()
        self.check(self.lib.dv_model_plan_json(model, C.byref(p)), "plan")
        return json.loads(self.take_string(p))

    def image_size(self, model):
        s = C.c_uint32(0)
        self.check(self.lib.dv_model_image_size(model, C.byref(s)), "image size")
        return s.value

    def _collect(self, out):
        """Copies every tensor of an outputs object, then frees it: [(name, shape, floats)]."""
        try:
            n = C.c_size_t(0)
            self.check(self.lib.dv_outputs_count(out, C.byref(n)), "count")
            res = []
            for i in range(n.value):
                t = Tensor()
                t.struct_size = C.sizeof(Tensor)
                self.check(self.lib.dv_outputs_get_index(out, i, C.byref(t)), "get")
                shape = [t.shape[k] for k in range(t.ndim)]
                buf = (C.c_float * t.numel).from_address(t.data)
                values = np.array(buf, dtype=np.float32).reshape(shape) if np else list(buf)
                res.append((t.name.decode(), shape, values))
            return res
        finally:
            self.lib.dv_outputs_free(out)

    def encode_pixels(self, model, arr, shape, outputs=None, batch_size=0):
        """arr: a ctypes float array holding B*C*H*W values; shape: (B, C, H, W)."""
        out = C.c_uint64(0)
        self.check(self.lib.dv_encode_pixels(
            model, C.cast(arr, C.POINTER(C.c_float)), C.sizeof(arr) // 4, *shape,
            outputs.encode() if outputs else None, batch_size, C.byref(out)), "dv_encode_pixels")
        return self._collect(out.value)

    def encode_image(self, model, arr, shape, crop="center", outputs=None, batch_size=0):
        """arr: a ctypes float array holding B*H*W*C values in 0..1; shape: (B, H, W, C)."""
        out = C.c_uint64(0)
        self.check(self.lib.dv_encode_image(
            model, C.cast(arr, C.POINTER(C.c_float)), C.sizeof(arr) // 4, *shape, DV_CROP[crop],
            outputs.encode() if outputs else None, batch_size, C.byref(out)), "dv_encode_image")
        return self._collect(out.value)

    def unload(self, model):
        self.check(self.lib.dv_model_unload(model), "unload")


# --------------------------------------------------------------------------- safetensors

def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} parsed by hand."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[a:b])
    return out


def write_safetensors(path, tensors, metadata=None):
    """tensors: [(name, shape, values)] of f32."""
    header, blobs, offset = {}, [], 0
    for name, shape, values in tensors:
        raw = values.astype("<f4").tobytes() if np is not None and hasattr(values, "astype") \
            else struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------- inputs

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def load_images(folder):
    """Groups of (paths, HWC float 0..1 buffers) by size, for dv_encode_image."""
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("--images needs Pillow (PIL), which is not installed; use --pixels")
    groups = {}
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() not in IMAGE_EXT:
            continue
        im = Image.open(p).convert("RGB")
        w, h = im.size
        raw = im.tobytes()
        vals = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) / 255.0 if np is not None \
            else [v / 255.0 for v in raw]
        groups.setdefault((h, w), []).append((p, vals))
    return groups


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugin", type=Path, help="the plugin library (default: target/ of the checkout)")
    ap.add_argument("--ort-library", help="libonnxruntime.so.1.31.1 (default: the plugin's search)")
    ap.add_argument("--model", required=True, help="clip_vision: a .safetensors path")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pixels", type=Path, help="safetensors file with one NCHW f32 tensor")
    src.add_argument("--images", type=Path, help="folder of images (needs PIL)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--crop", choices=sorted(DV_CROP), default="center")
    ap.add_argument("--outputs", help="comma-separated output names (default: all)")
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--device")
    ap.add_argument("--virtual-vram-gb", type=float)
    ap.add_argument("--donor-device")
    ap.add_argument("--expert-mode-allocations")
    ap.add_argument("--eject-models", choices=["true", "false"])
    ap.add_argument("--graphs-dir")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "int8"])
    ap.add_argument("--donor-policy", choices=["stream", "execute"])
    args = ap.parse_args(argv)

    # Read the inputs first, so a missing file or PIL fails before any model work.
    if args.pixels:
        tensors = read_safetensors(args.pixels)
        if len(tensors) != 1:
            raise SystemExit(f"{args.pixels}: expected one tensor, found {len(tensors)}")
        (dtype, shape, raw), = tensors.values()
        if dtype != "F32" or len(shape) != 4:
            raise SystemExit(f"{args.pixels}: need one F32 NCHW tensor, got {dtype} {shape}")
    else:
        groups = load_images(args.images)
        if not groups:
            raise SystemExit(f"{args.images}: no images ({', '.join(sorted(IMAGE_EXT))})")

    plugin = Plugin(args.plugin or find_plugin())
    plugin.init(args.ort_library)
    model = plugin.load(
        args.model, device=args.device, virtual_vram_gb=args.virtual_vram_gb,
        donor_device=args.donor_device, expert_mode_allocations=args.expert_mode_allocations,
        eject_models=None if args.eject_models is None else args.eject_models == "true",
        graphs_dir=args.graphs_dir, dtype=args.dtype, donor_policy=args.donor_policy)
    try:
        plan = plugin.plan(model)
        print(f"model {args.model}: compute device {plan['compute_device']}, mode {plan['mode']}, "
              f"{len(plan['blocks'])} blocks", file=sys.stderr)
        results = []  # [(label, [(name, shape, values)])]
        if args.pixels:
            buf = (C.c_float * (len(raw) // 4)).from_buffer_copy(raw)
            results.append((args.pixels.stem, plugin.encode_pixels(
                model, buf, shape, args.outputs, args.batch_size)))
        else:
            for (h, w), items in groups.items():
                if np is not None:
                    flat = np.ascontiguousarray(np.concatenate([v for _, v in items]), dtype=np.float32)
                    buf = (C.c_float * flat.size).from_buffer(flat)
                else:
                    vals = [x for _, v in items for x in v]
                    buf = (C.c_float * len(vals))(*vals)
                names = ", ".join(p.name for p, _ in items)
                print(f"{len(items)} images {h}x{w}: {names}", file=sys.stderr)
                results.append((f"{h}x{w}", plugin.encode_image(
                    model, buf, (len(items), h, w, 3), args.crop, args.outputs, args.batch_size)))
    finally:
        plugin.unload(model)

    args.out.mkdir(parents=True, exist_ok=True)
    many = len(results) > 1
    for label, outs in results:
        prefix = f"{label}." if many else ""
        for name, shape, values in outs:
            print(f"{prefix}{name} {shape}")
            if np is not None:
                np.save(args.out / f"{prefix}{name}.npy", values)
        write_safetensors(args.out / f"{prefix}outputs.safetensors", outs,
                          {"model": str(args.model), "plugin": plugin.lib.dv_version().decode()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
