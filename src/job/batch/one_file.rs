//! One-file encoding: every input encoded into one safetensors file, one `.npy`, or a folder
//! of `<output>.npy`; nothing is written before every input is encoded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::ArrayD;

use super::encode_job::{EncodeJob, OutFormat};
use super::pixels::{preprocess_inputs, preprocess_inputs_skipping};
use super::progress::Progress;
use crate::image::{Pixels, PixelsView, PreprocessSpec};
use crate::job::summary::{self, EncodeSummary, Skipped};
use crate::job::{interrupt, output};
use crate::loader::ClipVision;
use crate::model::Outputs;
use crate::paths::{create_parent, path_text, write_atomic};
use crate::{Error, Result};

/// Runs a one-file encode job. Unreadable images are skipped and listed (`strict` aborts).
/// Format `npy` writes `out` as one `.npy` (exactly one output; sources in
/// `<out>.sources.json`) when it ends in `.npy`, else a folder of `<output>.npy` and
/// `sources.json`.
pub(super) fn run(
    cv: &ClipVision,
    job: &EncodeJob,
    spec: &PreprocessSpec,
) -> Result<EncodeSummary> {
    let t = Instant::now();
    // One output file: check what it can hold before any work.
    let npy_file = job.format == OutFormat::Npy && is_npy_file(&job.out);
    if npy_file {
        let names = cv.model().resolve_output_names(&job.outputs)?;
        if names.len() != 1 {
            return Err(Error::invalid(format!(
                "out {} is one .npy file, which holds one array, but {} outputs are asked for ({}); pick one with `outputs=NAME`, or give a folder as out for one .npy per output",
                job.out.display(),
                names.len(),
                names.join(", ")
            )));
        }
    }
    // Nothing is written before the end: a signal says so rather than ending silently.
    let _signals = interrupt::Guard::install_one_file();
    tracing::info!(
        "one-file mode: {} is written once every input is encoded",
        job.out.display()
    );
    let (px, sources, skipped) = gather(cv, job, spec)?;
    summary::print_skipped(&skipped);
    let res = encode_with_progress(cv, px.view(), job)?;
    match job.format {
        OutFormat::Safetensors => {
            output::write_outputs(&job.out, &res, &sources, &job.model_label)?
        }
        OutFormat::Npy if npy_file => write_npy_file(&job.out, &res, &sources)?,
        OutFormat::Npy => write_npy_dir(&job.out, &res, &sources)?,
    }
    let seconds = t.elapsed().as_secs_f64();
    Ok(EncodeSummary::one_file(
        &job.out,
        &job.shown_out(),
        px.shape()[0],
        &res,
        skipped,
        seconds,
    ))
}

/// Encodes `px` batch by batch, with the same progress line as a sharded run.
fn encode_with_progress(cv: &ClipVision, px: PixelsView<'_>, job: &EncodeJob) -> Result<Outputs> {
    let n = px.len();
    let batch = job.batch_size.max(1);
    if n <= batch {
        return cv.encode(px, &job.outputs, batch);
    }
    let mut progress = Progress::new(n, job.progress);
    let mut parts: Vec<Outputs> = Vec::with_capacity(n.div_ceil(batch));
    let mut done = 0;
    for chunk in px.chunks(batch) {
        done += chunk.len();
        parts.push(cv.encode(chunk, &job.outputs, batch)?);
        progress.update(done, false);
    }
    progress.finish(done);
    Outputs::concat(parts)
}

/// The job's pixels (rows of `job.pixels` first, then its images), their sources in row order
/// and the images skipped.
fn gather(
    cv: &ClipVision,
    job: &EncodeJob,
    spec: &PreprocessSpec,
) -> Result<(Pixels, Vec<String>, Vec<Skipped>)> {
    let mut parts: Vec<Pixels> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    if let Some(p) = &job.pixels {
        let px = output::read_pixels(p)?;
        let diff = output::pixels_mismatch(p, spec)?;
        if !diff.is_empty() {
            tracing::warn!(
                "{}: these pixels were preprocessed for another model ({}); {} expects {}, mean {:?}, std {:?}: the embeddings will be off (run preprocess with this model)",
                p.display(),
                diff.join("; "),
                cv.model().config.family,
                match spec.patching {
                    Some(p) => format!("{} px patches, at most {}", p.patch_size, p.num_patches),
                    None => format!("image size {}", spec.size),
                },
                spec.mean,
                spec.std
            );
        }
        if job.images.is_empty() {
            sources.push(path_text(p));
        } else {
            sources.extend((0..px.shape()[0]).map(|i| format!("{}#{i}", p.display())));
        }
        parts.push(px);
    }
    if !job.images.is_empty() {
        let (px, src) = if job.strict {
            preprocess_inputs(&job.images, spec)
                .map_err(|e| e.context("`strict`: stopping at an unreadable image"))?
        } else {
            let (px, src, sk) = preprocess_inputs_skipping(&job.images, spec)?;
            skipped = sk;
            (px, src)
        };
        parts.push(px);
        sources.extend(src);
    }
    Ok((Pixels::concat(parts)?, sources, skipped))
}

/// True when `out` names one `.npy` file rather than a folder.
pub(super) fn is_npy_file(out: &Path) -> bool {
    out.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Where the sources of a one-file `.npy` output go: `x.npy` -> `x.sources.json`.
pub fn npy_sources_path(out: &Path) -> PathBuf {
    out.with_extension("sources.json")
}

/// Where a one-file `.npy` output of a naflex model puts its grids: `x.npy` ->
/// `x.spatial_shapes.npy`.
pub fn npy_grids_path(out: &Path) -> PathBuf {
    out.with_extension("spatial_shapes.npy")
}

/// `.npy` bytes (version 1.0, little-endian f32, C order) of a tensor.
pub fn npy_bytes(t: &ArrayD<f32>) -> Vec<u8> {
    npy(t.shape(), "<f4", t.iter().flat_map(|v| v.to_le_bytes()))
}

/// `.npy` bytes of a naflex batch's grids: `[B, 2]` little-endian int64.
fn npy_grid_bytes(grids: &[crate::image::Grid]) -> Vec<u8> {
    let values = crate::image::naflex::spatial_shapes(grids);
    npy(
        &[grids.len(), 2],
        "<i8",
        values.iter().flat_map(|v| v.to_le_bytes()),
    )
}

/// `.npy` version 1.0 bytes (C order) of `data`, elements of numpy type `descr`.
fn npy(shape: &[usize], descr: &str, data: impl Iterator<Item = u8>) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// The one output of `res` as the `.npy` file `out`, its sources (and a naflex model's grids)
/// beside it.
fn write_npy_file(out: &Path, res: &Outputs, sources: &[String]) -> Result<()> {
    create_parent(out)?;
    let (_, t) = res
        .tensors
        .first()
        .ok_or_else(|| Error::runtime("encode returned no output"))?;
    write_atomic(out, &npy_bytes(t))?;
    if let Some(g) = &res.grids {
        write_atomic(&npy_grids_path(out), &npy_grid_bytes(g))?;
    }
    let src = serde_json::to_vec_pretty(sources).unwrap_or_default();
    write_atomic(&npy_sources_path(out), &src)
}

/// Each output of `res` as `<dir>/<output>.npy` (a naflex model's grids as
/// `spatial_shapes.npy`, int64), the sources in `<dir>/sources.json`.
fn write_npy_dir(dir: &Path, res: &Outputs, sources: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, t) in &res.tensors {
        write_atomic(&dir.join(format!("{name}.npy")), &npy_bytes(t))?;
    }
    if let Some(g) = &res.grids {
        let file = format!("{}.npy", output::SPATIAL_SHAPES);
        write_atomic(&dir.join(file), &npy_grid_bytes(g))?;
    }
    let src = serde_json::to_vec_pretty(sources).unwrap_or_default();
    write_atomic(&dir.join("sources.json"), &src)
}
