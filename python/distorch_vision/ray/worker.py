"""The actor: one model loaded per actor (its DisTorch2 plan applied inside it, on the GPUs Ray
gave it, ONNX Runtime on the CPUs it holds), called once per input shard. It reads the shard
itself, decodes with the library's decoder on a thread pool while the model runs, and writes
the shard's files (see :mod:`.shard_writer`): only a small marker goes back to the driver."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Optional

import numpy as np

from ..errors import DistorchError
from .inputs import Row, ShardReadError, read_rows
from .shard_writer import META_COLUMNS, Layout, ShardWriter
from .storage import Store, local_model


def _without_name(name: str, message: str) -> str:
    """A reason without the file name it starts with (the name is listed beside it)."""
    return message[len(name) + 2:] if message.startswith(name + ": ") else message


def actor_threads(env: dict) -> int:
    """ONNX Runtime threads of this actor: DISTORCH_THREADS when the driver set it, else the
    CPUs Ray assigned the actor (at least 1)."""
    if env.get("DISTORCH_THREADS"):
        return int(env["DISTORCH_THREADS"])
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


class ShardEncoder:
    """A Ray actor (created by the driver with ``ray.remote``); never raises from its
    constructor: a load failure is reported by :meth:`info`."""

    def __init__(self, model: str, load_kwargs: dict, ort_library: Optional[str], env: dict, job: dict) -> None:
        self.error: Optional[DistorchError] = None
        self.pid, self.host = os.getpid(), socket.gethostname()
        try:
            os.environ.update(env)  # the driver's library / graphs / ONNX Runtime settings
            self.threads = actor_threads(env)
            os.environ["DISTORCH_THREADS"] = str(self.threads)  # read when ONNX Runtime starts
            from .. import init, load

            if ort_library:
                init(ort_library)
            self.model = load(local_model(model), **load_kwargs)
            self.identity = self.model.identity()
        except DistorchError as e:
            self.error = e
            return
        except Exception as e:  # a bug or an environment problem: reported, not a dead actor
            self.error = DistorchError("DV_ERR_RUNTIME", f"{type(e).__name__}: {e}")
            return
        self.store = Store(job["out"])
        self.layout = Layout(job["width"])
        self.outputs, self.crop = job["outputs"], job["crop"]
        self.normalize, self.strict = job["normalize"], job["strict"]
        self.batch_size = job["batch_size"]
        self.decode_threads = max(1, job["decode_threads"])
        self.pool = ThreadPoolExecutor(self.decode_threads)  # ctypes calls drop the GIL

    def info(self) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        if self.error is not None:
            return {"error": [self.error.status, self.error.message], "host": self.host, "node": node}
        return {"identity": self.identity, "threads": self.threads, "pid": self.pid,
                "host": self.host, "node": node}

    # ------------------------------------------------------------------ one shard

    def _pixels(self, row: Row, data: bytes) -> tuple[Optional[Any], str]:
        """[3, S, S] pixels by the library's decoder (bit-exact with the CLI's ``encode
        --images``), or a naflex model's (patches, grid); or why the image is skipped."""
        if row.error:
            return None, row.error
        try:
            if self.model.naflex:
                return self.model.preprocess_encoded_patches(data, row.image_path), ""
            return self.model.preprocess_encoded(data, row.image_path, self.crop), ""
        except DistorchError as e:
            return None, _without_name(row.image_path, e.message)

    def _encode(self, prepared: list) -> Any:
        """The model's outputs for prepared images; a naflex batch's with its spatial_shapes."""
        if self.model.naflex:
            return self.model.encode_patches(np.stack([p for p, _ in prepared]), np.stack([g for _, g in prepared]),
                                             outputs=self.outputs, batch_size=self.batch_size)
        return self.model.encode_pixels(np.stack(prepared), outputs=self.outputs, batch_size=self.batch_size)

    def _decoded(self, spec: dict) -> Iterator[tuple[Row, Future]]:
        """The shard's rows with their pixels decoding ahead on the pool: a reader thread reads
        (storage latency overlaps the model) and queues a bounded window."""
        window = 2 * self.batch_size + 2 * self.decode_threads
        q: queue.Queue = queue.Queue(maxsize=window)
        stop = threading.Event()

        def reader() -> None:
            try:
                for row in read_rows(spec):
                    if stop.is_set():
                        return
                    fut = self.pool.submit(self._pixels, row, row.data)
                    row.data = b""  # the future holds the bytes it needs
                    q.put((row, fut))
                q.put(None)
            except BaseException as e:  # handed to the consumer, which raises it
                q.put(e)

        t = threading.Thread(target=reader, name="dv-shard-reader", daemon=True)
        t.start()
        try:
            while True:
                got = q.get()
                if got is None:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            stop.set()
            while t.is_alive():  # unblock a reader waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.05)

    def encode_shard(self, spec: dict) -> dict:
        """Encodes and writes one shard; returns its marker, or ``{"failed": kind, ...}``
        (``strict``: an unreadable image under strict; ``read``: the storage failed)."""
        t0 = time.monotonic()
        writer = ShardWriter(self.store, self.layout, spec["index"], self.outputs, self.normalize)
        skipped: list[dict] = []
        batch: list[tuple[Row, Any]] = []
        # A naflex model's grids come along (int64), so its token rows can be cut per image.
        columns = self.outputs + (["spatial_shapes"] if self.model.naflex else [])

        def flush() -> None:
            res = self._encode([p for _, p in batch])
            meta = {c: [str(getattr(r, c)) for r, _ in batch] for c in META_COLUMNS}
            writer.add(meta, {k: res[k] for k in columns})
            batch.clear()

        try:
            for row, fut in self._decoded(spec):
                px, reason = fut.result()
                if px is None:
                    if self.strict:
                        writer.close()
                        return {"failed": "strict", "message": f"{row.image_path}: {reason}",
                                "index": spec["index"]}
                    skipped.append({"file": row.image_path, "reason": reason, "key": row.key})
                    continue
                batch.append((row, px))
                if len(batch) == self.batch_size:
                    flush()
            if batch:
                flush()
            return writer.finish({
                "source": spec["source"], "fingerprint": spec["fingerprint"], "skipped": skipped,
                "model_id": self.identity["model_id"], "threads": self.threads,
                "writer": {"host": self.host, "pid": self.pid},
                "seconds": round(time.monotonic() - t0, 3)})
        except ShardReadError as e:
            writer.close()
            return {"failed": "read", "message": str(e), "index": spec["index"]}
        except BaseException:
            writer.close()
            raise
