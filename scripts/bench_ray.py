#!/usr/bin/env python3
"""Ray batch encoding (distorch_vision.ray) measured two ways; appends a section to BENCHMARKS.md
with --append.

  PYTHON=~/.cache/distorch-vision/venv-<hash>/bin/python
  # wall time against the CLI's sharded encode, same machine, same images, alternating rounds
  $PYTHON scripts/bench_ray.py --images 400 --model vit_b16.safetensors --repeat 3 [--append]
  # the driver's peak memory (its own ru_maxrss) at each corpus size: flat when actors write
  $PYTHON scripts/bench_ray.py --memory 400,10000 [--append]

Images: N small generated pictures (gradients + noise, 48–96 px; 16–40 px for --memory), half
JPEG, half PNG, made once under --work. Every Ray run starts its own local instance
(``address="local"``); its start-up is timed apart from the encode (which includes starting the
actor and loading the model, as the CLI's time includes loading). Ray's rows are checked
against the CLI's.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
FIXTURE = ROOT / "tests/fixtures/models/clip_quickgelu_f32/model.safetensors"

#: One Ray driver in a fresh interpreter: encodes, prints its summary and its peak RSS.
DRIVER = """
import json, resource, sys, time
sys.path.insert(0, {python!r})
t = time.monotonic()
import ray
ray.init(address="local", num_cpus={cpus}, include_dashboard=False, log_to_driver=False)
init_s = time.monotonic() - t
from distorch_vision.ray import encode
s = encode([{images!r}], {out!r}, {model!r}, device="cpu", batch_size={batch}, shard_size={shard},
           outputs={outputs!r}, num_cpus_per_actor={cpus_per}, progress=False)
ray.shutdown()
print(json.dumps({{"images": s.images, "seconds": s.seconds, "init_s": init_s, "threads": s.threads,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def make_images(folder: Path, n: int, small: bool = False) -> None:
    from PIL import Image

    marker = folder / f".complete-{n}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5000)
    lo, hi = (16, 41) if small else (48, 97)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(lo, hi, 2))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
        img = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
        sub = folder / f"{i // 1000:02d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:06d}.{'jpg' if i % 2 else 'png'}", quality=90)
    marker.touch()


def ray_env(tmp: str) -> dict:
    """A driver of its own: Ray's files and token in ``tmp``, never a cluster left running."""
    import secrets

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=tmp, RAY_AUTH_TOKEN=secrets.token_hex(16), DISTORCH_LOG="error",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p))
    return env


def run_driver(images: Path, out: Path, model: str, a, outputs: str) -> dict:
    tmp = tempfile.mkdtemp(prefix="dvb-", dir="/tmp")
    try:
        code = DRIVER.format(python=str(ROOT / "python"), cpus=os.cpu_count(), images=str(images), out=str(out),
                             model=model, batch=a.batch_size, shard=a.shard_size, outputs=outputs,
                             cpus_per=float(os.cpu_count()))
        r = subprocess.run([sys.executable, "-c", code], env=ray_env(tmp), capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"bench_ray: the Ray driver failed:\n{r.stderr[-4000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_name() -> str:
    r = subprocess.run([str(ROOT / "scripts/cpu_info.sh")], capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        return r.stdout.strip().splitlines()[0]
    return next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")


def memory(a, work: Path) -> dict:
    """The driver's peak RSS at each size, ``--repeat`` alternating rounds (medians)."""
    sizes = [int(x) for x in a.memory.split(",")]
    for n in sizes:
        make_images(work / f"small-{n}", n, small=True)
    runs: dict[int, list] = {n: [] for n in sizes}
    for _ in range(a.repeat):
        for n in sizes:
            out = work / f"mem-out-{n}"
            shutil.rmtree(out, ignore_errors=True)
            r = run_driver(work / f"small-{n}", out, a.model, a, "image_embeds,last_hidden_state")
            if r["images"] != n:
                sys.exit(f"bench_ray: Ray encoded {r['images']} of {n} images")
            runs[n].append(r)
            print(f"bench_ray: {n} images: driver peak {r['maxrss_kib'] / 1024:.1f} MiB, {r['seconds']:.1f} s",
                  file=sys.stderr)
    peak = {n: float(np.median([r["maxrss_kib"] for r in runs[n]])) / 1024 for n in sizes}
    res = {"sizes": sizes, "peak_mib": peak, "ratio": max(peak.values()) / min(peak.values()),
           "runs_mib": {n: [r["maxrss_kib"] / 1024 for r in runs[n]] for n in sizes},
           "seconds": {n: float(np.median([r["seconds"] for r in runs[n]])) for n in sizes}}
    if a.append:
        model = Path(a.model).parent.name if Path(a.model).name == "model.safetensors" else Path(a.model).name
        rows = "".join(f"| {n} | {peak[n]:.1f} | {', '.join(f'{x:.1f}' for x in res['runs_mib'][n])} | "
                       f"{res['seconds'][n]:.1f} |\n" for n in sizes)
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d', time.gmtime())} — Ray driver memory vs corpus size — "
                    f"{cpu_name()}\n\n"
                    f"`scripts/bench_ray.py --memory {a.memory} --repeat {a.repeat}`: each run a fresh driver "
                    f"(`ray.init(address=\"local\")`), model `{model}`, outputs `image_embeds,last_hidden_state`, "
                    f"shards of {a.shard_size}, batch {a.batch_size}; the driver's own peak RSS (`ru_maxrss`), "
                    f"medians of alternating rounds. The actors write the shards, so the driver holds markers only.\n\n"
                    "| images | driver peak MiB (median) | rounds MiB | encode s |\n|---|---|---|---|\n"
                    f"{rows}\nLargest / smallest peak: {res['ratio']:.3f}.\n")
    return res


def versus_cli(a, work: Path) -> dict:
    images = work / f"images-{a.images}"
    make_images(images, a.images)
    cli = Path(a.cli) if a.cli else next(
        (p for p in (ROOT / "target/release/distorch-vision", ROOT / "target/debug/distorch-vision") if p.is_file()),
        None)
    if cli is None:
        sys.exit("bench_ray: build the CLI first (cargo build --release)")
    os.environ.setdefault("DISTORCH_VISION_LIBRARY", str(cli.parent / "libdistorch_vision.so"))
    os.environ.setdefault("DISTORCH_GRAPHS_DIR", str(work / "graphs"))
    os.environ.setdefault("DISTORCH_LOG", "error")
    load_before = open("/proc/loadavg").read().split()[0]
    common = ["--model", a.model, "--device", "cpu", "--batch-size", str(a.batch_size), "--outputs", "image_embeds"]
    # A warm-up run exports the graphs, so neither side pays for it.
    warm = work / "warm.safetensors"
    first = sorted(images.rglob("*.png"))[:2]
    subprocess.run([str(cli), "encode", *common, "--images", *map(str, first), "--out", str(warm)], check=True)
    cli_out, ray_out = work / "cli-out", work / "ray-out"
    cli_runs, ray_runs, init_runs = [], [], []
    for _ in range(a.repeat):  # alternating, so a change in the machine's load hits both
        shutil.rmtree(cli_out, ignore_errors=True)
        t = time.monotonic()
        r = subprocess.run([str(cli), "encode", *common, "--images", str(images), "--out", str(cli_out),
                            "--shard-size", str(a.shard_size)], capture_output=True, text=True)
        cli_runs.append(time.monotonic() - t)
        if r.returncode:
            sys.exit(f"bench_ray: the CLI failed: {r.stderr}")
        shutil.rmtree(ray_out, ignore_errors=True)
        s = run_driver(images, ray_out, a.model, a, "image_embeds")
        if s["images"] != a.images:
            sys.exit(f"bench_ray: Ray encoded {s['images']} of {a.images} images")
        ray_runs.append(s["seconds"])
        init_runs.append(s["init_s"])
        print(f"bench_ray: CLI {cli_runs[-1]:.1f} s, Ray {s['seconds']:.1f} s (+ {s['init_s']:.1f} s ray.init, "
              f"{s['threads']} threads)", file=sys.stderr)
    load_after = open("/proc/loadavg").read().split()[0]
    cli_s, ray_s, init_s = (float(np.median(x)) for x in (cli_runs, ray_runs, init_runs))

    # Same rows as the CLI, in the same order (img_emb is normalised; the Parquet rows are the model's).
    import pyarrow.parquet as pq
    from safetensors import safe_open

    ref, keys = [], []
    idx = json.loads((cli_out / "index.json").read_text())
    for sh in idx["shards"]:
        with safe_open(str(cli_out / sh["file"]), "np") as f:
            ref.append(f.get_tensor("image_embeds"))
        keys += sh["sources"]
    tables = [pq.read_table(p) for p in sorted(glob.glob(str(ray_out / "embeddings/*.parquet")))]
    ours = np.concatenate([np.stack(t.column("image_embeds").to_pylist()) for t in tables]).astype(np.float32)
    our_keys = [k for t in tables for k in t.column("key").to_pylist()]
    assert our_keys == keys, "row order differs from the CLI"
    diff = float(np.abs(ours - np.concatenate(ref)).max())
    n = a.images
    ratios = [r / c for r, c in zip(ray_runs, cli_runs)]
    res = {"images": n, "cli_s": cli_s, "ray_s": ray_s, "ray_init_s": init_s, "ratio": ray_s / cli_s,
           "ratio_with_init": (ray_s + init_s) / cli_s, "round_ratios": ratios, "cli_runs": cli_runs,
           "ray_runs": ray_runs, "max_diff": diff, "build": cli.parent.name, "load_before": load_before,
           "load_after": load_after}
    if a.append:
        model = Path(a.model).parent.name if Path(a.model).name == "model.safetensors" else Path(a.model).name
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(
                f"\n## {time.strftime('%Y-%m-%d', time.gmtime())} — Ray vs the CLI's sharded encode, one machine — "
                f"{cpu_name()}\n\n"
                f"`scripts/bench_ray.py --images {n} --model {model} --repeat {a.repeat}`, alternating rounds "
                f"(CLI {', '.join(f'{x:.1f}' for x in cli_runs)} s; Ray {', '.join(f'{x:.1f}' for x in ray_runs)} s; "
                f"per-round Ray/CLI {', '.join(f'{x:.3f}' for x in ratios)}): {res['build']} build, batch "
                f"{a.batch_size}, shards of {a.shard_size}; the CLI with every core for ONNX Runtime and 2 decode "
                f"threads; Ray: a fresh driver each round, `ray.init(address=\"local\")`, one actor holding the "
                f"{os.cpu_count()} CPUs (its ONNX Runtime threads) and 2 decode threads. Load average "
                f"{load_before} before, {load_after} after (the machine was shared with other work).\n\n"
                "| images | CLI s | Ray encode s (actor start and model load included) | Ray/CLI | ray.init s | "
                "(Ray + init)/CLI | max \\|Ray − CLI\\| |\n|---|---|---|---|---|---|---|\n"
                f"| {n} | {cli_s:.1f} | {ray_s:.1f} | {res['ratio']:.3f} | {init_s:.1f} | "
                f"{res['ratio_with_init']:.3f} | {diff:.1e} |\n")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--memory", help="comma-separated corpus sizes: measure the driver's peak memory instead")
    ap.add_argument("--model", default=str(FIXTURE))
    ap.add_argument("--work", default=str(ROOT / "target/bench-ray"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds (medians reported)")
    ap.add_argument("--cli", help="distorch-vision binary (default: target/release, else target/debug)")
    ap.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res = memory(a, work) if a.memory else versus_cli(a, work)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
