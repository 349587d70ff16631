"""``python -m distorch_vision devices|plan|encode``: thin calls into the library.

  python -m distorch_vision devices
  python -m distorch_vision plan MODEL [--device cpu] [--virtual-vram-gb 4] [--json]
  python -m distorch_vision encode MODEL (--pixels P.npy | --image IMAGE.npy [--crop none]) --out OUT.npz

``--pixels`` is an NCHW f32 array already preprocessed; ``--image`` a ComfyUI IMAGE array
[B, H, W, C] in 0..1 (the library preprocesses it). Outputs go to one ``.npz``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import numpy as np

from . import DistorchError, devices, load


def _loader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .safetensors path, or a name in the clip_vision folders")
    p.add_argument("--device", help="cpu or cuda:N (default: cuda:0 when a GPU exists, else cpu)")
    p.add_argument("--virtual-vram-gb", type=float, default=4.0)
    p.add_argument("--donor-device", default="cpu")
    p.add_argument("--expert-mode-allocations", default="")
    p.add_argument("--eject-models", choices=["true", "false"], default="true")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"])
    p.add_argument("--donor-policy", choices=["stream", "execute"])
    p.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH)")
    p.add_argument("--extra-model-paths", help="an extra_model_paths.yaml")


def _load(a: argparse.Namespace):
    return load(a.model, device=a.device, virtual_vram_gb=a.virtual_vram_gb,
                donor_device=a.donor_device, expert_mode_allocations=a.expert_mode_allocations,
                eject_models=a.eject_models == "true", dtype=a.dtype, donor_policy=a.donor_policy,
                comfyui_path=a.comfyui, extra_model_paths=a.extra_model_paths)


def _read_npy(path: str) -> np.ndarray:
    a = np.load(path)
    if not isinstance(a, np.ndarray):  # an .npz holds several arrays
        raise ValueError(f"{path} is not a .npy array (an .npz archive?); save one array with np.save")
    return a


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distorch_vision", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("devices", help="devices the library sees (JSON)")
    p = sub.add_parser("plan", help="load a model and print its placement plan")
    _loader_args(p)
    p.add_argument("--json", action="store_true")
    e = sub.add_parser("encode", help="encode a pixels or IMAGE array (.npy) into OUT.npz")
    _loader_args(e)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--pixels", help="NCHW f32 .npy, preprocessed")
    src.add_argument("--image", help="IMAGE .npy [B, H, W, C] in 0..1")
    e.add_argument("--crop", choices=["center", "none"], default="center")
    e.add_argument("--outputs", help="comma-separated output names (default: the model's)")
    e.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "devices":
            print(json.dumps(devices(), indent=2))
        elif a.cmd == "plan":
            with _load(a) as m:
                print(json.dumps(m.plan(), indent=2) if a.json else m.plan_table(), end="\n")
        else:
            with _load(a) as m:
                if a.pixels:
                    out = m.encode_pixels(_read_npy(a.pixels), outputs=a.outputs)
                else:
                    out = m.encode_images(_read_npy(a.image), crop=a.crop, outputs=a.outputs)
            np.savez(a.out, **out)
            for k, v in out.items():
                print(f"{k} {list(v.shape)}")
    except (DistorchError, OSError, ValueError) as err:
        # One line, no traceback: a missing or unreadable .npy is the user's input, not a bug.
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
