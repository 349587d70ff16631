"""Where inputs, outputs and the model live: local paths and any filesystem pyarrow knows
(``file://``, ``s3://``, ``gs://``, ``hdfs://``; query parameters such as
``?endpoint_override=http://host:9000&scheme=http`` configure it), else fsspec's. Nodes need
no shared POSIX path: each resolves the same URI with its own credentials."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import DistorchError

#: Object stores make an object visible only once its upload completes, so a file is written
#: there directly; elsewhere it is written under a temporary name and renamed.
OBJECT_STORES = ("s3", "gcs")
#: Where a node keeps models fetched from a URI (one copy per node): $DISTORCH_MODEL_CACHE.
MODEL_CACHE_ENV = "DISTORCH_MODEL_CACHE"
#: Files beside a model that the library reads as its configuration (contract §2).
MODEL_SIDECARS = ("{stem}.config.json", "{stem}.json", "config.json")
_COPY_CHUNK = 8 << 20

_filesystems: dict[str, tuple[Any, str]] = {}
_fs_lock = threading.Lock()


def is_uri(s: str) -> bool:
    return "://" in s.split("?", 1)[0]


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path in it)`` of a local path or a URI."""
    from pyarrow import fs as pafs

    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    root, _, _ = uri.partition("?")
    with _fs_lock:
        hit = _filesystems.get(uri)
    if hit:
        return hit
    try:
        got = pafs.FileSystem.from_uri(uri)
    except Exception as arrow_error:  # pyarrow raises ArrowInvalid / ValueError / OSError
        try:
            import fsspec
        except ImportError:
            raise DistorchError(
                "DV_ERR_INVALID_ARGUMENT",
                f"{root}: pyarrow has no filesystem for this URI ({arrow_error}); valid: a local path, "
                "file://, s3://, gs://, hdfs://, or any fsspec protocol with fsspec installed") from None
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except Exception as e:
            raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                                f"{root}: neither pyarrow ({arrow_error}) nor fsspec ({e}) can open it") from None
        got = (pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path)
    with _fs_lock:
        _filesystems[uri] = got
    return got


def display(uri: str, fs: Any, path: str) -> str:
    """How a file found under ``uri`` is named in outputs: a local path as the user spelled its
    root, a remote one as ``scheme://path`` (without query parameters, which may hold secrets)."""
    if not is_uri(uri):
        return path
    return f"{uri.split('://', 1)[0]}://{path}"


def _io_error(what: str, e: BaseException) -> DistorchError:
    return DistorchError("DV_ERR_IO", f"{what}: {e}")


class Store:
    """An output folder on any filesystem: files published whole, JSON read back."""

    def __init__(self, uri: str) -> None:
        self._open(uri)

    def _open(self, uri: str) -> None:
        self.uri = uri if is_uri(uri) else os.path.abspath(uri)  # actors run in other folders
        self.fs, root = filesystem(self.uri)
        self.root = root.rstrip("/") or "/"
        self.local = self.fs.type_name == "local"

    def __getstate__(self) -> dict:  # actors resolve the URI themselves (their credentials)
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self._open(state["uri"])

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def name(self, rel: str) -> str:
        """``rel`` as people should see it (local path or URI)."""
        return display(self.uri, self.fs, self.path(rel) if rel else self.root)

    def ensure_folder(self) -> None:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                                f"{self.name('')}: the output must be a folder, this is a file")
        self.fs.create_dir(self.root, recursive=True)

    def put(self, rel: str, fill: Callable[[str], Any]) -> None:
        """Publishes ``rel`` whole: ``fill(local_path)`` writes the file, which then appears
        under its name at once (rename, or an object store's completed upload), so a killed
        writer never leaves a partial file under a final name."""
        dest = self.path(rel)
        folder, base = dest.rsplit("/", 1)
        tag = f"{os.getpid()}-{threading.get_ident()}"
        if self.local:
            os.makedirs(folder, exist_ok=True)
            tmp = f"{folder}/.{base}.tmp-{tag}"
            try:
                fill(tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="dv-out-") as d:
            local = os.path.join(d, base)
            fill(local)
            self.fs.create_dir(folder, recursive=True)
            direct = self.fs.type_name in OBJECT_STORES
            target = dest if direct else f"{folder}/.{base}.tmp-{tag}"
            try:
                with open(local, "rb") as src, self.fs.open_output_stream(target) as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
                if not direct:
                    self.fs.move(target, dest)
            except OSError as e:
                raise _io_error(self.name(rel), e) from None

    def put_json(self, rel: str, obj: Any) -> None:
        text = json.dumps(obj, indent=1)
        self.put(rel, lambda p: Path(p).write_text(text))

    def read_json(self, rel: str) -> Optional[Any]:
        """The JSON in ``rel``; None when it is missing or not JSON (a torn write of an
        older version)."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None
        except OSError as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                return None
            raise _io_error(self.name(rel), e) from None

    def list(self, rel_dir: str) -> list[str]:
        """Base names of the files in ``rel_dir`` (none when it does not exist)."""
        from pyarrow import fs as pafs

        sel = pafs.FileSelector(self.path(rel_dir), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except (FileNotFoundError, OSError):
            pass

    def remove_temporaries(self, folders: tuple[str, ...]) -> None:
        """Temporary files a killed writer left behind (finished files only ever get renamed)."""
        for sub in folders:
            for name in self.list(sub):
                if name.startswith(".") and ".tmp-" in name:
                    self.delete(f"{sub}/{name}" if sub else name)


# ---------------------------------------------------------------------------------- models


def model_cache_dir() -> Path:
    return Path(os.environ.get(MODEL_CACHE_ENV) or Path.home() / ".cache/distorch-vision/models")


def local_model(model: str) -> str:
    """The model as a local path on this node: a plain path or model name as it is; a URI's
    file (and its configuration sidecars) fetched once per node into the model cache, keyed by
    URI, size and modification time, under a lock so concurrent actors wait for one download."""
    if not is_uri(model):
        return model
    from pyarrow import fs as pafs

    fs, path = filesystem(model)
    if fs.type_name == "local":
        return path
    info = fs.get_file_info(path)
    name = display(model, fs, path)
    if info.type != pafs.FileType.File:
        raise DistorchError("DV_ERR_NOT_FOUND", f"{name}: no such model file")
    stamp = f"{name}\0{info.size}\0{info.mtime_ns}"
    folder = model_cache_dir() / hashlib.sha256(stamp.encode()).hexdigest()[:20]
    target = folder / path.rsplit("/", 1)[-1]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / ".complete").exists():
            return str(target)
        shutil.rmtree(folder, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder.parent))
        try:
            stem = target.name.rsplit(".", 1)[0]
            parent = path.rsplit("/", 1)[0]
            wanted = [target.name] + [s.format(stem=stem) for s in MODEL_SIDECARS]
            for base in dict.fromkeys(wanted):
                src = f"{parent}/{base}"
                if base != target.name and fs.get_file_info(src).type != pafs.FileType.File:
                    continue
                with fs.open_input_stream(src) as f, open(tmp / base, "wb") as out:
                    shutil.copyfileobj(f, out, _COPY_CHUNK)
            (tmp / ".complete").write_text(stamp)
            os.replace(tmp, folder)
        except OSError as e:
            raise _io_error(f"fetching {name}", e) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
