"""Batch encoding on Ray Data: folders, file lists and WebDataset tar shards in; Parquet, and
``.npy`` + metadata shards in clip-retrieval's layout (``autofaiss build_index`` reads them) out.

    from distorch_vision.ray import encode
    summary = encode(["shards/{00000..00099}.tar"], "out", model="clip_vision_h.safetensors",
                     device="cuda:0", num_gpus_per_actor=1)

The pipeline (contract §6.3):

1. The driver lists the inputs as *input shards*: each tar is one; files (folders expanded
   recursively and sorted as the CLI's ``encode --images`` does, file lists in their order) are
   cut into shards of ``shard_size``. Shards whose output is complete (a ``_done/`` marker
   naming the same source) are skipped, so a rerun resumes.
2. Ray tasks read each shard into rows (key, encoded bytes, caption/url/json of a tar key).
3. An actor pool (``map_batches`` with :class:`Encoder`, one loaded model per actor, its
   DisTorch2 plan applied inside the actor) decodes and preprocesses each image with the
   library's own decoder (``dv_preprocess_encoded``, bit-exact with the CLI) and encodes.
4. The driver collects rows per shard and writes it atomically (temp file + rename):
   ``embeddings/embeddings_NNNN.parquet`` (key, image_path, caption, url, one fixed-size list
   column per output), ``img_emb/img_emb_NNNN.npy`` ([rows, D] f32) and
   ``metadata/metadata_NNNN.parquet`` (same row order), then ``_done/NNNN.json``.

An image that cannot be read or decoded is skipped and listed (``skipped.json``, the summary),
never fatal.
"""

from __future__ import annotations

import ctypes as C
import hashlib
import json
import os
import re
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from .errors import DistorchError
from .library import CROP_CODES, lib

#: File extensions taken from folders (as the CLI's ``IMAGE_EXTENSIONS``).
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
#: Extensions of a file list (one image path per line, relative to the list's folder).
LIST_EXTENSIONS = (".txt", ".lst", ".list")
#: Environment variables the driver passes on to the actors (library, graphs, ONNX Runtime).
FORWARDED_ENV = ("DISTORCH_VISION_LIBRARY", "DISTORCH_GRAPHS_DIR", "ORT_DYLIB_PATH",
                 "DISTORCH_LOG", "DISTORCH_THREADS", "COMFYUI_PATH")
#: CPUs a read task holds (reading is mostly waiting on storage).
READ_CPUS = 0.5
RUN_FILE = "run.json"
SKIPPED_FILE = "skipped.json"
DONE_DIR = "_done"

META_COLUMNS = ("key", "image_path", "caption", "url", "json")


# ---------------------------------------------------------------------------------- inputs


def expand_braces(pattern: str) -> list[str]:
    """Expands WebDataset brace patterns: ``a{000..002}.tar`` (zero padding kept), ``{x,y}``."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail, body = pattern[: m.start()], pattern[m.end():], m.group(1)
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = r.group(1), r.group(2)
        if int(hi) < int(lo):
            raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                                f"{pattern}: range {{{body}}} runs backwards; write {{{hi}..{lo}}}")
        width = len(lo) if lo.startswith("0") else 0
        parts = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        parts = body.split(",")
    return [x for p in parts for x in expand_braces(head + p + tail)]


def _is_image(p: Union[str, Path]) -> bool:
    return str(p).rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS if "." in str(p) else False


def _walk(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, sorted by path bytes (as the CLI sorts)."""
    found, seen = [], set()

    def walk(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:  # a symlink cycle is followed once
            return
        seen.add(real)
        for e in os.scandir(d):
            p = Path(e.path)
            try:
                if p.is_dir():
                    walk(p)
                elif p.is_file() and _is_image(p):
                    found.append(str(p))
            except OSError:
                continue

    walk(folder)
    return sorted(found, key=os.fsencode)


@dataclass
class InputShard:
    """One unit of work and of output: a tar, or a run of ``shard_size`` files."""

    index: int
    kind: str  # "tar" or "files"
    source: str  # the tar's path, or "files:<first>..<last>"
    files: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Identifies the shard's input, so a changed input is not taken as done."""
        h = hashlib.sha256(self.kind.encode() + b"\0" + self.source.encode())
        for f in self.files:
            h.update(b"\0" + f.encode())
        return h.hexdigest()


def list_shards(inputs: Sequence[Union[str, os.PathLike]], shard_size: int = 1024) -> list[InputShard]:
    """The input shards of ``inputs`` (folders, image files, file lists, tars with braces)."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            f"shard_size is {shard_size!r}; valid: an integer ≥ 1")
    if not inputs:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            "no inputs; give folders, image files, file lists (.txt) or .tar shards")
    tars: list[str] = []
    files: list[str] = []
    for raw in inputs:
        for s in expand_braces(os.fspath(raw)):
            p = Path(s)
            if not p.exists():
                raise DistorchError("DV_ERR_NOT_FOUND", f"{s}: no such file or folder")
            if p.is_dir():
                files.extend(_walk(p))
            elif s.endswith(".tar"):
                tars.append(s)
            elif s.lower().endswith(LIST_EXTENSIONS):
                base = p.parent
                for line in p.read_text().splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        files.append(line if os.path.isabs(line) else str(base / line))
            else:
                files.append(s)
    shards = [InputShard(i, "tar", t) for i, t in enumerate(tars)]
    for start in range(0, len(files), shard_size):
        chunk = files[start:start + shard_size]
        shards.append(InputShard(len(shards), "files", f"files:{chunk[0]}..{chunk[-1]}", chunk))
    if not shards:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            f"no images or .tar shards found in {', '.join(str(p) for p in inputs)} "
                            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return shards


def _tar_rows(path: str) -> list[dict]:
    """img2dataset / WebDataset layout: members ``KEY.jpg`` (any image extension) with optional
    ``KEY.txt`` (caption) and ``KEY.json`` (its ``url``, ``caption``, …). The key is the member
    path up to the first dot of its base name."""
    groups: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            d, base = os.path.split(m.name)
            if "." not in base or base.startswith("."):
                continue
            stem, ext = base.split(".", 1)
            key = f"{d}/{stem}" if d else stem
            if key not in groups:
                groups[key] = {}
                order.append(key)
            f = tf.extractfile(m)
            groups[key][ext.lower()] = f.read() if f else b""
    rows = []
    for key in order:
        g = groups[key]
        img_ext = next((e for e in IMAGE_EXTENSIONS if e in g), None)
        if img_ext is None:
            continue  # a key without an image (e.g. img2dataset's failed downloads keep only .json)
        meta: dict = {}
        if "json" in g:
            try:
                meta = json.loads(g["json"])
            except ValueError:
                meta = {}
        caption = g["txt"].decode("utf-8", "replace") if "txt" in g else str(meta.get("caption") or "")
        rows.append({"key": key, "image_path": f"{path}/{key}.{img_ext}", "caption": caption,
                     "url": str(meta.get("url") or ""), "json": g.get("json", b"").decode("utf-8", "replace"),
                     "data": g[img_ext], "error": ""})
    return rows


def read_shard(row: dict) -> list[dict]:
    """Ray task: one input shard → one row per image (encoded bytes; an unreadable file or
    tar gives a row with ``error`` set instead of failing the run)."""
    kind, source, index = row["kind"], row["source"], int(row["shard"])
    if kind == "tar":
        try:
            rows = _tar_rows(source)
        except (OSError, tarfile.TarError, EOFError) as e:
            rows = [{"key": source, "image_path": source, "caption": "", "url": "", "json": "",
                     "data": b"", "error": f"{source}: unreadable tar ({e})"}]
    else:
        rows = []
        for f in json.loads(row["files"]):
            try:
                data, err = Path(f).read_bytes(), ""
            except OSError as e:
                data, err = b"", f"{f}: {e.strerror or e}"
            rows.append({"key": f, "image_path": f, "caption": "", "url": "", "json": "",
                         "data": data, "error": err})
    n = len(rows)
    for i, r in enumerate(rows):
        r.update(shard=index, idx=i, n=n)
    if not rows:  # an empty tar: one row so the shard still completes
        rows = [{"key": source, "image_path": source, "caption": "", "url": "", "json": "",
                 "data": b"", "error": f"{source}: no images in this shard",
                 "shard": index, "idx": 0, "n": 1}]
    return rows


# ---------------------------------------------------------------------------------- encoding


def preprocess_encoded(model: Any, data: bytes, name: str, crop: str = "center") -> np.ndarray:
    """One encoded image file (bytes) → [3, S, S] f32 pixels, by the library's decoder and contract §4
    preprocessing exactly as the CLI's ``encode --images`` (:meth:`Model.preprocess_encoded`).
    Raises :class:`DistorchError` naming ``name`` for an unreadable image."""
    if crop not in CROP_CODES:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"crop is {crop!r}; valid: 'center', 'none'")
    return model.preprocess_encoded(data, name, crop)


def preprocess_encoded_patches(model: Any, data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One encoded image file (bytes) → a SigLIP2 naflex model's [num_patches, 3·P²] padded patch
    rows and the image's grid [2] (rows, cols), as the CLI's ``encode --images`` (contract §4b)."""
    L = lib()
    if not L.has("dv_preprocess_encoded_patches"):
        raise DistorchError("DV_ERR_RUNTIME",
                            f"{L.path} does not export dv_preprocess_encoded_patches; rebuild it (scripts/setup.sh)")
    out = np.empty((model.num_patches, 3 * model.patch_size ** 2), dtype=np.float32)
    grid = np.zeros(2, dtype=np.int64)
    L.check(L.dv_preprocess_encoded_patches(model.handle, bytes(data), len(data), name.encode(),
                                            out.ctypes.data_as(C.POINTER(C.c_float)), out.size,
                                            grid.ctypes.data_as(C.POINTER(C.c_int64))),
            "dv_preprocess_encoded_patches")
    return out, grid


class Encoder:
    """The actor of the pool: one model loaded per actor (its DisTorch2 plan applied inside the
    actor, on the GPUs Ray gave it), called on batches of image rows."""

    def __init__(self, model: str, load_kwargs: dict, crop: str, outputs: list[str],
                 batch_size: int, decode_threads: int, env: dict) -> None:
        os.environ.update(env)  # the driver's library / graphs / ONNX Runtime settings
        from . import load

        self.model = load(model, **load_kwargs)
        self.crop, self.outputs, self.batch_size = crop, outputs, batch_size
        self.pool = ThreadPoolExecutor(max(1, decode_threads))  # ctypes calls release the GIL

    def _pixels(self, data: bytes, name: str, err: str) -> tuple[Optional[Any], str]:
        """[3, S, S] pixels, or a naflex model's (patches, grid); or the error."""
        if err:
            return None, err
        try:
            if self.model.naflex:
                return preprocess_encoded_patches(self.model, data, name), ""
            return preprocess_encoded(self.model, data, name, self.crop), ""
        except DistorchError as e:
            return None, e.message

    def _encode(self, got: list) -> Any:
        """The model's outputs for prepared images; a naflex batch's with its spatial_shapes."""
        if self.model.naflex:
            return self.model.encode_patches(np.stack([p for p, _ in got]), np.stack([g for _, g in got]),
                                             outputs=self.outputs, batch_size=self.batch_size)
        return self.model.encode_pixels(np.stack(got), outputs=self.outputs, batch_size=self.batch_size)

    def __call__(self, batch: dict) -> dict:
        names, datas, errs = batch["image_path"], batch["data"], batch["error"]
        n = len(names)
        # Every image of the call is queued for decoding at once; the model then runs on each
        # chunk of batch_size as soon as it is decoded, while the threads decode the next ones.
        futures = [self.pool.submit(self._pixels, datas[i], str(names[i]), str(errs[i])) for i in range(n)]
        out = {k: np.asarray(batch[k]) for k in ("shard", "idx", "n", *META_COLUMNS)}
        error = np.empty(n, dtype=object)
        results: dict = {}
        for start in range(0, n, self.batch_size):
            got = [futures[i].result() for i in range(start, min(n, start + self.batch_size))]
            ok = [start + j for j, (px, _) in enumerate(got) if px is not None]
            for j, (_, e) in enumerate(got):
                error[start + j] = e
            if not ok:
                continue
            res = self._encode([got[i - start][0] for i in ok])
            for name in self._columns():
                t = res[name]
                if name not in results:
                    results[name] = np.zeros((n,) + t.shape[1:], dtype=t.dtype)
                results[name][ok] = t
        out["error"] = error
        for name in self._columns():
            # No readable image in this call: zero rows of the output's shape (never written).
            out[name] = results[name] if name in results else np.zeros((n,) + self._shape(name),
                                                                            dtype=self._dtype(name))
        return out

    def _columns(self) -> list:
        """The outputs, and a naflex model's spatial_shapes (to cut each image's tokens out)."""
        return self.outputs + (["spatial_shapes"] if self.model.naflex else [])

    def _probe(self) -> dict:
        if not hasattr(self, "_probed"):
            if self.model.naflex:
                d = 3 * self.model.patch_size ** 2
                probe = self.model.encode_patches(np.zeros((1, 1, d), np.float32), np.ones((1, 2), np.int64),
                                                  outputs=self.outputs)
            else:
                s = self.model.image_size
                probe = self.model.encode_pixels(np.zeros((1, 3, s, s), np.float32), outputs=self.outputs)
            self._probed = {k: (v.shape[1:], v.dtype) for k, v in probe.items()}
        return self._probed

    def _shape(self, name: str) -> tuple:
        return self._probe()[name][0]

    def _dtype(self, name: str) -> Any:
        return self._probe()[name][1]


# ---------------------------------------------------------------------------------- output


def _atomic_write(path: Path, write) -> None:
    """Writes through ``write(tmp_path)`` then renames, so a killed run leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda t: t.write_text(json.dumps(obj, indent=1)))


@dataclass
class Layout:
    """File names of one output folder (clip-retrieval's ``img_emb`` / ``metadata`` naming)."""

    out: Path
    width: int = 4

    def tag(self, shard: int) -> str:
        return str(shard).zfill(self.width)

    def npy(self, shard: int) -> Path:
        return self.out / "img_emb" / f"img_emb_{self.tag(shard)}.npy"

    def metadata(self, shard: int) -> Path:
        return self.out / "metadata" / f"metadata_{self.tag(shard)}.parquet"

    def parquet(self, shard: int) -> Path:
        return self.out / "embeddings" / f"embeddings_{self.tag(shard)}.parquet"

    def done(self, shard: int) -> Path:
        return self.out / DONE_DIR / f"{self.tag(shard)}.json"


def write_shard(layout: Layout, shard: InputShard, rows: dict, outputs: list[str]) -> dict:
    """Writes one finished shard (rows sorted by ``idx``); returns its done-marker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.argsort(rows["idx"], kind="stable")
    rows = {k: np.asarray(v)[order] for k, v in rows.items()}
    ok = np.array([not e for e in rows["error"]], dtype=bool)
    skipped = [{"file": str(rows["image_path"][i]), "reason": str(rows["error"][i])}
               for i in np.flatnonzero(~ok)]
    files = [layout.parquet(shard.index), layout.npy(shard.index), layout.metadata(shard.index)]
    if ok.any():
        meta = {c: pa.array([str(x) for x in rows[c][ok]], pa.string()) for c in META_COLUMNS}
        meta_table = pa.table(meta)
        cols = dict(meta)
        shapes = {}
        # A naflex model's grids come along, int64, so its token rows can be cut per image.
        for name in outputs + [c for c in ("spatial_shapes",) if c in rows]:
            t = np.ascontiguousarray(rows[name][ok])
            t = t if t.dtype == np.int64 else t.astype(np.float32)
            shapes[name] = list(t.shape[1:])
            flat = t.reshape(t.shape[0], -1)
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        table = pa.table(cols).replace_schema_metadata(
            {"distorch_vision.shapes": json.dumps(shapes)})
        _atomic_write(files[0], lambda p: pq.write_table(table, p))
        emb = np.ascontiguousarray(rows["image_embeds"][ok], dtype=np.float32)
        _atomic_write(files[1], lambda p: np.save(open(p, "wb"), emb))
        _atomic_write(files[2], lambda p: pq.write_table(meta_table, p))
    else:  # nothing readable: no data files (an empty .npy would upset index builders)
        for f in files:
            if f.exists():
                f.unlink()
    marker = {"source": shard.source, "fingerprint": shard.fingerprint(), "rows": int(ok.sum()),
              "skipped": skipped}
    _write_json(layout.done(shard.index), marker)
    return marker


# ---------------------------------------------------------------------------------- driver


@dataclass
class Summary:
    """What a run did. ``images`` counts images encoded by this run."""

    images: int = 0
    skipped: list = field(default_factory=list)
    shards_total: int = 0
    shards_written: int = 0
    shards_already_done: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"encoded {self.images} images in {self.seconds:.2f} s ({self.images_per_s:.1f} images/s); "
                f"{self.shards_written} shards written, {self.shards_already_done} of "
                f"{self.shards_total} already complete; {len(self.skipped)} images skipped")


def _outputs_list(outputs: Union[None, str, Iterable[str]]) -> list[str]:
    names = [o.strip() for o in (outputs.split(",") if isinstance(outputs, str) else outputs or [])]
    names = [o for o in names if o]
    # image_embeds feeds img_emb/*.npy, so it is always written (first).
    return ["image_embeds"] + [o for o in names if o != "image_embeds"]


def encode(
    inputs: Sequence[Union[str, os.PathLike]],
    out: Union[str, os.PathLike],
    model: Union[str, os.PathLike],
    *,
    device: Optional[str] = None,
    virtual_vram_gb: float = 4.0,
    donor_device: str = "cpu",
    expert_mode_allocations: str = "",
    eject_models: bool = True,
    dtype: Optional[str] = None,
    donor_policy: Optional[str] = None,
    comfyui_path: Optional[str] = None,
    extra_model_paths: Optional[str] = None,
    outputs: Union[None, str, Iterable[str]] = None,
    crop: str = "center",
    batch_size: int = 16,
    shard_size: int = 1024,
    num_actors: Optional[int] = None,
    num_gpus_per_actor: Optional[float] = None,
    num_cpus_per_actor: Optional[float] = None,
    decode_threads: int = 2,
    address: Optional[str] = None,
    progress: bool = True,
) -> Summary:
    """Encodes ``inputs`` into ``out`` on Ray (see the module doc); returns a :class:`Summary`.

    Loader arguments as :func:`distorch_vision.load`; ``outputs`` as the CLI's ``--outputs``
    (``image_embeds`` is always written); ``address``: a Ray cluster (``"auto"``) when Ray is
    not initialised yet, else a local one is started. ``num_gpus_per_actor``: default 1 when
    the device is CUDA (or unset and the cluster has GPUs), else 0. ``num_actors``: default
    the cluster's GPUs / ``num_gpus_per_actor``, or 1 on CPU.
    """
    import ray
    from ray.data import ActorPoolStrategy

    if crop not in CROP_CODES:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"crop is {crop!r}; valid: {', '.join(CROP_CODES)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"batch_size is {batch_size!r}; valid: an integer ≥ 1")
    for what, v, low in (("num_actors", num_actors, 1), ("num_gpus_per_actor", num_gpus_per_actor, 0),
                         ("num_cpus_per_actor", num_cpus_per_actor, 0), ("decode_threads", decode_threads, 1)):
        if v is not None and (not isinstance(v, (int, float)) or v < low):
            raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"{what} is {v!r}; valid: a number ≥ {low}")
    t0 = time.monotonic()
    out = Path(out)
    if out.is_file():
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"{out}: the output must be a folder, this is a file")
    out_names = _outputs_list(outputs)
    shards = list_shards(inputs, shard_size)
    layout = Layout(out, max(4, len(str(len(shards) - 1))))
    # The model by file name: the same model may be named by another path on another node.
    run = {"model": os.path.basename(os.fspath(model)), "outputs": out_names, "crop": crop,
           "dtype": dtype or "fp32"}
    prev = out / RUN_FILE
    if prev.is_file():
        before = json.loads(prev.read_text())
        diff = {k: (before.get(k), v) for k, v in run.items() if before.get(k) != v}
        if diff:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"{out} holds a run with other settings "
                f"({', '.join(f'{k}: was {a!r}, now {b!r}' for k, (a, b) in diff.items())}); "
                "use another output folder or the same settings")
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(prev, run)

    # Temporary files a killed run left behind (finished files are only ever renamed into place).
    for sub in ("img_emb", "metadata", "embeddings", DONE_DIR, "."):
        for tmp in (out / sub).glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
    summary = Summary(shards_total=len(shards))
    todo = []
    for s in shards:
        d = layout.done(s.index)
        try:
            done = json.loads(d.read_text()).get("fingerprint") == s.fingerprint()
        except (OSError, ValueError):
            done = False
        if done:
            summary.shards_already_done += 1
        else:
            todo.append(s)

    if todo:
        if not ray.is_initialized():
            # Workers import this package from where the driver did (a checkout, or the same
            # install on every node).
            parent = str(Path(__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (parent, os.environ.get("PYTHONPATH")) if p)
            ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}})
        ray.data.DataContext.get_current().enable_progress_bars = progress
        gpus_in_cluster = float(ray.cluster_resources().get("GPU", 0))
        on_gpu = (device or "").startswith("cuda") or (device is None and gpus_in_cluster > 0)
        gpus = num_gpus_per_actor if num_gpus_per_actor is not None else (1.0 if on_gpu else 0.0)
        cpus_in_cluster = float(ray.cluster_resources().get("CPU", 0))
        actors = num_actors or (max(1, int(gpus_in_cluster // gpus)) if gpus else 1)
        if num_cpus_per_actor is not None:
            cpus = num_cpus_per_actor
        elif gpus:
            cpus = 1.0
        else:  # CPU actors share the cores, less what the read tasks need
            cpus = float(max(1, int((cpus_in_cluster - READ_CPUS) // actors)))
        if actors * cpus > cpus_in_cluster - READ_CPUS:
            # Actors holding every CPU would starve the read tasks: Ray Data waits forever.
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"{actors} actors × {cpus:g} CPUs leave less than {READ_CPUS:g} of the cluster's "
                f"{cpus_in_cluster:g} CPUs for reading the inputs; use fewer actors (num_actors) or "
                "fewer CPUs per actor (num_cpus_per_actor, e.g. 0.5)")
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if not gpus and "DISTORCH_THREADS" not in env:
            env["DISTORCH_THREADS"] = str(max(1, int(cpus)))  # actors share a node's cores
        load_kwargs = dict(device=device, virtual_vram_gb=virtual_vram_gb, donor_device=donor_device,
                           expert_mode_allocations=expert_mode_allocations, eject_models=eject_models,
                           dtype=dtype, donor_policy=donor_policy, comfyui_path=comfyui_path,
                           extra_model_paths=extra_model_paths)
        by_index = {s.index: s for s in todo}
        items = [{"shard": s.index, "kind": s.kind, "source": s.source, "files": json.dumps(s.files)}
                 for s in todo]
        ds = (ray.data.from_items(items, override_num_blocks=len(items))
              .flat_map(read_shard, num_cpus=READ_CPUS)
              .map_batches(Encoder, batch_size=batch_size * 4, batch_format="numpy",
                           fn_constructor_args=(os.fspath(model), load_kwargs, crop, out_names,
                                                batch_size, decode_threads, env),
                           # Two calls per actor at once: one batch decodes while the other
                           # runs the model (the library is thread-safe; ctypes drops the GIL).
                           compute=ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=2,
                                                     enable_true_multi_threading=True),
                           num_gpus=gpus, num_cpus=cpus))
        pending: dict[int, list[dict]] = {}
        counts: dict[int, int] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for sh in np.unique(batch["shard"]):
                sel = batch["shard"] == sh
                part = {k: np.asarray(v)[sel] for k, v in batch.items()}
                sh = int(sh)
                pending.setdefault(sh, []).append(part)
                counts[sh] = counts.get(sh, 0) + int(sel.sum())
                if counts[sh] == int(part["n"][0]):
                    parts = pending.pop(sh)
                    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                    marker = write_shard(layout, by_index[sh], rows, out_names)
                    summary.images += marker["rows"]
                    summary.skipped.extend(marker["skipped"])
                    summary.shards_written += 1
        if pending:
            raise DistorchError("DV_ERR_RUNTIME",
                                f"Ray returned shards {sorted(pending)} incomplete; rerun to finish them")

    # Every image skipped so far, across runs (from the shards' markers).
    all_skipped = []
    for s in shards:
        try:
            all_skipped.extend(json.loads(layout.done(s.index).read_text())["skipped"])
        except (OSError, ValueError, KeyError):
            pass
    if todo or not (out / SKIPPED_FILE).exists():
        _write_json(out / SKIPPED_FILE, all_skipped)
    summary.seconds = time.monotonic() - t0
    return summary
