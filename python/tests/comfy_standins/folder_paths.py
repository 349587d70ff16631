"""Stand-in for ComfyUI's folder_paths: the clip_vision folders are tests/fixtures/models plus
any a test adds to CLIP_VISION_EXTRA (names are relative paths with '/', as ComfyUI lists
subfolders); custom_nodes folders are what a test puts in CUSTOM_NODES."""

import os
from pathlib import Path

_ROOT = Path(os.environ.get("DISTORCH_TEST_CHECKOUT") or Path(__file__).resolve().parents[3])
CLIP_VISION = _ROOT / "tests" / "fixtures" / "models"
CLIP_VISION_EXTRA: list = []
CUSTOM_NODES: list = []


def _clip_vision_folders():
    return [CLIP_VISION, *map(Path, CLIP_VISION_EXTRA)]


def get_folder_paths(folder_name):
    if folder_name == "custom_nodes":
        return [str(p) for p in CUSTOM_NODES]
    assert folder_name == "clip_vision", folder_name
    return [str(p) for p in _clip_vision_folders()]


def get_filename_list(folder_name):
    assert folder_name == "clip_vision", folder_name
    names = {p.relative_to(CLIP_VISION).as_posix() for p in CLIP_VISION.rglob("model.safetensors")}
    for root in map(Path, CLIP_VISION_EXTRA):
        names.update(p.relative_to(root).as_posix() for p in root.rglob("*.safetensors"))
    return sorted(names)


def get_full_path(folder_name, filename):
    assert folder_name == "clip_vision", folder_name
    for root in _clip_vision_folders():
        p = root / filename
        if p.is_file():
            return str(p)
    return None


def get_full_path_or_raise(folder_name, filename):
    p = get_full_path(folder_name, filename)
    if p is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return p
