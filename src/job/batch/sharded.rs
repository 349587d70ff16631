//! Sharded encoding at scale: images decoded on worker threads in parallel with inference,
//! encoded in batches into atomic shards listed in an index, resumable.
//!
//! Put together from `shard_index` (`index.json`: reading, checking a resume, which files are
//! left to encode), `decode_pool` (images decoded on worker threads, taken in order),
//! `shard_writer` (encoded rows into atomic shards) and `progress`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::decode_pool;
use super::encode_job::{EncodeJob, OutFormat};
use super::pixels::preprocess_file;
use super::progress::Progress;
use super::shard_index::{RunIdentity, ShardIndex};
use super::shard_writer::ShardWriter;
use crate::image::{self, Grid, Pixels, Prepared, PreprocessSpec};
use crate::job::interrupt;
use crate::job::summary::{self, EncodeSummary, OutputShape, ShardSummary, Skipped};
use crate::loader::ClipVision;
use crate::paths::path_text;
use crate::{Error, Result};

/// Runs a sharded encode job: unreadable images are skipped and listed (`strict` aborts); a
/// caught SIGINT or SIGTERM (see `interrupt`) keeps the finished rows and returns an error
/// saying where it stopped.
pub(super) fn run(
    cv: &ClipVision,
    job: &EncodeJob,
    spec: &PreprocessSpec,
) -> Result<EncodeSummary> {
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
    let files = image::input_files(&job.images)?;
    let s = encode_sharded(cv, &files, spec, job)?;
    summary::print_skipped(&s.skipped);
    EncodeSummary::sharded(&job.out, &job.shown_out(), s)
}

/// Encodes `files` into shards under `job.out` (see the module doc).
pub fn encode_sharded(
    cv: &ClipVision,
    files: &[PathBuf],
    spec: &PreprocessSpec,
    job: &EncodeJob,
) -> Result<ShardSummary> {
    let shard_size = job.rows_per_shard();
    if shard_size == 0 {
        return Err(Error::invalid("shard_size must be at least 1"));
    }
    if job.batch_size == 0 {
        return Err(Error::invalid("batch_size must be at least 1"));
    }
    let dir = &job.out;
    if dir.is_file() {
        return Err(Error::invalid(format!(
            "{}: sharded output needs a folder, but this is a file",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let outputs = cv.model().resolve_output_names(&job.outputs)?;

    let identity = RunIdentity::of(cv, spec);
    let mut index = ShardIndex::start_run(dir, job, &outputs, identity)?;
    let already_done = index.rows;
    let todo = index.rows_to_encode(files, shard_size);

    let start = Instant::now();
    let mut progress = Progress::new(todo.len(), job.progress);
    let threads = job.decode_threads.clamp(1, 64);
    // Decoded images may run this far ahead of the encoder, so memory stays flat.
    let capacity = (2 * job.batch_size).clamp(4, 64);
    let window = capacity + 2 * threads;
    let run = ShardRun {
        cv,
        job,
        shard_size,
        outputs: &outputs,
        todo: &todo,
        spec,
    };
    let shards = Mutex::new(ShardWriter::new(dir, &job.model_label, index));
    let mut tally = Tally::default();
    // SIGINT/SIGTERM stop the loop below between batches (when the program opted in); a second
    // one writes the rows encoded so far at once (see `interrupt::watch`).
    let total = files.len();
    let stop_now = || {
        let mut w = lock(&shards);
        let written = w.finish_shard().and_then(|()| {
            w.index.complete = false;
            w.index.write(dir)
        });
        match written {
            Ok(()) => interrupt::say(&summary::stopped_line(
                w.index.rows,
                total,
                w.index.shards.len(),
                &job.shown_out(),
            )),
            Err(e) => interrupt::say(&format!(
                "stopped; the rows encoded since the last finished shard could not be written: {e}"
            )),
        }
    };
    let result = interrupt::watch(
        "stopping after the current batch... (Ctrl-C again stops now, keeping the images already encoded)",
        stop_now,
        || {
            decode_pool::run_ordered(
                todo.len(),
                threads,
                window,
                |i| preprocess_file(&todo[i].0, spec),
                |decoded| run.encode_in_order(decoded, &shards, &mut progress, &mut tally),
            )
        },
    );
    progress.finish(tally.encoded + tally.skipped.len());
    result?;
    let shards = shards.into_inner().unwrap_or_else(|e| e.into_inner());
    let (shards_written, mut index) = (shards.written, shards.index);
    index.complete = !tally.stopped;
    index.write(dir)?;
    let output_shapes = shard_output_shapes(dir, &index);
    Ok(ShardSummary {
        encoded: tally.encoded,
        already_done,
        shards_written,
        skipped: tally.skipped,
        seconds: start.elapsed().as_secs_f64(),
        total,
        rows: index.rows,
        shards: index.shards.len(),
        stopped: tally.stopped,
        outputs: output_shapes,
    })
}

/// Each output of the folder's shards with its shape over every row (`[rows, ...]`), read
/// from the first shard's header.
fn shard_output_shapes(dir: &std::path::Path, index: &ShardIndex) -> Vec<OutputShape> {
    let Some(first) = index.shards.first() else {
        return Vec::new();
    };
    let Ok(st) = crate::model::SafeTensors::open(&dir.join(&first.file)) else {
        return Vec::new();
    };
    index
        .outputs
        .iter()
        .filter_map(|name| {
            let mut shape = st.tensors().get(name)?.shape.clone();
            *shape.first_mut()? = index.rows;
            Some(OutputShape {
                name: name.clone(),
                shape,
            })
        })
        .collect()
}

/// The shard writer, shared by the encoding loop and a second Ctrl-C (see `interrupt::watch`).
type SharedWriter<'a> = Mutex<ShardWriter<'a>>;

fn lock<'m, 'a>(w: &'m SharedWriter<'a>) -> MutexGuard<'m, ShardWriter<'a>> {
    // Nothing panics while holding the lock, so a poisoned writer is still consistent.
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a sharded run's encoding loop reads.
struct ShardRun<'a> {
    cv: &'a ClipVision,
    job: &'a EncodeJob,
    /// Rows per shard.
    shard_size: usize,
    outputs: &'a [String],
    /// The files to encode with their canonical keys, in row order.
    todo: &'a [(PathBuf, String)],
    /// The model's preprocessing: how a batch's rows are laid out.
    spec: &'a PreprocessSpec,
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
    /// naflex: each row's grid.
    grids: Vec<Grid>,
    sources: Vec<String>,
    keys: Vec<String>,
}

impl ShardRun<'_> {
    /// Takes the decoded images in order, encodes them in batches and fills shards, until every
    /// image is taken or a caught signal asks to stop.
    fn encode_in_order(
        &self,
        decoded: &mut decode_pool::Ordered<'_, Result<Prepared>>,
        shards: &SharedWriter<'_>,
        progress: &mut Progress,
        tally: &mut Tally,
    ) -> Result<()> {
        let (job, shard_size) = (self.job, self.shard_size);
        let mut batch = Batch::default();
        let mut expect = 0usize;
        while expect < self.todo.len() {
            if interrupt::requested() {
                // Keep what is encoded; decoded rows not yet encoded are redone on resume.
                tally.stopped = true;
                return lock(shards).finish_shard();
            }
            // The next item in order.
            let Some(item) = decoded.next_item() else {
                return Err(Error::runtime("batch: the image decoders stopped early"));
            };
            let (path, key) = &self.todo[expect];
            expect += 1;
            match item {
                Ok(v) => {
                    batch.pixels.extend(v.values);
                    batch.grids.extend(v.grid);
                    batch.sources.push(path_text(path));
                    batch.keys.push(key.clone());
                }
                Err(e) if job.strict => {
                    return Err(e.context("`strict`: stopping at an unreadable image"));
                }
                Err(e) => {
                    let sk = Skipped::new(path, &e);
                    lock(shards).index.skipped.push(sk.clone());
                    tally.skipped.push(sk);
                }
            }
            let room = shard_size - lock(shards).open_rows();
            let last = expect == self.todo.len();
            if batch.sources.len() >= job.batch_size.min(room)
                || (last && !batch.sources.is_empty())
            {
                tally.encoded += self.encode_batch(std::mem::take(&mut batch), shards)?;
            }
            let mut w = lock(shards);
            if w.open_rows() == shard_size || last {
                w.finish_shard()?;
            }
            drop(w);
            progress.update(expect, false);
        }
        Ok(())
    }

    /// Encodes `batch` into the shard being filled; returns its rows.
    fn encode_batch(&self, batch: Batch, shards: &SharedWriter<'_>) -> Result<usize> {
        let n = batch.sources.len();
        let px = Pixels::from_values(batch.pixels, batch.grids, self.spec)
            .map_err(|e| e.context("batch"))?;
        // The lock is not held here: a second Ctrl-C writes the rows before this batch.
        let res = self
            .cv
            .encode(px.view(), self.outputs, self.job.batch_size)?;
        lock(shards).push(res, batch.sources, batch.keys);
        tracing::debug!("encoded a batch of {n} images");
        if !self.job.throttle.is_zero() {
            std::thread::sleep(self.job.throttle);
        }
        Ok(n)
    }
}
