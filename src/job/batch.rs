//! Image files to pixels and embeddings: one-shot preprocessing (`preprocess`, `encode
//! --images`) and sharded batch encoding at scale (decoding in parallel with inference,
//! atomic shards, an index, resume).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayD, Axis};
use serde::{Deserialize, Serialize};

use crate::export::write_atomic;
use crate::image::{self, Crop, PreprocessSpec};
use crate::job::summary::{self, EncodeSummary, OutputShape};
use crate::job::{interrupt, output};
use crate::loader::ClipVision;
use crate::model::Model;
use crate::plan::DEFAULT_BATCH_SIZE;
use crate::{Error, ErrorKind, Result};

/// The preprocessing a model wants (its image size and mean/std), with `crop`.
pub fn preprocess_spec(model: &Model, crop: Crop) -> PreprocessSpec {
    let (mean, std) = model.config.mean_std();
    PreprocessSpec {
        size: model.config.image_size as u32,
        mean,
        std,
        crop,
    }
}

/// One file decoded and preprocessed to `3 × S × S` values. Errors name the file.
pub fn preprocess_file(path: &Path, spec: &PreprocessSpec) -> Result<Vec<f32>> {
    let img = image::decode_file(path)?;
    image::preprocess(&img, spec).map_err(|e| e.context(path.display()))
}

/// Files (in the order given) to one NCHW tensor, and the source names in row order.
pub fn preprocess_files(
    paths: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>)> {
    let s = spec.size as usize;
    let mut data: Vec<f32> = Vec::new();
    let total = paths.len().checked_mul(3 * s * s);
    if total.is_none_or(|n| data.try_reserve_exact(n).is_err()) {
        return Err(Error::invalid(format!(
            "{} images of {s}×{s} pixels do not fit in memory at once; encode them in shards (--shard-size N)",
            paths.len()
        )));
    }
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
    let mut data: Vec<f32> = Vec::new();
    let total = paths.len().checked_mul(3 * s * s);
    if total.is_none_or(|n| data.try_reserve_exact(n).is_err()) {
        return Err(Error::invalid(format!(
            "{} images of {s}×{s} pixels do not fit in memory at once; encode them in shards (--shard-size N)",
            paths.len()
        )));
    }
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

/// Files and folders (folders expand recursively, sorted) to pixels, as `preprocess_files`.
pub fn preprocess_inputs(
    inputs: &[PathBuf],
    spec: &PreprocessSpec,
) -> Result<(Array4<f32>, Vec<String>)> {
    let files = image::expand_inputs(inputs)?;
    if files.is_empty() {
        return Err(Error::invalid(format!(
            "no image files found in {}",
            inputs
                .iter()
                .map(|p| path_text(p))
                .collect::<Vec<_>>()
                .join(", ")
        )));
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
            None => Error::invalid(format!(
                "no image files found in {}",
                inputs
                    .iter()
                    .map(|p| path_text(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
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

/// Name of the index file of a sharded output folder.
pub const INDEX_FILE: &str = "index.json";

/// Name of shard `n`.
pub fn shard_name(n: usize) -> String {
    format!("shard-{n:05}.safetensors")
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    pub file: String,
    pub rows: usize,
    /// The files of the rows, spelled as the user gave them.
    pub sources: Vec<String>,
    /// The same files as canonical absolute paths: what `--resume` compares, so that
    /// `../imgs` and `/data/imgs` are the same images. Absent in older indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
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

/// What decides the rows of a sharded run: a resume must match it exactly.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunIdentity {
    /// Content hash of the model's weights (the export's model id).
    pub model_id: String,
    pub family: String,
    /// The model's configuration (sizes, activation, image size; ours or the family table's).
    pub config: serde_json::Value,
    pub crop: String,
    pub dtype: crate::export::ComputeDtype,
}

impl RunIdentity {
    fn of(cv: &ClipVision, spec: &PreprocessSpec) -> RunIdentity {
        let m = &cv.export().manifest;
        let mut config = serde_json::to_value(&cv.model().config).unwrap_or_default();
        // Labels, not sizes: moving a config.json into a sidecar changes no row.
        if let Some(o) = config.as_object_mut() {
            o.remove("source");
            o.remove("family");
        }
        RunIdentity {
            model_id: m.model_id.clone(),
            family: cv.model().config.family.clone(),
            config,
            crop: spec.crop.as_str().to_string(),
            dtype: m.dtype,
        }
    }

    /// Each way `now` differs from `self` (the earlier run), for a person.
    fn differences(&self, now: &RunIdentity, prev_model: &str, model: &str) -> Vec<String> {
        let mut d = Vec::new();
        if self.model_id != now.model_id {
            d.push(format!(
                "model: it was encoded with {prev_model} ({}, weights {}), this run uses {model} ({}, weights {})",
                self.family,
                short(&self.model_id),
                now.family,
                short(&now.model_id)
            ));
        } else {
            // Keys only one side has were added or dropped by another version of this program
            // (it cannot change the rows of the same weights); values both sides have must match.
            let keys: Vec<String> = match (self.config.as_object(), now.config.as_object()) {
                (Some(a), Some(b)) => a
                    .iter()
                    .filter_map(|(k, v)| {
                        let w = b.get(k)?;
                        (v != w).then(|| format!("{k} {v} -> {w}"))
                    })
                    .collect(),
                _ if self.config != now.config => vec!["(not comparable)".into()],
                _ => Vec::new(),
            };
            if !keys.is_empty() {
                d.push(format!(
                    "model configuration (same weights): {}",
                    keys.join(", ")
                ));
            }
        }
        if self.crop != now.crop {
            d.push(format!("crop: {} before, {} now", self.crop, now.crop));
        }
        if self.dtype != now.dtype {
            d.push(format!(
                "dtype: {} before, {} now",
                dtype_name(self.dtype),
                dtype_name(now.dtype)
            ));
        }
        d
    }
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

fn dtype_name(d: crate::export::ComputeDtype) -> String {
    serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `index.json` of a sharded output folder; rewritten atomically after each shard.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ShardIndex {
    /// The model as the user named it (for people; `identity` is what is compared).
    pub model: String,
    /// What decides the rows; absent in indexes written by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RunIdentity>,
    pub outputs: Vec<String>,
    pub shard_size: usize,
    pub shards: Vec<ShardEntry>,
    /// Rows in all finished shards.
    pub rows: usize,
    pub skipped: Vec<Skipped>,
    /// True once every input was encoded or skipped.
    pub complete: bool,
}

impl ShardIndex {
    pub fn read(dir: &Path) -> Result<Option<ShardIndex>> {
        let p = dir.join(INDEX_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(&dir.join(INDEX_FILE), &bytes)
    }
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
            shard_size: 1024,
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

/// Progress on stderr: one updating line on a terminal, periodic plain lines otherwise.
struct Progress {
    total: usize,
    start: Instant,
    last: Instant,
    tty: bool,
    enabled: bool,
}

impl Progress {
    fn new(total: usize, enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            total,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    fn update(&mut self, done: usize, force: bool) {
        if !self.enabled {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            format!("{:.0} s", (self.total - done.min(self.total)) as f64 / rate)
        } else {
            "?".into()
        };
        let pct = if self.total > 0 {
            100.0 * done as f64 / self.total as f64
        } else {
            100.0
        };
        let line = format!(
            "{done}/{} images ({pct:.1}%), {rate:.1} images/s, ETA {eta}",
            self.total
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "progress: {line}");
        }
        let _ = err.flush();
    }

    fn finish(&mut self, done: usize) {
        if self.total == 0 {
            return;
        }
        self.update(done, true);
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}

/// The shard being filled.
#[derive(Default)]
struct OpenShard {
    sources: Vec<String>,
    keys: Vec<String>,
    outputs: Vec<(String, Vec<ArrayD<f32>>)>,
}

impl OpenShard {
    fn push(&mut self, res: crate::runtime::Outputs, sources: Vec<String>, keys: Vec<String>) {
        self.keys.extend(keys);
        if self.outputs.is_empty() {
            self.outputs = res.tensors.into_iter().map(|(n, t)| (n, vec![t])).collect();
        } else {
            for ((_, acc), (_, t)) in self.outputs.iter_mut().zip(res.tensors) {
                acc.push(t);
            }
        }
        self.sources.extend(sources);
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
    let prev_index = ShardIndex::read(dir)?;
    if prev_index.is_none() {
        if let Some(shard) = first_shard_file(dir) {
            return Err(Error::invalid(format!(
                "{}: the folder holds shards ({shard}, ...) but no {INDEX_FILE}, so which images they hold is unknown; {} would overwrite them: move them away, or choose another output folder",
                dir.display(),
                if opts.resume { "resuming" } else { "a new run" }
            )));
        }
    }
    let mut index = match prev_index {
        Some(mut prev) if opts.resume => {
            // A shard cut short or damaged after the index listed it: its rows are encoded again.
            let mut kept = Vec::with_capacity(prev.shards.len());
            for s in std::mem::take(&mut prev.shards) {
                let path = dir.join(&s.file);
                match shard_problem(&path, &s, &prev.outputs) {
                    Some(why) if path.is_file() => {
                        tracing::warn!(
                            "{}: {why}; its {} rows will be encoded again",
                            path.display(),
                            s.rows
                        );
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => kept.push(s),
                }
            }
            prev.shards = kept;
            prev.rows = prev.shards.iter().map(|s| s.rows).sum();
            for s in &prev.shards {
                if !dir.join(&s.file).is_file() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "{}: the index lists {} but the file is missing; cannot resume",
                            dir.display(),
                            s.file
                        ),
                    ));
                }
            }
            let mut diff = match &prev.identity {
                Some(p) => p.differences(&identity, &prev.model, &opts.model_label),
                None => {
                    tracing::warn!(
                        "{}: {INDEX_FILE} was written by an older version and does not record which model, crop and dtype made its rows; resuming without checking them",
                        dir.display()
                    );
                    Vec::new()
                }
            };
            if prev.outputs != outputs {
                diff.push(format!(
                    "outputs: {} before, {} now",
                    prev.outputs.join(","),
                    outputs.join(",")
                ));
            }
            if !diff.is_empty() {
                return Err(Error::invalid(format!(
                    "{}: cannot resume: this run would add rows unlike those already there ({}); use the same settings, or another output folder",
                    dir.display(),
                    diff.join("; ")
                )));
            }
            prev
        }
        Some(_) => {
            return Err(Error::invalid(format!(
                "{} already holds a run ({INDEX_FILE}); pass --resume to continue it, or choose another folder",
                dir.display()
            )))
        }
        None => ShardIndex {
            model: opts.model_label.clone(),
            outputs: outputs.clone(),
            shard_size: opts.shard_size,
            ..Default::default()
        },
    };
    index.identity = Some(identity);
    // Leftover temporary files of a killed run.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("shard-") && name.contains(".tmp") || name.starts_with("index.tmp")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Finished rows by canonical path, whatever the spelling of either run.
    let mut done: HashSet<String> = HashSet::new();
    for s in &index.shards {
        if s.keys.len() == s.sources.len() {
            done.extend(s.keys.iter().cloned());
        } else {
            // An older index: its spellings, resolved from here.
            done.extend(s.sources.iter().map(|f| source_key(Path::new(f))));
        }
    }
    let already_done = index.rows;
    let mut todo: Vec<(PathBuf, String)> = Vec::new();
    for f in files {
        let key = source_key(f);
        // A file given twice (or seen in a finished shard) is encoded once.
        if done.insert(key.clone()) {
            todo.push((f.clone(), key));
        }
    }
    drop(done);
    // Files that failed before are tried again.
    let retry: HashSet<&str> = todo.iter().map(|(_, k)| k.as_str()).collect();
    index.skipped.retain(|s| {
        let key = if s.key.is_empty() {
            source_key(Path::new(&s.file))
        } else {
            s.key.clone()
        };
        !retry.contains(key.as_str())
    });
    drop(retry);
    index.complete = false;
    index.shard_size = opts.shard_size;

    let start = Instant::now();
    let mut progress = Progress::new(todo.len(), opts.progress);
    let threads = opts.decode_threads.clamp(1, 64);
    let capacity = (2 * opts.batch_size).clamp(4, 64);
    let window = capacity + 2 * threads;
    let next = AtomicUsize::new(0);
    let consumed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<Vec<f32>>)>(capacity);

    let mut encoded = 0usize;
    let mut shards_written = 0usize;
    let mut new_skipped: Vec<Skipped> = Vec::new();
    let mut stopped = false;
    // SIGINT/SIGTERM stop the loop below between batches (when the program opted in).
    let signals = interrupt::Guard::install();

    let result: Result<()> = std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, consumed, stop, todo) = (&next, &consumed, &stop, &todo);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() {
                    return;
                }
                // Stay within a window of the consumer so memory stays flat.
                while i >= consumed.load(Ordering::SeqCst) + window {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let r = preprocess_file(&todo[i].0, spec);
                if tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let rx = rx;
        let mut pending: BTreeMap<usize, Result<Vec<f32>>> = BTreeMap::new();
        let mut shard = OpenShard::default();
        let s = spec.size as usize;
        // Grows with the batch; reserving batch_size rows up front would let a huge
        // --batch-size abort the process.
        let mut batch: Vec<f32> = Vec::new();
        let mut batch_src: Vec<String> = Vec::new();
        let mut batch_keys: Vec<String> = Vec::new();
        let mut processed = 0usize;
        let run = (|| -> Result<()> {
            let mut expect = 0usize;
            while expect < todo.len() {
                if interrupt::requested() {
                    // Keep what is encoded; decoded rows not yet encoded are redone on resume.
                    stopped = true;
                    if !shard.sources.is_empty() {
                        write_shard(dir, &mut index, std::mem::take(&mut shard), opts)?;
                        shards_written += 1;
                    }
                    return Ok(());
                }
                // The next item in order.
                let item = loop {
                    if let Some(r) = pending.remove(&expect) {
                        break r;
                    }
                    match rx.recv() {
                        Ok((i, r)) => {
                            pending.insert(i, r);
                        }
                        Err(_) => {
                            return Err(Error::runtime("batch: the image decoders stopped early"))
                        }
                    }
                };
                let (path, key) = &todo[expect];
                expect += 1;
                consumed.store(expect, Ordering::SeqCst);
                processed += 1;
                match item {
                    Ok(v) => {
                        batch.extend(v);
                        batch_src.push(path_text(path));
                        batch_keys.push(key.clone());
                    }
                    Err(e) if opts.strict => {
                        return Err(e.context("--strict: stopping at an unreadable image"));
                    }
                    Err(e) => {
                        let sk = Skipped::new(path, &e);
                        index.skipped.push(sk.clone());
                        new_skipped.push(sk);
                    }
                }
                let room = opts.shard_size - shard.sources.len();
                let last = expect == todo.len();
                if batch_src.len() >= opts.batch_size.min(room) || (last && !batch_src.is_empty()) {
                    let n = batch_src.len();
                    let px = Array4::from_shape_vec((n, 3, s, s), std::mem::take(&mut batch))
                        .map_err(|e| Error::runtime(format!("batch: {e}")))?;
                    let res = cv.encode(px.view(), &outputs, opts.batch_size)?;
                    shard.push(
                        res,
                        std::mem::take(&mut batch_src),
                        std::mem::take(&mut batch_keys),
                    );
                    encoded += n;
                    if !opts.throttle.is_zero() {
                        std::thread::sleep(opts.throttle);
                    }
                }
                if shard.sources.len() == opts.shard_size || (last && !shard.sources.is_empty()) {
                    write_shard(dir, &mut index, std::mem::take(&mut shard), opts)?;
                    shards_written += 1;
                }
                progress.update(processed, false);
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        drop(rx);
        run
    });
    drop(signals);
    progress.finish(encoded + new_skipped.len());
    result?;
    index.complete = !stopped;
    index.write(dir)?;
    Ok(ShardSummary {
        encoded,
        already_done,
        shards_written,
        skipped: new_skipped,
        seconds: start.elapsed().as_secs_f64(),
        total: files.len(),
        rows: index.rows,
        shards: index.shards.len(),
        stopped,
    })
}

/// The first `shard-*.safetensors` in `dir`, if any.
fn first_shard_file(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-") && n.ends_with(".safetensors"))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Why the shard at `path` does not hold what the index says (`None`: it does).
fn shard_problem(path: &Path, s: &ShardEntry, outputs: &[String]) -> Option<String> {
    let st = match crate::model::SafeTensors::open(path) {
        Ok(st) => st,
        Err(e) => return Some(format!("the shard is damaged ({})", e.message())),
    };
    for name in outputs {
        match st.tensors().get(name) {
            None => return Some(format!("the shard lacks output {name:?}")),
            Some(t) if t.shape.first() != Some(&s.rows) => {
                return Some(format!(
                    "output {name:?} has shape {:?} but the index lists {} rows",
                    t.shape, s.rows
                ))
            }
            Some(t) => {
                if let Err(e) = st.data(t) {
                    return Some(format!("the shard is damaged ({})", e.message()));
                }
            }
        }
    }
    let inputs = st
        .metadata()
        .get("inputs")
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok());
    match inputs {
        Some(v) if v.len() == s.rows => None,
        _ => Some(format!(
            "its \"inputs\" metadata does not list the {} rows of the index",
            s.rows
        )),
    }
}

fn write_shard(
    dir: &Path,
    index: &mut ShardIndex,
    shard: OpenShard,
    opts: &ShardOptions,
) -> Result<()> {
    // The next number no listed shard uses (a damaged shard dropped on resume leaves a gap).
    let mut n = index.shards.len();
    while index.shards.iter().any(|s| s.file == shard_name(n)) {
        n += 1;
    }
    let file = shard_name(n);
    let mut tensors = Vec::with_capacity(shard.outputs.len());
    for (name, parts) in shard.outputs {
        let views: Vec<_> = parts.iter().map(|t| t.view()).collect();
        let t = ndarray::concatenate(Axis(0), &views)
            .map_err(|e| Error::runtime(format!("shard {file}: {name}: {e}")))?;
        tensors.push((name, t));
    }
    let mut meta = HashMap::new();
    meta.insert(
        "inputs".to_string(),
        serde_json::to_string(&shard.sources).unwrap_or_default(),
    );
    meta.insert("model".to_string(), opts.model_label.clone());
    meta.insert("shard".to_string(), n.to_string());
    meta.insert(
        "producer".to_string(),
        format!("distorch-vision {}", env!("CARGO_PKG_VERSION")),
    );
    let bytes = output::to_safetensors(&tensors, &meta)?;
    write_atomic(&dir.join(&file), &bytes)?;
    index.rows += shard.sources.len();
    index.shards.push(ShardEntry {
        file,
        rows: shard.sources.len(),
        sources: shard.sources,
        keys: shard.keys,
    });
    index.write(dir)
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
            format: OutFormat::Safetensors,
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
    let spec = preprocess_spec(cv.model(), job.crop);
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
    let mut parts: Vec<Array4<f32>> = Vec::new();
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
        parts.push(px);
        sources.extend(src);
    }
    print_skipped(&skipped);
    let px = if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views)
            .map_err(|e| Error::invalid(format!("pixels and images have different shapes: {e}")))?
    };
    cv.model().check_pixels(px.shape())?;
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
