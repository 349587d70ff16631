#!/usr/bin/env python3
"""Where the time goes, per operator type, in ONNX Runtime and in OpenVINO on the same graph
(`distorch-vision export --granularity whole`), batch and thread count. Prints each op type's
share of the summed kernel time (shares stay meaningful on a loaded machine, absolute times
do not). One runtime per process, because each brings its own numpy:

    PYTHONPATH=.runtime/cpu python3 scripts/profile_ops.py ort WHOLE.onnx [--batch-size 8] [--iters 3]
    python3 scripts/profile_ops.py openvino WHOLE.onnx [--batch-size 8] [--iters 3]

ONNX Runtime: session option enable_profiling, all optimisations (ORT_ENABLE_ALL), the first run
(warm-up) left out. OpenVINO: the CPU plugin's per-layer counters (PERF_COUNT), f32 precision
hint, LATENCY hint, one stream, as scripts/bench_openvino.py compiles it. --json FILE writes
{op_type: seconds per batch}.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("runtime", choices=["ort", "openvino"])
ap.add_argument("model", help="whole.onnx from `distorch-vision export --granularity whole`")
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--threads", type=int, default=int(os.environ.get("DISTORCH_THREADS", os.cpu_count())))
ap.add_argument("--size", type=int, default=224, help="image size of the model")
ap.add_argument("--json", help="write {op_type: seconds per batch} here")
a = ap.parse_args()

import numpy as np  # noqa: E402  (after argparse so --help works without numpy)

px = np.random.default_rng(0).uniform(-2, 2, (a.batch_size, 3, a.size, a.size)).astype(np.float32)
per_op = collections.Counter()
count = collections.Counter()

if a.runtime == "ort":
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    for _ in range(a.iters + 1):
        s.run(None, {"pixel_values": px})
    events = json.load(open(s.end_profiling()))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if any(lo <= e["ts"] <= hi for lo, hi in runs):
            op = e["args"]["op_name"]
            per_op[op] += e["dur"] * 1e-6 / len(runs)
            count[op] += 1
    label = f"onnxruntime {ort.__version__}"
else:
    import openvino as ov

    core = ov.Core()
    m = core.read_model(a.model)
    m.reshape({"pixel_values": [a.batch_size, 3, a.size, a.size]})
    c = core.compile_model(m, "CPU", {
        "INFERENCE_NUM_THREADS": a.threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "PERF_COUNT": True,
    })
    r = c.create_infer_request()
    r.infer({"pixel_values": px})
    for _ in range(a.iters):
        r.infer({"pixel_values": px})
        for p in r.profiling_info:
            if p.status == p.Status.EXECUTED:
                per_op[p.node_type] += p.real_time.total_seconds() / a.iters
                count[p.node_type] += 1
    label = f"openvino {ov.__version__.split('-')[0]}"

total = sum(per_op.values())
print(f"{label}: batch {a.batch_size}, {a.threads} threads, {a.iters} runs; "
      f"summed kernel time {total:.3f} s per batch")
for op, t in per_op.most_common():
    print(f"{op:32s} {100 * t / total:6.1f} %  {t * 1e3:9.1f} ms  ({count[op] // a.iters if a.runtime == 'openvino' else count[op] // max(1, a.iters)} nodes)")
if a.json:
    json.dump(dict(per_op), open(a.json, "w"), indent=1)
