"""One output shard, written by the actor that encoded it: ``embeddings/embeddings_NNNN.parquet``
(row groups streamed as batches finish), clip-retrieval's ``img_emb/img_emb_NNNN.npy`` and
``metadata/metadata_NNNN.parquet``, then the ``_done/NNNN.json`` marker. Each file is
published whole (see :meth:`Store.put`) and the marker last, so a shard without a marker is
simply done again."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .storage import Store

DONE_DIR = "_done"
DATA_DIRS = ("embeddings", "img_emb", "metadata")
META_COLUMNS = ("key", "image_path", "caption", "url", "json")
#: A Parquet row group of the embeddings file is written at this many rows or bytes, whichever
#: comes first (bounded memory whatever the outputs, few tiny groups).
ROW_GROUP_ROWS = 256
ROW_GROUP_BYTES = 64 << 20


@dataclass
class Layout:
    """File names of one output folder (clip-retrieval's ``img_emb`` / ``metadata`` naming)."""

    width: int = 4

    def tag(self, shard: int) -> str:
        return str(shard).zfill(self.width)

    def npy(self, shard: int) -> str:
        return f"img_emb/img_emb_{self.tag(shard)}.npy"

    def metadata(self, shard: int) -> str:
        return f"metadata/metadata_{self.tag(shard)}.parquet"

    def parquet(self, shard: int) -> str:
        return f"embeddings/embeddings_{self.tag(shard)}.parquet"

    def done(self, shard: int) -> str:
        return f"{DONE_DIR}/{self.tag(shard)}.json"


def l2_normalized(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, as clip-retrieval writes ``img_emb`` (a zero row stays
    zero)."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    n[n == 0] = 1
    return (x / n).astype(np.float32)


def _save_npy(path: str, a: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a temporary name
        np.save(f, a, allow_pickle=False)


class ShardWriter:
    """Collects a shard's rows batch by batch and publishes its files at :meth:`finish`."""

    def __init__(self, store: Store, layout: Layout, index: int, outputs: list[str], normalize: bool) -> None:
        self.store, self.layout, self.index = store, layout, index
        self.outputs, self.normalize = outputs, normalize
        self.tmp = tempfile.TemporaryDirectory(prefix="dv-shard-")
        self.parquet_path = os.path.join(self.tmp.name, "embeddings.parquet")
        self.writer: Any = None  # a pyarrow ParquetWriter once the first rows are flushed
        self.meta: dict[str, list[str]] = {c: [] for c in META_COLUMNS}
        self.emb: list[np.ndarray] = []
        self.pending: list[tuple[dict, dict]] = []
        self.pending_rows = self.pending_bytes = 0
        self.rows = 0
        self.shapes: dict[str, list[int]] = {}
        # A stale marker goes first: from here on the shard counts as unfinished.
        store.delete(layout.done(index))

    def add(self, meta: dict[str, list[str]], outputs: dict[str, np.ndarray]) -> None:
        """A batch of encoded rows: metadata columns and each output [n, ...]."""
        n = len(meta["key"])
        for c in META_COLUMNS:
            self.meta[c].extend(meta[c])
        e = np.ascontiguousarray(outputs["image_embeds"], dtype=np.float32)
        self.emb.append(l2_normalized(e) if self.normalize else e)
        self.pending.append((meta, outputs))
        self.pending_rows += n
        self.pending_bytes += sum(o.nbytes for o in outputs.values())
        self.rows += n
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        cols = {c: pa.array([x for m, _ in self.pending for x in m[c]], pa.string()) for c in META_COLUMNS}
        # The outputs (f32), and a naflex model's spatial_shapes (int64) when the rows carry them.
        for name in list(self.pending[0][1]):
            t = np.concatenate([o[name] for _, o in self.pending])
            t = t if t.dtype == np.int64 else t.astype(np.float32, copy=False)
            self.shapes[name] = list(t.shape[1:])
            flat = t.reshape(t.shape[0], -1)
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        table = pa.table(cols)
        if self.writer is None:
            schema = table.schema.with_metadata({"distorch_vision.shapes": json.dumps(self.shapes)})
            self.writer = pq.ParquetWriter(self.parquet_path, schema)
        self.writer.write_table(table.cast(self.writer.schema))
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def finish(self, marker: dict) -> dict:
        """Publishes the data files (or removes a stale run's, when no row was readable: an
        empty ``.npy`` would upset index builders), then the marker; returns the marker."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = [self.layout.parquet(self.index), self.layout.npy(self.index), self.layout.metadata(self.index)]
        try:
            if self.rows:
                self._flush()
                self.writer.close()
                self.store.put(files[0], lambda p: shutil.move(self.parquet_path, p))
                emb = np.concatenate(self.emb)
                self.store.put(files[1], lambda p: _save_npy(p, emb))
                meta = pa.table({c: pa.array(v, pa.string()) for c, v in self.meta.items()})
                self.store.put(files[2], lambda p: pq.write_table(meta, p))
            else:
                for f in files:
                    self.store.delete(f)
            marker = dict(marker, rows=self.rows)
            self.store.put_json(self.layout.done(self.index), marker)
            return marker
        finally:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None
        self.tmp.cleanup()
