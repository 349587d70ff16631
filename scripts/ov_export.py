"""The `--granularity whole` export the OpenVINO scripts read (bench_openvino.py,
quantize_openvino.py): made with the project's binary into `graphs`, reused when present."""
import json
import os
import subprocess


def whole_graph(model_dir, graphs, binary):
    """Path of the whole-model ONNX graph of MODEL_DIR/model.safetensors, exporting it first if needed."""
    manifest = os.path.join(graphs, "manifest.json")
    if not os.path.isfile(manifest) or not json.load(open(manifest)).get("whole"):
        subprocess.run([binary, "export", "--model", os.path.join(model_dir, "model.safetensors"),
                        "--granularity", "whole", "--out", graphs], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(graphs, json.load(open(manifest))["whole"]["file"])
