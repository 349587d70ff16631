"""Which node keys this pack registers, beside other node packs.

ComfyUI loads ``custom_nodes/*`` in directory-listing order, and a later pack's
``NODE_CLASS_MAPPINGS`` entry silently replaces an earlier one's. ComfyUI-MultiGPU registers
``CLIPVisionLoaderDisTorch2MultiGPU`` too, so this pack always registers its own key
(``DistorchVisionCLIPVisionLoader``) and adds the seed's key only when no other pack provides
it: neither one ComfyUI has already loaded, nor one in a ``custom_nodes`` folder that names the
key in its Python files (it loads later). It logs which loader a saved workflow's node gets.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger("DisTorch2")

NODE_KEY = "DistorchVisionCLIPVisionLoader"
SEED_KEY = "CLIPVisionLoaderDisTorch2MultiGPU"
NODE_DISPLAY_NAME = "Load CLIP Vision (distorch-vision, DisTorch2 MultiGPU)"
SEED_DISPLAY_NAME = "Load CLIP Vision (DisTorch2, MultiGPU)"

# A pack's Python files read while looking for the key: enough for any node pack's entry
# points, bounded so a huge folder cannot slow ComfyUI's start.
_MAX_FILES, _MAX_BYTES = 400, 4 << 20


def seed_key_provider(own_dir: Path) -> Optional[str]:
    """The other node pack that provides ``SEED_KEY``, or None when none does."""
    # ComfyUI's `nodes` (already imported when it loads custom nodes) holds the packs loaded so
    # far; it is looked up, never imported, so no unrelated module of that name is run.
    registry = getattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS", None)
    cls = registry.get(SEED_KEY) if isinstance(registry, dict) else None
    if cls is not None:
        return getattr(cls, "RELATIVE_PYTHON_MODULE", None) or cls.__module__
    try:
        import folder_paths

        roots = folder_paths.get_folder_paths("custom_nodes")
    except (ImportError, AttributeError, KeyError):
        return None
    own = own_dir.resolve()
    for root in roots:
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            continue
        for entry in entries:
            path = Path(root) / entry
            if entry == "__pycache__" or entry.endswith(".disabled") or path.resolve() == own:
                continue
            if _names_key(path):
                return f"custom_nodes/{entry}"
    return None


def _names_key(path: Path) -> bool:
    """Whether the pack at ``path`` (a folder or one ``.py``) names ``SEED_KEY`` in its code
    (a second copy of this pack, which also names ``NODE_KEY``, does not count)."""
    if path.is_file():
        files = [path] if path.suffix == ".py" else []
    elif path.is_dir():
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
            files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
            if len(files) >= _MAX_FILES:
                break
    else:
        return False
    seed, ours = SEED_KEY.encode(), NODE_KEY.encode()
    names_seed = False
    for f in files[:_MAX_FILES]:
        try:
            if f.stat().st_size > _MAX_BYTES:
                continue
            text = f.read_bytes()
        except OSError:
            continue
        if ours in text:
            return False
        names_seed = names_seed or seed in text
    return names_seed


def mappings(own_cls: type, seed_cls: type, own_dir: Path) -> tuple[dict, dict]:
    """``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` of this pack, logged."""
    classes = {NODE_KEY: own_cls}
    names = {NODE_KEY: NODE_DISPLAY_NAME}
    provider = seed_key_provider(own_dir)
    if provider is None:
        classes[SEED_KEY] = seed_cls
        names[SEED_KEY] = SEED_DISPLAY_NAME
        log.info(
            "[DisTorch2] no other node pack provides %s: saved workflows with that node get "
            "distorch-vision's loader (also registered as %s)", SEED_KEY, NODE_KEY,
        )
    else:
        log.info(
            "[DisTorch2] %s is provided by %s: saved workflows with that node keep using it; "
            "distorch-vision's loader is %s (\"%s\")", SEED_KEY, provider, NODE_KEY,
            NODE_DISPLAY_NAME,
        )
    return classes, names
