//! Image files to pixels and embeddings: one-shot preprocessing (`preprocess`, `encode
//! --images`) and sharded batch encoding at scale (decoding in parallel with inference,
//! atomic shards, an index, resume).
//!
//! Sharded runs (`encode_sharded`) are put together from `shard_index` (`index.json`: reading,
//! checking a resume, which files are left to encode), `decode_pool` (images decoded on worker
//! threads, taken in order), `shard_writer` (encoded rows into atomic shards) and `progress`.

mod decode_pool;
mod progress;
mod shard_index;
mod shard_writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayD};
use serde::{Deserialize, Serialize};

use crate::image::{self, Crop, PreprocessSpec};
use crate::job::summary::{self, EncodeSummary, OutputShape};
use crate::job::{interrupt, output};
use crate::loader::ClipVision;
use crate::paths::write_atomic;
use crate::plan::DEFAULT_BATCH_SIZE;
use crate::{Error, Result};
use progress::Progress;
pub use shard_index::{shard_name, RunIdentity, ShardEntry, ShardIndex, INDEX_FILE};
use shard_writer::ShardWriter;

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
            "{n} images of {s}×{s} pixels do not fit in memory at once; encode them in shards (--shard-size N)"
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
    let mut meta = output::pixels_metadata(spec);
    meta.insert(
        "inputs".to_string(),
        serde_json::to_string(sources).unwrap_or_default(),
    );
    meta.insert("model".to_string(), model.to_string());
    meta.insert(
        "producer".to_string(),
        format!("distorch-vision {}", env!("CARGO_PKG_VERSION")),
    );
    let t = vec![("pixel_values".to_string(), pixels.clone().into_dyn())];
    let bytes = output::to_safetensors(&t, &meta)?;
    create_parent(path)?;
    write_atomic(path, &bytes)
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
    /// Canonical path (see `ShardEntry::keys`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

impl Skipped {
    /// `file` could not be read because of `e`; the reason without the file name it repeats.
    pub fn new(file: &Path, e: &Error) -> Skipped {
        let name = path_text(file);
        let msg = e.message();
        let reason = msg
            .strip_prefix(name.as_str())
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(msg)
            .to_string();
        Skipped {
            file: name,
            reason,
            key: source_key(file),
        }
    }
}

/// The canonical absolute path of an input (lexically absolute when it no longer exists),
/// exact for any file name (see [`path_text`]).
pub fn source_key(p: &Path) -> String {
    path_text(
        &std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf()),
    )
}

/// A path as text, losslessly: a UTF-8 path as it is; otherwise each byte that is not part of
/// valid UTF-8 as `\xNN` and each backslash as `\\` (so `lat\xe9.png` and `lat\xe8.png`
/// stay two names, never one `lat�.png`).
pub fn path_text(p: &Path) -> String {
    if let Some(s) = p.to_str() {
        return s.to_string();
    }
    let mut out = String::new();
    for chunk in p.as_os_str().as_encoded_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// How a sharded run goes.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    pub out_dir: PathBuf,
    pub shard_size: usize,
    pub batch_size: usize,
    /// Outputs to write (empty = all the model has).
    pub outputs: Vec<String>,
    pub resume: bool,
    /// Abort on the first unreadable image instead of skipping it.
    pub strict: bool,
    pub decode_threads: usize,
    /// Name recorded in the metadata and index.
    pub model_label: String,
    /// Test hook: sleep this long after each encoded batch.
    pub throttle: Duration,
    /// Progress on stderr.
    pub progress: bool,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            out_dir: PathBuf::new(),
            shard_size: DEFAULT_SHARD_SIZE,
            batch_size: DEFAULT_BATCH_SIZE,
            outputs: Vec::new(),
            resume: false,
            strict: false,
            decode_threads: DEFAULT_DECODE_THREADS,
            model_label: String::new(),
            throttle: Duration::ZERO,
            progress: true,
        }
    }
}

/// What a sharded run did.
#[derive(Clone, Debug)]
pub struct ShardSummary {
    /// Rows encoded by this run.
    pub encoded: usize,
    /// Rows already in finished shards (resume).
    pub already_done: usize,
    pub shards_written: usize,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    /// Input files of the run (M of "stopped at N/M").
    pub total: usize,
    /// Rows in all finished shards, this run's and earlier ones'.
    pub rows: usize,
    /// Finished shards in the folder.
    pub shards: usize,
    /// A caught SIGINT/SIGTERM stopped the run early (see `interrupt`).
    pub stopped: bool,
}

impl ShardSummary {
    pub fn images_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.encoded as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Encodes `files` into shards under `opts.out_dir` (see the module doc).
pub fn encode_sharded(
    cv: &ClipVision,
    files: &[PathBuf],
    spec: &PreprocessSpec,
    opts: &ShardOptions,
) -> Result<ShardSummary> {
    if opts.shard_size == 0 {
        return Err(Error::invalid("shard_size must be at least 1"));
    }
    if opts.batch_size == 0 {
        return Err(Error::invalid("batch_size must be at least 1"));
    }
    let dir = &opts.out_dir;
    if dir.is_file() {
        return Err(Error::invalid(format!(
            "{}: sharded output needs a folder, but this is a file",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let outputs: Vec<String> = crate::runtime::resolve_outputs(cv.model(), &opts.outputs)?
        .iter()
        .map(|s| s.to_string())
        .collect();

    let identity = RunIdentity::of(cv, spec);
    let mut index = ShardIndex::start_run(dir, opts, &outputs, identity)?;
    let already_done = index.rows;
    let todo = index.rows_to_encode(files, opts.shard_size);

    let start = Instant::now();
    let mut progress = Progress::new(todo.len(), opts.progress);
    let threads = opts.decode_threads.clamp(1, 64);
    // Decoded images may run this far ahead of the encoder, so memory stays flat.
    let capacity = (2 * opts.batch_size).clamp(4, 64);
    let window = capacity + 2 * threads;
    let run = ShardRun {
        cv,
        opts,
        outputs: &outputs,
        todo: &todo,
        size: spec.size as usize,
    };
    let mut shards = ShardWriter::new(dir, opts, index);
    let mut tally = Tally::default();
    // SIGINT/SIGTERM stop the loop below between batches (when the program opted in).
    let signals = interrupt::Guard::install();
    let result = decode_pool::run_ordered(
        todo.len(),
        threads,
        window,
        |i| preprocess_file(&todo[i].0, spec),
        |decoded| run.encode_in_order(decoded, &mut shards, &mut progress, &mut tally),
    );
    drop(signals);
    progress.finish(tally.encoded + tally.skipped.len());
    result?;
    let (shards_written, mut index) = (shards.written, shards.index);
    index.complete = !tally.stopped;
    index.write(dir)?;
    Ok(ShardSummary {
        encoded: tally.encoded,
        already_done,
        shards_written,
        skipped: tally.skipped,
        seconds: start.elapsed().as_secs_f64(),
        total: files.len(),
        rows: index.rows,
        shards: index.shards.len(),
        stopped: tally.stopped,
    })
}

/// What a sharded run's encoding loop reads.
struct ShardRun<'a> {
    cv: &'a ClipVision,
    opts: &'a ShardOptions,
    outputs: &'a [String],
    /// The files to encode with their canonical keys, in row order.
    todo: &'a [(PathBuf, String)],
    /// Image side in pixels.
    size: usize,
}

/// What a sharded run's encoding loop did.
#[derive(Default)]
struct Tally {
    encoded: usize,
    /// Images skipped by this run.
    skipped: Vec<Skipped>,
    /// A caught signal ended the loop early.
    stopped: bool,
}

/// Decoded rows waiting to be encoded as one batch.
#[derive(Default)]
struct Batch {
    /// Grows with the batch; reserving batch_size rows up front would let a huge
    /// --batch-size abort the process.
    pixels: Vec<f32>,
    sources: Vec<String>,
    keys: Vec<String>,
}

impl ShardRun<'_> {
    /// Takes the decoded images in order, encodes them in batches and fills shards, until every
    /// image is taken or a caught signal asks to stop.
    fn encode_in_order(
        &self,
        decoded: &mut decode_pool::Ordered<'_, Result<Vec<f32>>>,
        shards: &mut ShardWriter<'_>,
        progress: &mut Progress,
        tally: &mut Tally,
    ) -> Result<()> {
        let opts = self.opts;
        let mut batch = Batch::default();
        let mut expect = 0usize;
        while expect < self.todo.len() {
            if interrupt::requested() {
                // Keep what is encoded; decoded rows not yet encoded are redone on resume.
                tally.stopped = true;
                return shards.finish_shard();
            }
            // The next item in order.
            let Some(item) = decoded.next_item() else {
                return Err(Error::runtime("batch: the image decoders stopped early"));
            };
            let (path, key) = &self.todo[expect];
            expect += 1;
            match item {
                Ok(v) => {
                    batch.pixels.extend(v);
                    batch.sources.push(path_text(path));
                    batch.keys.push(key.clone());
                }
                Err(e) if opts.strict => {
                    return Err(e.context("--strict: stopping at an unreadable image"));
                }
                Err(e) => {
                    let sk = Skipped::new(path, &e);
                    shards.index.skipped.push(sk.clone());
                    tally.skipped.push(sk);
                }
            }
            let room = opts.shard_size - shards.open_rows();
            let last = expect == self.todo.len();
            if batch.sources.len() >= opts.batch_size.min(room)
                || (last && !batch.sources.is_empty())
            {
                tally.encoded += self.encode_batch(std::mem::take(&mut batch), shards)?;
            }
            if shards.open_rows() == opts.shard_size || last {
                shards.finish_shard()?;
            }
            progress.update(expect, false);
        }
        Ok(())
    }

    /// Encodes `batch` into the shard being filled; returns its rows.
    fn encode_batch(&self, batch: Batch, shards: &mut ShardWriter<'_>) -> Result<usize> {
        let (n, s) = (batch.sources.len(), self.size);
        let px = Array4::from_shape_vec((n, 3, s, s), batch.pixels)
            .map_err(|e| Error::runtime(format!("batch: {e}")))?;
        let res = self
            .cv
            .encode(px.view(), self.outputs, self.opts.batch_size)?;
        shards.push(res, batch.sources, batch.keys);
        if !self.opts.throttle.is_zero() {
            std::thread::sleep(self.opts.throttle);
        }
        Ok(n)
    }
}

/// Format of a one-file (not sharded) encode output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutFormat {
    /// One safetensors file, the sources in its metadata.
    #[default]
    Safetensors,
    /// A folder with one `<output>.npy` per output and `sources.json`.
    Npy,
}

impl<'de> Deserialize<'de> for OutFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::error::deserialize_parsed(
            d,
            "an output format (\"safetensors\" or \"npy\")",
            "format",
        )
    }
}

impl std::str::FromStr for OutFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "safetensors" => Ok(OutFormat::Safetensors),
            "npy" => Ok(OutFormat::Npy),
            _ => Err(Error::invalid(format!(
                "format: unknown value {s:?}; valid choices are \"safetensors\", \"npy\""
            ))),
        }
    }
}

/// Image decoder threads of sharded encoding when not set (CLI and YAML).
pub const DEFAULT_DECODE_THREADS: usize = 2;

/// One encode job, as the CLI and YAML runs describe it.
#[derive(Clone, Debug)]
pub struct EncodeJob {
    /// Files and folders (folders expand recursively, sorted).
    pub images: Vec<PathBuf>,
    /// A safetensors file of preprocessed NCHW pixels (rows come before `images`).
    pub pixels: Option<PathBuf>,
    pub crop: Crop,
    pub batch_size: usize,
    pub outputs: Vec<String>,
    pub out: PathBuf,
    pub format: OutFormat,
    /// Sharded mode when set, or when `out` is an existing folder.
    pub shard_size: Option<usize>,
    pub resume: bool,
    pub strict: bool,
    pub decode_threads: usize,
    pub throttle: Duration,
    pub model_label: String,
    pub progress: bool,
}

impl Default for EncodeJob {
    fn default() -> Self {
        EncodeJob {
            images: Vec::new(),
            pixels: None,
            crop: Crop::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            outputs: Vec::new(),
            out: PathBuf::new(),
            format: OutFormat::default(),
            shard_size: None,
            resume: false,
            strict: false,
            decode_threads: DEFAULT_DECODE_THREADS,
            throttle: Duration::ZERO,
            model_label: String::new(),
            progress: true,
        }
    }
}

/// Default shard size when sharded mode is chosen by `out` being a folder.
pub const DEFAULT_SHARD_SIZE: usize = 1024;

impl EncodeJob {
    /// Sharded when `shard_size` is set, or a safetensors job's `out` is an existing folder.
    pub fn is_sharded(&self) -> bool {
        self.shard_size.is_some() || (self.format == OutFormat::Safetensors && self.out.is_dir())
    }
}

/// True when `out` names one `.npy` file rather than a folder.
fn is_npy_file(out: &Path) -> bool {
    out.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Where the sources of a one-file `.npy` output go: `x.npy` -> `x.sources.json`.
pub fn npy_sources_path(out: &Path) -> PathBuf {
    out.with_extension("sources.json")
}

/// Runs one encode job with a loaded model; returns its summary (a line via `Display`).
///
/// Sharded: unreadable images are skipped and listed (`strict` aborts); a caught SIGINT or
/// SIGTERM (see `interrupt`) keeps the finished rows and returns an error saying where it
/// stopped. One file: unreadable images are skipped and listed the same way. Format `npy`
/// writes `out` as one `.npy` (exactly one output; sources in `<out>.sources.json`) when it
/// ends in `.npy`, else a folder of `<output>.npy` and `sources.json`.
pub fn run_encode(cv: &ClipVision, job: &EncodeJob) -> Result<EncodeSummary> {
    if job.images.is_empty() && job.pixels.is_none() {
        return Err(Error::invalid("encode: give images or pixels as input"));
    }
    let t = Instant::now();
    let spec = cv.model().config.preprocess_spec(job.crop);
    if job.format == OutFormat::Safetensors && is_npy_file(&job.out) {
        return Err(Error::invalid(format!(
            "out {} ends in .npy but the format is safetensors; choose format npy (--format npy), or a .safetensors name",
            job.out.display()
        )));
    }
    check_out(cv, job)?;
    if job.is_sharded() {
        if job.pixels.is_some() {
            return Err(Error::invalid(
                "sharded encoding (shard_size, or out is a folder) takes images, not pixels",
            ));
        }
        if job.format != OutFormat::Safetensors {
            return Err(Error::invalid(
                "sharded encoding writes safetensors shards only",
            ));
        }
        let files = image::expand_inputs(&job.images)?;
        let opts = ShardOptions {
            out_dir: job.out.clone(),
            shard_size: job.shard_size.unwrap_or(DEFAULT_SHARD_SIZE),
            batch_size: job.batch_size,
            outputs: job.outputs.clone(),
            resume: job.resume,
            strict: job.strict,
            decode_threads: job.decode_threads,
            model_label: job.model_label.clone(),
            throttle: job.throttle,
            progress: job.progress,
        };
        let s = encode_sharded(cv, &files, &spec, &opts)?;
        print_skipped(&s.skipped);
        let out = job.out.display();
        if s.stopped {
            return Err(Error::runtime(format!(
                "stopped at {}/{}; rerun with --resume to encode the rest ({} images are in {} finished shards in {out})",
                s.rows, s.total, s.rows, s.shards
            )));
        }
        let line = if s.encoded == 0 && s.skipped.is_empty() && s.already_done > 0 {
            format!(
                "nothing to encode: all {} images are already in {} shards in {out}",
                s.already_done, s.shards
            )
        } else {
            let earlier = if s.already_done > 0 {
                format!(
                    "; {} were already there from an earlier run, {} rows in all",
                    s.already_done, s.rows
                )
            } else {
                String::new()
            };
            format!(
                "encoded {} images into {} new shards in {out} in {:.2} s ({:.1} images/s){earlier}; {} skipped",
                s.encoded,
                s.shards_written,
                s.seconds,
                s.images_per_s(),
                s.skipped.len()
            )
        };
        return Ok(EncodeSummary {
            out: job.out.clone(),
            encoded: s.encoded,
            already_done: Some(s.already_done),
            shards_written: Some(s.shards_written),
            images_per_s: s.images_per_s(),
            skipped: s.skipped,
            outputs: Vec::new(),
            seconds: s.seconds,
            line,
        });
    }
    // One output file: check what it can hold before any work.
    let npy_file = job.format == OutFormat::Npy && is_npy_file(&job.out);
    if npy_file {
        let names = crate::runtime::resolve_outputs(cv.model(), &job.outputs)?;
        if names.len() != 1 {
            return Err(Error::invalid(format!(
                "out {} is one .npy file, which holds one array, but {} outputs are asked for ({}); pick one with --outputs NAME, or give a folder as out for one .npy per output",
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
    let mut parts: Vec<image::Pixels> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    if let Some(p) = &job.pixels {
        let px = output::read_pixels(p)?;
        let diff = output::pixels_mismatch(p, &spec)?;
        if !diff.is_empty() {
            tracing::warn!(
                "{}: these pixels were preprocessed for another model ({}); {} expects image size {}, mean {:?}, std {:?}: the embeddings will be off (run preprocess with this model)",
                p.display(),
                diff.join("; "),
                cv.model().config.family,
                spec.size,
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
            preprocess_inputs(&job.images, &spec)
                .map_err(|e| e.context("--strict: stopping at an unreadable image"))?
        } else {
            let (px, src, sk) = preprocess_inputs_skipping(&job.images, &spec)?;
            skipped = sk;
            (px, src)
        };
        parts.push(image::Pixels::Square(px));
        sources.extend(src);
    }
    print_skipped(&skipped);
    let px = image::Pixels::concat(parts)?;
    cv.model().check_input(&px.view())?;
    let res = cv.encode(px.view(), &job.outputs, job.batch_size)?;
    match job.format {
        OutFormat::Safetensors => {
            output::write_outputs(&job.out, &res, &sources, &job.model_label)?
        }
        OutFormat::Npy if npy_file => {
            create_parent(&job.out)?;
            let (_, t) = res
                .tensors
                .first()
                .ok_or_else(|| Error::runtime("encode returned no output"))?;
            write_atomic(&job.out, &npy_bytes(t))?;
            let src = serde_json::to_vec_pretty(&sources).unwrap_or_default();
            write_atomic(&npy_sources_path(&job.out), &src)?;
        }
        OutFormat::Npy => write_npy_dir(&job.out, &res, &sources)?,
    }
    let seconds = t.elapsed().as_secs_f64();
    let line = format!(
        "encoded {} images into {} ({}) in {:.2} s{}",
        px.shape()[0],
        job.out.display(),
        res.tensors
            .iter()
            .map(|(n, t)| format!("{n} {:?}", t.shape()))
            .collect::<Vec<_>>()
            .join(", "),
        seconds,
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; {} skipped", skipped.len())
        }
    );
    Ok(EncodeSummary {
        out: job.out.clone(),
        encoded: px.shape()[0],
        already_done: None,
        shards_written: None,
        skipped,
        outputs: res
            .tensors
            .iter()
            .map(|(n, t)| OutputShape {
                name: n.clone(),
                shape: t.shape().to_vec(),
            })
            .collect(),
        seconds,
        images_per_s: summary::rate(px.shape()[0], seconds),
        line,
    })
}

/// Refuses, before any work, an `out` that would overwrite the model, an input, or a file
/// this program did not write (see `out_guard`).
fn check_out(cv: &ClipVision, job: &EncodeJob) -> Result<()> {
    use crate::job::out_guard::{canonical, check_targets};
    let protected =
        crate::job::out_guard::protected(cv.model().path(), job.pixels.as_deref(), &job.images);
    let out = &job.out;
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
            check_targets(&[out.clone(), src.clone()], &protected, Some(&src))
        }
        OutFormat::Npy => {
            let names = crate::runtime::resolve_outputs(cv.model(), &job.outputs)?;
            let src = out.join("sources.json");
            let mut targets: Vec<PathBuf> =
                names.iter().map(|n| out.join(format!("{n}.npy"))).collect();
            targets.push(src.clone());
            check_targets(&targets, &protected, Some(&src))
        }
    }
}

/// One line per unreadable image on stderr, unless logging is at errors only (`-q`,
/// `DISTORCH_LOG=error`); without a tracing subscriber (library use) they always print.
pub fn print_skipped(skipped: &[Skipped]) {
    if tracing::dispatcher::has_been_set() && !tracing::enabled!(tracing::Level::WARN) {
        return;
    }
    for sk in skipped {
        eprintln!("skipped {}: {}", sk.file, sk.reason);
    }
}

/// `.npy` bytes (version 1.0, little-endian f32, C order) of a tensor.
pub fn npy_bytes(t: &ArrayD<f32>) -> Vec<u8> {
    let shape = match t.shape() {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(t.iter().flat_map(|v| v.to_le_bytes()));
    out
}

fn write_npy_dir(dir: &Path, res: &crate::runtime::Outputs, sources: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, t) in &res.tensors {
        write_atomic(&dir.join(format!("{name}.npy")), &npy_bytes(t))?;
    }
    let src = serde_json::to_vec_pretty(sources).unwrap_or_default();
    write_atomic(&dir.join("sources.json"), &src)
}
