//! Encoding a ComfyUI IMAGE buffer (f32, B×H×W×C in 0..1): SPEC §4 preprocessing, then the
//! loader's encode. The preprocessing itself lives in `crate::image` (not on this branch
//! yet); `standin` below covers only the no-resize case until it is merged.

use ndarray::Array4;

use crate::loader::ClipVision;
use crate::Result;

// TODO(merge): replace with crate::image::preprocess_comfy_batch
use self::standin::{preprocess_comfy_batch, Crop, PreprocessSpec};

/// Crop mode of `dv_encode_image` (`DV_CROP_*` in the header).
pub const CROP_CENTER: i32 = 0;
pub const CROP_NONE: i32 = 1;

/// Maps the C crop code to the preprocessing crop mode.
pub fn crop_from_code(code: i32) -> Option<Crop> {
    match code {
        CROP_CENTER => Some(Crop::Center),
        CROP_NONE => Some(Crop::None),
        _ => None,
    }
}

/// Preprocesses a ComfyUI IMAGE buffer for `cv` (its image size, mean and std) into NCHW
/// pixels. `data` holds exactly `b*h*w*c` values (checked by the caller).
pub fn preprocess_for(
    cv: &ClipVision,
    data: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
    crop: Crop,
) -> Result<Array4<f32>> {
    let config = &cv.model().config;
    let (mean, std) = config.mean_std();
    let spec = PreprocessSpec {
        size: config.image_size as u32,
        mean,
        std,
        crop,
    };
    preprocess_comfy_batch(data, b, h, w, c, &spec)
}

// TODO(merge): replace with crate::image::preprocess_comfy_batch
/// Temporary stand-in for `crate::image`: same types and signature, but only the case where
/// H and W already equal the model size (no resize, so no crop either). Other sizes are
/// rejected with an error that says so.
mod standin {
    use ndarray::Array4;

    use crate::{Error, Result};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Crop {
        Center,
        None,
    }

    #[derive(Clone, Debug)]
    pub struct PreprocessSpec {
        pub size: u32,
        pub mean: [f32; 3],
        pub std: [f32; 3],
        pub crop: Crop,
    }

    pub fn preprocess_comfy_batch(
        data: &[f32],
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        spec: &PreprocessSpec,
    ) -> Result<Array4<f32>> {
        let _ = spec.crop; // nothing to crop when no resize happens
        if !matches!(c, 1 | 3 | 4) {
            return Err(Error::invalid(format!(
                "image has {c} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)"
            )));
        }
        let s = spec.size as usize;
        if h != s || w != s {
            return Err(Error::invalid(format!(
                "image is {h}x{w}; resizing to the model's {s}x{s} is not available in this build \
                 (give {s}x{s} images or preprocessed pixels)"
            )));
        }
        let expected = b
            .checked_mul(h)
            .and_then(|n| n.checked_mul(w))
            .and_then(|n| n.checked_mul(c));
        if expected != Some(data.len()) || b == 0 {
            return Err(Error::invalid(format!(
                "image buffer holds {} values; B×H×W×C = {b}×{h}×{w}×{c} (B ≥ 1)",
                data.len()
            )));
        }
        let mut out = Array4::<f32>::zeros((b, 3, h, w));
        for n in 0..b {
            for y in 0..h {
                for x in 0..w {
                    let px = ((n * h + y) * w + x) * c;
                    for ch in 0..3 {
                        let v = data[px + if c == 1 { 0 } else { ch }];
                        let q = (255.0 * v).clamp(0.0, 255.0).round_ties_even() / 255.0;
                        out[[n, ch, y, x]] = (q - spec.mean[ch]) / spec.std[ch];
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::standin::*;

    #[test]
    fn standin_quantises_normalises_and_drops_alpha() {
        let spec = PreprocessSpec {
            size: 1,
            mean: [0.5; 3],
            std: [0.5; 3],
            crop: Crop::Center,
        };
        let px = preprocess_comfy_batch(&[0.0, 1.0, 0.5, 0.7], 1, 1, 1, 4, &spec).unwrap();
        assert_eq!(px.shape(), &[1, 3, 1, 1]);
        assert_eq!(px[[0, 0, 0, 0]], -1.0);
        assert_eq!(px[[0, 1, 0, 0]], 1.0);
        // 127.5 rounds half to even: 128
        assert!((px[[0, 2, 0, 0]] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        assert!(preprocess_comfy_batch(&[0.0; 12], 1, 2, 2, 3, &spec).is_err());
        assert!(preprocess_comfy_batch(&[0.0; 2], 1, 1, 1, 2, &spec).is_err());
    }
}
