#!/usr/bin/env python3
"""Builds the reference fixtures under tests/fixtures/models/ with Hugging Face transformers.

Each fixture is a small random-weight vision tower saved the way users have them
(config.json + model.safetensors with `vision_model.` keys, or an open_clip layout), plus
`pixels.safetensors` (one NCHW tensor) and `expected.safetensors` (HF's outputs on those
pixels, fp32 CPU). Needs torch + transformers (a development machine, never CI):

    python3 -m pip install torch transformers safetensors numpy
    python3 scripts/make_fixtures.py [NAME ...]

With names, only those fixtures are (re)built; without, all of them. Newer fixtures also hold
`all_hidden_states` ([B, L, T, D], every layer's output, no norm) in `expected.safetensors`.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

try:
    from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config,
                              Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel, Siglip2VisionConfig,
                              Siglip2VisionModel, SiglipVisionConfig, SiglipVisionModel)
except ImportError:
    sys.exit("make_fixtures.py needs transformers: python3 -m pip install torch transformers")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             image_size=32, patch_size=8)


def randomize(model, seed):
    """Random weights of realistic scale (LayerNorm gains near 1, non-zero biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def pixels(size, seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, size, size), generator=g).clamp(-2.5, 2.5)


def round_to(state, dtype):
    """The file's values: float tensors rounded to `dtype`. bf16 files keep their norms in
    f32, as mixed files found in the wild do."""
    def keep(k):
        return dtype == torch.bfloat16 and ("norm" in k or "layrnorm" in k)
    return {k: (v.to(dtype) if v.is_floating_point() and not keep(k) else v) for k, v in state.items()}


def write(name, weights, config, expected, px, cfg_name="config.json", pixel_extras=None):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(d, "model.safetensors"))
    if config is not None:
        with open(os.path.join(d, cfg_name), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
    save_file(dict({"pixel_values": px.contiguous()}, **(pixel_extras or {})),
              os.path.join(d, "pixels.safetensors"))
    save_file({k: v.detach().float().clone().contiguous() for k, v in expected.items()},
              os.path.join(d, "expected.safetensors"))
    print(f"{name}: {sorted(expected)}")


def clip_case(name, act, file_dtype, seed, layout="hf", llava=False, full_config=False):
    cfg = CLIPVisionConfig(**SMALL, hidden_act=act, projection_dim=16, attn_implementation="eager")
    model = CLIPVisionModelWithProjection(cfg).eval()
    randomize(model, seed)
    state = {k: v for k, v in model.state_dict().items() if "position_ids" not in k}
    state = round_to(state, file_dtype)
    # The reference runs in fp32 on exactly the file's values.
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    extra = {}
    if llava:
        g = torch.Generator().manual_seed(seed + 1)
        lin1 = torch.nn.Linear(32, 48)
        lin2 = torch.nn.Linear(48, 48)
        with torch.no_grad():
            for p in list(lin1.parameters()) + list(lin2.parameters()):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        extra = {"multi_modal_projector.linear_1.weight": lin1.weight, "multi_modal_projector.linear_1.bias": lin1.bias,
                 "multi_modal_projector.linear_2.weight": lin2.weight, "multi_modal_projector.linear_2.bias": lin2.bias}
        extra = round_to({k: v.detach() for k, v in extra.items()}, file_dtype)
    px = pixels(32, seed + 7)
    with torch.no_grad():
        out = model(pixel_values=px, output_hidden_states=True)
        expected = {"last_hidden_state": out.last_hidden_state, "image_embeds": out.image_embeds,
                    "penultimate_hidden_states": out.hidden_states[-2]}
        if llava:
            p = out.hidden_states[-2][:, 1:]
            h = torch.nn.functional.gelu(p @ extra["multi_modal_projector.linear_1.weight"].float().T
                                         + extra["multi_modal_projector.linear_1.bias"].float())
            expected["mm_projected"] = (h @ extra["multi_modal_projector.linear_2.weight"].float().T
                                        + extra["multi_modal_projector.linear_2.bias"].float())
    weights = dict(state, **extra)
    config = cfg.to_dict()
    config = {k: config[k] for k in ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "image_size", "patch_size", "hidden_act",
                                     "projection_dim", "layer_norm_eps"]}
    if layout == "open_clip":
        weights = to_open_clip(weights, cfg.num_hidden_layers)
    if full_config:
        vision = dict(config)
        proj = vision.pop("projection_dim")
        config = {"model_type": "clip", "projection_dim": proj, "vision_config": vision,
                  "text_config": {"hidden_size": 16}}
    write(name, weights, config, expected, px)


def to_open_clip(w, layers):
    o = {"visual.class_embedding": w["vision_model.embeddings.class_embedding"],
         "visual.conv1.weight": w["vision_model.embeddings.patch_embedding.weight"],
         "visual.positional_embedding": w["vision_model.embeddings.position_embedding.weight"],
         "visual.ln_pre.weight": w["vision_model.pre_layrnorm.weight"],
         "visual.ln_pre.bias": w["vision_model.pre_layrnorm.bias"],
         "visual.ln_post.weight": w["vision_model.post_layernorm.weight"],
         "visual.ln_post.bias": w["vision_model.post_layernorm.bias"],
         "visual.proj": w["visual_projection.weight"].T.contiguous(),
         # open_clip files carry the text tower too; it must be ignored.
         "token_embedding.weight": torch.zeros(8, 4), "logit_scale": torch.ones(())}
    for i in range(layers):
        h = f"vision_model.encoder.layers.{i}."
        r = f"visual.transformer.resblocks.{i}."
        o[r + "attn.in_proj_weight"] = torch.cat([w[h + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        o[r + "attn.in_proj_bias"] = torch.cat([w[h + f"self_attn.{p}_proj.bias"] for p in "qkv"])
        for a, b in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                     ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")]:
            o[r + a + ".weight"] = w[h + b + ".weight"]
            o[r + a + ".bias"] = w[h + b + ".bias"]
    return o


def all_hidden(out):
    """Every layer's output, stacked [B, L, T, D] (HF's hidden_states[0] is the embedding)."""
    return torch.stack(out.hidden_states[1:], dim=1)


def siglip_case(name, seed, image_size=None, with_all_hidden=False):
    size = dict(SMALL, image_size=image_size or SMALL["image_size"])
    cfg = SiglipVisionConfig(**size, attn_implementation="eager")
    model = SiglipVisionModel(cfg).eval()
    randomize(model, seed)
    state = {k: v for k, v in model.state_dict().items() if "position_ids" not in k}
    # Files as users have them carry the `vision_model.` prefix (newer transformers drop it).
    state = {(k if k.startswith("vision_model.") else "vision_model." + k): v for k, v in state.items()}
    px = pixels(size["image_size"], seed + 7)
    with torch.no_grad():
        out = model(pixel_values=px, output_hidden_states=True)
    expected = {"last_hidden_state": out.last_hidden_state, "image_embeds": out.last_hidden_state,
                "penultimate_hidden_states": out.hidden_states[-2]}
    if with_all_hidden:
        expected["all_hidden_states"] = all_hidden(out)
    assert any(k.startswith("vision_model.head.") for k in state), "the MAP head keys must be present"
    config = cfg.to_dict()
    config = {k: config[k] for k in ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "image_size", "patch_size", "hidden_act",
                                     "layer_norm_eps"]}
    write(name, state, config, expected, px)


def to_original_dinov2(state):
    """transformers 5 names -> the original DINOv2 names that real files (and ComfyUI's
    clip_vision folder) hold; SwiGLU's gate and up halves become one `weights_in`."""
    o = {}
    for k, v in state.items():
        if ".mlp.up_proj." in k:
            continue
        if ".mlp.gate_proj." in k:
            up = state[k.replace("gate_proj", "up_proj")]
            o[k.replace("gate_proj", "weights_in")] = torch.cat([v, up], dim=0)
            continue
        for a, b in [(".attention.q_proj.", ".attention.attention.query."),
                     (".attention.k_proj.", ".attention.attention.key."),
                     (".attention.v_proj.", ".attention.attention.value."),
                     (".attention.o_proj.", ".attention.output.dense."),
                     (".mlp.down_proj.", ".mlp.weights_out.")]:
            k = k.replace(a, b)
        o[k] = v
    return o


def dinov2_case(name, seed, swiglu, image_size):
    """DINOv2 in the original key layout (no prefix). The reference is a Dinov2Model that
    transformers itself loads from the written file, so its own key mapping checks ours."""
    import tempfile
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=4,
                       image_size=image_size, patch_size=8, use_swiglu_ffn=swiglu, hidden_act="gelu",
                       layer_norm_eps=1e-6, attn_implementation="eager")
    model = Dinov2Model(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_((1.0 if n.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif "lambda1" in n:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    state = to_original_dinov2(model.state_dict())
    assert "embeddings.mask_token" in state and "encoder.layer.0.attention.attention.query.weight" in state
    config = {k: cfg.to_dict()[k] for k in ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "mlp_ratio", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
                                            "use_swiglu_ffn", "layerscale_value", "qkv_bias"]}
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        ref = Dinov2Model.from_pretrained(tmp, attn_implementation="eager").eval()
    for k, v in model.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), f"transformers loaded {k} differently"
    px = pixels(image_size, seed + 7)
    with torch.no_grad():
        out = ref(pixel_values=px, output_hidden_states=True)
    expected = {"last_hidden_state": out.last_hidden_state, "image_embeds": out.pooler_output,
                "penultimate_hidden_states": out.hidden_states[-2], "all_hidden_states": all_hidden(out)}
    write(name, state, config, expected, px)


def dinov3_case(name, seed, gated, image_size):
    """DINOv3 with the key names ComfyUI's clip_vision files have (`layer.N.…`, `norm`; transformers
    5 nests the layers under `model.`). As for DINOv2, the reference is the model transformers
    loads from the written file."""
    import tempfile
    cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                          image_size=image_size, patch_size=8, num_register_tokens=4, use_gated_mlp=gated,
                          hidden_act="silu" if gated else "gelu", attn_implementation="eager")
    model = DINOv3ViTModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_((1.0 if n.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif "lambda1" in n:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    state = {(k[len("model."):] if k.startswith("model.layer.") else k): v for k, v in model.state_dict().items()}
    assert "layer.0.attention.q_proj.weight" in state and "layer.0.attention.k_proj.bias" not in state
    assert "norm.weight" in state and "embeddings.register_tokens" in state
    config = {k: cfg.to_dict()[k] for k in ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "image_size", "patch_size", "hidden_act",
                                            "layer_norm_eps", "use_gated_mlp", "num_register_tokens", "rope_theta"]}
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        ref = DINOv3ViTModel.from_pretrained(tmp, attn_implementation="eager").eval()
    for k, v in model.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), f"transformers loaded {k} differently"
    px = pixels(image_size, seed + 7)
    with torch.no_grad():
        out = ref(pixel_values=px, output_hidden_states=True)
    expected = {"last_hidden_state": out.last_hidden_state, "image_embeds": out.pooler_output,
                "penultimate_hidden_states": out.hidden_states[-2], "all_hidden_states": all_hidden(out)}
    write(name, state, config, expected, px)


# SigLIP2 naflex grids (rows, cols) of the parity batch, with at most 64 patches: 1:1, 1:4, 4:1,
# 2:3, 7:5, a small 3x3 and a single column; the 8x8 position table is resized down on one axis
# and up on the other for 1:4 and 4:1.
NAFLEX_GRIDS = [(8, 8), (4, 16), (16, 4), (6, 9), (7, 5), (3, 3), (12, 1)]
# Image files (tests/fixtures/images) of the image-level case: lossless, of varied aspect ratios.
NAFLEX_IMAGES = ["big_480x400.png", "landscape_131x33.png", "tall_7x300.png", "portrait_45x77.png",
                 "down_97x61.png", "exact_32x32.png", "rgba_33x50.png"]
# Of those, the ones also checked at so400m's patching (downscaled, and upscaled in both axes).
NAFLEX_SO400M_IMAGES = ["big_480x400.png", "landscape_131x33.png"]


def one_column_resize_fix():
    """torch 2.15's antialiased bilinear F.interpolate on the CPU is wrong when the output is
    one column wide and the height changes (every output row is input row 0 when upsampling),
    which Siglip2VisionEmbeddings.resize_positional_embeddings hits for grids (h, 1). The
    reference resizes those through the transposed table, where the same kernel is right (and
    equal to the direct call for every other size); contract §3 records the difference."""
    import torch.nn.functional as F
    from transformers.models.siglip2 import modeling_siglip2
    interpolate = F.interpolate

    def fixed(x, size=None, **kw):
        if size is not None and x.dim() == 4 and size[1] == 1 and size[0] != x.shape[2]:
            return interpolate(x.transpose(2, 3), size=(size[1], size[0]), **kw).transpose(2, 3)
        return interpolate(x, size=size, **kw)
    modeling_siglip2.F = type("F", (), {"interpolate": staticmethod(fixed)})


def siglip2_case(name, seed, patch=4, num_patches=64):
    """SigLIP2 naflex: a tiny Siglip2VisionModel (with its attention-pooling head) run by
    transformers on patches of mixed grids, padded, with pixel_attention_mask and
    spatial_shapes (one-column grids resized as one_column_resize_fix says). Padded rows of the token outputs are zeroed, as distorch-vision returns
    them. Also writes, for the same model:
      images_expected.safetensors  HF's own processor (Siglip2ImageProcessor, else its PIL
                                   variant) and model on NAFLEX_IMAGES: image-level parity.
      comfy_pixels.safetensors     ComfyUI's siglip2_preprocess (reproduced below with torch) of
                                   NAFLEX_IMAGES at this model's patching, and of two of them at
                                   so400m's (16 px, 256 patches): each image's flattened patches
                                   as their 8-bit values (u8, before the /255 and mean/std step,
                                   a pure function of them) and its grid."""
    one_column_resize_fix()
    cfg = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, patch_size=patch, num_patches=num_patches,
                              hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                              attn_implementation="eager")
    model = Siglip2VisionModel(cfg).eval()
    randomize(model, seed)
    state = {k: v for k, v in model.state_dict().items() if "position_ids" not in k}
    state = {(k if k.startswith("vision_model.") else "vision_model." + k): v for k, v in state.items()}
    assert "vision_model.head.probe" in state and state["vision_model.embeddings.patch_embedding.weight"].dim() == 2
    width = 3 * patch * patch
    g = torch.Generator().manual_seed(seed + 7)
    b = len(NAFLEX_GRIDS)
    px = torch.zeros(b, num_patches, width)
    mask = torch.zeros(b, num_patches, dtype=torch.int32)
    for i, (h, w) in enumerate(NAFLEX_GRIDS):
        px[i, : h * w] = torch.randn((h * w, width), generator=g).clamp(-2.5, 2.5)
        mask[i, : h * w] = 1
    shapes = torch.tensor(NAFLEX_GRIDS, dtype=torch.int64)
    with torch.no_grad():
        out = model(pixel_values=px, pixel_attention_mask=mask, spatial_shapes=shapes,
                    output_hidden_states=True)
    valid = mask.float()
    expected = {"last_hidden_state": out.last_hidden_state * valid[..., None],
                "image_embeds": out.pooler_output,
                "penultimate_hidden_states": out.hidden_states[-2] * valid[..., None],
                "all_hidden_states": all_hidden(out) * valid[:, None, :, None]}
    config = cfg.to_dict()
    config = {k: config[k] for k in ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "num_channels", "patch_size", "num_patches",
                                     "hidden_act", "layer_norm_eps", "vision_use_head"]}
    write(name, state, config, expected, px,
          pixel_extras={"spatial_shapes": shapes, "pixel_attention_mask": mask})
    naflex_images(name, model, patch, num_patches)


def comfy_siglip2_q8(image, patch, num_patches):
    """ComfyUI's siglip2_preprocess (comfy/clip_model.py, image_size -1: the naflex path) on an
    IMAGE [1, H, W, C] up to its 8-bit quantisation (the mean/std step that follows is a pure
    function of it): the grid of HF's binary search, bilinear antialiased interpolate,
    round(clip(255 x)); returned as HF's flattened patches [rows*cols, P*P*3] in u8."""
    image = image[:, :, :, :3].movedim(-1, 1)
    h, w = grid_for(image.shape[2], image.shape[3], patch, num_patches)
    image = torch.nn.functional.interpolate(image, size=(h * patch, w * patch), mode="bilinear",
                                            antialias=True)
    q = torch.clip(255.0 * image, 0, 255).round()
    patches = q[0].reshape(3, h, patch, w, patch).permute(1, 3, 2, 4, 0).reshape(h * w, -1)
    return patches.to(torch.uint8), (h, w)


def grid_for(height, width, patch, num_patches):
    """The scale search of HF's get_image_size_for_max_num_patches (and ComfyUI's
    siglip2_flex_calc_resolution), in patches."""
    def side(size, scale):
        return max(1, math.ceil(size * scale / patch))
    lo, hi = 1e-6, 100.0
    while hi - lo >= 1e-5:
        mid = (lo + hi) / 2
        if side(height, mid) * side(width, mid) <= num_patches:
            lo = mid
        else:
            hi = mid
    return side(height, lo), side(width, lo)


def naflex_images(name, model, patch, num_patches):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_image_fixtures import comfy_load_image
    from PIL import Image
    from transformers.utils import is_torchvision_available
    if is_torchvision_available():
        from transformers import Siglip2ImageProcessor
        processor, which = Siglip2ImageProcessor(patch_size=patch, max_num_patches=num_patches), "torchvision"
    else:
        from transformers import Siglip2ImageProcessorPil
        processor, which = Siglip2ImageProcessorPil(patch_size=patch, max_num_patches=num_patches), "pil"
    images_dir = os.path.join(ROOT, "..", "images")
    pil = [Image.open(os.path.join(images_dir, f)).convert("RGB") for f in NAFLEX_IMAGES]
    inputs = processor(images=pil, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    valid = inputs["pixel_attention_mask"].float()
    expected = {"last_hidden_state": out.last_hidden_state * valid[..., None],
                "image_embeds": out.pooler_output,
                "spatial_shapes": inputs["spatial_shapes"].to(torch.int64)}
    d = os.path.join(ROOT, name)
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(d, "images_expected.safetensors"),
              metadata={"inputs": json.dumps(NAFLEX_IMAGES), "processor": which})
    comfy = {}
    for f in NAFLEX_IMAGES:
        image, _ = comfy_load_image(os.path.join(images_dir, f))
        sizes = [(patch, num_patches)] + ([(16, 256)] if f in NAFLEX_SO400M_IMAGES else [])
        for p, n in sizes:
            q8, grid = comfy_siglip2_q8(image, p, n)
            comfy[f"{f}__p{p}_n{n}__q8"] = q8.contiguous()
            comfy[f"{f}__p{p}_n{n}__grid"] = torch.tensor(grid, dtype=torch.int64)
    save_file(comfy, os.path.join(d, "comfy_pixels.safetensors"))
    print(f"{name}: image-level reference by HF's {which} processor; ComfyUI pixels of {len(NAFLEX_IMAGES)} images")


CASES = {
    "clip_quickgelu_f32": lambda: clip_case("clip_quickgelu_f32", "quick_gelu", torch.float32, 1),
    "clip_gelu_f16": lambda: clip_case("clip_gelu_f16", "gelu", torch.float16, 2),
    "clip_bf16": lambda: clip_case("clip_bf16", "quick_gelu", torch.bfloat16, 3),
    "open_clip_f32": lambda: clip_case("open_clip_f32", "gelu", torch.float32, 4, layout="open_clip",
                                       full_config=True),
    "siglip_f32": lambda: siglip_case("siglip_f32", 5),
    "llava_f32": lambda: clip_case("llava_f32", "quick_gelu", torch.float32, 6, llava=True),
    # S = 36 is not a multiple of P = 8: 4 x 4 patches, the convolution drops 4 pixels.
    "siglip_s36_p8_f32": lambda: siglip_case("siglip_s36_p8_f32", 7, image_size=36, with_all_hidden=True),
    "dinov2_swiglu_f32": lambda: dinov2_case("dinov2_swiglu_f32", 8, swiglu=True, image_size=32),
    "dinov2_gelu_f32": lambda: dinov2_case("dinov2_gelu_f32", 9, swiglu=False, image_size=36),
    "dinov3_gelu_f32": lambda: dinov3_case("dinov3_gelu_f32", 10, gated=False, image_size=32),
    "dinov3_gated_f32": lambda: dinov3_case("dinov3_gated_f32", 11, gated=True, image_size=36),
    "siglip2_naflex_f32": lambda: siglip2_case("siglip2_naflex_f32", 12),
}


if __name__ == "__main__":
    names = sys.argv[1:] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; valid: {', '.join(CASES)}")
    for n in names:
        torch.manual_seed(0)
        CASES[n]()
