"""Where distorch-vision writes when no folder is given."""

from __future__ import annotations

import os
from pathlib import Path


def user_graphs_dir() -> Path:
    """Where exported graphs go outside a checkout: ``$DISTORCH_GRAPHS_DIR``, else
    ``$XDG_CACHE_HOME/distorch-vision/graphs``, else ``~/.cache/distorch-vision/graphs`` (the
    library's own default when it does not run from a checkout's build folder).

    Front ends installed into something read-only or managed (the ComfyUI node, in its
    ``custom_nodes`` folder or a checkout) pass it as ``graphs_dir`` so they never write there.
    """
    env = os.environ.get("DISTORCH_GRAPHS_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    cache = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return cache / "distorch-vision" / "graphs"
