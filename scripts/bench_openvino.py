#!/usr/bin/env python3
"""OpenVINO on the same weights, graph, pixel shapes and thread count as `distorch-vision bench`:
prints the median images/s. It runs our own `--granularity whole` ONNX export (one graph, the
same operators ONNX Runtime gets), compiled by OpenVINO's CPU plugin with an f32 precision hint
(on CPUs with bf16 or AMX units OpenVINO would otherwise compute in bf16, which is not a
like-for-like comparison) and the batch fixed, as a user tuning OpenVINO would. openvino is
optional:

    python3 -m pip install openvino numpy
    python3 scripts/bench_openvino.py MODEL_DIR [--batch-size 8] [--iters 5] [--threads N] [--json]
        [--precision f32|bf16|default] [--graphs DIR] [--bin target/release/distorch-vision] [--int8]

MODEL_DIR holds model.safetensors + config.json (scripts/make_random_model.py). The export is
made with the project's binary into --graphs (reused when present). --int8 runs OpenVINO's own
int8 model instead (NNCF post-training quantisation of the same export, made once by
scripts/quantize_openvino.py into MODEL_DIR/ov-int8).
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import numpy as np
    import openvino as ov
except ImportError as e:
    print(f"bench_openvino.py: {e.name} is not installed; install with "
          "`python3 -m pip install openvino numpy` to get the OpenVINO baseline")
    sys.exit(0)

from ov_export import whole_graph  # noqa: E402 (beside this script)

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--threads", type=int, default=int(os.environ.get("DISTORCH_THREADS", os.cpu_count())))
ap.add_argument("--precision", choices=["f32", "bf16", "default"], default="f32",
                help="INFERENCE_PRECISION_HINT; default = none set (OpenVINO's own choice: bf16 on AMX/AVX512_BF16 CPUs)")
ap.add_argument("--graphs", default=None, help="export folder (default MODEL_DIR/ov-whole)")
ap.add_argument("--bin", default="target/release/distorch-vision")
ap.add_argument("--json", action="store_true")
ap.add_argument("--int8", action="store_true", help="the NNCF int8 model in MODEL_DIR/ov-int8")
a = ap.parse_args()

graphs = a.graphs or os.path.join(a.model_dir, "ov-whole")
whole = whole_graph(a.model_dir, graphs, a.bin)
cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
s = cfg.get("vision_config", cfg)["image_size"]

if a.int8:
    whole = os.path.join(a.model_dir, "ov-int8", "model.xml")
    if not os.path.isfile(whole):
        print(f"bench_openvino.py: no {whole}; make it with scripts/quantize_openvino.py {a.model_dir}")
        sys.exit(0)
core = ov.Core()
t0 = time.perf_counter()
model = core.read_model(whole)
model.reshape({"pixel_values": [a.batch_size, 3, s, s]})
config = {"INFERENCE_NUM_THREADS": a.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
if a.precision != "default":
    config["INFERENCE_PRECISION_HINT"] = a.precision
compiled = core.compile_model(model, "CPU", config)
build_s = time.perf_counter() - t0
request = compiled.create_infer_request()
# The same random pixels bench_torch.py uses in shape and range (uniform -2..2).
px = np.random.default_rng(0).uniform(-2, 2, (a.batch_size, 3, s, s)).astype(np.float32)


def run():
    request.infer({"pixel_values": px})
    # Outputs are copied out, as `distorch-vision encode` hands its outputs to the caller.
    return [np.array(request.get_output_tensor(i).data) for i in range(len(compiled.outputs))]


run()
times = []
for _ in range(a.iters):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
med = statistics.median(times)
hint = compiled.get_property("INFERENCE_PRECISION_HINT")
precision = (hint.to_string() if hasattr(hint, "to_string") else str(hint)) + (" int8" if a.int8 else "")
r = {"openvino": ov.__version__.split("-")[0], "precision": precision,
     "threads": a.threads, "batch_size": a.batch_size, "iters": a.iters, "build_s": build_s,
     "median_batch_s": med, "images_per_s": a.batch_size / med}
print(json.dumps(r) if a.json else f"openvino {r['openvino']}: {r['images_per_s']:.2f} images/s "
      f"(batch {a.batch_size}, {r['precision']}, {a.threads} threads, median of {a.iters})")
