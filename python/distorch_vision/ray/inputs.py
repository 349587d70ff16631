"""The inputs of a Ray run: folders, image files, file lists and WebDataset tars, local or
behind a URI, cut into *input shards* (one per tar, or ``shard_size`` files), each with the
size and modification time of what it reads, so a changed input is encoded again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

from ..errors import DistorchError
from .storage import display, filesystem, is_uri

#: File extensions taken from folders (as the CLI's ``IMAGE_EXTENSIONS``).
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
#: Extensions of a file list (one image path or URI a line, relative to the list's folder).
LIST_EXTENSIONS = (".txt", ".lst", ".list")


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


def is_image(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


@dataclass
class Item:
    """One file an input shard reads: its name in outputs, where it is, what it was."""

    name: str  # as the user spelled it (local) or scheme://path (remote)
    fs: str  # the URI (or local path) its filesystem is resolved from, on any node
    path: str  # the path inside that filesystem
    size: int = -1  # -1: missing when listed (read, and skipped, by the worker)
    mtime_ns: int = 0


@dataclass
class InputShard:
    """One unit of work and of output: a tar, or a run of ``shard_size`` files."""

    index: int
    kind: str  # "tar" or "files"
    source: str  # the tar's name, or "files:<first>..<last>"
    items: list[Item] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [i.name for i in self.items] if self.kind == "files" else []

    def fingerprint(self) -> str:
        """What the shard reads, by name, size and modification time: a tar rewritten with
        other images, or another list of files, is not taken as done."""
        h = hashlib.sha256(f"{self.kind}\0{self.source}".encode())
        for i in self.items:
            h.update(f"\0{i.name}\0{i.size}\0{i.mtime_ns}".encode())
        return h.hexdigest()

    def spec(self) -> dict:
        """What an actor needs to read the shard (plain data)."""
        return {"index": self.index, "kind": self.kind, "source": self.source,
                "fingerprint": self.fingerprint(),
                "items": [[i.name, i.fs, i.path, i.size, i.mtime_ns] for i in self.items]}


def _stat(uri: str, fs, path: str, name: str) -> Item:
    info = fs.get_file_info(path)
    from pyarrow import fs as pafs

    if info.type != pafs.FileType.File:
        return Item(name, uri, path)
    return Item(name, uri, path, int(info.size), int(info.mtime_ns or 0))


def _walk_local(folder: str) -> list[str]:
    """Image files under a local ``folder``, recursively (symlinked folders followed once),
    sorted by path bytes as the CLI sorts."""
    found, seen = [], set()

    def walk(d: str) -> None:
        real = os.path.realpath(d)
        if real in seen:
            return
        seen.add(real)
        for e in os.scandir(d):
            try:
                if e.is_dir():
                    walk(e.path)
                elif e.is_file() and is_image(e.name):
                    found.append(e.path)
            except OSError:
                continue

    walk(folder)
    return sorted(found, key=os.fsencode)


def _folder_items(spelled: str, fs, path: str) -> list[Item]:
    from pyarrow import fs as pafs

    if fs.type_name == "local" and not is_uri(spelled):
        out = []
        for p in _walk_local(spelled):
            st = os.stat(p)
            out.append(Item(p, spelled, os.path.abspath(p), st.st_size, st.st_mtime_ns))
        return out
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted((i for i in infos if i.type == pafs.FileType.File and is_image(i.base_name)),
                   key=lambda i: i.path.encode())
    return [Item(display(spelled, fs, i.path), spelled, i.path, int(i.size), int(i.mtime_ns or 0))
            for i in files]


def _list_items(spelled: str, fs, path: str) -> list[Item]:
    """The files a file list names (one a line; ``#`` comments; relative to the list)."""
    with fs.open_input_stream(path) as f:
        text = f.read().decode("utf-8")
    base_local = os.path.dirname(spelled) if not is_uri(spelled) else None
    base_path = path.rsplit("/", 1)[0]
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_uri(line):
            lfs, lpath = filesystem(line)
            out.append(_stat(line, lfs, lpath, display(line, lfs, lpath)))
        elif base_local is not None:
            name = line if os.path.isabs(line) else os.path.join(base_local, line)
            out.append(_stat(name, fs, os.path.abspath(name), name))
        else:
            lpath = f"{base_path}/{line}"
            out.append(_stat(spelled, fs, lpath, display(spelled, fs, lpath)))
    return out


def list_shards(inputs: Sequence[Union[str, os.PathLike]], shard_size: int = 1024) -> list[InputShard]:
    """The input shards of ``inputs`` (folders, image files, file lists, tars with braces;
    local paths or URIs)."""
    from pyarrow import fs as pafs

    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT", f"shard_size is {shard_size!r}; valid: an integer ≥ 1")
    if not inputs:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            "no inputs; give folders, image files, file lists (.txt) or .tar shards")
    tars: list[Item] = []
    files: list[Item] = []
    for raw in inputs:
        for s in expand_braces(os.fspath(raw)):
            fs, path = filesystem(s)
            try:
                info = fs.get_file_info(path)
            except OSError as e:
                raise DistorchError("DV_ERR_IO", f"{s}: {e}") from None
            name = s if not is_uri(s) else display(s, fs, path)
            if info.type == pafs.FileType.NotFound:
                raise DistorchError("DV_ERR_NOT_FOUND", f"{name}: no such file or folder")
            if info.type == pafs.FileType.Directory:
                files.extend(_folder_items(s, fs, path))
            elif path.endswith(".tar"):
                tars.append(Item(name, s, path, int(info.size), int(info.mtime_ns or 0)))
            elif path.lower().endswith(LIST_EXTENSIONS):
                files.extend(_list_items(s, fs, path))
            else:
                files.append(Item(name, s, path, int(info.size), int(info.mtime_ns or 0)))
    shards = [InputShard(i, "tar", t.name, [t]) for i, t in enumerate(tars)]
    for start in range(0, len(files), shard_size):
        chunk = files[start:start + shard_size]
        shards.append(InputShard(len(shards), "files", f"files:{chunk[0].name}..{chunk[-1].name}", chunk))
    if not shards:
        raise DistorchError("DV_ERR_INVALID_ARGUMENT",
                            f"no images or .tar shards found in {', '.join(str(p) for p in inputs)} "
                            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return shards


# ---------------------------------------------------------------------------------- reading


@dataclass
class Row:
    """One image of a shard, read: metadata, encoded bytes, or why it could not be read."""

    key: str
    image_path: str
    data: bytes = b""
    caption: str = ""
    url: str = ""
    json: str = ""
    error: str = ""  # the reason, without the file name (it is in image_path)


class ShardReadError(Exception):
    """The storage failed while a shard was read (not the data): the shard is not finished,
    and a rerun tries it again."""


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


def _tar_row(key: str, name: str, g: dict[str, bytes]) -> Optional[Row]:
    img_ext = next((e for e in IMAGE_EXTENSIONS if e in g), None)
    if img_ext is None:
        return None  # a key without an image (img2dataset's failed downloads keep only .json)
    meta: dict = {}
    if "json" in g:
        try:
            meta = json.loads(g["json"])
        except ValueError:
            meta = {}
    if not isinstance(meta, dict):
        meta = {}
    caption = g["txt"].decode("utf-8", "replace") if "txt" in g else str(meta.get("caption") or "")
    return Row(key, f"{name}/{key}.{img_ext}", g[img_ext], caption, str(meta.get("url") or ""),
               g.get("json", b"").decode("utf-8", "replace"))


def read_tar(item: Item) -> Iterator[Row]:
    """img2dataset / WebDataset layout, streamed: members ``KEY.jpg`` (any image extension)
    with optional ``KEY.txt`` (caption) and ``KEY.json`` (its ``url``, ``caption``, …), a
    key's members next to each other (WebDataset's rule). The key is the member path up to the
    first dot of its base name. A corrupt tar ends with one row naming it."""
    fs, _ = filesystem(item.fs)
    try:
        stream = fs.open_input_stream(item.path)
    except FileNotFoundError as e:
        yield Row(item.name, item.name, error=_reason(e))
        return
    except OSError as e:
        raise ShardReadError(f"{item.name}: {e}") from None
    key: Optional[str] = None
    group: dict = {}
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                d, base = os.path.split(m.name)
                if "." not in base or base.startswith("."):
                    continue
                stem, ext = base.split(".", 1)
                k = f"{d}/{stem}" if d else stem
                if k != key:
                    if key is not None and (row := _tar_row(key, item.name, group)):
                        yield row
                    key, group = k, {}
                f = tf.extractfile(m)
                group[ext.lower()] = f.read() if f else b""
        if key is not None and (row := _tar_row(key, item.name, group)):
            yield row
    except (tarfile.TarError, EOFError, UnicodeDecodeError) as e:
        after = f" after {key}" if key else ""
        yield Row(item.name, item.name, error=f"unreadable tar{after} ({e})")
    except OSError as e:
        raise ShardReadError(f"{item.name}: {e}") from None


def read_file(item: Item) -> Row:
    """One image file; a missing or unreadable one is a row with its reason."""
    row = Row(item.name, item.name)
    try:
        fs, _ = filesystem(item.fs)
        with fs.open_input_stream(item.path) as f:
            row.data = f.read()
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        row.error = _reason(e)
    except OSError as e:
        text = str(e)
        if "not found" in text.lower() or "does not exist" in text.lower():
            row.error = text
        else:
            raise ShardReadError(f"{item.name}: {e}") from None
    return row


def read_rows(spec: dict) -> Iterator[Row]:
    """The rows of a shard (see :meth:`InputShard.spec`), in order."""
    items = [Item(*i) for i in spec["items"]]
    if spec["kind"] == "tar":
        n = 0
        for row in read_tar(items[0]):
            n += 1
            yield row
        if n == 0:
            yield Row(items[0].name, items[0].name, error="no images in this shard")
    else:
        for it in items:
            yield read_file(it)
