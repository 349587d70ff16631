#!/usr/bin/env python3
"""Ray Data batch encoding (distorch_vision.ray) against the CLI's sharded `encode`, same machine,
same images, same library build; appends a section to BENCHMARKS.md with --append.

  PYTHON=~/.cache/distorch-vision/devenv/bin/python
  $PYTHON scripts/bench_ray.py [--images 5000] [--model M.safetensors] [--actors 1] [--append]

Images: N small generated pictures (gradients + noise, 48–96 px, half JPEG, half PNG), made once
under --work. The default model is the tiny test fixture, so the figures measure the pipeline
(read, decode, preprocess, transport, write), where Ray's overhead is largest relative to the
work; pass a real model to see it against real inference. The CLI runs first, then Ray (its
start-up timed separately); Ray's embeddings are checked against the CLI's row by row.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    marker = folder / f".complete-{n}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5000)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(48, 97, 2))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
        img = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
        sub = folder / f"{i // 1000:02d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:06d}.{'jpg' if i % 2 else 'png'}", quality=90)
    marker.touch()


def load_avg() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--model", default=str(ROOT / "tests/fixtures/models/clip_quickgelu_f32/model.safetensors"))
    ap.add_argument("--work", default=str(ROOT / "target/bench-ray"))
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="ONNX Runtime threads (DISTORCH_THREADS) for the CLI and each actor")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each, interleaved (medians reported)")
    ap.add_argument("--cli", help="distorch-vision binary (default: target/release, else target/debug)")
    ap.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    a = ap.parse_args()

    work = Path(a.work)
    images = work / f"images-{a.images}"
    t = time.monotonic()
    make_images(images, a.images)
    print(f"bench_ray: {a.images} images in {images} ({time.monotonic() - t:.1f} s)", file=sys.stderr)
    cli = Path(a.cli) if a.cli else next(
        (p for p in (ROOT / "target/release/distorch-vision", ROOT / "target/debug/distorch-vision") if p.is_file()),
        None)
    if cli is None:
        sys.exit("bench_ray: build the CLI first (cargo build --release)")
    build = cli.parent.name
    lib = cli.parent / "libdistorch_vision.so"
    os.environ.setdefault("DISTORCH_VISION_LIBRARY", str(lib))
    os.environ["DISTORCH_THREADS"] = str(a.threads)
    os.environ.setdefault("DISTORCH_GRAPHS_DIR", str(work / "graphs"))
    os.environ.setdefault("DISTORCH_LOG", "error")
    load_before = load_avg()

    # CLI, sharded (a warm-up run first exports the graphs, so neither side pays for it).
    common = ["--model", a.model, "--device", "cpu", "--batch-size", str(a.batch_size), "--outputs", "image_embeds"]
    warm = work / "warm.safetensors"
    first = sorted(images.rglob("*.png"))[:2]
    subprocess.run([str(cli), "encode", *common, "--images", *map(str, first), "--out", str(warm)], check=True)
    import ray
    from distorch_vision.ray import encode

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p)
    t = time.monotonic()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_s = time.monotonic() - t
    cli_out, ray_out = work / "cli-out", work / "ray-out"
    cli_runs, ray_runs = [], []
    for rep in range(a.repeat):  # interleaved, so a change in the machine's load hits both
        shutil.rmtree(cli_out, ignore_errors=True)
        t = time.monotonic()
        r = subprocess.run([str(cli), "encode", *common, "--images", str(images), "--out", str(cli_out),
                            "--shard-size", str(a.shard_size), "--decode-threads", "2"],
                           capture_output=True, text=True)
        cli_runs.append(time.monotonic() - t)
        if r.returncode:
            sys.exit(f"bench_ray: the CLI failed: {r.stderr}")
        print((r.stdout + r.stderr).strip().splitlines()[-1], file=sys.stderr)
        shutil.rmtree(ray_out, ignore_errors=True)
        s = encode([images], ray_out, a.model, device="cpu", batch_size=a.batch_size, shard_size=a.shard_size,
                   num_actors=a.actors, num_cpus_per_actor=a.cpus_per_actor, progress=False)
        if s.images != a.images:
            sys.exit(f"bench_ray: Ray encoded {s.images} of {a.images} images")
        ray_runs.append(s.seconds)
        print(s.line(), file=sys.stderr)
    ray.shutdown()
    load_after = load_avg()
    cli_s, ray_s = float(np.median(cli_runs)), float(np.median(ray_runs))

    # Same rows as the CLI, in the same order.
    from safetensors import safe_open

    ref, keys = [], []
    idx = json.loads((cli_out / "index.json").read_text())
    for sh in idx["shards"]:
        with safe_open(str(cli_out / sh["file"]), "np") as f:
            ref.append(f.get_tensor("image_embeds"))
        keys += sh["sources"]
    ours = np.concatenate([np.load(p) for p in sorted(glob.glob(str(ray_out / "img_emb/*.npy")))])
    import pyarrow.parquet as pq

    our_keys = [k for p in sorted(glob.glob(str(ray_out / "metadata/*.parquet")))
                for k in pq.read_table(p).column("key").to_pylist()]
    assert our_keys == keys, "row order differs from the CLI"
    diff = float(np.abs(ours - np.concatenate(ref)).max())

    n = a.images
    res = {"images": n, "cli_s": cli_s, "cli_img_s": n / cli_s, "ray_init_s": init_s, "ray_s": ray_s,
           "ray_img_s": n / ray_s, "ray_total_img_s": n / (ray_s + init_s), "cli_runs": cli_runs,
           "ray_runs": ray_runs, "overhead": ray_s / cli_s - 1, "max_diff": diff, "build": build,
           "load_before": load_before, "load_after": load_after, "actors": a.actors, "threads": a.threads}
    print(json.dumps(res))
    if a.append:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        model = Path(a.model).parent.name if Path(a.model).name == "model.safetensors" else Path(a.model).name
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(
                f"\n## {time.strftime('%Y-%m-%d', time.gmtime())} — Ray Data vs the CLI's sharded encode — "
                f"{cpu}, {os.cpu_count()} cores\n\n"
                f"`scripts/bench_ray.py --images {n} --actors {a.actors} --cpus-per-actor {a.cpus_per_actor:g} "
                f"--threads {a.threads}`, medians of {a.repeat} interleaved runs (CLI "
                f"{', '.join(f'{x:.1f}' for x in cli_runs)} s; Ray {', '.join(f'{x:.1f}' for x in ray_runs)} s): model `{model}`, {build} "
                f"build, batch {a.batch_size}, shards of {a.shard_size}, {a.threads} ONNX Runtime threads, "
                f"`ray.init(num_cpus={os.cpu_count()})` local, {a.actors} actor(s) × {a.cpus_per_actor:g} CPU. "
                f"Load average {load_before} before, {load_after} after (the machine was shared with "
                f"other builds).\n\n"
                "| images | CLI s | CLI img/s | Ray start s | Ray encode s (actor start included) | Ray img/s | Ray img/s incl. start | "
                "Ray overhead | max \\|Ray − CLI\\| |\n|---|---|---|---|---|---|---|---|---|\n"
                f"| {n} | {cli_s:.1f} | {n / cli_s:.1f} | {init_s:.1f} | {ray_s:.1f} | {n / ray_s:.1f} | "
                f"{res['ray_total_img_s']:.1f} | {100 * res['overhead']:+.0f} % | {diff:.1e} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
