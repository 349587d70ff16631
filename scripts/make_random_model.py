#!/usr/bin/env python3
"""Writes a random-weight CLIP vision tower of a given shape (HF layout + config.json), for
benchmarks. Needs only numpy.

    python3 scripts/make_random_model.py OUT_DIR --shape vit-b-16|vit-l-14|vit-h-14|so400m-naflex [--dtype f32|f16]

so400m-naflex is SigLIP2 so400m/16 naflex (a Linear patch embedding, a 16 x 16 position table,
the attention-pooling head), written without a config.json: it is detected from its keys, as
ComfyUI's clip_vision files are.
"""
import argparse
import json
import os

import numpy as np

SHAPES = {
    "vit-b-16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     patch_size=16, image_size=224, projection_dim=512),
    "vit-l-14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=768),
    # ViT-H/14 (contract §2.1 row 2), exact-erf gelu; about 632 M parameters (2.4 GiB f32, 1.2 GiB f16).
    "vit-h-14": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                     patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"),
    # SigLIP2 so400m/16 naflex: about 428 M parameters (1.6 GiB f32, 0.8 GiB f16).
    "so400m-naflex": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                          patch_size=16, num_patches=256, naflex=True),
}


def tensors(c, rng, dtype):
    d, i, p = c["hidden_size"], c["intermediate_size"], c["patch_size"]
    w = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(dtype)
    ln = lambda: (np.ones(d, np.float32) + w(d).astype(np.float32)).astype(dtype)
    if c.get("naflex"):
        out = {"vision_model.embeddings.patch_embedding.weight": w(d, 3 * p * p),
               "vision_model.embeddings.patch_embedding.bias": w(d),
               "vision_model.embeddings.position_embedding.weight": w(c["num_patches"], d),
               "vision_model.post_layernorm.weight": ln(), "vision_model.post_layernorm.bias": w(d),
               "vision_model.head.probe": w(1, 1, d),
               "vision_model.head.attention.in_proj_weight": w(3 * d, d),
               "vision_model.head.attention.in_proj_bias": w(3 * d),
               "vision_model.head.attention.out_proj.weight": w(d, d),
               "vision_model.head.attention.out_proj.bias": w(d),
               "vision_model.head.layernorm.weight": ln(), "vision_model.head.layernorm.bias": w(d),
               "vision_model.head.mlp.fc1.weight": w(i, d), "vision_model.head.mlp.fc1.bias": w(i),
               "vision_model.head.mlp.fc2.weight": w(d, i), "vision_model.head.mlp.fc2.bias": w(d)}
    else:
        t = (c["image_size"] // p) ** 2 + 1
        out = {"vision_model.embeddings.class_embedding": w(d),
               "vision_model.embeddings.patch_embedding.weight": w(d, 3, p, p),
               "vision_model.embeddings.position_embedding.weight": w(t, d),
               "vision_model.pre_layrnorm.weight": ln(), "vision_model.pre_layrnorm.bias": w(d),
               "vision_model.post_layernorm.weight": ln(), "vision_model.post_layernorm.bias": w(d),
               "visual_projection.weight": w(c["projection_dim"], d)}
    for l in range(c["num_hidden_layers"]):
        h = f"vision_model.encoder.layers.{l}."
        for n in ("layer_norm1", "layer_norm2"):
            out[h + n + ".weight"], out[h + n + ".bias"] = ln(), w(d)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[h + f"self_attn.{n}.weight"], out[h + f"self_attn.{n}.bias"] = w(d, d), w(d)
        out[h + "mlp.fc1.weight"], out[h + "mlp.fc1.bias"] = w(i, d), w(i)
        out[h + "mlp.fc2.weight"], out[h + "mlp.fc2.bias"] = w(d, i), w(d)
    return out


def save(path, tensors):
    header, offset, blobs = {}, 0, []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": {"float32": "F32", "float16": "F16"}[v.dtype.name], "shape": list(v.shape),
                     "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=SHAPES, default="vit-b-16")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    a = ap.parse_args()
    c = SHAPES[a.shape]
    os.makedirs(a.out, exist_ok=True)
    save(os.path.join(a.out, "model.safetensors"),
         tensors(c, np.random.default_rng(0), np.float32 if a.dtype == "f32" else np.float16))
    if not c.get("naflex"):
        cfg = dict(dict(hidden_act="quick_gelu"), **c, model_type="clip_vision_model", layer_norm_eps=1e-5)
        json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    print(f"{a.out}: {a.shape} {a.dtype}")
