"""Stand-in for ComfyUI's folder_paths: the clip_vision folder is tests/fixtures/models
(names are relative paths with '/', as ComfyUI lists subfolders)."""

import os
from pathlib import Path

_ROOT = Path(os.environ.get("DISTORCH_TEST_CHECKOUT") or Path(__file__).resolve().parents[3])
CLIP_VISION = _ROOT / "tests" / "fixtures" / "models"


def get_filename_list(folder_name):
    assert folder_name == "clip_vision", folder_name
    return sorted(p.relative_to(CLIP_VISION).as_posix() for p in CLIP_VISION.rglob("model.safetensors"))


def get_full_path(folder_name, filename):
    assert folder_name == "clip_vision", folder_name
    p = CLIP_VISION / filename
    return str(p) if p.is_file() else None


def get_full_path_or_raise(folder_name, filename):
    p = get_full_path(folder_name, filename)
    if p is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return p
