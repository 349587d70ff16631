#!/usr/bin/env python3
"""Runs an export with the stock onnxruntime Python package alone, block by block as the
manifest chains them, and writes the outputs: proof that the graphs stand on their own.

    PYTHONPATH=.runtime/cpu python3 scripts/run_graphs.py GRAPH_DIR PIXELS.safetensors OUT.safetensors [--all-hidden-states]

With --all-hidden-states, every layer's output is written too, stacked [B, L, T, D].
A SigLIP2 naflex export takes its pixels file's patches with their grids (pixel_values and
spatial_shapes); every block after the embedding gets the key mask of the grids, and the
token outputs are written with the padding rows zeroed, as distorch-vision returns them.
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort


DTYPES = {"F32": "<f4", "I64": "<i8", "I32": "<i4"}


def read_tensors(path):
    # A minimal safetensors reader, so only numpy is needed.
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            b, e = info["data_offsets"]
            out[name] = np.frombuffer(data[b:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


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
    px = read_tensors(pixels)
    if "spatial_shapes" in px:  # naflex: patches, their grids, and the key mask of the grids
        grids = px["spatial_shapes"].astype(np.int64)
        h = px["pixel_values"]
        valid = np.arange(h.shape[1])[None, :] < (grids[:, 0] * grids[:, 1])[:, None]
        extra = {"key_mask": valid.astype(np.int32)}
        embed_feeds = {"pixel_values": h, "spatial_shapes": grids}
    else:
        (h,), valid, extra = px.values(), None, {}
        embed_feeds = {blocks[0]["inputs"][0]: h}
    states = []
    for i, (block, sess) in enumerate(zip(blocks[:-1], sessions[:-1])):
        feeds = embed_feeds if i == 0 else {block["inputs"][0]: h, **extra}
        h = sess.run(None, feeds)[0]
        states.append(h)
    head, head_sess = blocks[-1], sessions[-1]
    feeds = {head["inputs"][0]: states[-1], **extra}
    if "penultimate_hidden_states" in head["inputs"]:
        feeds["penultimate_hidden_states"] = states[-2]
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
    if valid is not None:  # token rows after each image's grid are zero, as the library's
        for k, v in result.items():
            if v.ndim >= 3:
                mask = valid.reshape(valid.shape[:1] + (1,) * (v.ndim - 3) + valid.shape[1:] + (1,))
                result[k] = np.where(mask, v, 0.0)
    write_safetensors(out, result)
    print(f"{len(blocks)} blocks: " + ", ".join(f"{k} {v.shape}" for k, v in result.items()))


if __name__ == "__main__":
    args = sys.argv[1:]
    flag = "--all-hidden-states" in args
    args = [a for a in args if a != "--all-hidden-states"]
    if len(args) != 3:
        sys.exit(__doc__)
    main(*args, all_hidden=flag)
