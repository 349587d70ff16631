//! Encoding: preprocessed pixels (`dv_encode_pixels`), a ComfyUI IMAGE buffer
//! (`dv_encode_image`), and one encoded image file into pixels (`dv_preprocess_encoded`).

use std::ffi::c_char;

use ndarray::ArrayView4;

use super::ffi::{f32_buffer, guard, guard_out, opt_str, running, DvStatus, Fail, R};
use super::ffi::{DV_ERR_INVALID_ARGUMENT, DV_ERR_SIZE_MISMATCH};
use super::{image, model, outputs};
use crate::image::Crop;
use crate::plan::DEFAULT_BATCH_SIZE;

/// The requested outputs: NULL or "" = all, else comma-separated names.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn output_list(p: *const c_char) -> R<Vec<String>> {
    Ok(opt_str(p, "outputs")?
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// The header's `batch_size`: 0 is the default.
fn batch_or_default(batch_size: usize) -> usize {
    if batch_size == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        batch_size
    }
}

/// The crop mode of a `DV_CROP_*` code.
fn crop_mode(code: i32) -> R<Crop> {
    image::crop_from_code(code).ok_or_else(|| {
        Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            format!("crop is {code}; valid: DV_CROP_CENTER (0), DV_CROP_NONE (1)"),
        )
    })
}

/// `dv_status dv_encode_pixels(...)`: preprocessed NCHW pixels, as the CLI's `encode`.
///
/// # Safety
/// `pixels` is NULL or points to `count` readable floats; `outputs` is NULL or a
/// NUL-terminated string; `outputs_out` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_encode_pixels(
    model: u64,
    pixels: *const f32,
    count: usize,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    outputs: *const c_char,
    batch_size: usize,
    outputs_out: *mut u64,
) -> DvStatus {
    guard_out(outputs_out, "outputs_out", 0, || {
        let cv = model::live(model)?;
        running()?;
        let data = f32_buffer(pixels, count, &[("B", b), ("C", c), ("H", h), ("W", w)])?;
        let wanted = output_list(outputs)?;
        let view = ArrayView4::from_shape((b, c, h, w), data)
            .map_err(|e| Fail::new(DV_ERR_SIZE_MISMATCH, format!("pixels: {e}")))?;
        let res = cv.encode(view, &wanted, batch_or_default(batch_size))?;
        Ok(outputs::register(res))
    })
}

/// `dv_status dv_encode_image(...)`: a ComfyUI IMAGE buffer, preprocessed per contract §4.
///
/// # Safety
/// As [`dv_encode_pixels`], with `image` holding `count` floats in B×H×W×C order.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_encode_image(
    model: u64,
    image: *const f32,
    count: usize,
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    crop: i32,
    outputs: *const c_char,
    batch_size: usize,
    outputs_out: *mut u64,
) -> DvStatus {
    guard_out(outputs_out, "outputs_out", 0, || {
        let cv = model::live(model)?;
        running()?;
        let data = f32_buffer(image, count, &[("B", b), ("H", h), ("W", w), ("C", c)])?;
        // As ComfyUI's clip_preprocess: the first 3 channels, or one grey channel broadcast.
        if c != 1 && c < 3 {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("C is {c}; an IMAGE buffer has 1 (grey), 3 (RGB) or 4 (RGBA) channels (beyond 3, the first 3 are used)"),
            ));
        }
        let crop = crop_mode(crop)?;
        let wanted = output_list(outputs)?;
        let pixels = image::preprocess_for(&cv, data, (b, h, w, c), crop)?;
        let res = cv.encode(pixels.view(), &wanted, batch_or_default(batch_size))?;
        Ok(outputs::register(res))
    })
}

/// `dv_status dv_preprocess_encoded(...)`: one encoded image file (PNG, JPEG, …) held in
/// memory, decoded and preprocessed exactly as the CLI's `encode --images` does, into
/// `3 × S × S` floats for [`dv_encode_pixels`].
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes; `name` is NULL or a NUL-terminated
/// string; `pixels_out` is NULL or points to `count` writable floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_preprocess_encoded(
    model: u64,
    data: *const u8,
    len: usize,
    name: *const c_char,
    crop: i32,
    pixels_out: *mut f32,
    count: usize,
) -> DvStatus {
    guard(|| {
        let cv = model::live(model)?;
        if data.is_null() {
            return Err(Fail::null("data"));
        }
        if pixels_out.is_null() {
            return Err(Fail::null("pixels_out"));
        }
        let s = cv.model().config.image_size;
        if count != 3 * s * s {
            return Err(Fail::new(
                DV_ERR_SIZE_MISMATCH,
                format!(
                    "pixels_out holds {count} floats; this model needs 3*{s}*{s} = {}",
                    3 * s * s
                ),
            ));
        }
        if (pixels_out as usize) % std::mem::align_of::<f32>() != 0 {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                "pixels_out is not aligned for f32",
            ));
        }
        let crop = crop_mode(crop)?;
        let name = opt_str(name, "name")?.unwrap_or_else(|| "image".to_string());
        // SAFETY: the caller guarantees `len` readable bytes at `data` (checked non-NULL).
        let bytes = std::slice::from_raw_parts(data, len);
        let px = image::preprocess_encoded(&cv, bytes, &name, crop)?;
        // SAFETY: `pixels_out` is non-NULL, aligned and holds `count` floats (checked above).
        std::slice::from_raw_parts_mut(pixels_out, count).copy_from_slice(&px);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_size_of_0_is_the_default_the_header_states() {
        assert_eq!(batch_or_default(0), DEFAULT_BATCH_SIZE);
        assert_eq!(batch_or_default(3), 3);
        let header = include_str!("../../distorch_vision.h");
        let doc = format!("batch_size images per forward pass; 0 = {DEFAULT_BATCH_SIZE}");
        assert!(header.contains(&doc), "distorch_vision.h lacks {doc:?}");
    }
}
