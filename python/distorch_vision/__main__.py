"""``python -m distorch_vision devices|plan|encode``: thin calls into the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

from . import DistorchError, devices, load

DESCRIPTION = "distorch-vision from Python: list devices, plan a model's placement, or encode images."

EXAMPLES = """\
examples:
  python -m distorch_vision devices
  python -m distorch_vision plan clip_vision_h.safetensors --device cuda:0 --virtual-vram-gb 2
  python -m distorch_vision encode MODEL --images photo.jpg scans/ --out emb.npz
  python -m distorch_vision encode MODEL --image image.npy --crop none --out emb.npz
  python -m distorch_vision encode MODEL --pixels pixels.npy --outputs image_embeds --out emb.npz

--images takes image files (any sizes) decoded and preprocessed by the library as the CLI's
`encode --images` does; --image a ComfyUI IMAGE array [B, H, W, C] in 0..1 (.npy); --pixels an
NCHW f32 array already preprocessed (.npy). Outputs go to one .npz, written under the name
given (with --images also `sources`, the file of each row, folders expanded); an existing --out
is replaced only if this program wrote it. The full command line is the `distorch-vision`
program (sharded runs, YAML, ...)."""

#: The entry of every .npz written here that says so: only such a file is ever replaced.
PRODUCER = "distorch-vision"


def _loader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .safetensors path, or a name in the clip_vision folders")
    p.add_argument("--device", help="cpu, cuda:N or xpu:N (default: cuda:0 when a GPU exists, else cpu)")
    p.add_argument("--virtual-vram-gb", type=float, default=4.0,
                   help="GiB of weights moved off --device onto --donor-device (default: 4.0)")
    p.add_argument("--donor-device", default="cpu", help="where moved weights live (default: cpu)")
    p.add_argument("--expert-mode-allocations", default="",
                   help="e.g. 'cuda:0,60%%;cpu,*'; when set it alone decides placement")
    p.add_argument("--eject-models", choices=["true", "false"], default="true",
                   help="release other loaded models from --device first (default: true)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8", "bf16"],
                   help="compute precision (default: fp32; bf16: OpenVINO on CPUs with AMX or AVX512_BF16)")
    p.add_argument("--donor-policy", choices=["stream", "execute"],
                   help="CPU-homed blocks with a GPU --device: stream their weights, or execute on the CPU")
    p.add_argument("--micro-batch", type=int, help="micro-batches of N through the device segments")
    p.add_argument("--cpu-engine", choices=["auto", "mlas", "openvino"],
                   help="what runs the CPU blocks (default: auto, OpenVINO when its plugin is installed, else mlas)")
    p.add_argument("--openvino-ep", help="the OpenVINO plugin library, or a folder holding it")
    p.add_argument("--comfyui", help="ComfyUI folder whose models/clip_vision holds models (default: $COMFYUI_PATH)")
    p.add_argument("--extra-model-paths", help="an extra_model_paths.yaml")


def _load(a: argparse.Namespace):
    return load(a.model, device=a.device, virtual_vram_gb=a.virtual_vram_gb,
                donor_device=a.donor_device, expert_mode_allocations=a.expert_mode_allocations,
                eject_models=a.eject_models == "true", dtype=a.dtype, donor_policy=a.donor_policy,
                micro_batch=a.micro_batch, cpu_engine=a.cpu_engine, openvino_ep=a.openvino_ep,
                comfyui_path=a.comfyui, extra_model_paths=a.extra_model_paths)


def _read_npy(path: str) -> np.ndarray:
    a = np.load(path)
    if not isinstance(a, np.ndarray):  # an .npz holds several arrays
        raise ValueError(f"{path} is not a .npy array (an .npz archive?); save one array with np.save")
    return a


def _image_files(paths: list[str]) -> list[str]:
    """Files as given, folders expanded to their image files (sorted, as the CLI does)."""
    from .ray.inputs import _walk_local

    out: list[str] = []
    for p in paths:
        out.extend(_walk_local(p) if os.path.isdir(p) else [p])
    if not out:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"no image files found in {', '.join(paths)}")
    return out


def _check_out(path: str) -> None:
    """Refuses an --out that exists and is not an .npz this program wrote (as the CLI's
    `encode`: never a picture, a model or someone else's array)."""
    if not os.path.lexists(path):
        return
    ours = False
    try:
        z = np.load(path, allow_pickle=False)  # an .npz archive, an .npy array, or neither
    except (OSError, ValueError, EOFError):
        z = None
    if isinstance(z, np.lib.npyio.NpzFile):
        with z:
            ours = "producer" in z.files and str(z["producer"]) == PRODUCER
    if not ours:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            f"--out {path} exists and was not written by distorch-vision; give a new file or "
                            "remove it first")


def _write_npz(path: str, arrays: dict) -> None:
    """All of ``arrays`` into ``path`` exactly (np.savez would add .npz to other names), whole
    or not at all: a temporary file beside it, then renamed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, producer=np.array(PRODUCER))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distorch_vision", description=DESCRIPTION,
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{devices,plan,encode}")
    sub.add_parser("devices", help="devices the library sees (JSON)", description="Devices the library sees, as JSON.")
    p = sub.add_parser("plan", help="load a model and print its placement plan",
                       description="Load a model and print its placement plan (a table, or --json).")
    _loader_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    e = sub.add_parser("encode", help="encode image files, an IMAGE array or pixels into OUT.npz",
                       description="Encode image files, an IMAGE array or preprocessed pixels into one .npz.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _loader_args(e)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH",
                     help="image files (any sizes) and folders, decoded and preprocessed by the library")
    src.add_argument("--image", help="a ComfyUI IMAGE .npy [B, H, W, C] in 0..1")
    src.add_argument("--pixels", help="an NCHW f32 .npy, already preprocessed")
    e.add_argument("--crop", choices=["center", "none"], default="center",
                   help="center: short side to the model's size, then the centre; none: stretch")
    e.add_argument("--outputs", help="comma-separated output names (default: the model's)")
    e.add_argument("--out", required=True,
                   help="the .npz to write (a new file, or one this program wrote; also holds sources with --images)")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "devices":
            print(json.dumps(devices(), indent=2))
        elif a.cmd == "plan":
            with _load(a) as m:
                print(json.dumps(m.plan(), indent=2) if a.json else m.plan_table(), end="\n")
        else:
            _check_out(a.out)  # before any work
            extra = {}
            with _load(a) as m:
                if a.pixels:
                    out = m.encode_pixels(_read_npy(a.pixels), outputs=a.outputs)
                elif a.image:
                    out = m.encode_images(_read_npy(a.image), crop=a.crop, outputs=a.outputs)
                else:
                    files = _image_files(a.images)
                    out = m.encode_files(files, crop=a.crop, outputs=a.outputs)
                    extra["sources"] = np.array([str(f) for f in files])
            _write_npz(a.out, {**out, **extra})
            for k, v in out.items():
                print(f"{k} {list(v.shape)}")
    except (DistorchError, OSError, ValueError) as err:
        # One line, no traceback: a missing or unreadable .npy is the user's input, not a bug.
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
