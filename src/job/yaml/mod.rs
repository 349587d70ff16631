//! YAML run files: one job (a mapping) or `jobs: [...]`, run in order. Keys are the loader
//! inputs of contract §1 with the same names plus the job's inputs and outputs; unknown keys,
//! wrong types and bad values (crop, dtype, donor_policy, format) are errors with line and
//! column. Defaults are the library's ([`LoaderOptions::default`], [`DEFAULT_BATCH_SIZE`](crate::plan::DEFAULT_BATCH_SIZE), ...).
//! Paths are relative to the YAML file. Every job is checked before the first runs
//! ([`check_jobs`]); jobs of one file share loaded models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::export::Granularity;
use crate::job::batch::{self, EncodeJob};
use crate::job::summary::EncodeSummary;
use crate::loader::{ClipVision, LoadKey, LoadOptions};
use crate::model::folders::ModelFolders;
use crate::plan::LoaderOptions;
use crate::{Error, Result};

mod spec;

pub use spec::{load, parse, Inputs, JobSpec};

fn rel(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A model name stays a name unless it resolves as a path relative to the YAML file.
fn model_ref(base: &Path, m: &str) -> String {
    let p = Path::new(m);
    if !p.is_absolute() && base.join(p).exists() {
        base.join(p).display().to_string()
    } else {
        m.to_string()
    }
}

/// Settings a run shares with the caller (CLI flags).
#[derive(Clone, Debug, Default)]
pub struct RunSettings {
    pub graphs_dir: Option<PathBuf>,
    pub model_folders: ModelFolders,
    pub progress: bool,
    /// Test hook: sleep after each encoded batch (sharded jobs).
    pub throttle: Duration,
}

impl JobSpec {
    /// Loader options, the cache key's other half.
    pub fn load_options(&self, base: &Path, settings: &RunSettings) -> Result<LoadOptions> {
        let folders = ModelFolders {
            comfyui: self
                .comfyui
                .as_ref()
                .map(|p| rel(base, p))
                .or_else(|| settings.model_folders.comfyui.clone()),
            extra_model_paths: self
                .extra_model_paths
                .as_ref()
                .map(|p| rel(base, p))
                .or_else(|| settings.model_folders.extra_model_paths.clone()),
        };
        Ok(LoadOptions {
            clip_vision: model_ref(base, &self.clip_vision),
            loader: LoaderOptions {
                device: self.device.clone(),
                virtual_vram_gb: self.virtual_vram_gb,
                donor_device: self.donor_device.clone(),
                expert_mode_allocations: self.expert_mode_allocations.clone(),
                eject_models: self.eject_models,
                donor_policy: self.donor_policy,
                cpu_engine: self.cpu_engine,
            },
            simulate_devices: self.simulate_devices.clone(),
            graphs_dir: self
                .graphs_dir
                .as_ref()
                .map(|p| rel(base, p))
                .or_else(|| settings.graphs_dir.clone()),
            granularity: Granularity::Blocks,
            dtype: self.dtype.unwrap_or_default(),
            micro_batch: self.micro_batch,
            force_streamed: Vec::new(),
            model_folders: folders,
            openvino_ep: self.openvino_ep.as_ref().map(|p| rel(base, p)),
        })
    }

    /// The encode job, paths made relative to `base`.
    pub fn encode_job(&self, base: &Path, settings: &RunSettings) -> Result<EncodeJob> {
        if self.inputs.images.is_empty() && self.inputs.pixels.is_none() {
            return Err(Error::invalid(
                "inputs: give images (a list of files and folders) and/or pixels (a safetensors file)",
            ));
        }
        let job = EncodeJob {
            images: self.inputs.images.iter().map(|p| rel(base, p)).collect(),
            pixels: self.inputs.pixels.as_ref().map(|p| rel(base, p)),
            crop: self.crop,
            batch_size: self.batch_size,
            outputs: self.outputs.clone(),
            out: rel(base, &self.out),
            format: self.format,
            shard_size: self.shard_size,
            resume: self.resume,
            strict: self.strict,
            decode_threads: self.decode_threads,
            throttle: settings.throttle,
            model_label: self.clip_vision.clone(),
            progress: settings.progress,
            out_label: Some(self.out.display().to_string()),
        };
        job.validate()?;
        Ok(job)
    }
}

/// What one job of a run file did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobResult {
    /// The job's `name`, or "job N".
    pub job: String,
    #[serde(flatten)]
    pub summary: EncodeSummary,
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.job, self.summary)
    }
}

fn job_label(job: &JobSpec, i: usize) -> String {
    job.name.clone().unwrap_or_else(|| format!("job {}", i + 1))
}

/// Checks one job without loading anything: its options, its inputs exist, its model
/// resolves (with suggestions) and opens, the outputs it asks for exist, and its plan
/// (devices, allocation string) is valid. Whether the plan fits memory is left to the load,
/// which knows what ejecting other models frees.
pub fn check_job(job: &JobSpec, base: &Path, settings: &RunSettings) -> Result<()> {
    joined(job_problems(job, base, settings)).map_or(Ok(()), Err)
}

/// Every problem of one job that can be found without running it (not just the first).
fn job_problems(job: &JobSpec, base: &Path, settings: &RunSettings) -> Vec<Error> {
    let mut problems = Vec::new();
    let opts = job
        .load_options(base, settings)
        .map_err(|e| problems.push(e))
        .ok();
    if let Err(e) = job.encode_job(base, settings) {
        problems.push(e);
    }
    let inputs = job.inputs.images.iter().chain(job.inputs.pixels.iter());
    let mut missing = false;
    for written in inputs {
        let p = rel(base, written);
        if !p.exists() {
            missing = true;
            problems.push(Error::new(
                crate::ErrorKind::NotFound,
                format!(
                    "input {} does not exist{}",
                    written.display(),
                    looked_at(written, &p)
                ),
            ));
        }
    }
    // Folders (and lists) that hold no image at all, before any job runs.
    if !missing && !job.inputs.images.is_empty() {
        let images: Vec<PathBuf> = job.inputs.images.iter().map(|p| rel(base, p)).collect();
        match crate::image::expand_inputs(&images) {
            Ok(files) if files.is_empty() => {
                problems.push(crate::image::no_images_in(&job.inputs.images))
            }
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    let Some(opts) = opts else { return problems };
    let model = opts
        .model_folders
        .resolve(&opts.clip_vision)
        .and_then(|file| crate::model::Model::open(&file));
    let model = match model {
        Ok(m) => m,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    if let Err(e) = model.resolve_output_names(&job.outputs) {
        problems.push(e);
    }
    let checked = crate::loader::inventory(opts.simulate_devices.as_deref()).and_then(|inv| {
        match crate::loader::plan_model(&model, &opts.loader, &inv) {
            Ok(plan) => crate::runtime::dtype::check(opts.dtype, &plan.exec_devices()).map(|_| ()),
            Err(e) if e.kind() == crate::ErrorKind::DoesNotFit => Ok(()),
            Err(e) => Err(e),
        }
    });
    if let Err(e) = checked {
        problems.push(e);
    }
    problems
}

/// " (looked for R)" when the path as written (`written`) differs from where it was looked
/// for (`resolved`, relative to the YAML file).
fn looked_at(written: &Path, resolved: &Path) -> String {
    if written == resolved {
        String::new()
    } else {
        format!(
            " (looked for {}, relative to the run file)",
            resolved.display()
        )
    }
}

/// Several problems as one error of the first one's kind; `None` when there are none.
fn joined(mut problems: Vec<Error>) -> Option<Error> {
    match problems.len() {
        0 => None,
        1 => problems.pop(),
        _ => {
            let list: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
            Some(Error::new(problems[0].kind(), list.join("; ")))
        }
    }
}

/// `out` as an absolute path with symlinks and `..` resolved as far as the path exists, so two
/// spellings of one file compare equal.
fn out_identity(out: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(out) {
        return p;
    }
    let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Checks every job of a run file (see [`check_job`]); one error lists every job that failed,
/// including jobs that write the same `out` (the later one would overwrite the earlier).
pub fn check_jobs(path: &Path, jobs: &[JobSpec], settings: &RunSettings) -> Result<()> {
    let base = base_dir(path);
    let mut failed: Vec<(String, Error)> = Vec::new();
    let mut outs: HashMap<PathBuf, String> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let label = job_label(job, i);
        let mut problems = job_problems(job, &base, settings);
        let out = rel(&base, &job.out);
        match outs.get(&out_identity(&out)) {
            Some(first) => problems.push(Error::invalid(format!(
                "out {} is also the out of {first}; give each job its own out",
                job.out.display()
            ))),
            None => {
                outs.insert(out_identity(&out), label.clone());
            }
        }
        if let Some(e) = joined(problems) {
            failed.push((label, e));
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 if jobs.len() == 1 => {
            let (label, e) = failed.remove(0);
            Err(e.context(format!("{}: {label}", path.display())))
        }
        n => {
            let kind = failed[0].1.kind();
            let list: Vec<String> = failed
                .iter()
                .map(|(label, e)| format!("{label}: {e}"))
                .collect();
            Err(Error::new(
                kind,
                format!(
                    "{}: {n} of {} jobs have errors, so none was run; {}",
                    path.display(),
                    jobs.len(),
                    list.join("; ")
                ),
            ))
        }
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Runs every job of `path` in order, after checking them all ([`check_jobs`]); loaded
/// models are shared between jobs with the same file and loader options.
pub fn run_file(path: &Path, settings: &RunSettings) -> Result<Vec<JobResult>> {
    let jobs = load(path)?;
    check_jobs(path, &jobs, settings)?;
    let base = base_dir(path);
    let mut cache: HashMap<LoadKey, Arc<ClipVision>> = HashMap::new();
    let mut out = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let label = job_label(job, i);
        let r = (|| -> Result<EncodeSummary> {
            let opts = job.load_options(&base, settings)?;
            let ej = job.encode_job(&base, settings)?;
            let file = opts.model_folders.resolve(&opts.clip_vision)?;
            let file = std::fs::canonicalize(&file).unwrap_or(file);
            // Every option that changes the loaded model (dtype, micro_batch, ...) is in it.
            let key = opts.key(&file);
            let cv = match cache.get(&key) {
                Some(cv) => {
                    tracing::info!("{label}: reusing the loaded model {}", file.display());
                    cv.clone()
                }
                None => {
                    let mut o = opts.clone();
                    o.clip_vision = file.display().to_string();
                    let cv = Arc::new(ClipVision::load(&o)?);
                    cache.insert(key, cv.clone());
                    cv
                }
            };
            batch::run_encode(&cv, &ej)
        })();
        match r {
            Ok(summary) => out.push(JobResult {
                job: label,
                summary,
            }),
            Err(e) => return Err(e.context(format!("{}: {label}", path.display()))),
        }
    }
    Ok(out)
}
