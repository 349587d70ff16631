"""Batch encoding on Ray: folders, file lists and WebDataset tar shards in (local paths or
URIs: ``s3://``, ``gs://``, ``hdfs://``, ``file://``); Parquet, and ``.npy`` + metadata shards
in clip-retrieval's layout (``autofaiss build_index`` and ``clip_back`` read them) out.

    from distorch_vision.ray import encode
    summary = encode(["s3://bucket/shards/{00000..00099}.tar"], "s3://bucket/emb",
                     model="/models/clip_vision_h.safetensors", device="cuda:0", num_gpus_per_actor=1)

The pipeline (contract §6.3b):

1. The driver lists the inputs as *input shards*: each tar is one; files (folders expanded
   recursively and sorted as the CLI's ``encode --images`` does, file lists in their order) are
   cut into shards of ``shard_size``. Each shard carries the size and modification time of what
   it reads. A shard whose ``_done/NNNN.json`` marker names the same input and model is
   skipped, so a rerun resumes; a changed tar is encoded again.
2. An actor pool (:class:`~.worker.ShardEncoder`: one loaded model per actor, its DisTorch2 plan
   applied inside the actor, ONNX Runtime on the actor's CPUs) takes one shard per call: it reads
   the shard itself, decodes each image with the library's decoder (``dv_preprocess_encoded``,
   bit-exact with the CLI) while the model runs, and writes the shard's files:
   ``embeddings/embeddings_NNNN.parquet`` (key, image_path, caption, url, json, one fixed-size
   list column per output, the model's rows), ``img_emb/img_emb_NNNN.npy`` ([rows, D] f32,
   L2-normalised as clip-retrieval writes them) and ``metadata/metadata_NNNN.parquet`` (same row
   order), each published whole, then the marker.
3. The driver records the run's identity (``run.json``: the model's content id, outputs, crop,
   normalisation) and refuses a folder made otherwise; it collects only the markers.

An image that cannot be read or decoded is skipped and listed (``skipped.json``, the summary),
never fatal (unless ``strict``).
"""

from .driver import DEFAULT_BATCH_SIZE, RUN_FILE, SKIPPED_FILE, Summary, encode
from .inputs import IMAGE_EXTENSIONS, InputShard, expand_braces, list_shards
from .shard_writer import Layout

__all__ = ["DEFAULT_BATCH_SIZE", "IMAGE_EXTENSIONS", "InputShard", "Layout", "RUN_FILE", "SKIPPED_FILE",
           "Summary", "encode", "expand_braces", "list_shards"]
