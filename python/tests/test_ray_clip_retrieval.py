"""clip-retrieval's layout, checked by clip-retrieval's own code: autofaiss's default index
(inner product) built by clip-retrieval's indexer, and clip_back's loaders and search, find
each img_emb row itself and the metadata of its image (python/tests/clip_retrieval_reader.py,
run in the tool environment scripts/test.sh caches: numpy<2 and pandas<3)."""

import json
import subprocess

import pytest

from ray_helpers import MODEL, ROOT, make_images, make_tars, read_out, tool_python


def test_autofaiss_default_index_and_clip_back_find_each_row(ray_local, tmp_path):
    from distorch_vision.ray import encode

    python = tool_python("clip-retrieval", "python/requirements-clip-retrieval.txt")
    folder = tmp_path / "images"
    make_images(folder, 20, seed=3)
    make_tars(sorted(p for p in folder.rglob("*") if p.is_file()), tmp_path, broken=False)
    out = tmp_path / "out"
    s = encode([str(tmp_path / "{00000..00001}.tar")], out, MODEL, device="cpu", progress=False)
    assert s.images == 20, s
    _, meta, _ = read_out(out)
    r = subprocess.run([python, str(ROOT / "python/tests/clip_retrieval_reader.py"), str(out), str(tmp_path / "index")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rows"] == 20 and got["inner_product"], got
    for provider, found in got["providers"].items():
        misses = [f for f in found if f["id"] != f["row"]]
        assert not misses, (provider, got["index_key"], misses)
        for f in found:
            assert f["similarity"] == pytest.approx(1.0, abs=1e-4), (provider, f)
            m = meta[f["row"]]
            assert (f["image_path"], f["key"], f["endpoint_image_path"]) == (m["image_path"], m["key"], m["image_path"])
