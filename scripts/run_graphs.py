#!/usr/bin/env python3
"""Runs an export with the stock onnxruntime Python package alone, block by block as the
manifest chains them, and writes the outputs: proof that the graphs stand on their own.

    PYTHONPATH=.runtime/cpu python3 scripts/run_graphs.py GRAPH_DIR PIXELS.safetensors OUT.safetensors [--all-hidden-states]

With --all-hidden-states, every layer's output is written too, stacked [B, L, T, D].
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def read_pixels(path):
    # A minimal safetensors reader (one F32 tensor), so only numpy is needed.
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    (name, info), = [(k, v) for k, v in header.items() if k != "__metadata__"]
    b, e = info["data_offsets"]
    return np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def main(graph_dir, pixels, out, all_hidden=False):
    manifest = json.load(open(os.path.join(graph_dir, "manifest.json")))
    blocks = manifest["blocks"]
    sessions = [ort.InferenceSession(os.path.join(graph_dir, b["file"]), providers=["CPUExecutionProvider"])
                for b in blocks]
    h = read_pixels(pixels)
    states = []
    for block, sess in zip(blocks[:-1], sessions[:-1]):
        h = sess.run(None, {block["inputs"][0]: h})[0]
        states.append(h)
    head, head_sess = blocks[-1], sessions[-1]
    feeds = {head["inputs"][0]: states[-1]}
    if len(head["inputs"]) > 1:
        feeds[head["inputs"][1]] = states[-2]
    head_out = dict(zip(head["outputs"], head_sess.run(None, feeds)))
    result = {"penultimate_hidden_states": states[-2]}
    if all_hidden:  # states[0] is the embedding; every layer's output follows
        result["all_hidden_states"] = np.stack(states[1:], axis=1)
    if "image_embeds" in head_out:  # CLIP, DINOv2: the head pools (DINOv2's also norms every token)
        result["last_hidden_state"] = states[-1]
        result.update(head_out)
    else:  # SigLIP: the head is the post-LN of every token
        result["last_hidden_state"] = head_out["last_hidden_state"]
        result["image_embeds"] = head_out["last_hidden_state"]
    write_safetensors(out, result)
    print(f"{len(blocks)} blocks: " + ", ".join(f"{k} {v.shape}" for k, v in result.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    flag = "--all-hidden-states" in args
    args = [a for a in args if a != "--all-hidden-states"]
    if len(args) != 3:
        sys.exit(__doc__)
    main(*args, all_hidden=flag)
