#!/usr/bin/env python3
"""A/B rounds of ONNX Runtime session settings on one graph, in one process: every variant
gets a session, and the runs alternate variant by variant, iteration by iteration, so a loaded
machine's slow phases fall on all of them. Prints each variant's median seconds per batch
(wall and process CPU) and the median per-iteration wall ratio against the first variant.

    PYTHONPATH=.runtime/cpu python3 scripts/ab_ort.py WHOLE.onnx [--batch-size 8] [--iters 8] \
        --variant base:opt=layout --variant all:opt=all [--variant NAME:key=value,...]

Variant keys: opt=basic|extended|layout|all (graph optimisation level; the project's sessions
use ort's Level3 = layout), spin=0|1 (session.intra_op.allow_spinning), file=OTHER.onnx,
any other key=value is passed as a session config entry. ov=f32 makes the variant an OpenVINO
model instead (file=MODEL.xml for NNCF's int8), compiled as scripts/bench_openvino.py does. The
process CPU seconds are the steadier figure on a loaded machine (ONNX Runtime's spinning is off
here unless spin=1, so they count work, not waiting).
"""
import argparse
import os
import statistics
import time

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--iters", type=int, default=8)
ap.add_argument("--threads", type=int, default=int(os.environ.get("DISTORCH_THREADS", os.cpu_count())))
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--variant", action="append", required=True)
a = ap.parse_args()

import numpy as np  # noqa: E402

# Both runtimes can share this process: onnxruntime may come from a folder on PYTHONPATH that
# brings its own numpy; the numpy imported first is the one both then use.
import onnxruntime as ort  # noqa: E402

levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", None),
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
px = np.random.default_rng(0).uniform(-2, 2, (a.batch_size, 3, a.size, a.size)).astype(np.float32)
variants = []
for spec in a.variant:
    name, _, kv = spec.partition(":")
    opts = dict(item.partition("=")[::2] for item in filter(None, kv.split(",")))
    if "ov" in opts:
        import openvino as ov
        core = ov.Core()
        m = core.read_model(opts.get("file", a.model))
        m.reshape({"pixel_values": [a.batch_size, 3, a.size, a.size]})
        c = core.compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": a.threads, "INFERENCE_PRECISION_HINT": opts["ov"],
                                          "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})

        class OvSession:
            def __init__(self, req):
                self.req = req

            def run(self, _names, feeds):
                self.req.infer(feeds)
        s = OvSession(c.create_infer_request())
        s.run(None, {"pixel_values": px})
        variants.append((name, s, [], []))
        continue
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = levels["layout"]
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = a.model
    for item in filter(None, kv.split(",")):
        k, _, v = item.partition("=")
        if k == "opt":
            if levels.get(v) is None:
                raise SystemExit(f"ab_ort.py: opt={v} (valid: {', '.join(x for x in levels if levels[x] is not None)})")
            so.graph_optimization_level = levels[v]
        elif k == "spin":
            so.add_session_config_entry("session.intra_op.allow_spinning", v)
        elif k == "file":
            model = v
        else:
            so.add_session_config_entry(k, v)
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    s.run(None, {"pixel_values": px})
    variants.append((name, s, [], []))
for _ in range(a.iters):
    for name, s, wall, cpu in variants:
        t, c = time.perf_counter(), time.process_time()
        s.run(None, {"pixel_values": px})
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
base, base_cpu = variants[0][2], variants[0][3]
print(f"onnxruntime {ort.__version__}, batch {a.batch_size}, {a.threads} threads, {a.iters} alternating runs, "
      f"load average {open('/proc/loadavg').read().split()[0]}")
for name, _, wall, cpu in variants:
    r = statistics.median(w / b for w, b in zip(wall, base))
    rc = statistics.median(c / b for c, b in zip(cpu, base_cpu))
    print(f"{name:12s} wall {statistics.median(wall):.3f} s  cpu {statistics.median(cpu):.3f} s  "
          f"wall/{variants[0][0]} {r:.3f}  cpu/{variants[0][0]} {rc:.3f}  "
          f"(cpu runs: {' '.join(f'{c:.2f}' for c in cpu)})")
