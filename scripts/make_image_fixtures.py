#!/usr/bin/env python3
"""Builds tests/fixtures/images/: small test images and PyTorch reference tensors.

Each image is loaded the way ComfyUI's LoadImage does (PIL open, ImageOps.exif_transpose,
mode "I" scaled by 1/255, convert("RGB"), np.float32 / 255) and run through ComfyUI's
clip_preprocess (comfy/clip_vision.py), reproduced below, with torch on the CPU.

Outputs (all in one safetensors file, reference.safetensors, described by cases.json):
  <file>__<size>__<crop>__q8      u8 [3,S,S]  the 8-bit value of every output pixel, i.e.
                                  round(clip(255*x, 0, 255)) before the /255 and mean/std step.
                                  The normalised output is a pure function of it, so one
                                  tensor covers both the CLIP and the SigLIP normalisation.
  <file>__<size>__<crop>__<family> f32 [3,S,S] the full normalised output of clip_preprocess,
                                  for a few cases, to pin down the normalisation arithmetic.
  <file>__raw__<H>x<W>            f32 [H,W,3] F.interpolate(..., bicubic, antialias=True)
                                  before crop and quantisation, for a few cases.
  <file>__pixels                  u8 [H,W,3] the decoded RGB pixels, for files whose decoding
                                  is not trivially lossless (JPEG, lossy WebP, 16-bit, GIF, ...).
  <file>__source16                u16 the samples written into the 16-bit PNGs.

Note: Pillow (>= 10) opens a 16-bit grey PNG as mode "I;16", which ComfyUI's `mode == "I"`
check misses, and convert("RGB") then clips every sample above 255 to white. The references
record that faithfully; the Rust decoder deliberately keeps the high byte instead (as PIL does
for 16-bit RGB), and its test checks that against __source16.

Run: /work/pyenv/bin/python scripts/make_image_fixtures.py   (from the repository root)
The images are generated deterministically; the CI tests only read the committed outputs.
"""

import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, ImageDraw
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
OUT = os.path.normpath(OUT)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]
FAMILIES = {"clip": (CLIP_MEAN, CLIP_STD), "siglip": (SIGLIP_MEAN, SIGLIP_STD)}


# ---------------------------------------------------------------- ComfyUI, reproduced
def clip_preprocess(image, size=224, mean=CLIP_MEAN, std=CLIP_STD, crop=True):
    """comfy/clip_vision.py clip_preprocess, verbatim apart from returning the pre-quantisation
    interpolation too."""
    image = image[:, :, :, :3] if image.shape[3] > 3 else image
    mean = torch.tensor(mean, device=image.device, dtype=image.dtype)
    std = torch.tensor(std, device=image.device, dtype=image.dtype)
    image = image.movedim(-1, 1)
    raw = None
    if not (image.shape[2] == size and image.shape[3] == size):
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            scale_size = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            scale_size = (size, size)

        image = torch.nn.functional.interpolate(image, size=scale_size, mode="bicubic", antialias=True)
        raw = image
        h = (image.shape[2] - size) // 2
        w = (image.shape[3] - size) // 2
        image = image[:, :, h : h + size, w : w + size]
    q = torch.clip((255.0 * image), 0, 255).round()
    image = q / 255.0
    return (image - mean.view([3, 1, 1])) / std.view([3, 1, 1]), q, raw


def comfy_load_image(path):
    """nodes.py LoadImage.load_image, first frame only."""
    img = Image.open(path)
    for i in ImageSequence.Iterator(img):
        i = ImageOps.exif_transpose(i)
        if i.mode == "I":
            i = i.point(lambda i: i * (1 / 255))
        image = i.convert("RGB")
        arr = np.array(image)
        image = arr.astype(np.float32) / 255.0
        return torch.from_numpy(image)[None,], arr
    raise RuntimeError(f"{path}: no frames")


# ---------------------------------------------------------------- test images
def pattern(w, h, seed, smooth=False):
    """Deterministic RGB content: gradients, a few hard edges, some noise (unless smooth)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / max(w, 1) * 6.3 + seed)
    g = 255.0 * (y / max(h - 1, 1))
    b = 127.5 + 127.5 * np.cos((x + y) / max(w + h, 1) * 9.0)
    img = np.stack([r, g, b], axis=-1)
    # hard edges: a bright rectangle and a dark diagonal band
    img[h // 4 : h // 2, w // 5 : w // 2] = [250, 20, 240]
    img[np.abs(x - y * w / max(h, 1)) < max(w // 12, 1)] = [5, 10, 15]
    if not smooth:
        img += rng.normal(0, 18, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_png16(path, arr16):
    """Minimal PNG writer for 16-bit grey ([H,W]) or RGB ([H,W,3]) data (PIL cannot write
    16-bit RGB)."""
    if arr16.ndim == 2:
        color_type, h, w = 0, arr16.shape[0], arr16.shape[1]
    else:
        color_type, h, w = 2, arr16.shape[0], arr16.shape[1]
    raw = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


# The 16-bit samples written into the 16-bit PNGs, saved as <file>__source16 (u16).
SOURCE16 = {}


def make_images():
    """Writes the test images; returns {file: {"lossless": bool, "pixels": bool}}."""
    os.makedirs(OUT, exist_ok=True)
    files = {}

    def save(name, im, lossless=True, pixels=False, **kw):
        im.save(os.path.join(OUT, name), **kw)
        files[name] = {"lossless": lossless, "pixels": pixels}

    save("up_20x13.png", Image.fromarray(pattern(20, 13, 1)))
    save("down_97x61.png", Image.fromarray(pattern(97, 61, 2)))
    save("portrait_45x77.png", Image.fromarray(pattern(45, 77, 3)))
    save("landscape_131x33.png", Image.fromarray(pattern(131, 33, 4)))
    save("exact_32x32.png", Image.fromarray(pattern(32, 32, 5)))
    save("tall_7x300.png", Image.fromarray(pattern(7, 300, 6)))
    save("big_480x400.png", Image.fromarray(pattern(480, 400, 7, smooth=True)))
    save("exact_224x224.png", Image.fromarray(pattern(224, 224, 8, smooth=True)))
    save("grey_40x30.png", Image.fromarray(pattern(40, 30, 9)[:, :, 1], mode="L"))
    rgba = np.concatenate([pattern(33, 50, 10), pattern(33, 50, 11)[:, :, :1]], axis=-1)
    save("rgba_33x50.png", Image.fromarray(rgba, mode="RGBA"))
    pal = Image.fromarray(pattern(25, 25, 12)).quantize(colors=64)
    save("palette_25x25.png", pal, pixels=True)

    # 16-bit PNGs, written by hand
    rng = np.random.default_rng(13)
    rgb16 = (pattern(29, 23, 13).astype(np.uint32) * 257 + rng.integers(0, 257, (23, 29, 3))).astype(np.uint16)
    write_png16(os.path.join(OUT, "deep16_29x23.png"), rgb16)
    SOURCE16["deep16_29x23.png"] = rgb16
    files["deep16_29x23.png"] = {"lossless": True, "pixels": True}
    grey16 = (pattern(21, 17, 14)[:, :, 0].astype(np.uint32) * 257).astype(np.uint16)
    write_png16(os.path.join(OUT, "grey16_21x17.png"), grey16)
    SOURCE16["grey16_21x17.png"] = grey16
    files["grey16_21x17.png"] = {"lossless": True, "pixels": True}

    # JPEGs: plain, and with EXIF orientation 6 (rotate 90 CW to display) and 8
    save("plain_64x48.jpg", Image.fromarray(pattern(64, 48, 15, smooth=True)), lossless=False, pixels=True, quality=95)
    for orient, seed in [(6, 16), (8, 17), (3, 18)]:
        exif = Image.Exif()
        exif[0x0112] = orient
        save(
            f"exif{orient}_40x24.jpg",
            Image.fromarray(pattern(40, 24, seed, smooth=True)),
            lossless=False,
            pixels=True,
            quality=95,
            exif=exif.tobytes(),
        )

    save("lossless_37x29.webp", Image.fromarray(pattern(37, 29, 19)), lossless=True)
    save("lossy_37x29.webp", Image.fromarray(pattern(37, 29, 20, smooth=True)), lossless=False, pixels=True, quality=90)
    save("img_41x27.bmp", Image.fromarray(pattern(41, 27, 21)))
    frames = [Image.fromarray(pattern(30, 20, 22)).quantize(colors=128), Image.fromarray(pattern(30, 20, 23)).quantize(colors=128)]
    frames[0].save(os.path.join(OUT, "anim_30x20.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["anim_30x20.gif"] = {"lossless": True, "pixels": True}
    # EXIF orientation outside JPEG: PNG eXIf chunk, WebP EXIF chunk, TIFF Orientation tag
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6_27x18.png", Image.fromarray(pattern(27, 18, 26)), exif=exif.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 8
    save("exif8_27x18.webp", Image.fromarray(pattern(27, 18, 27)), lossless=True, exif=exif.tobytes())
    save("exif5_21x34.tif", Image.fromarray(pattern(21, 34, 28)), tiffinfo={274: 5})
    # more PIL modes: 1-bit, grey + alpha, GIF with a transparent palette entry
    save("bilevel_19x11.png", Image.fromarray(pattern(19, 11, 29)[:, :, 0] > 127))
    la = np.stack([pattern(22, 15, 30)[:, :, 0], pattern(22, 15, 31)[:, :, 0]], axis=-1)
    save("la_22x15.png", Image.fromarray(la, mode="LA"))
    tgif = Image.fromarray(pattern(30, 20, 32)).quantize(colors=32)
    tgif.save(os.path.join(OUT, "transp_30x20.gif"), transparency=3)
    files["transp_30x20.gif"] = {"lossless": True, "pixels": True}
    save("img_23x35.tif", Image.fromarray(pattern(23, 35, 24)))
    save("lzw_26x19.tiff", Image.fromarray(pattern(26, 19, 25)), compression="tiff_lzw")
    return files


# Cases beyond size 32 / normalised f32 / raw interpolation: kept few, for the folder's size.
Q8_224 = [("big_480x400.png", "center"), ("up_20x13.png", "none")]
F32_CASES = [
    ("down_97x61.png", 32, "center"),
    ("exact_32x32.png", 32, "center"),
]
RAW_CASES = [
    ("up_20x13.png", 32, "center"),
    ("down_97x61.png", 32, "center"),
    ("big_480x400.png", 32, "none"),
    ("tall_7x300.png", 32, "none"),
    ("portrait_45x77.png", 32, "none"),
]


def main():
    torch.set_num_threads(1)
    files = make_images()
    tensors = {}
    cases = []
    for name in sorted(files):
        meta = files[name]
        image, arr = comfy_load_image(os.path.join(OUT, name))
        h, w = int(image.shape[1]), int(image.shape[2])
        if meta["pixels"]:
            tensors[f"{name}__pixels"] = np.ascontiguousarray(arr.astype(np.uint8))
            cases.append({"kind": "pixels", "tensor": f"{name}__pixels", "file": name, "lossless": meta["lossless"]})
        sizes = [(32, c) for c in ("center", "none")] + [(224, c) for (f, c) in Q8_224 if f == name]
        for size, crop in sizes:
            for fam, (mean, std) in FAMILIES.items():
                out, q, raw = clip_preprocess(image, size=size, mean=mean, std=std, crop=(crop == "center"))
                if fam == "clip":
                    key = f"{name}__{size}__{crop}__q8"
                    tensors[key] = np.ascontiguousarray(q[0].numpy().astype(np.uint8))
                    cases.append({"kind": "q8", "tensor": key, "file": name, "size": size, "crop": crop,
                                  "lossless": meta["lossless"], "decoded_hw": [h, w]})
                    if (name, size, crop) in RAW_CASES and raw is not None:
                        rh, rw = int(raw.shape[2]), int(raw.shape[3])
                        rkey = f"{name}__raw__{rh}x{rw}"
                        tensors[rkey] = np.ascontiguousarray(raw[0].movedim(0, -1).numpy())
                        cases.append({"kind": "raw", "tensor": rkey, "file": name, "out_hw": [rh, rw],
                                      "lossless": meta["lossless"]})
                if (name, size, crop) in F32_CASES:
                    key = f"{name}__{size}__{crop}__{fam}"
                    tensors[key] = np.ascontiguousarray(out[0].numpy())
                    cases.append({"kind": "f32", "tensor": key, "file": name, "size": size, "crop": crop,
                                  "family": fam, "lossless": meta["lossless"]})
    for name, arr in SOURCE16.items():
        tensors[f"{name}__source16"] = np.ascontiguousarray(arr.astype(np.uint16))
        cases.append({"kind": "source16", "tensor": f"{name}__source16", "file": name})
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    info = {
        "generator": "scripts/make_image_fixtures.py",
        "torch": torch.__version__,
        "pillow": Image.__version__,
        "numpy": np.__version__,
        "cases": cases,
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"{len(cases)} cases, {len(tensors)} tensors, folder {total / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
