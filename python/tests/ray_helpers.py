"""Shared by the Ray tests: a hermetic environment for Ray (its own temp folder and token, never a
cluster left on the machine), generated images and tars, the CLI's reference rows, the extra
tool environments scripts/test.sh caches (moto's S3 server, clip-retrieval's reader)."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/models/clip_quickgelu_f32/model.safetensors"
OTHER_MODEL = ROOT / "tests/fixtures/models/siglip_f32/model.safetensors"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distorch-vision"


def ray_env(tmp: str) -> dict:
    """Environment for a Ray driver of a test: Ray's files under ``tmp`` (a short path: Ray's
    socket names must fit 107 bytes), a token of its own (nothing written to ~/.ray), no
    RAY_ADDRESS, the package and library under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=tmp, RAY_AUTH_TOKEN=secrets.token_hex(16),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p),
               DISTORCH_LOG="error", DISTORCH_MODEL_CACHE=os.path.join(tmp, "models"))
    return env


def short_tmp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def cli() -> Path:
    env = os.environ.get("DISTORCH_VISION_CLI")
    candidates = [Path(env)] if env else [ROOT / "target/release/distorch-vision",
                                          ROOT / "target/debug/distorch-vision"]
    for p in candidates:
        if p.is_file():
            return p
    pytest.fail(f"the distorch-vision CLI is not built (looked in {', '.join(map(str, candidates))}); "
                "run `cargo build` or scripts/test.sh", pytrace=False)


def make_images(folder: Path, n: int, seed: int = 14, corrupt: bool = False) -> None:
    """``n`` small PNG/JPEG images of assorted sizes (every fifth in a subfolder)."""
    from PIL import Image

    (folder / "sub").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        sub = folder / "sub" if i % 5 == 0 else folder
        img.save(sub / f"img_{i:03d}.{'jpg' if i % 3 == 0 else 'png'}")


def cli_encode(images: list, outputs: str = "image_embeds,last_hidden_state",
               model: Path = MODEL) -> tuple[list[str], dict]:
    """The CLI's `encode` of ``images``: (sources, {output: rows})."""
    from safetensors import safe_open

    with tempfile.TemporaryDirectory(prefix="dv-cli-") as d:
        out = Path(d) / "cli.safetensors"
        r = subprocess.run([str(cli()), "encode", "--model", str(model), "--images", *map(str, images),
                            "--out", str(out), "--device", "cpu", "--eject-models", "false", "--outputs", outputs],
                           capture_output=True, text=True, env=dict(os.environ, DISTORCH_LOG="error"))
        assert r.returncode == 0, r.stderr
        with safe_open(str(out), "np") as f:
            return json.loads(f.metadata()["inputs"]), {k: f.get_tensor(k) for k in f.keys()}


def make_tars(files: list[Path], dest: Path, n_tars: int = 2, broken: bool = True) -> dict:
    """img2dataset-style shards ``{00000..}.tar``: KEY.jpg|png + KEY.txt + KEY.json (url), and a
    corrupt image in the last; returns {key: source file or None}."""
    by_key: dict = {}
    for t in range(n_tars):
        with tarfile.open(dest / f"{t:05d}.tar", "w") as tf:
            def add(name, data):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))

            for j, p in enumerate(files[t::n_tars]):
                key = f"{t:05d}{j:04d}"
                by_key[key] = p
                add(f"{key}{p.suffix}", p.read_bytes())
                add(f"{key}.txt", f"caption of {p.name}".encode())
                add(f"{key}.json", json.dumps({"url": f"https://example.com/{p.name}", "key": key}).encode())
            if broken and t == n_tars - 1:
                add(f"{t:05d}9999.jpg", b"\xff\xd8 broken")
                by_key[f"{t:05d}9999"] = None
    return by_key


def read_out(out: Path):
    """(img_emb rows, metadata rows, embeddings tables) of an output folder, shard by shard."""
    import pyarrow.parquet as pq

    npy = [np.load(p) for p in sorted(glob.glob(str(out / "img_emb/*.npy")))]
    meta = [pq.read_table(p) for p in sorted(glob.glob(str(out / "metadata/*.parquet")))]
    emb = [pq.read_table(p) for p in sorted(glob.glob(str(out / "embeddings/*.parquet")))]
    assert len(npy) == len(meta) == len(emb)
    for a, m, e in zip(npy, meta, emb):
        assert a.dtype == np.float32 and a.ndim == 2 and len(a) == m.num_rows == e.num_rows
    return np.concatenate(npy), [r for m in meta for r in m.to_pylist()], emb


def column(tables, name: str) -> np.ndarray:
    return np.concatenate([np.stack(t.column(name).to_pylist()) for t in tables]).astype(np.float32)


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------- tool venvs


def tool_python(name: str, requirements: str) -> str:
    """The interpreter of a tool environment scripts/test.sh makes and caches
    (``~/.cache/distorch-vision/<name>-<hash of its requirements>``), or the one named by
    ``DISTORCH_TEST_<NAME>_PYTHON``. Missing: a failure saying how to make it, never a skip."""
    var = f"DISTORCH_TEST_{name.upper().replace('-', '_')}_PYTHON"
    if os.environ.get(var):
        return os.environ[var]
    h = hashlib.sha256()
    for req in requirements.split():
        h.update((ROOT / req).read_bytes())
    venv = CACHE / f"{name}-{h.hexdigest()[:12]}"
    if not (venv / ".complete").is_file():
        pytest.fail(f"the {name} tool environment ({venv}, from {requirements}) is missing; run "
                    f"scripts/test.sh once (it builds and caches it), or set {var}", pytrace=False)
    return str(venv / "bin/python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3-compatible server (an HTTP server speaking the S3 REST API, state in memory)
    on 127.0.0.1 and a free port, for one test module; stopped by :meth:`stop`."""

    def __init__(self) -> None:
        python = tool_python("s3-server", "python/requirements-s3-server.txt")
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="dv-moto-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"moto's S3 server did not start: {Path(self.log.name).read_text()[-2000:]}")
                time.sleep(0.1)

    def uri(self, path: str) -> str:
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1&allow_bucket_creation=true"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)


def run_driver(code: str, env: dict, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (its own Ray driver) with ``env``."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)
