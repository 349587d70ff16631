"""Independent references for the tests: Hugging Face transformers models built from the
fixtures' config.json + weights, and ComfyUI's ``clip_preprocess`` math re-done in torch."""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, Siglip2VisionConfig,
                          Siglip2VisionModel, SiglipVisionConfig, SiglipVisionModel)

# The clone (scripts/test_install.sh runs a copy of these tests from elsewhere).
ROOT = Path(os.environ.get("DISTORCH_TEST_CHECKOUT") or Path(__file__).resolve().parents[2])
FIXTURES = ROOT / "tests" / "fixtures" / "models"

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN, SIGLIP_STD = [0.5] * 3, [0.5] * 3


def intel_cpu() -> bool:
    """Whether this CPU is Intel's (``/proc/cpuinfo``). The OpenVINO plugin
    (onnxruntime-ep-openvino 1.8.1) offers Intel devices only: elsewhere it lists no CPU device
    and what needs one (``cpu_engine="openvino"``, ``dtype="bf16"``) is refused."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("vendor_id") and line.endswith("GenuineIntel") for line in cpuinfo.splitlines())


def assert_openvino_cpu_refused(message: str, what: str) -> None:
    """The refusal of ``what`` off Intel CPUs names the reason and the way out."""
    assert what in message and "offers Intel devices only" in message and "mlas" in message, message


def fixture(name: str) -> Path:
    return FIXTURES / name


def config(name: str) -> dict:
    return json.loads((fixture(name) / "config.json").read_text())


def is_siglip(name: str) -> bool:
    return config(name)["model_type"] == "siglip_vision_model"


def mean_std(name: str) -> tuple[list[float], list[float]]:
    return (SIGLIP_MEAN, SIGLIP_STD) if is_siglip(name) else (CLIP_MEAN, CLIP_STD)


@lru_cache(maxsize=None)
def hf_model(name: str):
    """(model, projector weights or None) for an HF-layout fixture, fp32, eval mode."""
    cfg = dict(config(name))
    cfg.pop("model_type")
    weights = {k: v.float() for k, v in load_file(str(fixture(name) / "model.safetensors")).items()}
    projector = {k: v for k, v in weights.items() if k.startswith("multi_modal_projector.")} or None
    if is_siglip(name):
        model = SiglipVisionModel(SiglipVisionConfig(**cfg, attn_implementation="eager"))
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg, attn_implementation="eager"))
    own = set(model.state_dict())
    state = {}
    for k, v in weights.items():
        if k in own:
            state[k] = v
        elif k.startswith("vision_model.") and k[len("vision_model."):] in own:
            state[k[len("vision_model."):]] = v
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    assert not missing, f"{name}: weights missing for the HF model: {missing}"
    return model.eval(), projector


def hf_outputs(name: str, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """contract §3 outputs by HF transformers on NCHW pixels."""
    model, projector = hf_model(name)
    with torch.no_grad():
        out = model(pixel_values=pixels.float(), output_hidden_states=True)
    res = {
        "last_hidden_state": out.last_hidden_state,
        "penultimate_hidden_states": out.hidden_states[-2],
        # every layer's output, no norm, [B, L, T, D] (hidden_states[0] is the embedding)
        "all_hidden_states": torch.stack(out.hidden_states[1:], dim=1),
    }
    res["image_embeds"] = out.last_hidden_state if is_siglip(name) else out.image_embeds
    if projector is not None:
        p = out.hidden_states[-2][:, 1:]
        h = torch.nn.functional.gelu(p @ projector["multi_modal_projector.linear_1.weight"].T
                                     + projector["multi_modal_projector.linear_1.bias"])
        res["mm_projected"] = (h @ projector["multi_modal_projector.linear_2.weight"].T
                               + projector["multi_modal_projector.linear_2.bias"])
    return res


@lru_cache(maxsize=None)
def hf_siglip2(name: str):
    """The Siglip2VisionModel (with its pooling head) of a SigLIP2 naflex fixture, fp32, eval."""
    model = Siglip2VisionModel(Siglip2VisionConfig(**config(name), attn_implementation="eager"))
    weights = load_file(str(fixture(name) / "model.safetensors"))
    state = {k[len("vision_model."):]: v.float() for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def hf_siglip2_outputs(name: str, patches: torch.Tensor, grids: torch.Tensor) -> dict:
    """HF's outputs on padded patches [B, T, 3·P²] with their grids [B, 2]: last_hidden_state and
    the layer states with the padding rows zeroed (as the library returns them), the pooled
    image_embeds. Grids of one column are not used here (torch's resize defect, contract §3)."""
    model = hf_siglip2(name)
    t = patches.shape[1]
    mask = (torch.arange(t)[None, :] < (grids[:, 0] * grids[:, 1])[:, None]).to(torch.int32)
    with torch.no_grad():
        out = model(pixel_values=patches.float(), pixel_attention_mask=mask,
                    spatial_shapes=grids.to(torch.int64), output_hidden_states=True)
    keep = mask.float()
    return {
        "last_hidden_state": out.last_hidden_state * keep[..., None],
        "image_embeds": out.pooler_output,
        "penultimate_hidden_states": out.hidden_states[-2] * keep[..., None],
        "all_hidden_states": torch.stack(out.hidden_states[1:], dim=1) * keep[:, None, :, None],
    }


def naflex_grid(h: int, w: int, patch: int, num_patches: int) -> tuple[int, int]:
    """The grid of Hugging Face's get_image_size_for_max_num_patches (and ComfyUI's
    siglip2_flex_calc_resolution), in patches."""
    def side(size, scale):
        return max(1, math.ceil(size * scale / patch))
    lo, hi = 1e-6, 100.0
    while hi - lo >= 1e-5:
        mid = (lo + hi) / 2
        if side(h, mid) * side(w, mid) <= num_patches:
            lo = mid
        else:
            hi = mid
    return side(h, lo), side(w, lo)


def comfy_siglip2_preprocess(image: torch.Tensor, patch: int, num_patches: int) -> tuple:
    """ComfyUI's siglip2_preprocess (naflex), written out in torch: IMAGE [B,H,W,C] 0..1 → the
    patches [B, rows·cols, 3·P²] of the grid (rows, cols) all its images share: bilinear
    antialiased resize, 8-bit quantisation, SigLIP mean/std, HF's patch layout."""
    x = image[..., :3].movedim(-1, 1).float()
    rows, cols = naflex_grid(x.shape[2], x.shape[3], patch, num_patches)
    x = torch.nn.functional.interpolate(x, size=(rows * patch, cols * patch), mode="bilinear",
                                        antialias=True)
    x = (torch.clip(255.0 * x, 0, 255).round() / 255.0 - 0.5) / 0.5
    b = x.shape[0]
    x = x.reshape(b, 3, rows, patch, cols, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, rows * cols, -1), (rows, cols)


def comfy_preprocess(image: torch.Tensor, size: int, mean, std, crop: bool) -> torch.Tensor:
    """ComfyUI's clip_preprocess, written out in torch: IMAGE [B,H,W,C] 0..1 → NCHW pixels.

    Alpha dropped; resized with torch's antialiased bicubic unless already S×S (short side to S
    then centre crop, or straight to S×S); quantised to 8 bits; normalised.
    """
    x = image[..., :3].movedim(-1, 1).float()
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        if crop:
            scale = size / min(h, w)
            target = (round(scale * h), round(scale * w))
        else:
            target = (size, size)
        x = torch.nn.functional.interpolate(x, size=target, mode="bicubic", antialias=True)
        top = (x.shape[2] - size) // 2
        left = (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def random_image(b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE: smooth-ish random content in 0..1 (so resizing has something to do)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((b, c, max(2, h // 4), max(2, w // 4)), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = (img + 0.15 * torch.rand((b, c, h, w), generator=g)).clamp(0, 1)
    return img.movedim(1, -1).contiguous()


def max_diff(a, b) -> float:
    a = torch.as_tensor(a).float()
    b = torch.as_tensor(b).float()
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    return float((a - b).abs().max())
