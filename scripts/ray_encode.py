#!/usr/bin/env python3
"""Batch encoding on Ray (distorch_vision.ray): the CLI's `encode` flags, on a laptop or a cluster.

  # laptop: a new local Ray instance (never a cluster left running on the machine)
  scripts/ray_encode.py --model clip_vision_h.safetensors --images photos/ --out emb/
  # cluster (README, "Batch encoding on Ray"): RAY_AUTH_MODE=token, `ray start` on each node
  scripts/ray_encode.py --address auto --model /models/clip_vision_h.safetensors \\
      --images 's3://bucket/laion/{00000..00099}.tar' --out s3://bucket/emb --num-gpus 1

Inputs, --out and --model: local paths or URIs (s3://, gs://, hdfs://, file://). Output:
embeddings/*.parquet, img_emb/*.npy (L2-normalised rows) + metadata/*.parquet (clip-retrieval's
layout: `autofaiss build_index --embeddings=emb/img_emb`), skipped.json. A rerun resumes.
"""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path


def checkout_package(root: Path, environ=os.environ) -> bool:
    """Whether to import distorch_vision from the checkout's python/ rather than an installed
    one: when the checkout has a library to load (its release build, or DISTORCH_VISION_LIBRARY)
    or nothing is installed. A clone used only for this script, with the wheel installed,
    runs on the wheel (the checkout's package alone would find no library)."""
    if environ.get("DISTORCH_VISION_LIBRARY") or (root / "target/release/libdistorch_vision.so").is_file():
        return True
    return importlib.util.find_spec("distorch_vision") is None


ROOT = Path(__file__).resolve().parents[1]
if checkout_package(ROOT):
    sys.path.insert(0, str(ROOT / "python"))

from distorch_vision import DistorchError  # noqa: E402
from distorch_vision.ray.driver import DEFAULT_BATCH_SIZE, DEFAULT_DECODE_THREADS  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True,
                    help="a .safetensors path (the same file on every node), a URI (fetched once per node), "
                         "or a name in the clip_vision folders")
    ap.add_argument("--images", nargs="+", required=True,
                    help="folders, image files, file lists (.txt, one path a line) or WebDataset .tar "
                         "shards ({00000..00099}.tar brace ranges); paths or URIs")
    ap.add_argument("--out", required=True, help="output folder or URI (a rerun resumes it)")
    g = ap.add_argument_group("Loader (as the CLI)")
    g.add_argument("--device", help="cpu, cuda:N or xpu:N inside each actor (default: cuda:0 when the actor has a GPU)")
    g.add_argument("--virtual-vram-gb", type=float, default=4.0)
    g.add_argument("--donor-device", default="cpu")
    g.add_argument("--expert-mode-allocations", default="")
    g.add_argument("--eject-models", choices=["true", "false"], default="true")
    g.add_argument("--donor-policy", choices=["stream", "execute"],
                   help="CPU-homed blocks on a GPU device: stream their weights (default) or execute on the CPU")
    g.add_argument("--dtype", choices=["fp32", "fp16", "int8", "bf16"])
    g.add_argument("--cpu-engine", choices=["auto", "mlas", "openvino"],
                   help="what runs the CPU blocks (default auto: OpenVINO when its plugin is installed)")
    g.add_argument("--openvino-ep", help="the OpenVINO plugin library (or its folder) on each node")
    g.add_argument("--micro-batch", type=int, help="micro-batches of N through the device segments")
    g.add_argument("--comfyui", help="ComfyUI folder for model names (default: $COMFYUI_PATH)")
    g.add_argument("--extra-model-paths", help="an extra_model_paths.yaml")
    g.add_argument("--graphs-dir", help="root folder of exported graphs on each node (default: the library's)")
    g.add_argument("--ort-library", help="ONNX Runtime's library (1.31 or newer, or its folder) on each node")
    g = ap.add_argument_group("Encoding (as the CLI)")
    g.add_argument("--outputs", default="image_embeds",
                   help="comma-separated outputs (image_embeds is always written)")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per forward pass")
    g.add_argument("--crop", choices=["center", "none"], default="center")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    g.add_argument("--shard-size", type=int, default=1024, help="files per output shard (a tar is one shard)")
    g.add_argument("--decode-threads", type=int, default=DEFAULT_DECODE_THREADS,
                   help="decoding threads inside each actor")
    g.add_argument("--no-normalize", action="store_true",
                   help="keep the model's img_emb rows (default: L2-normalised, as clip-retrieval writes them)")
    g = ap.add_argument_group("Ray")
    g.add_argument("--address", help="a Ray cluster ('auto', HOST:6379); default: a new local instance")
    g.add_argument("--num-actors", type=int, help="model replicas (default: one per GPU, or one per CPU node)")
    g.add_argument("--num-gpus", "--num-gpus-per-actor", dest="num_gpus", type=float,
                   help="GPUs per actor (default 1 on GPU clusters, 0 on CPU); >1 lets a DisTorch2 plan "
                        "spread one model over several GPUs of a node")
    g.add_argument("--num-cpus", "--num-cpus-per-actor", dest="num_cpus", type=float,
                   help="CPUs per actor, also its ONNX Runtime threads (default: 1 on GPU, the node's CPUs on CPU)")
    g = ap.add_argument_group("Output")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv, -vvv)")
    g.add_argument("-q", "--quiet", action="store_true", help="errors only (no progress or summary)")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from distorch_vision.ray import encode

    verbosity = -1 if a.quiet else a.verbose
    try:
        s = encode(a.images, a.out, a.model, device=a.device, virtual_vram_gb=a.virtual_vram_gb,
                   donor_device=a.donor_device, expert_mode_allocations=a.expert_mode_allocations,
                   eject_models=a.eject_models == "true", dtype=a.dtype, donor_policy=a.donor_policy,
                   micro_batch=a.micro_batch, cpu_engine=a.cpu_engine, openvino_ep=a.openvino_ep,
                   comfyui_path=a.comfyui, extra_model_paths=a.extra_model_paths,
                   graphs_dir=a.graphs_dir, ort_library=a.ort_library, outputs=a.outputs, crop=a.crop,
                   normalize=not a.no_normalize, strict=a.strict, batch_size=a.batch_size,
                   shard_size=a.shard_size, num_actors=a.num_actors, num_gpus_per_actor=a.num_gpus,
                   num_cpus_per_actor=a.num_cpus, decode_threads=a.decode_threads, address=a.address,
                   verbosity=verbosity, progress=not (a.no_progress or a.quiet))
    except DistorchError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped; rerun to resume (finished shards are kept)", file=sys.stderr)
        return 130
    if not a.quiet:
        for sk in s.skipped:
            print(f"skipped {sk['file']}: {sk['reason']}", file=sys.stderr)
    if a.json:
        print(json.dumps({"images": s.images, "seconds": s.seconds, "images_per_s": s.images_per_s,
                          "skipped": len(s.skipped), "skipped_total": s.skipped_total,
                          "shards_written": s.shards_written, "shards_already_done": s.shards_already_done,
                          "shards_total": s.shards_total, "actors": s.actors, "threads": s.threads,
                          "cluster": s.cluster}))
    elif not a.quiet:
        print(s.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
