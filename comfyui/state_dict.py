"""The state dict of a vision tower as ComfyUI's ``ClipVisionModel.get_sd()`` keys it, read from
the model file: Hugging Face names (open_clip files converted as contract §2.3 describes), and
only the tensors ComfyUI's vision model holds (no text tower, no SigLIP pooling head)."""

from __future__ import annotations

from typing import Any

OPEN_CLIP_MARKER = "visual.transformer.resblocks.0.attn.in_proj_weight"

# open_clip `visual.` names → Hugging Face names (contract §2.3).
_OPEN_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_OPEN_CLIP_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


def vision_state_dict(info: dict) -> dict[str, Any]:
    """``{name: torch tensor}`` of the model at ``info["path"]`` (``info`` as ``Model.info``)."""
    from safetensors import safe_open

    with safe_open(info["path"], framework="pt") as f:
        keys = list(f.keys())
        if OPEN_CLIP_MARKER in keys:
            sd = _from_open_clip({k: f.get_tensor(k) for k in keys if k.startswith("visual.")})
        else:
            sd = {k: f.get_tensor(k) for k in keys if _kept(k, info)}
    return sd


def _kept(key: str, info: dict) -> bool:
    """Whether ComfyUI's vision model for this kind holds ``key``."""
    kind = info["kind"]
    if kind in ("clip", "siglip"):
        if key.startswith("vision_model."):
            return not (key == "vision_model.embeddings.position_ids"
                        or key.startswith("vision_model.head."))
        if key == "visual_projection.weight":
            return kind == "clip"
        return bool(info.get("llava")) and key.startswith("multi_modal_projector.")
    if kind == "dinov2":
        return key.split(".", 1)[0] in ("embeddings", "encoder", "layernorm")
    return True  # DINOv3 files hold the vision model only


def _from_open_clip(visual: dict[str, Any]) -> dict[str, Any]:
    """open_clip's ``visual.*`` tensors under Hugging Face names."""
    sd: dict[str, Any] = {}
    for key, t in visual.items():
        name = key[len("visual."):]
        if name in _OPEN_CLIP_TOP:
            sd[_OPEN_CLIP_TOP[name]] = t
        elif name == "proj":
            sd["visual_projection.weight"] = t.transpose(0, 1).contiguous()
        elif name.startswith("transformer.resblocks."):
            i, rest = name[len("transformer.resblocks."):].split(".", 1)
            layer = f"vision_model.encoder.layers.{i}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]  # weight / bias
                for part, chunk in zip(("q", "k", "v"), t.chunk(3, dim=0)):
                    sd[f"{layer}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
                continue
            module, leaf = rest.rsplit(".", 1)
            if module in _OPEN_CLIP_BLOCK:
                sd[f"{layer}{_OPEN_CLIP_BLOCK[module]}.{leaf}"] = t
    return sd
