#!/usr/bin/env python3
"""Nearest neighbours by cosine similarity over the rows of an encode's output.

    scripts/nearest_neighbours.py OUT [--tensor image_embeds] [--query FILE_OR_INDEX ...] [-k 5]

OUT is any encode output: a sharded folder (index.json and shard-*.safetensors), one
.safetensors file, one .npy (sources in OUT.sources.json) or an npy folder (<tensor>.npy and
sources.json). Read with numpy only (safetensors is parsed by hand: 8-byte little-endian header
length, JSON header, raw data). Without --query, prints the neighbours of the first few images.
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


def as_rows(t):
    t = t.astype(np.float32)
    return t if t.ndim == 2 else t[:, 0, :]  # hidden states: the class token's row


def load_rows(out, tensor):
    """(row blocks, sources) of any encode output; exits with one line when OUT is none."""
    def missing(where, have):
        sys.exit(f"error: {where} has no tensor {tensor!r} (has {sorted(have)}); choose one with --tensor")

    if not os.path.exists(out):
        sys.exit(f"error: {out} does not exist")
    if os.path.isfile(out) and out.endswith(".npy"):
        t = np.load(out)
        src_file = os.path.splitext(out)[0] + ".sources.json"
        sources = json.load(open(src_file)) if os.path.isfile(src_file) else [str(i) for i in range(len(t))]
        return [as_rows(t)], sources
    if os.path.isfile(out):
        try:
            tensors, meta = read_safetensors(out)
        except (ValueError, KeyError, struct.error) as e:
            sys.exit(f"error: {out} is not a safetensors file written by distorch-vision ({e})")
        if tensor not in tensors:
            missing(out, tensors)
        return [as_rows(tensors[tensor])], json.loads(meta.get("inputs", "[]"))
    if os.path.isfile(os.path.join(out, "index.json")):
        with open(os.path.join(out, "index.json")) as f:
            index = json.load(f)
        rows, sources = [], []
        for shard in index["shards"]:
            tensors, meta = read_safetensors(os.path.join(out, shard["file"]))
            if tensor not in tensors:
                missing(shard["file"], tensors)
            rows.append(as_rows(tensors[tensor]))
            sources.extend(json.loads(meta.get("inputs", "[]")) or shard["sources"])
        return rows, sources
    npy = os.path.join(out, tensor + ".npy")
    if os.path.isfile(os.path.join(out, "sources.json")):
        if not os.path.isfile(npy):
            missing(out, [f[:-4] for f in os.listdir(out) if f.endswith(".npy")])
        return [as_rows(np.load(npy))], json.load(open(os.path.join(out, "sources.json")))
    sys.exit(f"error: {out} is not an encode output (no index.json, sources.json, .safetensors or .npy)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--tensor", default="image_embeds")
    ap.add_argument("--query", nargs="*", default=None, help="source paths (or substrings) or row numbers")
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    rows, sources = load_rows(args.out_dir, args.tensor)
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
