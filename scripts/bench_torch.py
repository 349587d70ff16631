#!/usr/bin/env python3
"""Hugging Face transformers (torch, fp32) on the same weights, pixel shapes and thread
count as `distorch-vision bench`: prints the median images/s. torch is optional:

    python3 -m pip install torch transformers safetensors
    python3 scripts/bench_torch.py MODEL_DIR [--batch-size 8] [--iters 5] [--threads N] [--json]
        [--device cpu|cuda|cuda:N] [--dtype fp32|fp16|bf16-autocast]

With --device cuda the timing synchronises the GPU around each batch and TF32 is off (fp32
parity with distorch-vision's CUDA sessions, which also keep TF32 off). --dtype bf16-autocast
keeps the fp32 weights and runs the forward pass under `torch.autocast(device, torch.bfloat16)`,
what a torch user on a CPU with AMX or AVX512_BF16 would try.
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
except ImportError as e:
    print(f"bench_torch.py: {e.name} is not installed; install with "
          "`python3 -m pip install torch transformers safetensors` to get the PyTorch baseline")
    sys.exit(0)

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--threads", type=int, default=int(os.environ.get("DISTORCH_THREADS", os.cpu_count())))
ap.add_argument("--json", action="store_true")
ap.add_argument("--device", default="cpu")
ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16-autocast"], default="fp32")
a = ap.parse_args()
dev = torch.device(a.device)
if dev.type == "cuda":
    if not torch.cuda.is_available():
        print("bench_torch.py: torch sees no CUDA device; nothing measured")
        sys.exit(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
tdtype = torch.float16 if a.dtype == "fp16" else torch.float32


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


torch.set_num_threads(a.threads)
cfg = CLIPVisionConfig.from_json_file(os.path.join(a.model_dir, "config.json"))
model = CLIPVisionModelWithProjection(cfg).eval()
state = {k: v.float() for k, v in load_file(os.path.join(a.model_dir, "model.safetensors")).items()}
model.load_state_dict(state, strict=False)
model = model.to(device=dev, dtype=tdtype)
g = torch.Generator().manual_seed(0)
px = (torch.rand((a.batch_size, 3, cfg.image_size, cfg.image_size), generator=g) * 4 - 2).to(dev, tdtype)
times = []
autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if a.dtype == "bf16-autocast"
            else __import__("contextlib").nullcontext())
with torch.inference_mode(), autocast:
    model(pixel_values=px, output_hidden_states=True)
    sync()
    for _ in range(a.iters):
        t = time.perf_counter()
        model(pixel_values=px, output_hidden_states=True)
        sync()
        times.append(time.perf_counter() - t)
med = statistics.median(times)
r = {"torch": torch.__version__, "device": str(dev), "dtype": a.dtype, "threads": a.threads, "batch_size": a.batch_size, "iters": a.iters,
     "median_batch_s": med, "images_per_s": a.batch_size / med}
print(json.dumps(r) if a.json else f"torch {torch.__version__}: {r['images_per_s']:.2f} images/s "
      f"(batch {a.batch_size}, {dev}, {a.dtype}, {a.threads} threads, median of {a.iters})")
