//! Image files to pixels: decoding and preprocessing files and folders into one NCHW tensor
//! (strict, or skipping unreadable files), and writing pixels for `encode --pixels`.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use crate::image::{self, PreprocessSpec};
use crate::job::output;
use crate::job::summary::Skipped;
use crate::paths::path_text;
use crate::{Error, Result};

/// One file decoded and preprocessed to `3 × S × S` values. Errors name the file.
pub fn preprocess_file(path: &Path, spec: &PreprocessSpec) -> Result<Vec<f32>> {
    let img = image::decode_file(path)?;
    image::preprocess(&img, spec).map_err(|e| e.context(path.display()))
}

/// Room for `n` images of `3 × s × s` values, reserved up front so a folder too large for
/// memory fails with advice instead of aborting mid-way.
fn pixel_buffer(n: usize, s: usize) -> Result<Vec<f32>> {
    let mut data: Vec<f32> = Vec::new();
    let total = n.checked_mul(3 * s * s);
    if total.is_none_or(|t| data.try_reserve_exact(t).is_err()) {
        return Err(Error::invalid(format!(
            "{n} images of {s}×{s} pixels do not fit in memory at once; encode them in shards (`shard_size=N`)"
        )));
    }
    Ok(data)
}

/// Files (in the order given) to one NCHW tensor, and the source names in row order.
pub fn preprocess_files(
    paths: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>)> {
    let s = spec.size as usize;
    let mut data = pixel_buffer(paths.len(), s)?;
    let mut sources = Vec::with_capacity(paths.len());
    for p in paths {
        data.extend(preprocess_file(p, spec)?);
        sources.push(path_text(p));
    }
    let px = Array4::from_shape_vec((paths.len(), 3, s, s), data)
        .map_err(|e| Error::invalid(format!("preprocess: {e}")))?;
    Ok((px, sources))
}

/// Files (in the order given) to one NCHW tensor, skipping the files that cannot be read:
/// the pixels, the sources in row order and the skipped files with their reasons.
pub fn preprocess_files_skipping(
    paths: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>, Vec<Skipped>)> {
    let s = spec.size as usize;
    let mut data = pixel_buffer(paths.len(), s)?;
    let mut sources = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for p in paths {
        match preprocess_file(p, spec) {
            Ok(v) => {
                data.extend(v);
                sources.push(path_text(p));
            }
            Err(e) => skipped.push(Skipped::new(p, &e)),
        }
    }
    let px = Array4::from_shape_vec((sources.len(), 3, s, s), data)
        .map_err(|e| Error::invalid(format!("preprocess: {e}")))?;
    Ok((px, sources, skipped))
}

/// The error when `inputs` name no image file at all.
fn no_images_in(inputs: &[PathBuf]) -> Error {
    let names: Vec<String> = inputs.iter().map(|p| path_text(p)).collect();
    Error::invalid(format!("no image files found in {}", names.join(", ")))
}

/// Files and folders (folders expand recursively, sorted) to pixels, as `preprocess_files`.
pub fn preprocess_inputs(
    inputs: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>)> {
    let files = image::expand_inputs(inputs)?;
    if files.is_empty() {
        return Err(no_images_in(inputs));
    }
    preprocess_files(&files, spec)
}

/// Files and folders to pixels, as `preprocess_files_skipping`; an error when none is readable.
pub fn preprocess_inputs_skipping(
    inputs: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>, Vec<Skipped>)> {
    let files = image::expand_inputs(inputs)?;
    let (px, sources, skipped) = preprocess_files_skipping(&files, spec)?;
    if sources.is_empty() {
        return Err(match skipped.first() {
            Some(first) => Error::invalid(format!(
                "none of the {} image files could be read (the first, {}: {})",
                skipped.len(),
                first.file,
                first.reason
            )),
            None => no_images_in(inputs),
        });
    }
    Ok((px, sources, skipped))
}

/// Writes pixels as a safetensors file with one tensor `pixel_values` (readable by
/// `output::read_pixels`), the sources in row order in the metadata `inputs`, and the
/// preprocessing (size, crop, mean, std) that `encode --pixels` checks against its model.
pub fn write_pixels(
    path: &Path,
    pixels: &Array4<f32>,
    sources: &[String],
    model: &str,
    spec: &PreprocessSpec,
) -> Result<()> {
    let mut meta = output::metadata(sources, model);
    meta.extend(output::pixels_metadata(spec));
    let t = [("pixel_values".to_string(), pixels.clone().into_dyn())];
    output::write_safetensors(path, &t, &meta)
}
