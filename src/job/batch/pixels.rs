//! Image files to pixels: decoding and preprocessing files and folders into one batch for the
//! model (NCHW pixels, or a naflex model's patches and grids; strict, or skipping unreadable
//! files), and writing pixels for `encode --pixels`.

use std::path::{Path, PathBuf};

use crate::image::{self, Gather, Pixels, Prepared, PreprocessSpec};
use crate::job::output;
use crate::job::summary::Skipped;
use crate::paths::path_text;
use crate::{Error, Result};

/// One file decoded and prepared for its model: `3 × S × S` values, or a naflex model's
/// padded patch rows and grid. Errors name the file.
pub fn preprocess_file(path: &Path, spec: &PreprocessSpec) -> Result<Prepared> {
    let img = image::decode_file(path)?;
    image::prepare(&img, spec).map_err(|e| e.context(path.display()))
}

/// Files (in the order given) to one batch, and the source names in row order.
pub fn preprocess_files(paths: &[PathBuf], spec: &PreprocessSpec) -> Result<(Pixels, Vec<String>)> {
    let mut batch = Gather::new(paths.len(), spec)?;
    let mut sources = Vec::with_capacity(paths.len());
    for p in paths {
        batch.push(preprocess_file(p, spec)?)?;
        sources.push(path_text(p));
    }
    Ok((finish(batch)?, sources))
}

/// Files (in the order given) to one batch, skipping the files that cannot be read: the
/// pixels, the sources in row order and the skipped files with their reasons.
pub fn preprocess_files_skipping(
    paths: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Pixels, Vec<String>, Vec<Skipped>)> {
    let mut batch = Gather::new(paths.len(), spec)?;
    let mut sources = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for p in paths {
        match preprocess_file(p, spec) {
            Ok(v) => {
                batch.push(v)?;
                sources.push(path_text(p));
            }
            Err(e) => skipped.push(Skipped::new(p, &e)),
        }
    }
    Ok((finish(batch)?, sources, skipped))
}

fn finish(batch: Gather<'_>) -> Result<Pixels> {
    batch.finish().map_err(|e| e.context("preprocess"))
}

/// Files and folders (folders expand recursively, sorted) to pixels, as `preprocess_files`.
pub fn preprocess_inputs(
    inputs: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Pixels, Vec<String>)> {
    preprocess_files(&image::input_files(inputs)?, spec)
}

/// Files and folders to pixels, as `preprocess_files_skipping`; an error when none is readable.
pub fn preprocess_inputs_skipping(
    inputs: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Pixels, Vec<String>, Vec<Skipped>)> {
    let files = image::input_files(inputs)?;
    let (px, sources, skipped) = preprocess_files_skipping(&files, spec)?;
    if sources.is_empty() {
        return Err(match skipped.first() {
            Some(first) => Error::invalid(format!(
                "none of the {} image files could be read (the first, {}: {})",
                skipped.len(),
                first.file,
                first.reason
            )),
            None => image::no_images_in(inputs),
        });
    }
    Ok((px, sources, skipped))
}

/// Writes pixels as a safetensors file with one tensor `pixel_values` (readable by
/// `output::read_pixels`; a naflex batch adds its grids as `spatial_shapes`, the layout of
/// Hugging Face's processor), the sources in row order in the metadata `inputs`, and the
/// preprocessing (size or patching, crop, mean, std) that `encode --pixels` checks against
/// its model.
pub fn write_pixels(
    path: &Path,
    pixels: &Pixels,
    sources: &[String],
    model: &str,
    spec: &PreprocessSpec,
) -> Result<()> {
    let mut meta = output::metadata(sources, model);
    meta.extend(output::pixels_metadata(spec));
    let (values, grids) = match pixels {
        Pixels::Square(a) => (a.clone().into_dyn(), None),
        Pixels::Patches { values, grids } => (values.clone().into_dyn(), Some(&grids[..])),
    };
    let t = [("pixel_values".to_string(), values)];
    output::write_safetensors(path, &t, grids, &meta)
}
