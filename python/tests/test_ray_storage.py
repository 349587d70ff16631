"""Inputs, outputs and the model through URIs, so nodes need no shared POSIX path: ``file://``,
and ``s3://`` against moto's S3-compatible server (python/requirements-s3-server.txt: an HTTP
server speaking the S3 REST API) started on 127.0.0.1 and a free port for this module."""

import io
import json
import shutil

import numpy as np
import pytest

from ray_helpers import MODEL, S3Server, cli_encode, column, make_images, make_tars, normalized, read_out

N = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-storage")
    folder = d / "images"
    make_images(folder, N, seed=5)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    (d / "tars").mkdir()
    by_key = make_tars(files, d / "tars", broken=False)
    sources, ref = cli_encode(files, outputs="image_embeds")
    return d, folder, files, by_key, dict(zip(map(str, sources), ref["image_embeds"]))


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


def _rows_by_path(emb, meta, tables):
    return {m["image_path"]: (emb[i], column(tables, "image_embeds")[i]) for i, m in enumerate(meta)}


def test_file_uris_give_the_rows_of_plain_paths(ray_local, corpus, tmp_path):
    from distorch_vision.ray import encode

    d, folder, files, by_key, ref = corpus
    s = encode([f"file://{folder}", f"file://{d}/tars/{{00000..00001}}.tar"], f"file://{tmp_path}/out",
               f"file://{MODEL}", device="cpu", shard_size=5, progress=False)
    assert s.images == 2 * N and s.shards_written == 2 + 3, s
    emb, meta, tables = read_out(tmp_path / "out")
    raw = column(tables, "image_embeds")
    for i, m in enumerate(meta):
        src = str(by_key[m["key"]]) if m["key"] in by_key else m["image_path"].removeprefix("file://")
        assert np.abs(raw[i] - ref[src]).max() <= 1e-6, m
        assert np.abs(emb[i] - normalized(ref[src])).max() <= 1e-6, m


def test_s3_endpoint_inputs_outputs_and_model(ray_local, corpus, s3, tmp_path):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from distorch_vision.ray import encode

    d, folder, files, by_key, ref = corpus
    fs, _ = pafs.FileSystem.from_uri(s3.uri("bucket"))
    fs.create_dir("bucket")
    pafs.copy_files(str(d / "tars"), "bucket/tars", destination_filesystem=fs)
    pafs.copy_files(str(folder), "bucket/images", destination_filesystem=fs)
    pafs.copy_files(str(MODEL.parent), "bucket/models/quickgelu", destination_filesystem=fs)
    inputs = [s3.uri("bucket/tars/{00000..00001}.tar"), s3.uri("bucket/images")]
    out, model = s3.uri("bucket/emb"), s3.uri("bucket/models/quickgelu/model.safetensors")
    s = encode(inputs, out, model, device="cpu", shard_size=5, progress=False)
    assert s.images == 2 * N and s.shards_written == 5, s

    def read(path):
        with fs.open_input_file(f"bucket/emb/{path}") as f:
            return f.read()

    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector("bucket/emb/img_emb")))
    assert names == [f"img_emb_{i:04d}.npy" for i in range(5)], names
    for n in range(5):
        emb = np.load(io.BytesIO(read(f"img_emb/img_emb_{n:04d}.npy")))
        meta = pq.read_table(io.BytesIO(read(f"metadata/metadata_{n:04d}.parquet"))).to_pylist()
        table = pq.read_table(io.BytesIO(read(f"embeddings/embeddings_{n:04d}.parquet")))
        raw = column([table], "image_embeds")
        assert len(emb) == len(meta) == len(raw) > 0
        for i, m in enumerate(meta):
            src = (str(by_key[m["key"]]) if m["key"] in by_key
                   else str(folder) + m["image_path"].split("bucket/images", 1)[1])
            assert np.abs(raw[i] - ref[src]).max() <= 1e-6, m
            assert np.abs(emb[i] - normalized(ref[src])).max() <= 1e-6, m
    assert json.loads(read("run.json"))["identity"]["model_id"] == json.loads(read("_done/0000.json"))["model_id"]
    assert all(m.startswith("s3://bucket/") for m in [json.loads(read("_done/0002.json"))["source"][6:]])

    # A rerun finds everything complete; a tar rewritten on S3 is encoded again, alone.
    again = encode(inputs, out, model, device="cpu", shard_size=5, progress=False)
    assert again.shards_written == 0 and again.shards_already_done == 5, again
    other = tmp_path / "other"
    make_images(other, 3, seed=8)
    make_tars(sorted(p for p in other.rglob("*") if p.is_file()), tmp_path, n_tars=1, broken=False)
    with open(tmp_path / "00000.tar", "rb") as src, fs.open_output_stream("bucket/tars/00000.tar") as dst:
        shutil.copyfileobj(src, dst)
    third = encode(inputs, out, model, device="cpu", shard_size=5, progress=False)
    assert third.shards_written == 1 and third.shards_already_done == 4 and third.images == 3, third
