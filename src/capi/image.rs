//! Encoding a ComfyUI IMAGE buffer (f32, B×H×W×C in 0..1): contract §4 preprocessing by
//! `crate::image`, then the loader's encode.

use crate::loader::ClipVision;
use crate::Result;

use crate::image::{prepare_comfy_batch, Crop, Pixels, Prepared};

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

/// Preprocesses a ComfyUI IMAGE buffer for `cv` (its image size or patching, mean and std)
/// into NCHW pixels, or a naflex model's patches and grids. `data` holds exactly `b*h*w*c`
/// values (checked by the caller).
pub fn preprocess_for(
    cv: &ClipVision,
    data: &[f32],
    dims: (usize, usize, usize, usize),
    crop: Crop,
) -> Result<Pixels> {
    let spec = cv.model().config.preprocess_spec(crop);
    prepare_comfy_batch(data, dims, &spec)
}

/// Decodes an encoded image file held in memory and prepares it for `cv`, by the same path
/// as the CLI's `encode --images` (`job::batch::preprocess_file`): `3 × S × S` values, or a
/// naflex model's padded patch rows and grid. `name` is used in error messages.
pub fn preprocess_encoded(
    cv: &ClipVision,
    bytes: &[u8],
    name: &str,
    crop: Crop,
) -> Result<Prepared> {
    let spec = cv.model().config.preprocess_spec(crop);
    let img = crate::image::decode_bytes(bytes, name)?;
    crate::image::prepare(&img, &spec).map_err(|e| e.context(name))
}
