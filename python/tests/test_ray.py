"""distorch_vision.ray on a local Ray instance (2 CPUs, ``address="local"``, one for the session):
rows equal to the CLI's `encode`, written by the actors; resume by identity (model content,
input size and time); clip-retrieval's normalised rows; the CLI's options; CPU threads."""

import importlib.util
import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

_missing = [m for m in ("ray", "pyarrow", "pandas", "faiss") if importlib.util.find_spec(m) is None]
if _missing:
    raise pytest.UsageError(
        f"test_ray.py needs {', '.join(_missing)} (pinned in python/requirements-test.txt), missing "
        f"from this interpreter; run scripts/test.sh or `pip install -r python/requirements-test.txt`")

from ray_helpers import (MODEL, OTHER_MODEL, ROOT, cli_encode, column, make_images, make_tars,  # noqa: E402
                         normalized, read_out)

N_IMAGES = 24


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of small generated PNG and JPEG images of assorted sizes, and a corrupt file."""
    d = tmp_path_factory.mktemp("ray-images")
    folder = d / "images"
    make_images(folder, N_IMAGES)
    corrupt = d / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder, corrupt


@pytest.fixture(scope="module")
def cli_reference(images):
    """The CLI's `encode` of the folder: (sources, {output: rows})."""
    return cli_encode([images[0]])


def _mtimes(out: Path):
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _markers(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_done").glob("*.json"))]


def test_folder_equals_cli_written_by_actors_then_resumes(ray_local, images, cli_reference, tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import encode

    folder, corrupt = images
    sources, ref = cli_reference
    out = tmp_path / "out"
    kw = dict(device="cpu", outputs="image_embeds,last_hidden_state", batch_size=4, shard_size=8, progress=False)
    s = encode([folder, corrupt], out, MODEL, **kw)
    assert s.images == N_IMAGES and s.shards_written == 4 and s.shards_already_done == 0, s
    # Skipped once, the reason without the file name again, the key beside it.
    assert s.skipped == [{"file": str(corrupt), "reason": s.skipped[0]["reason"], "key": str(corrupt)}], s.skipped
    assert str(corrupt) not in s.skipped[0]["reason"] and s.skipped[0]["reason"]
    assert json.loads((out / "skipped.json").read_text()) == s.skipped

    emb, meta, tables = read_out(out)
    assert [m["key"] for m in meta] == sources  # row by row, in the CLI's order
    # Parquet: the model's rows, as the CLI; img_emb: the same rows L2-normalised (clip-retrieval).
    assert np.abs(column(tables, "image_embeds") - ref["image_embeds"]).max() <= 1e-6
    assert np.abs(emb - normalized(ref["image_embeds"])).max() <= 1e-6
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    shapes = json.loads(tables[0].schema.metadata[b"distorch_vision.shapes"])
    lhs = column(tables, "last_hidden_state").reshape((-1, *shapes["last_hidden_state"]))
    assert np.abs(lhs - ref["last_hidden_state"]).max() <= 1e-6

    # The actors wrote the shards (the driver only holds markers).
    markers = _markers(out)
    assert len(markers) == 4 and all(m["writer"]["pid"] != os.getpid() for m in markers), markers
    run = json.loads((out / "run.json").read_text())
    assert run["identity"]["model_id"] == markers[0]["model_id"] and len(run["identity"]["model_id"]) == 32

    # A second run finds every shard complete and writes nothing; the skipped count says so.
    before = _mtimes(out)
    again = encode([folder, corrupt], out, MODEL, **kw)
    assert again.images == 0 and again.shards_written == 0 and again.shards_already_done == 4, again
    assert _mtimes(out) == before
    assert again.skipped_total == 1 and again.line().endswith(
        "0 images skipped (1 in all, listed in skipped.json)"), again.line()

    # A shard whose marker is missing (as after a killed run) is the only one done again.
    (out / "_done/0001.json").unlink()
    (out / "img_emb/img_emb_0001.npy").unlink()
    third = encode([folder, corrupt], out, MODEL, **kw)
    assert third.images == 8 and third.shards_written == 1 and third.shards_already_done == 3, third
    emb3, meta3, _ = read_out(out)
    assert [m["key"] for m in meta3] == sources and np.abs(emb3 - emb).max() == 0

    # Other settings in the same folder are refused, naming what changed.
    with pytest.raises(DistorchError, match="crop: was 'center', now 'none'"):
        encode([folder], out, MODEL, **dict(kw, crop="none"))
    with pytest.raises(DistorchError, match="normalize: was True, now False"):
        encode([folder], out, MODEL, **dict(kw, normalize=False))


def test_naflex_rows_equal_cli_with_their_grids(ray_local, images, tmp_path):
    # A SigLIP2 naflex model: each image becomes its own patch grid; the rows equal the CLI's,
    # and the grids come along (int64) so the token rows can be cut per image.
    from distorch_vision.ray import encode

    naflex = ROOT / "tests/fixtures/models/siglip2_naflex_f32/model.safetensors"
    folder, _ = images
    sources, ref = cli_encode([folder], model=naflex)
    out = tmp_path / "out"
    s = encode([folder], out, naflex, device="cpu", outputs="image_embeds,last_hidden_state",
               batch_size=4, shard_size=16, progress=False)
    assert s.images == N_IMAGES, s
    _, meta, tables = read_out(out)
    assert [m["key"] for m in meta] == sources
    assert np.abs(column(tables, "image_embeds") - ref["image_embeds"]).max() <= 1e-5
    grids = np.concatenate([np.stack(t.column("spatial_shapes").to_pylist()) for t in tables])
    assert tables[0].schema.field("spatial_shapes").type.value_type == "int64"
    assert (grids == ref["spatial_shapes"]).all()
    lhs = column(tables, "last_hidden_state").reshape(ref["last_hidden_state"].shape)
    assert np.abs(lhs - ref["last_hidden_state"]).max() <= 1e-5


def test_identity_refuses_another_model_and_redoes_changed_inputs(ray_local, images, tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import encode

    folder, _ = images
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    # A model at a path of our own (weights + config beside them), and two tars.
    model_dir = tmp_path / "models"
    shutil.copytree(MODEL.parent, model_dir)
    model = model_dir / "model.safetensors"
    tars = tmp_path / "tars"
    tars.mkdir()
    make_tars(files, tars, broken=False)
    out = tmp_path / "out"
    kw = dict(device="cpu", progress=False)
    first = encode([str(tars / "{00000..00001}.tar")], out, model, **kw)
    assert first.shards_written == 2 and first.images == N_IMAGES, first

    # Another model under the same file name: refused, naming both weights' ids.
    shutil.rmtree(model_dir)
    shutil.copytree(OTHER_MODEL.parent, model_dir)
    with pytest.raises(DistorchError, match=r"model: encoded with model.safetensors \(weights [0-9a-f]{16}\), "
                                            r"this run uses model.safetensors \(weights [0-9a-f]{16}\)"):
        encode([str(tars / "{00000..00001}.tar")], out, model, **kw)
    shutil.rmtree(model_dir)
    shutil.copytree(MODEL.parent, model_dir)

    # A tar overwritten with other images under the same name is encoded again, alone.
    other = tmp_path / "other"
    make_images(other, 6, seed=99)
    make_tars(sorted(p for p in other.rglob("*") if p.is_file()), tars, n_tars=1, broken=False)
    again = encode([str(tars / "{00000..00001}.tar")], out, model, **kw)
    assert again.shards_written == 1 and again.shards_already_done == 1 and again.images == 6, again
    emb, meta, tables = read_out(out)
    srcs, ref = cli_encode(sorted(p for p in other.rglob("*") if p.is_file()), outputs="image_embeds")
    assert np.abs(column(tables[:1], "image_embeds") - ref["image_embeds"]).max() <= 1e-6

    # A changed file inside a shard of files: that shard alone.
    mine = tmp_path / "mine"
    shutil.copytree(folder, mine)
    out2 = tmp_path / "out2"
    encode([mine], out2, model, shard_size=10, **kw)
    victim = sorted(p for p in mine.rglob("*") if p.is_file())[12]  # in the second shard
    victim.write_bytes((other / "img_001.png").read_bytes())
    redo = encode([mine], out2, model, shard_size=10, **kw)
    assert redo.shards_written == 1 and redo.shards_already_done == 2, redo


def test_tars_equal_cli_and_an_inner_product_index_finds_each_row(ray_local, images, cli_reference, tmp_path):
    import faiss
    from distorch_vision.ray import encode

    folder, _ = images
    sources, ref = cli_reference
    row_of = {Path(s): i for i, s in enumerate(sources)}
    by_key = make_tars(sorted(p for p in folder.rglob("*") if p.is_file()), tmp_path)
    out = tmp_path / "out"
    s = encode([str(tmp_path / "{00000..00001}.tar")], out, MODEL, device="cpu", batch_size=5, progress=False)
    assert s.images == N_IMAGES and s.shards_written == 2, s
    bad = f"{tmp_path}/00001.tar/000019999.jpg"
    assert [(k["file"], k["key"]) for k in s.skipped] == [(bad, "000019999")], s.skipped

    emb, meta, tables = read_out(out)
    assert sorted(m["key"] for m in meta) == sorted(k for k, p in by_key.items() if p is not None)
    raw = column(tables, "image_embeds")
    for i, m in enumerate(meta):
        p = by_key[m["key"]]
        assert m["caption"] == f"caption of {p.name}" and m["url"] == f"https://example.com/{p.name}"
        assert np.abs(raw[i] - ref["image_embeds"][row_of[p]]).max() <= 1e-6, m["key"]

    # autofaiss's default metric is the inner product: on normalised rows each finds itself.
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    sim, nn = index.search(emb, 2)
    assert (nn[:, 0] == np.arange(len(emb))).all(), nn[:, 0]
    assert np.allclose(sim[:, 0], 1, atol=1e-5)

    # normalize=False keeps the model's rows in img_emb.
    s2 = encode([str(tmp_path / "{00000..00001}.tar")], tmp_path / "raw", MODEL, device="cpu",
                normalize=False, progress=False)
    raw_emb, _, _ = read_out(tmp_path / "raw")
    assert s2.images == N_IMAGES and np.abs(raw_emb - raw).max() == 0


def test_the_clis_options(ray_local, images, cli_reference, tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import DEFAULT_BATCH_SIZE, encode

    folder, corrupt = images
    sources, ref = cli_reference
    kw = dict(device="cpu", progress=False)
    # --strict: the first unreadable image stops the run, named; its shard has no marker.
    with pytest.raises(DistorchError, match=f"strict: stopping at an unreadable image: {corrupt}: "):
        encode([corrupt], tmp_path / "strict", MODEL, strict=True, **kw)
    assert not list((tmp_path / "strict").glob("_done/*.json"))
    # --donor-policy, --micro-batch, --graphs-dir reach the library: same rows, graphs there.
    graphs = tmp_path / "graphs"
    s = encode([folder], tmp_path / "opts", MODEL, donor_policy="execute", micro_batch=3,
               graphs_dir=str(graphs), **kw)
    emb, meta, tables = read_out(tmp_path / "opts")
    assert s.images == N_IMAGES and np.abs(column(tables, "image_embeds") - ref["image_embeds"]).max() <= 1e-6
    assert list(graphs.glob("*/manifest.json")), list(graphs.rglob("*"))
    for bad, msg in ((dict(donor_policy="sideways"), "donor_policy"),
                     (dict(ort_library=str(tmp_path / "nope.so")), "nope.so"),
                     (dict(micro_batch=0), "micro_batch is 0"),
                     (dict(batch_size=0), "batch_size is 0"),
                     (dict(num_gpus_per_actor=1), "GPU")):
        with pytest.raises(DistorchError, match=msg):
            encode([folder], tmp_path / "bad", MODEL, **dict(kw, **bad))
    # The CLI's default batch size, in the function and the script.
    assert DEFAULT_BATCH_SIZE == 8
    from distorch_vision.ray import driver

    assert inspect.signature(driver.encode).parameters["batch_size"].default == 8
    spec = importlib.util.spec_from_file_location("ray_encode", ROOT / "scripts/ray_encode.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a = script.parser().parse_args(["--model", "m", "--images", "i", "--out", "o"])
    assert a.batch_size == 8 and a.decode_threads == 2 and a.strict is False
    # From a clone with no build, an installed package (the wheel) is used; this checkout's
    # python/ only when it has a library to load or nothing is installed.
    bare = tmp_path / "clone"
    (bare / "target/release").mkdir(parents=True)
    assert script.checkout_package(bare, {}) is False  # distorch_vision is importable here
    assert script.checkout_package(bare, {"DISTORCH_VISION_LIBRARY": "/x/libdistorch_vision.so"}) is True
    (bare / "target/release/libdistorch_vision.so").write_bytes(b"")
    assert script.checkout_package(bare, {}) is True


def test_the_cpu_engine_and_the_plugin_path_reach_the_actors(ray_local, images, cli_reference, tmp_path):
    """cpu_engine and openvino_ep (the CLI's --cpu-engine, --openvino-ep) reach each actor's
    load, in the function and the script (which also takes dtype bf16)."""
    from distorch_vision import DistorchError
    from distorch_vision.ray import encode

    folder, _ = images
    _, ref = cli_reference
    kw = dict(device="cpu", progress=False)
    s = encode([folder], tmp_path / "mlas", MODEL, cpu_engine="mlas", openvino_ep=str(ROOT / ".runtime/openvino"),
               **kw)
    _, _, tables = read_out(tmp_path / "mlas")
    assert s.images == N_IMAGES and np.abs(column(tables, "image_embeds") - ref["image_embeds"]).max() <= 1e-5
    for bad, msg in ((dict(cpu_engine="tbb"), '"tbb" is not a CPU engine'),
                     (dict(openvino_ep=str(tmp_path / "no-plugin")), "no-plugin")):
        with pytest.raises(DistorchError, match=msg):
            encode([folder], tmp_path / "bad", MODEL, **dict(kw, **bad))
    spec = importlib.util.spec_from_file_location("ray_encode", ROOT / "scripts/ray_encode.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a = script.parser().parse_args(["--model", "m", "--images", "i", "--out", "o", "--cpu-engine", "openvino",
                                    "--openvino-ep", "p", "--dtype", "bf16"])
    assert (a.cpu_engine, a.openvino_ep, a.dtype) == ("openvino", "p", "bf16")


def test_a_cpu_actor_runs_onnx_runtime_on_the_cpus_it_holds(ray_local, images, tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import encode

    folder, _ = images
    # Default on this 2-CPU instance: one actor holding both CPUs, 2 threads.
    s = encode([folder], tmp_path / "a", MODEL, device="cpu", progress=False)
    assert (s.actors, s.threads) == (1, 2), s
    assert {m["threads"] for m in _markers(tmp_path / "a")} == {2}
    s = encode([folder], tmp_path / "b", MODEL, device="cpu", num_cpus_per_actor=1, progress=False)
    assert s.threads == 1, s
    # Actors the nodes cannot hold are refused up front (Ray would wait for them forever).
    with pytest.raises(DistorchError, match="2 actors × 2 CPUs do not fit on the cluster's nodes"):
        encode([folder], tmp_path / "c", MODEL, device="cpu", num_actors=2, num_cpus_per_actor=2,
               shard_size=4, progress=False)


def test_brace_expansion_and_bad_inputs(tmp_path):
    from distorch_vision import DistorchError
    from distorch_vision.ray import encode, expand_braces, list_shards

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
    # A file's new size or time is a new fingerprint.
    fp = list_shards([tmp_path / "a.jpg"])[0].fingerprint()
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert list_shards([tmp_path / "a.jpg"])[0].fingerprint() != fp
    with pytest.raises(DistorchError, match="no such file"):
        list_shards([tmp_path / "missing"])
    with pytest.raises(DistorchError, match="shard_size"):
        list_shards([tmp_path], shard_size=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistorchError, match="no images"):
        list_shards([tmp_path / "empty"])
    with pytest.raises(DistorchError, match="num_actors is 0"):
        encode([tmp_path / "a.jpg"], tmp_path / "o", MODEL, num_actors=0)
    with pytest.raises(DistorchError, match="crop is 'middle'; valid: center, none"):
        encode([tmp_path / "a.jpg"], tmp_path / "o", MODEL, crop="middle")
    with pytest.raises(DistorchError, match="normalize is 'yes'"):
        encode([tmp_path / "a.jpg"], tmp_path / "o", MODEL, normalize="yes")
    with pytest.raises(DistorchError, match="nosuchscheme://x/a.tar: neither pyarrow"):
        list_shards(["nosuchscheme://x/a.tar"])
