"""The loader node and the CLIP_VISION object it returns.

The object stands in for ComfyUI's ``comfy.clip_vision.ClipVisionModel`` where ComfyUI's nodes
touch it: ``encode_image(image, crop=True)`` returning a ``comfy.clip_vision.Output`` made as
core makes it, and ``get_sd()`` (the state dict, for checkpoint saving). No torch model is
built; the distorch-vision library does the work. Of ComfyUI it uses ``folder_paths``
(``get_filename_list`` / ``get_full_path_or_raise``), ``comfy.clip_vision.Output`` and
``comfy.model_management`` (``intermediate_device``, ``free_memory`` for ``eject_models``),
each only when present.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import distorch_vision as dv

log = logging.getLogger("DisTorch2")


def _folder_paths() -> Any:
    import folder_paths  # ComfyUI's module; imported late so this file loads without ComfyUI

    return folder_paths


def _model_management() -> Optional[Any]:
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm


def _intermediate_device() -> Any:
    mm = _model_management()
    if mm is None:
        import torch

        return torch.device("cpu")
    return mm.intermediate_device()


#: The node's extra inputs (plugin.toml's, dv_load_options versions 2, 5 and 3).
DTYPES = ("fp32", "fp16", "int8", "bf16")
CPU_ENGINES = ("auto", "mlas", "openvino")
DONOR_POLICIES = ("stream", "execute")


def _device_choices() -> list[str]:
    """Devices the library sees (``cuda:N`` first when present, Intel GPUs as ``xpu:N`` when the
    OpenVINO plugin is installed, then ``cpu``)."""
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
    """ComfyUI's CLIP vision output, for when ``comfy.clip_vision`` is not importable: the
    same interface (attributes readable as ``out.x`` and ``out["x"]``)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, item: Any) -> None:
        setattr(self, key, item)


def output_class() -> type:
    """``comfy.clip_vision.Output`` when ComfyUI is there (nodes may check the type), else ours."""
    try:
        from comfy.clip_vision import Output as CoreOutput
    except ImportError:
        return Output
    return CoreOutput


# ----------------------------------------------------------------------------- the CLIP_VISION


class _Tokens:
    """A naflex encode's token rows cut to the batch's grid, as ComfyUI returns them (its
    IMAGE batch is one size, so every image has the same grid); nothing to do otherwise."""

    def __init__(self, grids: Any, patch_size: int) -> None:
        self.grid = None
        if grids is not None and len(grids):
            first = tuple(int(v) for v in grids[0])
            if any(tuple(int(v) for v in g) != first for g in grids):
                raise ValueError(f"images of one IMAGE batch got different patch grids: {grids.tolist()}")
            self.grid = first
        self.patch_size = patch_size

    def unpad(self, name: str, t: Any) -> Any:
        """``t`` with only the grid's tokens: [B, T, D] → [B, rows·cols, D], and the token axis
        of all_hidden_states [B, L, T, D]; pooled outputs as they are."""
        if self.grid is None or t is None or t.dim() < 3:
            return t
        n = self.grid[0] * self.grid[1]
        return t[..., :n, :].contiguous()

    def image_sizes(self, b: int, square: int) -> list:
        """ComfyUI's ``image_sizes``: the preprocessed pixels' shape (3, H, W) per image."""
        import torch

        if self.grid is None:
            return [torch.Size((3, square, square))] * b
        h, w = (g * self.patch_size for g in self.grid)
        return [torch.Size((3, h, w))] * b


class DisTorchClipVision:
    """A ``CLIP_VISION`` whose forward pass runs in distorch-vision's per-block sessions."""

    def __init__(self, model: dv.Model, name: str) -> None:
        self.distorch_model = model
        self.name = name
        self.image_size = model.image_size
        # As ComfyUI's ClipVisionModel: every layer's output for SigLIP towers, in the same
        # pass (USO reads them), and nowhere else.
        self.return_all_hidden_states = model.kind == "siglip"

    def encode_image(self, image: Any, crop: bool = True) -> Any:
        """``image``: IMAGE [B, H, W, C] in 0..1 (C = 1 is broadcast to RGB, alpha dropped);
        ``crop``: True = centre crop, False = resize (no effect for a SigLIP2 naflex model, as
        in ComfyUI). One pass through the model."""
        device = _intermediate_device()
        names = [n for n in self.distorch_model.output_names if n != "penultimate_hidden_states"]
        if self.return_all_hidden_states:
            names.append("all_hidden_states")
        else:
            names.append("penultimate_hidden_states")
        res = self.distorch_model.encode_images(image, crop=crop, outputs=names, as_torch=True)
        grids = res.pop("spatial_shapes", None)
        tokens = _Tokens(grids, self.distorch_model.patch_size)

        def take(name: str) -> Any:
            return tokens.unpad(name, res[name]).to(device)

        out = output_class()()
        out["last_hidden_state"] = take("last_hidden_state")
        out["image_embeds"] = take("image_embeds")
        if self.return_all_hidden_states:
            all_hs = take("all_hidden_states")
            out["penultimate_hidden_states"] = all_hs[:, -2]
            out["all_hidden_states"] = all_hs
        else:
            out["penultimate_hidden_states"] = take("penultimate_hidden_states")
        if grids is not None:
            # As ComfyUI's naflex CLIPVisionModelProjection (no projection): image_embeds is
            # last_hidden_state; the attention-pooling head's [B, D] embedding, which ComfyUI
            # never computes, is there as pooler_output (Hugging Face's name).
            out["pooler_output"] = out["image_embeds"]
            out["image_embeds"] = out["last_hidden_state"]
        # None when the file has no projector, as ComfyUI.
        projected = res.get("mm_projected")
        out["mm_projected"] = None if projected is None else projected.to(device)
        out["image_sizes"] = tokens.image_sizes(res["last_hidden_state"].shape[0], self.image_size)
        return out

    def get_sd(self) -> dict:
        """The model's state dict, keyed as ComfyUI's ``ClipVisionModel.get_sd()`` keys it (what
        ImageOnlyCheckpointSave writes): the vision tower's tensors under Hugging Face names,
        open_clip files converted. Values and dtypes are the file's own (ComfyUI's holds them
        in its text-encoder dtype, fp16 by default)."""
        from .state_dict import vision_state_dict

        return vision_state_dict(self.distorch_model.info)

    def load_sd(self, sd: Any) -> Any:
        raise NotImplementedError(
            "load_sd is not supported by the DisTorch2 CLIP Vision loader: the weights live in "
            "distorch-vision's ONNX Runtime sessions, loaded from the file; use ComfyUI's "
            "CLIPVisionLoader for a torch model"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"DisTorch2 CLIP_VISION has no {name!r}: it serves encode_image() and get_sd() (no "
            "torch model or patcher); a node that reaches into ComfyUI's ClipVisionModel "
            "internals needs ComfyUI's own CLIPVisionLoader"
        )

    def __repr__(self) -> str:
        return f"<DisTorchClipVision {self.name!r} image_size={self.image_size}>"


# ----------------------------------------------------------------------------- the loader node


def optional_inputs(devices: list[str]) -> dict:
    """The optional widgets (contract §1), in the order the seed shows them."""
    default_device = next((d for d in devices if d.startswith("cuda")), "cpu")
    return {
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
                                     "tooltip": "unload ComfyUI's other models from device before loading"}),
        # Beyond the seed's inputs (plugin.toml: dv_load_options versions 2, 5 and 3), last and
        # each new one after the others, so a saved workflow's widget values keep their places.
        "dtype": (list(DTYPES), {"default": "fp32",
                                 "tooltip": "compute precision: fp32 (ComfyUI parity), fp16 (GPUs), "
                                            "int8 (CPU, approximate), bf16 (OpenVINO on Intel AMX/AVX512_BF16 CPUs)"}),
        "cpu_engine": (list(CPU_ENGINES), {"default": "auto",
                                           "tooltip": "what runs the CPU blocks: auto (OpenVINO when its "
                                                      "plugin is installed and serves this CPU, Intel's "
                                                      "only; else mlas), mlas or openvino"}),
        "donor_policy": (list(DONOR_POLICIES), {"default": "stream",
                                                "tooltip": "blocks homed on cpu while device is a GPU: stream their "
                                                           "weights to the GPU each pass (as DisTorch) or execute "
                                                           "them on the CPU"}),
    }


class DistorchVisionCLIPVisionLoader:
    """Load CLIP Vision (DisTorch2, MultiGPU): the model's blocks placed across GPUs and the CPU."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip_name": (_folder_paths().get_filename_list("clip_vision"),),
            },
            "optional": optional_inputs(_device_choices()),
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
        dtype: str = "fp32",
        cpu_engine: str = "auto",
        donor_policy: str = "stream",
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
        if eject_models is True:
            eject_comfy_models(compute_device(device))
        model = dv.load(
            path,
            device=device,
            virtual_vram_gb=virtual_vram_gb,
            donor_device=donor_device,
            expert_mode_allocations=expert_mode_allocations or "",
            eject_models=eject_models,
            dtype=dtype,
            cpu_engine=cpu_engine,
            donor_policy=donor_policy,
            # the user cache, never this folder or the checkout it may be linked from (§6.1b)
            graphs_dir=str(dv.user_graphs_dir()),
        )
        log.info("[DisTorch2] CLIP Vision %s loaded; plan:\n%s", name, model.plan_table().rstrip())
        return (DisTorchClipVision(model, name),)


class CLIPVisionLoaderDisTorch2MultiGPU(DistorchVisionCLIPVisionLoader):
    """The same loader under ComfyUI-MultiGPU's key, so workflows saved with the seed's node load
    it; registered only when no other node pack provides that key (see ``registration``)."""


def compute_device(device: Optional[str]) -> str:
    """The device the forward pass will run on: ``device``, or the library's default (the first
    GPU when there is one, else ``cpu``)."""
    if device:
        return device
    return next((d for d in _device_choices() if d.startswith("cuda")), "cpu")


def eject_comfy_models(device: str) -> None:
    """Unloads the models ComfyUI holds on ``device`` (the seed: "unload ALL models from the
    target device"), leaving those on other devices loaded: ComfyUI's ``free_memory`` for
    everything on that device. The library ejects its own models itself (``eject_models``)."""
    mm = _model_management()
    free = getattr(mm, "free_memory", None) if mm is not None else None
    if free is None:
        return
    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return  # not a device torch knows: the load reports it with the valid choices
    try:
        free(1e30, target)
    except Exception as e:  # a failed eject must not block the load
        log.warning("[DisTorch2] unloading ComfyUI's models from %s failed: %s", device, e)
