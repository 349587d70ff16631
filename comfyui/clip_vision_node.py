"""The loader node and the CLIP_VISION object it returns.

The object stands in for ComfyUI's ``comfy.clip_vision.ClipVisionModel`` where ComfyUI's nodes
touch it: ``encode_image(image, crop=True)`` returning an output readable as ``out.name`` and
``out["name"]``. No torch model is built; the distorch-vision library does the work. Of
ComfyUI it uses only ``folder_paths.get_filename_list`` / ``get_full_path_or_raise`` (or
``get_full_path``) and ``comfy.model_management.intermediate_device`` / ``unload_all_models``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Optional

import distorch_vision as dv

log = logging.getLogger("DisTorch2")

# Outputs computed only when a consumer reads them (contract §3: large, never by default).
ON_REQUEST = ("all_hidden_states",)


def _folder_paths() -> Any:
    import folder_paths  # ComfyUI's module; imported late so this file loads without ComfyUI

    return folder_paths


def _intermediate_device() -> Any:
    try:
        import comfy.model_management as mm
    except ImportError:
        import torch

        return torch.device("cpu")
    return mm.intermediate_device()


def _device_choices() -> list[str]:
    """Devices the library sees (``cuda:N`` first when present, then ``cpu``)."""
    try:
        names = [d["device"] for d in dv.devices()]
    except dv.DistorchError as e:
        # Still register the node: loading it will show the library's message.
        log.warning("[DisTorch2] distorch-vision library unavailable: %s", e)
        names = []
    if "cpu" not in names:
        names.append("cpu")
    return names


class Output:
    """ComfyUI's CLIP vision output: attributes readable as ``out.x`` and ``out["x"]``.

    Outputs in ``ON_REQUEST`` are encoded when first read (a second pass through the model
    for that output only), then kept.
    """

    def __init__(self, encode_more: Optional[Callable[[str], Any]] = None) -> None:
        self.__dict__["_encode_more"] = encode_more

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, item: Any) -> None:
        setattr(self, key, item)

    def __getattr__(self, name: str) -> Any:
        # Called only for attributes not set yet.
        more = self.__dict__.get("_encode_more")
        if name in ON_REQUEST and more is not None:
            try:
                value = more(name)
            except dv.DistorchError as e:
                raise AttributeError(f"{name} is not available for this model: {e}") from e
            setattr(self, name, value)
            return value
        raise AttributeError(f"CLIP vision output has no {name!r}")

    def __deepcopy__(self, memo: dict) -> "Output":
        new = Output(self.__dict__.get("_encode_more"))
        for k, v in self.__dict__.items():
            if k != "_encode_more":
                new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_encode_more"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__["_encode_more"] = None
        self.__dict__.update(state)


class DisTorchClipVision:
    """A ``CLIP_VISION`` whose forward pass runs in distorch-vision's per-block sessions."""

    def __init__(self, model: dv.Model, name: str) -> None:
        self.distorch_model = model
        self.name = name
        self.image_size = model.image_size

    def encode_image(self, image: Any, crop: bool = True) -> Output:
        """``image``: IMAGE [B, H, W, C] in 0..1; ``crop``: True = centre crop, False = resize."""
        device = _intermediate_device()
        res = self.distorch_model.encode_images(image, crop=crop, as_torch=True)
        b = next(iter(res.values())).shape[0]

        def encode_more(name: str) -> Any:
            extra = self.distorch_model.encode_images(image, crop=crop, outputs=[name], as_torch=True)
            return extra[name].to(device)

        out = Output(encode_more)
        for name, t in res.items():
            out[name] = t.to(device)
        if "mm_projected" not in res:
            out["mm_projected"] = None  # as ComfyUI: None when the file has no projector
        import torch

        out["image_sizes"] = [torch.Size((3, self.image_size, self.image_size))] * b
        return out

    def load_sd(self, sd: Any) -> Any:
        raise NotImplementedError(
            "load_sd is not supported by the DisTorch2 CLIP Vision loader: the weights live in "
            "distorch-vision's ONNX Runtime sessions, loaded from the file; use ComfyUI's "
            "CLIPVisionLoader for a torch model"
        )

    def get_sd(self) -> Any:
        raise NotImplementedError(
            "get_sd is not supported by the DisTorch2 CLIP Vision loader: there is no torch "
            "state dict (the weights live in distorch-vision's ONNX Runtime sessions)"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"DisTorch2 CLIP_VISION has no {name!r}: it serves encode_image() only (no torch "
            "model, patcher or state dict); a node that reaches into ComfyUI's ClipVisionModel "
            "internals needs ComfyUI's own CLIPVisionLoader"
        )

    def __repr__(self) -> str:
        return f"<DisTorchClipVision {self.name!r} image_size={self.image_size}>"


class CLIPVisionLoaderDisTorch2MultiGPU:
    """Load CLIP Vision (DisTorch2, MultiGPU): the model's blocks placed across GPUs and the CPU."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        devices = _device_choices()
        default_device = next((d for d in devices if d.startswith("cuda")), "cpu")
        return {
            "required": {
                "clip_name": (_folder_paths().get_filename_list("clip_vision"),),
            },
            "optional": {
                "device": (devices, {"default": default_device,
                                     "tooltip": "compute device: where the forward pass runs"}),
                "virtual_vram_gb": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 128.0, "step": 0.1,
                                              "tooltip": "GiB of weights moved off device onto donor_device"}),
                "donor_device": (devices, {"default": "cpu", "tooltip": "where moved weights live"}),
                "expert_mode_allocations": ("STRING", {
                    "multiline": False, "default": "",
                    "tooltip": "e.g. cuda:0,60%;cuda:1,30%;cpu,10% or cuda:0,4gb;cpu,* "
                               "(when set it alone decides placement)"}),
                "eject_models": ("BOOLEAN", {"default": True,
                                             "tooltip": "unload other models from device before loading"}),
            },
        }

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"
    CATEGORY = "multigpu/distorch_2"
    DESCRIPTION = ("Loads a clip_vision model with distorch-vision: per-block ONNX Runtime sessions placed by "
                   "a DisTorch2 plan.")

    def load_clip(
        self,
        clip_name: Optional[str] = None,
        device: Optional[str] = None,
        virtual_vram_gb: float = 4.0,
        donor_device: str = "cpu",
        expert_mode_allocations: str = "",
        eject_models: bool = True,
        clip_vision: Optional[str] = None,
    ) -> tuple:
        name = clip_name if clip_name is not None else clip_vision
        if not name:
            raise ValueError("clip_name (or clip_vision) is required: a file from the clip_vision folders")
        fp = _folder_paths()
        if hasattr(fp, "get_full_path_or_raise"):
            path = fp.get_full_path_or_raise("clip_vision", name)
        else:
            path = fp.get_full_path("clip_vision", name)
            if path is None:
                raise FileNotFoundError(f"clip_vision model {name!r} not found in the clip_vision folders")
        if eject_models:
            _unload_comfy_models()
        model = dv.load(
            path,
            device=device,
            virtual_vram_gb=virtual_vram_gb,
            donor_device=donor_device,
            expert_mode_allocations=expert_mode_allocations or "",
            eject_models=eject_models,
        )
        log.info("[DisTorch2] CLIP Vision %s loaded; plan:\n%s", name, model.plan_table().rstrip())
        return (DisTorchClipVision(model, name),)


def _unload_comfy_models() -> None:
    """ComfyUI's own unload, so torch models leave the device too (when this ComfyUI has it)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    unload = getattr(mm, "unload_all_models", None)
    if unload is None:
        return
    try:
        unload()
    except Exception as e:  # a failed eject must not block the load
        log.warning("[DisTorch2] comfy.model_management.unload_all_models failed: %s", e)
