#!/usr/bin/env python3
"""Accuracy of the approximate dtypes against Hugging Face transformers fp32 on one model: encodes
the same random pixels with `distorch-vision encode` per (dtype, CPU engine) and prints, per
output, the smallest per-image cosine and the largest |diff| against transformers' fp32 outputs.
Needs torch and transformers (the reference) and numpy/safetensors:

    python3 scripts/dtype_accuracy.py MODEL_DIR [--images 4] [--runs fp32:openvino,bf16:auto,int8:mlas]
        [--bin target/release/distorch-vision] [--graphs DIR] [--wrap "qemu-x86_64 -cpu Haswell"]

MODEL_DIR holds model.safetensors + config.json (scripts/make_random_model.py). --wrap runs the
binary under an emulator to check another CPU kind's kernels (accuracy only: emulation says
nothing about speed). A run the CPU cannot do (bf16 without AMX / AVX512_BF16) prints the
library's message instead of figures.
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--images", type=int, default=4)
ap.add_argument("--runs", default="fp32:mlas,fp32:openvino,bf16:auto,int8:mlas")
ap.add_argument("--bin", default="target/release/distorch-vision")
ap.add_argument("--graphs", default=None)
ap.add_argument("--wrap", default="", help="a command to run the binary under, e.g. 'qemu-x86_64 -cpu Haswell'")
a = ap.parse_args()

cfg = CLIPVisionConfig.from_json_file(os.path.join(a.model_dir, "config.json"))
s = cfg.image_size
px = np.random.default_rng(1).uniform(-2, 2, (a.images, 3, s, s)).astype(np.float32)
model = CLIPVisionModelWithProjection(cfg).eval()
weights = load_file(os.path.join(a.model_dir, "model.safetensors"))
model.load_state_dict({k: torch.from_numpy(v).float() for k, v in weights.items()}, strict=False)
with torch.inference_mode():
    ref = model(pixel_values=torch.from_numpy(px))
want = {"image_embeds": ref.image_embeds.numpy(), "last_hidden_state": ref.last_hidden_state.numpy()}

with tempfile.TemporaryDirectory() as tmp:
    pixels = os.path.join(tmp, "px.safetensors")
    save_file({"pixel_values": px}, pixels)
    for run in a.runs.split(","):
        dtype, engine = run.split(":")
        out = os.path.join(tmp, f"{dtype}-{engine}.safetensors")
        cmd = shlex.split(a.wrap) + [a.bin, "encode", "--model", os.path.join(a.model_dir, "model.safetensors"),
                                     "--pixels", pixels, "--out", out, "--device", "cpu", "--dtype", dtype,
                                     "--cpu-engine", engine, "--outputs", "image_embeds,last_hidden_state",
                                     "--graphs-dir", a.graphs or os.path.join(a.model_dir, "graphs"), "-q"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{dtype} on {engine}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'failed'}")
            continue
        got = load_file(out)
        parts = []
        for k, w in want.items():
            g = got[k].reshape(len(px), -1).astype(np.float64)
            w = w.reshape(g.shape).astype(np.float64)
            cos = (g * w).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(w, axis=1)
            parts.append(f"{k} cosine min {cos.min():.6f}, max |diff| {np.abs(g - w).max():.3g}")
        print(f"{dtype} on {engine}: " + "; ".join(parts))
        sys.stdout.flush()
