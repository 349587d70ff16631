#!/usr/bin/env python3
"""Nearest neighbours by cosine similarity over the shards of a sharded encode.

    scripts/nearest_neighbours.py OUT_DIR [--tensor image_embeds] [--query FILE_OR_INDEX ...] [-k 5]

Reads OUT_DIR/index.json and its shard-*.safetensors with numpy (the safetensors format is
parsed by hand: 8-byte little-endian header length, JSON header, raw data). Without --query,
prints the neighbours of the first few images.
"""
import argparse, json, os, struct, sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        tensors[name] = np.frombuffer(data[a:b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--tensor", default="image_embeds")
    ap.add_argument("--query", nargs="*", default=None, help="source paths (or substrings) or row numbers")
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    with open(os.path.join(args.out_dir, "index.json")) as f:
        index = json.load(f)
    rows, sources = [], []
    for shard in index["shards"]:
        tensors, meta = read_safetensors(os.path.join(args.out_dir, shard["file"]))
        if args.tensor not in tensors:
            sys.exit(f"error: {shard['file']} has no tensor {args.tensor!r} (has {sorted(tensors)})")
        t = tensors[args.tensor].astype(np.float32)
        rows.append(t.reshape(t.shape[0], -1) if t.ndim == 2 else t[:, 0, :])
        sources.extend(json.loads(meta.get("inputs", "[]")) or shard["sources"])
    if not rows:
        sys.exit("error: no finished shards")
    x = np.concatenate(rows)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    queries = []
    for q in args.query or [str(i) for i in range(min(3, len(sources)))]:
        if q.isdigit() and int(q) < len(sources):
            queries.append(int(q))
        else:
            hits = [i for i, s in enumerate(sources) if s == q or q in s]
            if not hits:
                sys.exit(f"error: no image matches {q!r}")
            queries.append(hits[0])
    sims = x[queries] @ x.T
    for qi, row in zip(queries, sims):
        print(f"{sources[qi]}")
        order = [j for j in np.argsort(-row) if j != qi][: args.k]
        for j in order:
            print(f"  {row[j]:+.4f}  {sources[j]}")


if __name__ == "__main__":
    main()
