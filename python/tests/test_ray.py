"""distorch_vision.ray on a local Ray cluster (2 CPUs, one ray.init for the module): folder and
WebDataset tar inputs give the CLI's `encode` embeddings row by row, a rerun does no work, a
corrupt image is listed, and faiss finds each image's own embedding from the .npy output."""

import glob
import importlib.util
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/models/clip_quickgelu_f32/model.safetensors"
N_IMAGES = 24

_missing = [m for m in ("ray", "pyarrow", "pandas", "faiss") if importlib.util.find_spec(m) is None]
if _missing:
    raise pytest.UsageError(
        f"test_ray.py needs {', '.join(_missing)} (pinned in python/requirements-test.txt), missing "
        f"from this interpreter; run scripts/test.sh or `pip install -r python/requirements-test.txt`")

import pyarrow.parquet as pq  # noqa: E402


def cli() -> Path:
    env = os.environ.get("DISTORCH_VISION_CLI")
    candidates = [Path(env)] if env else [ROOT / "target/release/distorch-vision",
                                          ROOT / "target/debug/distorch-vision"]
    for p in candidates:
        if p.is_file():
            return p
    pytest.fail(f"the distorch-vision CLI is not built (looked in {', '.join(map(str, candidates))}); "
                "run `cargo build` or scripts/test.sh", pytrace=False)


@pytest.fixture(scope="module")
def ray_cluster(library_path):
    import ray

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "DISTORCH_VISION_LIBRARY", "DISTORCH_LOG")}
    # Workers find this checkout's package and the library under test through the environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p)
    os.environ["DISTORCH_VISION_LIBRARY"] = str(library_path)
    os.environ.setdefault("DISTORCH_LOG", "error")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of small generated PNG and JPEG images of assorted sizes, and a corrupt file."""
    d = tmp_path_factory.mktemp("ray-images")
    folder = d / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(14)
    for i in range(N_IMAGES):
        h, w = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        sub = folder / "sub" if i % 5 == 0 else folder
        img.save(sub / f"img_{i:03d}.{'jpg' if i % 3 == 0 else 'png'}")
    corrupt = d / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder, corrupt


@pytest.fixture(scope="module")
def cli_reference(images, tmp_path_factory):
    """The CLI's `encode` of the folder: {source path: row of each output}."""
    folder, _ = images
    out = tmp_path_factory.mktemp("ray-cli") / "cli.safetensors"
    r = subprocess.run([str(cli()), "encode", "--model", str(MODEL), "--images", str(folder),
                        "--out", str(out), "--device", "cpu", "--eject-models", "false"],
                       capture_output=True, text=True, env=dict(os.environ, DISTORCH_LOG="error"))
    assert r.returncode == 0, r.stderr
    with safe_open(str(out), "np") as f:
        sources = json.loads(f.metadata()["inputs"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return sources, tensors


def _read_out(out: Path):
    npy = [np.load(p) for p in sorted(glob.glob(str(out / "img_emb/*.npy")))]
    meta = [pq.read_table(p) for p in sorted(glob.glob(str(out / "metadata/*.parquet")))]
    emb = [pq.read_table(p) for p in sorted(glob.glob(str(out / "embeddings/*.parquet")))]
    assert len(npy) == len(meta) == len(emb)
    for a, m, e in zip(npy, meta, emb):
        assert a.dtype == np.float32 and a.ndim == 2 and len(a) == m.num_rows == e.num_rows
    return np.concatenate(npy), [r for m in meta for r in m.to_pylist()], emb


def _mtimes(out: Path):
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(str(out / "**/*"), recursive=True)
            if os.path.isfile(p)}


def test_folder_equals_cli_then_rerun_does_no_work(ray_cluster, images, cli_reference, tmp_path):
    from distorch_vision.ray import encode

    folder, corrupt = images
    sources, ref = cli_reference
    out = tmp_path / "out"
    kw = dict(device="cpu", outputs="image_embeds,last_hidden_state", batch_size=4, shard_size=8)
    s = encode([folder, corrupt], out, MODEL, **kw)
    assert s.images == N_IMAGES and s.shards_written == 4 and s.shards_already_done == 0, s
    assert [k["file"] for k in s.skipped] == [str(corrupt)], s.skipped
    assert str(corrupt) in s.skipped[0]["reason"]
    assert json.loads((out / "skipped.json").read_text()) == s.skipped

    emb, meta, tables = _read_out(out)
    assert [m["key"] for m in meta] == sources  # row by row, keys matching the CLI's sources
    assert np.abs(emb - ref["image_embeds"]).max() <= 1e-6
    pq_emb = np.concatenate([np.stack(t.column("image_embeds").to_pylist()) for t in tables])
    assert np.abs(pq_emb - ref["image_embeds"]).max() <= 1e-6
    shapes = json.loads(tables[0].schema.metadata[b"distorch_vision.shapes"])
    lhs = np.concatenate([np.stack(t.column("last_hidden_state").to_pylist()) for t in tables])
    assert np.abs(lhs.reshape((-1, *shapes["last_hidden_state"])) - ref["last_hidden_state"]).max() <= 1e-6

    # A second run with the same folder finds every shard complete and writes nothing.
    before = _mtimes(out)
    again = encode([folder, corrupt], out, MODEL, **kw)
    assert again.images == 0 and again.shards_written == 0 and again.shards_already_done == 4, again
    assert _mtimes(out) == before

    # A shard whose output is incomplete (as after a killed run) is the only one done again.
    (out / "_done/0001.json").unlink()
    (out / "img_emb/img_emb_0001.npy").unlink()
    third = encode([folder, corrupt], out, MODEL, **kw)
    assert third.images == 8 and third.shards_written == 1 and third.shards_already_done == 3, third
    emb3, meta3, _ = _read_out(out)
    assert [m["key"] for m in meta3] == sources and np.abs(emb3 - emb).max() == 0

    # Other settings in the same folder are refused, naming what changed.
    from distorch_vision import DistorchError

    with pytest.raises(DistorchError, match="crop: was 'center', now 'none'"):
        encode([folder], out, MODEL, **dict(kw, crop="none"))


def test_naflex_rows_equal_cli_with_their_grids(ray_cluster, images, tmp_path):
    # A SigLIP2 naflex model: each image becomes its own patch grid; the rows equal the CLI's,
    # and the grids come along (int64) so the token rows can be cut per image.
    from distorch_vision.ray import encode

    naflex = ROOT / "tests/fixtures/models/siglip2_naflex_f32/model.safetensors"
    folder, _ = images
    ref_out = tmp_path / "cli.safetensors"
    r = subprocess.run([str(cli()), "encode", "--model", str(naflex), "--images", str(folder),
                        "--out", str(ref_out), "--device", "cpu", "--eject-models", "false"],
                       capture_output=True, text=True, env=dict(os.environ, DISTORCH_LOG="error"))
    assert r.returncode == 0, r.stderr
    with safe_open(str(ref_out), "np") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
    out = tmp_path / "out"
    s = encode([folder], out, naflex, device="cpu", outputs="image_embeds,last_hidden_state",
               batch_size=4, shard_size=16)
    assert s.images == N_IMAGES, s
    emb, _, tables = _read_out(out)
    assert np.abs(emb - ref["image_embeds"]).max() <= 1e-5
    grids = np.concatenate([np.stack(t.column("spatial_shapes").to_pylist()) for t in tables])
    assert grids.dtype == np.int64 and (grids == ref["spatial_shapes"]).all()
    lhs = np.concatenate([np.stack(t.column("last_hidden_state").to_pylist()) for t in tables])
    assert np.abs(lhs.reshape(ref["last_hidden_state"].shape) - ref["last_hidden_state"]).max() <= 1e-5


def _make_tars(folder: Path, dest: Path):
    """Two img2dataset-style shards: KEY.jpg|png + KEY.txt + KEY.json, and a corrupt image."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    by_key: dict[str, Optional[Path]] = {}  # None: the corrupt image
    for t in range(2):
        with tarfile.open(dest / f"{t:05d}.tar", "w") as tf:
            def add(name, data):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))

            for j, p in enumerate(files[t::2]):
                key = f"{t:05d}{j:04d}"
                by_key[key] = p
                add(f"{key}{p.suffix}", p.read_bytes())
                add(f"{key}.txt", f"caption of {p.name}".encode())
                add(f"{key}.json", json.dumps({"url": f"https://example.com/{p.name}", "key": key}).encode())
            if t == 1:
                add("000019999.jpg", b"\xff\xd8 broken")
                by_key["000019999"] = None
    return by_key


def test_webdataset_tars_equal_cli_and_faiss_finds_each_image(ray_cluster, images, cli_reference, tmp_path):
    import faiss
    from distorch_vision.ray import encode

    folder, _ = images
    sources, ref = cli_reference
    row_of = {Path(s): i for i, s in enumerate(sources)}
    by_key = _make_tars(folder, tmp_path)
    out = tmp_path / "out"
    s = encode([str(tmp_path / "{00000..00001}.tar")], out, MODEL, device="cpu", batch_size=5)
    assert s.images == N_IMAGES and s.shards_written == 2, s
    assert [k["file"] for k in s.skipped] == [f"{tmp_path}/00001.tar/000019999.jpg"], s.skipped

    emb, meta, _ = _read_out(out)
    assert sorted(m["key"] for m in meta) == sorted(k for k, p in by_key.items() if p is not None)
    for i, m in enumerate(meta):
        p = by_key[m["key"]]
        assert m["caption"] == f"caption of {p.name}" and m["url"] == f"https://example.com/{p.name}"
        d = np.abs(emb[i] - ref["image_embeds"][row_of[p]]).max()
        assert d <= 1e-6, (m["key"], d)

    # The .npy shards as autofaiss reads them: every image's nearest neighbour is itself.
    x = np.concatenate([np.load(p) for p in sorted(glob.glob(str(out / "img_emb/*.npy")))])
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist, nn = index.search(x, 2)
    assert (nn[:, 0] == np.arange(len(x))).all(), nn[:, 0]
    assert (dist[:, 0] <= 1e-6).all() and (dist[:, 1] > dist[:, 0]).all()

    # Actors holding all of the cluster's 2 CPUs would starve the readers: refused up front.
    from distorch_vision import DistorchError

    with pytest.raises(DistorchError, match="2 actors × 1 CPUs leave less than 0.5"):
        encode([folder], tmp_path / "out2", MODEL, device="cpu", num_actors=2)


def test_brace_expansion_and_bad_inputs(tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import expand_braces, list_shards

    assert expand_braces("a/{00008..00011}.tar") == [f"a/{i:05d}.tar" for i in range(8, 12)]
    assert expand_braces("{x,y}-{1..2}") == ["x-1", "x-2", "y-1", "y-2"]
    # A file list keeps its order (paths relative to the list's folder); folders sort; tars are shards.
    for name in ("b.png", "a.jpg", "c.webp", "00000.tar", "00001.tar"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("c.webp\n# a comment\n\nb.png\n")
    shards = list_shards([tmp_path / "list.txt", tmp_path / "a.jpg", str(tmp_path / "{00000..00001}.tar")], 2)
    assert [(s.kind, s.files) for s in shards] == [
        ("tar", []), ("tar", []),
        ("files", [str(tmp_path / "c.webp"), str(tmp_path / "b.png")]), ("files", [str(tmp_path / "a.jpg")])]
    assert [s.index for s in shards] == [0, 1, 2, 3]
    assert shards[2].fingerprint() != list_shards([tmp_path / "a.jpg", tmp_path / "b.png"])[0].fingerprint()
    with pytest.raises(DistorchError, match="no such file"):
        list_shards([tmp_path / "missing"])
    with pytest.raises(DistorchError, match="shard_size"):
        list_shards([tmp_path], shard_size=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistorchError, match="no images"):
        list_shards([tmp_path / "empty"])
    from distorch_vision.ray import encode

    with pytest.raises(DistorchError, match="num_actors is 0"):
        encode([tmp_path / "a.jpg"], tmp_path / "o", MODEL, num_actors=0)
    with pytest.raises(DistorchError, match="crop is 'middle'; valid: center, none"):
        encode([tmp_path / "a.jpg"], tmp_path / "o", MODEL, crop="middle")
