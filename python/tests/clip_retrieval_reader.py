"""Reads an output folder of distorch_vision.ray with clip-retrieval's own code, in its tool
environment (python/requirements-clip-retrieval.txt: numpy<2, pandas<3); prints one JSON object.

    clip_retrieval_reader.py OUT INDEX_FOLDER

1. ``clip_index(OUT, INDEX_FOLDER)``: clip-retrieval's indexer, i.e. autofaiss ``build_index`` with
   its defaults (inner product) on OUT/img_emb, and OUT/metadata copied beside the index.
2. clip_back's loaders: ``load_index`` and ``load_metadata_provider`` (Parquet, then HDF5).
3. Each row of OUT/img_emb as a query, the way clip_back's ``/knn-service`` takes an
   ``embedding_input``, through ``KnnService.knn_search`` and ``map_to_metadata``; each id also
   through the ``/metadata`` endpoint (Flask's test client).

clip-retrieval's package ``__init__`` imports its inference side (torch, open_clip, wandb, …),
which this environment leaves out, so the package object is made without running it and the
modules themselves (clip_index.py, clip_back.py, ivf_metadata_ordering.py) are imported as they
are. ``KnnService.query`` is not called: its ``compute_query`` imports torch before looking at the
input; for an ``embedding_input`` it only does the ``np.expand_dims(np.array(e).astype("float32"), 0)``
repeated here.
"""

import importlib.util
import json
import sys
import types
from pathlib import Path

spec = importlib.util.find_spec("clip_retrieval")
assert spec is not None and spec.submodule_search_locations is not None, "clip_retrieval is not installed"
pkg = types.ModuleType("clip_retrieval")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["clip_retrieval"] = pkg

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from clip_retrieval import clip_back as cb  # noqa: E402
from clip_retrieval.clip_index import clip_index  # noqa: E402
from flask import Flask  # noqa: E402
from flask_restful import Api  # noqa: E402

COLUMNS = ["url", "image_path", "caption", "key"]


def main(out: str, index_folder: str) -> dict:
    clip_index(out, index_folder, max_index_memory_usage="1G", current_memory_available="2G", nb_cores=1)
    index = cb.load_index(index_folder + "/image.index", enable_faiss_memory_mapping=False)
    infos = json.loads(Path(index_folder, "image.json").read_text())
    rows = np.concatenate([np.load(p) for p in sorted(Path(out, "img_emb").glob("*.npy"))])
    result = {"rows": len(rows), "index_key": infos.get("index_key"),
              "inner_product": index.metric_type == faiss.METRIC_INNER_PRODUCT, "providers": {}}
    for name, hdf5 in (("parquet", False), ("hdf5", True)):
        provider, _ = cb.load_metadata_provider(index_folder, hdf5, False, index, COLUMNS, False)
        resource = cb.ClipResource(
            device="cpu", model=None, preprocess=None, tokenizer=None, model_txt_mclip=None,
            safety_model=None, violence_detector=None, metadata_provider=provider, image_index=index,
            text_index=None, ivf_old_to_new_mapping=None, columns_to_return=COLUMNS,
            metadata_is_ordered_by_ivf=False, aesthetic_embeddings=None)
        knn = cb.KnnService(clip_resources={"ours": resource})
        app = Flask(__name__)
        Api(app).add_resource(cb.MetadataService, "/metadata",
                              resource_class_kwargs={"clip_resources": {"ours": resource}})
        client = app.test_client()
        found = []
        for i, row in enumerate(rows):
            query = np.expand_dims(np.array(row.tolist()).astype("float32"), 0)
            distances, indices = knn.knn_search(query, "image", 3, resource, False, False, False)
            top = knn.map_to_metadata(indices, distances, 3, provider, COLUMNS)[0]
            meta = client.post("/metadata", json={"ids": [int(top["id"])], "indice_name": "ours"}).get_json()
            found.append({"row": i, "id": top["id"], "similarity": top["similarity"],
                          "image_path": top["image_path"], "key": top["key"],
                          "endpoint_image_path": meta[0]["metadata"]["image_path"]})
        result["providers"][name] = found
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
