#!/usr/bin/env python3
"""Builds tests/fixtures/tiff/: palette ("P" mode) TIFF files written by Pillow, and the RGB
pixels Pillow decodes them to the way ComfyUI's LoadImage does (exif_transpose, then
convert("RGB")), as raw u8 H×W×3 files (`<name>.rgb`, with `<name>.rgb.json` giving H and W).

Pillow, not our decoder, is the reference: a palette entry is 16 bits per channel in the
file and Pillow keeps its high byte.

Run: <python with Pillow and numpy> scripts/make_palette_tiff_fixtures.py  (from the repository root)
"""

import json
import os

import numpy as np
from PIL import Image, ImageOps

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tiff"))


def pattern(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([127 + 120 * np.sin(x / w * 6.3 + seed), 255 * y / max(h - 1, 1), 127 + 120 * np.cos((x + y) / (w + h) * 9)], -1)
    img += rng.normal(0, 20, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [
        # name, size, colours, save options
        ("palette_lzw_24x16.tif", (24, 16), 256, {"compression": "tiff_lzw"}),
        ("palette_raw_16colours_19x13.tif", (19, 13), 16, {}),
    ]
    for name, (w, h), colours, kw in cases:
        im = Image.fromarray(pattern(w, h, len(name))).quantize(colours)
        assert im.mode == "P"
        path = os.path.join(OUT, name)
        im.save(path, **kw)
        back = Image.open(path)
        assert back.mode == "P", back.mode
        rgb = np.array(ImageOps.exif_transpose(back).convert("RGB"))
        with open(path + ".rgb", "wb") as f:
            f.write(rgb.tobytes())
        with open(path + ".rgb.json", "w") as f:
            json.dump({"height": rgb.shape[0], "width": rgb.shape[1]}, f)
        print(name, rgb.shape)


if __name__ == "__main__":
    main()
