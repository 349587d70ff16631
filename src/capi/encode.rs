//! Encoding: preprocessed pixels (`dv_encode_pixels`), a naflex model's patches with their
//! grids (`dv_encode_patches`), a ComfyUI IMAGE buffer (`dv_encode_image`), and one encoded
//! image file into pixels or patches (`dv_preprocess_encoded`, `dv_preprocess_encoded_patches`).

use std::ffi::c_char;

use ndarray::{ArrayView3, ArrayView4};

use super::ffi::{f32_buffer, guard, guard_out, opt_str, running, DvStatus, Fail, R};
use super::ffi::{DV_ERR_INVALID_ARGUMENT, DV_ERR_SIZE_MISMATCH};
use super::{image, model, outputs};
use crate::image::{Crop, Grid, PixelsView};
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

/// `dv_status dv_encode_patches(...)`: a naflex model's flattened patches `[B, T, 3·P²]`
/// (image `i`'s first `rows·cols` rows its patches, the rest padding) with each image's grid,
/// `spatial_shapes` `[B, 2]` int64 (rows then columns), as Hugging Face's processor gives them.
///
/// # Safety
/// `patches` is NULL or points to `count` readable floats; `spatial_shapes` is NULL or points
/// to `shapes_count` readable int64 values; `outputs` is NULL or a NUL-terminated string;
/// `outputs_out` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_encode_patches(
    model: u64,
    patches: *const f32,
    count: usize,
    b: usize,
    t: usize,
    d: usize,
    spatial_shapes: *const i64,
    shapes_count: usize,
    outputs: *const c_char,
    batch_size: usize,
    outputs_out: *mut u64,
) -> DvStatus {
    guard_out(outputs_out, "outputs_out", 0, || {
        let cv = model::live(model)?;
        running()?;
        let data = f32_buffer(patches, count, &[("B", b), ("T", t), ("D", d)])?;
        let grids = grid_buffer(spatial_shapes, shapes_count, b)?;
        let wanted = output_list(outputs)?;
        let values = ArrayView3::from_shape((b, t, d), data)
            .map_err(|e| Fail::new(DV_ERR_SIZE_MISMATCH, format!("patches: {e}")))?;
        let px = PixelsView::Patches {
            values,
            grids: &grids,
        };
        let res = cv.encode(px, &wanted, batch_or_default(batch_size))?;
        Ok(outputs::register(res))
    })
}

/// The `B` grids of `spatial_shapes` (`2·B` int64, rows then columns, each at least 1).
///
/// # Safety
/// `p` is NULL or points to `count` readable int64 values.
unsafe fn grid_buffer(p: *const i64, count: usize, b: usize) -> R<Vec<Grid>> {
    if p.is_null() {
        return Err(Fail::null("spatial_shapes"));
    }
    if Some(count) != b.checked_mul(2) {
        return Err(Fail::new(
            DV_ERR_SIZE_MISMATCH,
            format!(
                "spatial_shapes holds {count} values; B = {b} images need 2·B = {}",
                2 * b
            ),
        ));
    }
    if (p as usize) % std::mem::align_of::<i64>() != 0 {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            "spatial_shapes is not aligned for int64",
        ));
    }
    // SAFETY: non-NULL, aligned, `count` readable values (the caller's guarantee).
    let v = std::slice::from_raw_parts(p, count);
    v.chunks_exact(2)
        .enumerate()
        .map(|(i, g)| {
            let side = |x: i64| usize::try_from(x).ok().filter(|&x| x > 0);
            match (side(g[0]), side(g[1])) {
                (Some(r), Some(c)) => Ok(Grid::new(r, c)),
                _ => Err(Fail::new(
                    DV_ERR_INVALID_ARGUMENT,
                    format!(
                        "spatial_shapes of image {i} is ({}, {}); a grid needs at least one patch a side",
                        g[0], g[1]
                    ),
                )),
            }
        })
        .collect()
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
/// `3 × S × S` floats for [`dv_encode_pixels`]. A naflex model takes
/// [`dv_preprocess_encoded_patches`] instead.
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
        if let Some(p) = cv.model().config.patching() {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!(
                    "this SigLIP2 naflex model takes patches ({} floats and a grid an image): use dv_preprocess_encoded_patches",
                    p.image_len()
                ),
            ));
        }
        let s = cv.model().config.image_size;
        let px = preprocess_one(
            &cv,
            (data, len),
            name,
            crop,
            (pixels_out, "pixels_out"),
            count,
            3 * s * s,
        )?;
        // SAFETY: `pixels_out` was checked non-NULL, aligned and `count` floats long.
        std::slice::from_raw_parts_mut(pixels_out, count).copy_from_slice(&px.values);
        Ok(())
    })
}

/// `dv_status dv_preprocess_encoded_patches(...)`: one encoded image file held in memory,
/// decoded and cut into a naflex model's patches exactly as the CLI's `encode --images` does
/// (contract §4b): `num_patches · 3·P²` floats (the image's `rows·cols` patches, then zero
/// padding) into `patches_out`, its grid (rows, columns) into `grid_out[0..2]`, for
/// [`dv_encode_patches`].
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes; `name` is NULL or a NUL-terminated
/// string; `patches_out` is NULL or points to `count` writable floats; `grid_out` is NULL or
/// points to two writable int64 values.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_preprocess_encoded_patches(
    model: u64,
    data: *const u8,
    len: usize,
    name: *const c_char,
    patches_out: *mut f32,
    count: usize,
    grid_out: *mut i64,
) -> DvStatus {
    guard(|| {
        let cv = model::live(model)?;
        if grid_out.is_null() {
            return Err(Fail::null("grid_out"));
        }
        if (grid_out as usize) % std::mem::align_of::<i64>() != 0 {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                "grid_out is not aligned for int64",
            ));
        }
        let Some(p) = cv.model().config.patching() else {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                "this model takes square pixels, not patches: use dv_preprocess_encoded",
            ));
        };
        let out = (patches_out, "patches_out");
        let px = preprocess_one(&cv, (data, len), name, 0, out, count, p.image_len())?;
        let g = px.grid.unwrap_or(Grid::new(0, 0));
        // SAFETY: both out-pointers were checked non-NULL and aligned; sizes are the caller's.
        std::slice::from_raw_parts_mut(patches_out, count).copy_from_slice(&px.values);
        std::slice::from_raw_parts_mut(grid_out, 2)
            .copy_from_slice(&[g.rows as i64, g.cols as i64]);
        Ok(())
    })
}

/// What both `dv_preprocess_encoded*` check and do: the out-buffer (a pointer and its
/// parameter's name) holds `want` aligned floats, then the image (`len` bytes at `data`) is
/// decoded and prepared.
///
/// # Safety
/// As [`dv_preprocess_encoded`].
unsafe fn preprocess_one(
    cv: &crate::loader::ClipVision,
    (data, len): (*const u8, usize),
    name: *const c_char,
    crop: i32,
    (out, out_name): (*mut f32, &str),
    count: usize,
    want: usize,
) -> R<crate::image::Prepared> {
    if data.is_null() {
        return Err(Fail::null("data"));
    }
    if out.is_null() {
        return Err(Fail::null(out_name));
    }
    if count != want {
        return Err(Fail::new(
            DV_ERR_SIZE_MISMATCH,
            format!("the output buffer holds {count} floats; this model needs {want} an image"),
        ));
    }
    if (out as usize) % std::mem::align_of::<f32>() != 0 {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            "the output buffer is not aligned for f32",
        ));
    }
    let crop = crop_mode(crop)?;
    let name = opt_str(name, "name")?.unwrap_or_else(|| "image".to_string());
    // SAFETY: the caller guarantees `len` readable bytes at `data` (checked non-NULL).
    let bytes = std::slice::from_raw_parts(data, len);
    Ok(image::preprocess_encoded(cv, bytes, &name, crop)?)
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
