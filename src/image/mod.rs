//! Images to pixel tensors, exactly as ComfyUI's `clip_preprocess` makes them (contract §4).
//!
//! - [`decode_file`] / [`decode_bytes`]: PNG, JPEG, WebP, BMP, GIF (first frame) and TIFF, with
//!   the EXIF orientation applied and converted to 8-bit RGB the way ComfyUI's `LoadImage` does
//!   (PIL `ImageOps.exif_transpose` + `convert("RGB")`), then `/255` in f32.
//! - [`preprocess`] / [`preprocess_comfy_batch`]: resize (PyTorch's antialiased bicubic,
//!   reproduced bit for bit), centre crop, 8-bit quantisation and mean/std normalisation, NCHW.
//! - [`prepare`] / [`prepare_comfy_batch`]: the same for any model, naflex ones included
//!   (ComfyUI's `siglip2_preprocess`, [`naflex`]): a [`Prepared`] image or a [`Pixels`] batch.
//! - [`expand_inputs`] / [`input_files`]: files, folders and file lists to an ordered list of
//!   image files, each once.

mod decode;
mod inputs;
mod limits;
pub mod naflex;
mod pixels;
mod resize;
mod tiff_palette;

use std::fmt;
use std::str::FromStr;

use ndarray::Array4;

use resize::try_zeroed;

use crate::{Error, Result};

pub use decode::{decode_bytes, decode_file};
pub use inputs::{
    expand_inputs, input_files, is_image_path, is_list_path, no_images_in, IMAGE_EXTENSIONS,
    LIST_EXTENSIONS,
};
pub use limits::{MAX_DECODE_ALLOC, MAX_DIMENSION};
pub use naflex::{Grid, Patching};
pub use pixels::{Gather, Pixels, PixelsView, Prepared};

/// CLIP's per-channel mean (contract §2.1).
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's per-channel standard deviation (contract §2.1), written as published.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];
/// SigLIP's per-channel mean (contract §2.1).
pub const SIGLIP_MEAN: [f32; 3] = [0.5; 3];
/// SigLIP's per-channel standard deviation (contract §2.1).
pub const SIGLIP_STD: [f32; 3] = [0.5; 3];
/// ImageNet's per-channel mean, which DINOv2 uses (contract §2.1b).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (contract §2.1b).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How an image whose aspect ratio differs from the square model input is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Crop {
    /// Scale the short side to the model size, then cut the centre square.
    #[default]
    Center,
    /// Stretch to the square model size.
    None,
}

impl Crop {
    /// The accepted spellings, for error messages.
    pub const CHOICES: [&'static str; 2] = ["center", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            Crop::Center => "center",
            Crop::None => "none",
        }
    }
}

impl fmt::Display for Crop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Crop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::error::deserialize_parsed(d, "a crop (\"center\" or \"none\")", "crop")
    }
}

impl FromStr for Crop {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "center" => Ok(Crop::Center),
            "none" => Ok(Crop::None),
            _ => Err(Error::invalid(format!(
                "crop: unknown value {s:?}; valid choices are {}",
                Crop::CHOICES
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// What a model wants: square input side, normalisation, and how to fit the image; or, for a
/// naflex model, how it cuts images into patches (then `size` is 0 and `crop` has no effect,
/// as in ComfyUI's `siglip2_preprocess`).
#[derive(Clone, Copy, Debug)]
pub struct PreprocessSpec {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub crop: Crop,
    pub patching: Option<Patching>,
}

impl PreprocessSpec {
    /// CLIP normalisation at the given size, centre crop.
    pub fn clip(size: u32) -> Self {
        PreprocessSpec {
            size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            crop: Crop::Center,
            patching: None,
        }
    }

    /// SigLIP normalisation at the given size, centre crop.
    pub fn siglip(size: u32) -> Self {
        PreprocessSpec {
            size,
            mean: SIGLIP_MEAN,
            std: SIGLIP_STD,
            crop: Crop::Center,
            patching: None,
        }
    }

    /// The same spec with another crop mode.
    pub fn with_crop(mut self, crop: Crop) -> Self {
        self.crop = crop;
        self
    }

    /// Values of one prepared image: `3·S·S`, or the padded patch rows of a naflex model.
    pub fn image_len(&self) -> usize {
        match self.patching {
            Some(p) => p.image_len(),
            None => 3 * (self.size as usize).pow(2),
        }
    }

    fn validate_normalisation(&self) -> Result<()> {
        for (name, v) in [("mean", self.mean), ("std", self.std)] {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "preprocess: {name} must be finite, got {v:?}"
                )));
            }
        }
        if self.std.contains(&0.0) {
            return Err(Error::invalid(format!(
                "preprocess: std must be non-zero, got {:?}",
                self.std
            )));
        }
        Ok(())
    }

    fn validate(&self) -> Result<usize> {
        if self.patching.is_some() {
            return Err(Error::invalid(
                "preprocess: this model takes patches (naflex), not square pixels",
            ));
        }
        if self.size == 0 {
            return Err(Error::invalid(
                "preprocess: image size must be at least 1 pixel, got 0",
            ));
        }
        self.validate_normalisation()?;
        Ok(self.size as usize)
    }
}

/// A decoded image: HWC, 3 channels (RGB), values in 0..1.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// One image to a CHW f32 tensor of `3 × size × size` (contract §4 steps 2–6).
pub fn preprocess(img: &RgbImage, spec: &PreprocessSpec) -> Result<Vec<f32>> {
    let (h, w) = (img.height as usize, img.width as usize);
    let expect = h
        .checked_mul(w)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| Error::invalid("preprocess: image dimensions overflow"))?;
    if img.data.len() != expect {
        return Err(Error::invalid(format!(
            "preprocess: image is {w}x{h} RGB, which needs {expect} values, but it holds {}",
            img.data.len()
        )));
    }
    let s = spec.validate()?;
    let src = resize::SrcView {
        data: &img.data,
        height: h,
        width: w,
        channels: 3,
    };
    let mut out = try_zeroed(3 * s * s)?;
    preprocess_into(src, spec, s, &mut out)?;
    Ok(out)
}

/// One image prepared for any model: square pixels (contract §4) or, for a naflex model, its
/// padded patch rows and grid (contract §4b).
pub fn prepare(img: &RgbImage, spec: &PreprocessSpec) -> Result<Prepared> {
    let Some(patching) = spec.patching else {
        return Ok(Prepared {
            values: preprocess(img, spec)?,
            grid: None,
        });
    };
    let (h, w) = (img.height as usize, img.width as usize);
    if h.checked_mul(w).and_then(|n| n.checked_mul(3)) != Some(img.data.len()) {
        return Err(Error::invalid(format!(
            "preprocess: image is {w}x{h} RGB but holds {} values",
            img.data.len()
        )));
    }
    spec.validate_normalisation()?;
    let src = resize::SrcView {
        data: &img.data,
        height: h,
        width: w,
        channels: 3,
    };
    let (values, grid) = naflex::prepare_patches(src, patching, spec.mean, spec.std)?;
    Ok(Prepared {
        values,
        grid: Some(grid),
    })
}

/// A ComfyUI IMAGE batch prepared for any model: [`preprocess_comfy_batch`]'s square pixels, or
/// each image's padded patch rows and grid for a naflex model.
pub fn prepare_comfy_batch(
    data: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
    spec: &PreprocessSpec,
) -> Result<Pixels> {
    let Some(patching) = spec.patching else {
        return preprocess_comfy_batch(data, b, h, w, c, spec).map(Pixels::Square);
    };
    let per_image = comfy_batch_len(data, (b, h, w, c))?;
    spec.validate_normalisation()?;
    let mut batch = Gather::new(b, spec)?;
    for i in 0..b {
        let src = resize::SrcView {
            data: &data[i * per_image..(i + 1) * per_image],
            height: h,
            width: w,
            channels: c,
        };
        let (values, grid) = naflex::prepare_patches(src, patching, spec.mean, spec.std)
            .map_err(|e| e.context(format!("image {i}")))?;
        batch.push(Prepared {
            values,
            grid: Some(grid),
        })?;
    }
    batch.finish()
}

/// Checks a ComfyUI IMAGE buffer's shape against its length; values per image.
fn comfy_batch_len(data: &[f32], (b, h, w, c): (usize, usize, usize, usize)) -> Result<usize> {
    if c != 1 && c < 3 {
        return Err(Error::invalid(format!(
            "image batch: {c} channels per pixel; valid choices are 1 (grey), 3 (RGB) or 4 (RGBA) (beyond 3, the first 3 are used)"
        )));
    }
    let per_image = h
        .checked_mul(w)
        .and_then(|n| n.checked_mul(c))
        .ok_or_else(|| Error::invalid(format!("image batch: {h}x{w}x{c} overflows")))?;
    let expect = per_image
        .checked_mul(b)
        .ok_or_else(|| Error::invalid(format!("image batch: {b}x{h}x{w}x{c} overflows")))?;
    if data.len() != expect {
        return Err(Error::invalid(format!(
            "image batch: shape {b}x{h}x{w}x{c} needs {expect} values, but {} were given",
            data.len()
        )));
    }
    Ok(per_image)
}

/// A ComfyUI IMAGE (B×H×W×C f32, C = 1, 3 or 4; alpha dropped, grey read as RGB) to a
/// B×3×S×S tensor.
pub fn preprocess_comfy_batch(
    data: &[f32],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    spec: &PreprocessSpec,
) -> Result<Array4<f32>> {
    let per_image = comfy_batch_len(data, (b, h, w, c))?;
    let s = spec.validate()?;
    let per_out = 3 * s * s;
    let total = per_out
        .checked_mul(b)
        .ok_or_else(|| Error::invalid(format!("image batch: {b} images of {s}x{s} overflow")))?;
    let mut out = try_zeroed(total)?;
    if b > 0 {
        for (i, dst) in out.chunks_exact_mut(per_out).enumerate() {
            let src = resize::SrcView {
                data: &data[i * per_image..(i + 1) * per_image],
                height: h,
                width: w,
                channels: c,
            };
            preprocess_into(src, spec, s, dst).map_err(|e| e.context(format!("image {i}")))?;
        }
    }
    Array4::from_shape_vec((b, 3, s, s), out)
        .map_err(|e| Error::invalid(format!("image batch: {e}")))
}

/// `F.interpolate(img, size=(out_h, out_w), mode="bicubic", antialias=True)` on an RGB image,
/// exactly as PyTorch computes it on f32 (no quantisation, no normalisation).
pub fn resize_bicubic_aa(img: &RgbImage, out_h: u32, out_w: u32) -> Result<RgbImage> {
    let (h, w) = (img.height as usize, img.width as usize);
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::invalid(format!(
            "resize: {w}x{h} to {out_w}x{out_h}; every side must be at least 1 pixel"
        )));
    }
    if h.checked_mul(w).and_then(|n| n.checked_mul(3)) != Some(img.data.len()) {
        return Err(Error::invalid(format!(
            "resize: image is {w}x{h} RGB but holds {} values",
            img.data.len()
        )));
    }
    (out_h as usize)
        .checked_mul(out_w as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| Error::invalid("resize: output size overflows"))?;
    let src = resize::SrcView {
        data: &img.data,
        height: h,
        width: w,
        channels: 3,
    };
    let (oh, ow) = (out_h as usize, out_w as usize);
    let data = resize::resize_window(resize::Filter::Bicubic, src, oh, ow, 0..oh, 0..ow)?;
    Ok(RgbImage {
        width: out_w,
        height: out_h,
        data,
    })
}

/// Python's `round()` of a float to an integer size, half to even, refusing absurd values.
fn round_size(x: f64) -> Result<usize> {
    let r = x.round_ties_even();
    if !r.is_finite() || r < 0.0 || r > (u32::MAX as f64) {
        return Err(Error::invalid(format!(
            "preprocess: scaled size {x} is out of range"
        )));
    }
    Ok(r as usize)
}

/// contract §4 steps 2–6 for one image, written as CHW into `out` (length 3·S·S).
fn preprocess_into(
    src: resize::SrcView<'_>,
    spec: &PreprocessSpec,
    s: usize,
    out: &mut [f32],
) -> Result<()> {
    let (h, w) = (src.height, src.width);
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "preprocess: image is {w}x{h}; both sides must be at least 1 pixel"
        )));
    }
    let plane = s * s;
    // Step 2–4: resized window, HWC 3 channels, S×S.
    let window: Vec<f32>;
    let hwc: (&[f32], usize) = if h == s && w == s {
        (src.data, src.channels)
    } else {
        let (nh, nw) = match spec.crop {
            Crop::Center => {
                let scale = s as f64 / h.min(w) as f64;
                (round_size(scale * h as f64)?, round_size(scale * w as f64)?)
            }
            Crop::None => (s, s),
        };
        if nh < s || nw < s {
            return Err(Error::invalid(format!(
                "preprocess: {w}x{h} scaled to {nw}x{nh} is smaller than {s}x{s}"
            )));
        }
        let top = (nh - s) / 2;
        let left = (nw - s) / 2;
        window = resize::resize_window(
            resize::Filter::Bicubic,
            src,
            nh,
            nw,
            top..top + s,
            left..left + s,
        )?;
        (&window, 3)
    };
    let (data, c) = hwc;
    let offs: [usize; 3] = if c >= 3 { [0, 1, 2] } else { [0, 0, 0] };
    // Steps 5–6: quantise to 8 bits as torch does, then normalise, into CHW.
    for (ch, &off) in offs.iter().enumerate() {
        let mean = spec.mean[ch];
        let std = spec.std[ch];
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (p, d) in dst.iter_mut().enumerate() {
            let x = data[p * c + off];
            let q = (255.0f32 * x).clamp(0.0, 255.0).round_ties_even() / 255.0f32;
            *d = (q - mean) / std;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_parses() {
        assert_eq!("center".parse::<Crop>().unwrap(), Crop::Center);
        assert_eq!("none".parse::<Crop>().unwrap(), Crop::None);
        let e = "middle".parse::<Crop>().unwrap_err();
        assert!(e.message().contains("\"center\", \"none\""), "{e}");
    }

    #[test]
    fn exact_size_is_only_quantised_and_normalised() {
        let img = RgbImage {
            width: 2,
            height: 2,
            data: vec![
                0.0, 0.5, 1.0, 0.2, 0.3, 0.4, 1.5, -1.0, 0.999, 0.1, 0.1, 0.1,
            ],
        };
        let spec = PreprocessSpec::siglip(2);
        let out = preprocess(&img, &spec).unwrap();
        // channel 0 of pixel 0: 0.0 -> (0 - 0.5) / 0.5 = -1
        assert_eq!(out[0], -1.0);
        // channel 1 of pixel 0: 0.5 -> 127.5 -> round half even 128 -> 128/255
        assert_eq!(out[4], (128.0f32 / 255.0 - 0.5) / 0.5);
        // pixel 2 channel 0: 1.5 clamps to 1
        assert_eq!(out[2], 1.0);
        // pixel 2 channel 1: -1 clamps to 0
        assert_eq!(out[4 + 2], -1.0);
    }

    #[test]
    fn zero_sizes_error() {
        let img = RgbImage {
            width: 0,
            height: 5,
            data: vec![],
        };
        assert!(preprocess(&img, &PreprocessSpec::clip(4)).is_err());
        let img = RgbImage {
            width: 1,
            height: 1,
            data: vec![0.0; 3],
        };
        assert!(preprocess(&img, &PreprocessSpec::clip(0)).is_err());
    }

    #[test]
    fn extreme_aspect_ratio_is_fine() {
        let img = RgbImage {
            width: 20000,
            height: 1,
            data: vec![0.5; 60000],
        };
        for crop in [Crop::Center, Crop::None] {
            let out = preprocess(&img, &PreprocessSpec::clip(8).with_crop(crop)).unwrap();
            assert_eq!(out.len(), 3 * 64);
        }
    }
}
