"""Stand-in for ComfyUI's nodes module: the global node registry and custom-node loading as
ComfyUI v0.3.64 does it. Each custom_nodes entry (a folder with __init__.py, or a .py file) is
imported as its own module, in directory-listing order; its NODE_CLASS_MAPPINGS entries are
copied into the global registry, so a later pack silently replaces an earlier pack's key (core
node names are never replaced)."""

import importlib.util
import os
import sys

import folder_paths


class CLIPVisionLoader:
    """Core's loader (only its key matters here)."""


NODE_CLASS_MAPPINGS = {"CLIPVisionLoader": CLIPVisionLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPVisionLoader": "Load CLIP Vision"}


def load_custom_node(module_path, ignore=set(), module_parent="custom_nodes"):
    name = os.path.basename(module_path)
    if os.path.isfile(module_path):
        name = os.path.splitext(name)[0]
        init = module_path
    else:
        init = os.path.join(module_path, "__init__.py")
    sys_name = module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(sys_name, init)
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_name] = module
    spec.loader.exec_module(module)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is None:
        return False
    for key, cls in mappings.items():
        if key not in ignore:
            NODE_CLASS_MAPPINGS[key] = cls
            cls.RELATIVE_PYTHON_MODULE = f"{module_parent}.{name}"
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    return True


def init_external_custom_nodes(order=None):
    """Loads every pack of the custom_nodes folders; ``order`` stands in for os.listdir's."""
    base = set(NODE_CLASS_MAPPINGS)
    for root in folder_paths.get_folder_paths("custom_nodes"):
        entries = [e for e in os.listdir(os.path.realpath(root)) if e != "__pycache__"]
        if order is not None:
            entries = sorted(entries, key=order.index)
        for entry in entries:
            path = os.path.join(root, entry)
            if os.path.isfile(path) and not path.endswith(".py"):
                continue
            if path.endswith(".disabled"):
                continue
            load_custom_node(path, base)
