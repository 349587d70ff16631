#!/usr/bin/env python3
"""OpenVINO's own int8: NNCF post-training quantisation (weights and activations, transformer
preset) of our `--granularity whole` export, saved as MODEL_DIR/ov-int8/model.xml for
`scripts/bench_openvino.py --int8`. Prints the image_embeds cosine of the int8 model against
OpenVINO fp32 on 8 held-out random images. nncf is optional (it pulls scipy and scikit-learn):

    python3 -m pip install nncf openvino numpy      # or: PYTHONPATH=<dir from pip install --target>
    python3 scripts/quantize_openvino.py MODEL_DIR [--calib 16] [--graphs DIR] [--bin target/release/distorch-vision]

Calibration runs on random pixels in the bench's range (uniform -2..2), which is what the
benchmarks feed; for a real model, calibrate on real images instead.
"""
import argparse
import json
import os
import sys
import time

try:
    import numpy as np
    import openvino as ov
    import nncf
except ImportError as e:
    print(f"quantize_openvino.py: {e.name} is not installed; install with "
          "`python3 -m pip install nncf openvino numpy` for the OpenVINO int8 rows")
    sys.exit(0)

from ov_export import whole_graph  # noqa: E402 (beside this script)

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--calib", type=int, default=16, help="calibration images")
ap.add_argument("--graphs", default=None, help="export folder (default MODEL_DIR/ov-whole)")
ap.add_argument("--bin", default="target/release/distorch-vision")
a = ap.parse_args()

graphs = a.graphs or os.path.join(a.model_dir, "ov-whole")
whole = whole_graph(a.model_dir, graphs, a.bin)
cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
s = cfg.get("vision_config", cfg)["image_size"]

core = ov.Core()
model = core.read_model(whole)
model.reshape({"pixel_values": [-1, 3, s, s]})
rng = np.random.default_rng(7)
calib = [rng.uniform(-2, 2, (1, 3, s, s)).astype(np.float32) for _ in range(a.calib)]
t = time.perf_counter()
q = nncf.quantize(model, nncf.Dataset(calib, lambda x: {"pixel_values": x}),
                  model_type=nncf.ModelType.TRANSFORMER, subset_size=a.calib)
print(f"nncf {nncf.__version__}: quantised in {time.perf_counter() - t:.1f} s on {a.calib} images", file=sys.stderr)
out = os.path.join(a.model_dir, "ov-int8")
os.makedirs(out, exist_ok=True)
ov.save_model(q, os.path.join(out, "model.xml"), compress_to_fp16=False)

px = np.random.default_rng(1).uniform(-2, 2, (8, 3, s, s)).astype(np.float32)
cfg32 = {"INFERENCE_PRECISION_HINT": "f32"}
ref = core.compile_model(model, "CPU", cfg32)({"pixel_values": px})["image_embeds"]
got = core.compile_model(q, "CPU", cfg32)({"pixel_values": px})["image_embeds"]
cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
print(f"OpenVINO int8 (nncf {nncf.__version__}) image_embeds cosine against OpenVINO fp32 on 8 random "
      f"images: min {cos.min():.5f}, mean {cos.mean():.5f}; saved {out}/model.xml")
