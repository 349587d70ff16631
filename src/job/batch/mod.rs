//! Image files to pixels and embeddings: one-shot preprocessing (`preprocess`, `encode
//! --images`) and encoding of files, into one file or, at scale, into shards (decoding in
//! parallel with inference, atomic shards, an index, resume).
//!
//! `run_encode` checks a job (`encode_job`) and hands it to `one_file` or `sharded`; `pixels`
//! turns files into pixels for both.

mod decode_pool;
mod encode_job;
mod one_file;
mod pixels;
mod progress;
mod shard_index;
mod shard_writer;
mod sharded;

use std::path::PathBuf;

use crate::job::output;
use crate::job::summary::EncodeSummary;
use crate::loader::ClipVision;
use crate::{Error, Result};
pub use encode_job::{EncodeJob, OutFormat, DEFAULT_DECODE_THREADS, DEFAULT_SHARD_SIZE};
use one_file::is_npy_file;
pub use one_file::{npy_bytes, npy_grids_path, npy_sources_path};
pub use pixels::{
    preprocess_file, preprocess_files, preprocess_files_skipping, preprocess_inputs,
    preprocess_inputs_skipping, write_pixels,
};
pub use shard_index::{shard_name, RunIdentity, ShardEntry, ShardIndex, INDEX_FILE};
pub use sharded::encode_sharded;

/// Runs one encode job with a loaded model; returns its summary (a line via `Display`).
///
/// Sharded (see `sharded::run`): unreadable images are skipped and listed (`strict` aborts);
/// a caught SIGINT or SIGTERM (see `interrupt`) keeps the finished rows and returns an error
/// saying where it stopped. One file (see `one_file::run`): unreadable images are skipped and
/// listed the same way; format `npy` writes one `.npy` or a folder of them.
pub fn run_encode(cv: &ClipVision, job: &EncodeJob) -> Result<EncodeSummary> {
    if job.images.is_empty() && job.pixels.is_none() {
        return Err(Error::invalid("encode: give images or pixels as input"));
    }
    job.validate()?;
    let spec = cv.model().config.preprocess_spec(job.crop);
    check_out(cv, job)?;
    if job.is_sharded() {
        sharded::run(cv, job, &spec)
    } else {
        one_file::run(cv, job, &spec)
    }
}

/// Refuses, before any work, an `out` that would overwrite the model, an input, or a file
/// this program did not write (see `out_guard`).
fn check_out(cv: &ClipVision, job: &EncodeJob) -> Result<()> {
    use crate::job::out_guard::{canonical, check_targets};
    let protected =
        crate::job::out_guard::protected(cv.model().path(), job.pixels.as_deref(), &job.images);
    let out = &job.out;
    let naflex = cv.model().config.kind.is_naflex();
    if job.is_sharded() {
        let dir = canonical(out);
        if let Some((p, what)) = protected.iter().find(|(p, _)| {
            p.parent() == Some(dir.as_path())
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n == INDEX_FILE || n.starts_with("shard-")
                })
        }) {
            return Err(Error::invalid(format!(
                "out: the sharded run in {} would overwrite the {what} {}; choose another output folder",
                out.display(),
                p.display()
            )));
        }
        return Ok(());
    }
    match job.format {
        OutFormat::Safetensors => check_targets(std::slice::from_ref(out), &protected, None),
        OutFormat::Npy if is_npy_file(out) => {
            let src = npy_sources_path(out);
            let mut targets = vec![out.clone(), src.clone()];
            targets.extend(naflex.then(|| npy_grids_path(out)));
            check_targets(&targets, &protected, Some(&src))
        }
        OutFormat::Npy => {
            let names = cv.model().resolve_output_names(&job.outputs)?;
            let src = out.join("sources.json");
            let mut targets: Vec<PathBuf> =
                names.iter().map(|n| out.join(format!("{n}.npy"))).collect();
            targets.extend(naflex.then(|| out.join(format!("{}.npy", output::SPATIAL_SHAPES))));
            targets.push(src.clone());
            check_targets(&targets, &protected, Some(&src))
        }
    }
}
