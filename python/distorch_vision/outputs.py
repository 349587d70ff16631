"""The result of one encode: output tensors by name, readable as ``out.name`` and ``out["name"]``."""

from __future__ import annotations

from typing import Any


class Outputs(dict):
    """Output tensors by name, in the order the library returned them (contract §3).

    A ``dict`` (``out["image_embeds"]``, ``list(out)``, ``out.items()``) whose entries are also
    attributes (``out.image_embeds``). Which names are present is what the library reported,
    so outputs added to the library later appear here unchanged.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"no output {name!r}; this encode returned: {', '.join(self) or 'nothing'}"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self))
