#!/usr/bin/env python3
"""Batch encoding on Ray Data (distorch_vision.ray): the CLI's `encode` flags, on a laptop or a cluster.

  # laptop: a local Ray instance
  scripts/ray_encode.py --model clip_vision_h.safetensors --images photos/ --out emb/
  # cluster: `ray start --head` here, `ray start --address HEAD:6379` on the others
  scripts/ray_encode.py --address auto --model clip_vision_h.safetensors \\
      --images 'laion/{00000..00099}.tar' --out emb/ --num-gpus-per-actor 1

Output: emb/embeddings/*.parquet, emb/img_emb/*.npy + emb/metadata/*.parquet (clip-retrieval's
layout: `autofaiss build_index --embeddings=emb/img_emb`), emb/skipped.json. A rerun resumes.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from distorch_vision import DistorchError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="a .safetensors path, or a name in the clip_vision folders")
    ap.add_argument("--images", nargs="+", required=True,
                    help="folders, image files, file lists (.txt, one path a line) or WebDataset .tar "
                         "shards ({00000..00099}.tar brace ranges)")
    ap.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    ap.add_argument("--device", help="cpu or cuda:N inside each actor (default: cuda:0 when the actor has a GPU)")
    ap.add_argument("--virtual-vram-gb", type=float, default=4.0)
    ap.add_argument("--donor-device", default="cpu")
    ap.add_argument("--expert-mode-allocations", default="")
    ap.add_argument("--eject-models", choices=["true", "false"], default="true")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "int8"])
    ap.add_argument("--comfyui", help="ComfyUI folder for model names (default: $COMFYUI_PATH)")
    ap.add_argument("--extra-model-paths", help="an extra_model_paths.yaml")
    ap.add_argument("--outputs", default="image_embeds",
                    help="comma-separated outputs (image_embeds is always written)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward pass (and per Ray batch)")
    ap.add_argument("--crop", choices=["center", "none"], default="center")
    ap.add_argument("--shard-size", type=int, default=1024, help="files per output shard (a tar is one shard)")
    ap.add_argument("--address", help="Ray cluster address ('auto' after `ray start --head`); default: local")
    ap.add_argument("--num-actors", type=int, help="model replicas (default: GPUs / --num-gpus-per-actor, or 1)")
    ap.add_argument("--num-gpus-per-actor", type=float,
                    help="GPUs per actor (default 1 on GPU clusters, 0 on CPU); >1 lets a DisTorch2 plan "
                         "spread one model over several GPUs of a node")
    ap.add_argument("--num-cpus-per-actor", type=float, help="CPUs per actor (default: 1 on GPU; on CPU the cluster's CPUs less 0.5, split over the actors)")
    ap.add_argument("--decode-threads", type=int, default=2, help="decoding threads inside each actor")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args(argv)
    from distorch_vision.ray import encode

    try:
        s = encode(a.images, a.out, a.model, device=a.device, virtual_vram_gb=a.virtual_vram_gb,
                   donor_device=a.donor_device, expert_mode_allocations=a.expert_mode_allocations,
                   eject_models=a.eject_models == "true", dtype=a.dtype, comfyui_path=a.comfyui,
                   extra_model_paths=a.extra_model_paths, outputs=a.outputs, crop=a.crop,
                   batch_size=a.batch_size, shard_size=a.shard_size, num_actors=a.num_actors,
                   num_gpus_per_actor=a.num_gpus_per_actor, num_cpus_per_actor=a.num_cpus_per_actor,
                   decode_threads=a.decode_threads, address=a.address, progress=not a.no_progress)
    except DistorchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for sk in s.skipped:
        print(f"skipped {sk['file']}: {sk['reason']}", file=sys.stderr)
    if a.json:
        print(json.dumps({"images": s.images, "seconds": s.seconds, "images_per_s": s.images_per_s,
                          "skipped": len(s.skipped), "shards_written": s.shards_written,
                          "shards_already_done": s.shards_already_done, "shards_total": s.shards_total}))
    else:
        print(s.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
