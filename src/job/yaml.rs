//! YAML run files: one job (a mapping) or `jobs: [...]`, run in order. Keys are the loader
//! inputs of contract §1 with the same names plus the job's inputs and outputs; unknown keys,
//! wrong types and bad values (crop, dtype, donor_policy, format) are errors with line and
//! column. Defaults are the library's ([`LoaderOptions::default`], [`DEFAULT_BATCH_SIZE`], ...).
//! Paths are relative to the YAML file. Every job is checked before the first runs
//! ([`check_jobs`]); jobs of one file share loaded models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::export::{ComputeDtype, Granularity};
use crate::image::Crop;
use crate::job::batch::{self, EncodeJob, OutFormat, DEFAULT_DECODE_THREADS};
use crate::job::summary::EncodeSummary;
use crate::loader::{ClipVision, LoadKey, LoadOptions};
use crate::model::folders::ModelFolders;
use crate::plan::{CpuEngine, DonorPolicy, LoaderOptions, DEFAULT_BATCH_SIZE};
use crate::{Error, Result};

// serde's `default = "..."` takes functions: these read the one definition of each default.
fn default_donor_device() -> String {
    LoaderOptions::default().donor_device
}
fn default_expert_mode_allocations() -> String {
    LoaderOptions::default().expert_mode_allocations
}
fn default_eject_models() -> bool {
    LoaderOptions::default().eject_models
}
fn default_donor_policy() -> DonorPolicy {
    LoaderOptions::default().donor_policy
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_decode_threads() -> usize {
    DEFAULT_DECODE_THREADS
}

/// A list of strings, or one string (`images: photos/` as well as `images: [photos/]`).
struct OneOrMany {
    what: &'static str,
    /// Commas separate items in a single string too (`outputs: a,b`, as on the command line).
    split_commas: bool,
}

impl<'de> serde::de::Visitor<'de> for OneOrMany {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} or a list of them", self.what)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(if self.split_commas {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        } else {
            vec![v.to_string()]
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Vec::new()) // `images:` with nothing after it
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<String>()? {
            out.push(v);
        }
        Ok(out)
    }
}

fn paths_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<PathBuf>, D::Error> {
    let v = d.deserialize_any(OneOrMany {
        what: "a path",
        split_commas: false,
    })?;
    Ok(v.into_iter().map(PathBuf::from).collect())
}

fn names_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    d.deserialize_any(OneOrMany {
        what: "an output name (or names separated by commas)",
        split_commas: true,
    })
}

/// What a job reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Image files, folders and file lists (folders expand recursively, sorted); one path or
    /// a list.
    #[serde(default, deserialize_with = "paths_one_or_many")]
    pub images: Vec<PathBuf>,
    /// A safetensors file of preprocessed NCHW pixels.
    #[serde(default)]
    pub pixels: Option<PathBuf>,
}

/// One job of a run file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A label for messages.
    #[serde(default)]
    pub name: Option<String>,
    /// The model: a path or a name in the model folders.
    /// `clip_name` is what ComfyUI's own CLIPVisionLoader calls it.
    #[serde(alias = "model", alias = "clip_name")]
    pub clip_vision: String,
    #[serde(default)]
    pub device: Option<String>,
    /// `None` when the file does not set it (the default applies, quietly).
    #[serde(default)]
    pub virtual_vram_gb: Option<f64>,
    #[serde(default = "default_donor_device")]
    pub donor_device: String,
    #[serde(default = "default_expert_mode_allocations")]
    pub expert_mode_allocations: String,
    #[serde(default = "default_eject_models")]
    pub eject_models: bool,
    #[serde(default = "default_donor_policy")]
    pub donor_policy: DonorPolicy,
    /// What runs the CPU blocks: `auto` (default), `mlas` or `openvino` (contract §6.4).
    #[serde(default)]
    pub cpu_engine: CpuEngine,
    /// The OpenVINO plugin library (or a folder holding it); default: searched for.
    #[serde(default)]
    pub openvino_ep: Option<PathBuf>,
    /// Compute precision: `fp32` (default), `int8` (CPU), `fp16` (GPUs) or `bf16` (OpenVINO
    /// on CPUs with AMX or AVX512_BF16).
    #[serde(default)]
    pub dtype: Option<ComputeDtype>,
    /// Micro-batches of N flowing through the device segments concurrently.
    #[serde(default)]
    pub micro_batch: Option<usize>,
    #[serde(default)]
    pub simulate_devices: Option<String>,
    #[serde(default)]
    pub graphs_dir: Option<PathBuf>,
    /// ComfyUI folder for model names (default: env COMFYUI_PATH); `comfyui_path` is the
    /// library's name of it (messages use that).
    #[serde(default, alias = "comfyui_path")]
    pub comfyui: Option<PathBuf>,
    #[serde(default)]
    pub extra_model_paths: Option<PathBuf>,
    pub inputs: Inputs,
    /// `center` (default) or `none`.
    #[serde(default)]
    pub crop: Crop,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Outputs to write (default: all the model has but `all_hidden_states`, written only
    /// when named); one name, a list, or names separated by commas.
    #[serde(default, deserialize_with = "names_one_or_many")]
    pub outputs: Vec<String>,
    /// `safetensors` (default) or `npy` (a folder of `.npy` files).
    #[serde(default)]
    pub format: OutFormat,
    pub out: PathBuf,
    #[serde(default)]
    pub shard_size: Option<usize>,
    #[serde(default)]
    pub resume: bool,
    #[serde(default)]
    pub strict: bool,
    #[serde(default = "default_decode_threads")]
    pub decode_threads: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsFile {
    jobs: Vec<JobSpec>,
}

fn located(path: &Path, e: serde_yaml::Error) -> Error {
    // serde_yaml appends " at line L column C" to its message; put the location first.
    let msg = e.to_string();
    match e.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            let m = msg.strip_suffix(&suffix).unwrap_or(&msg);
            Error::invalid(format!(
                "{}:{}:{}: {}",
                path.display(),
                l.line(),
                l.column(),
                plain_words(m)
            ))
        }
        None => Error::invalid(format!("{}: {}", path.display(), plain_words(&msg))),
    }
}

/// serde's wording for people: Rust type names as words, a did-you-mean for an unknown key,
/// and the model's three names called one field.
fn plain_words(msg: &str) -> String {
    // serde_yaml may put where in the document first: "jobs[0].inputs: unknown field ...".
    let (place, msg) = match msg.find(": ") {
        Some(i)
            if !msg[..i].contains(' ')
                && ["unknown field", "missing field", "duplicate field"]
                    .iter()
                    .any(|p| msg[i + 2..].starts_with(p)) =>
        {
            (&msg[..i + 2], &msg[i + 2..])
        }
        _ => ("", msg),
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            let valid: Vec<String> = expected
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            let close = crate::model::folders::close_matches(key, &valid);
            let hint = match close.first() {
                Some(c) => format!("; did you mean `{c}`?"),
                None => String::new(),
            };
            return format!(
                "{place}unknown key `{key}`{hint} (valid keys here: {})",
                valid.join(", ")
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return format!("{place}missing key `{rest}");
    }
    if msg.starts_with("duplicate field `clip_vision`") {
        return format!("{place}`model`, `clip_vision` and `clip_name` are the same field (the model); give it once");
    }
    let mut m = msg.to_string();
    for (rust, words) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

/// Parses a run file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<JobSpec>> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| located(path, e))?;
    let has_jobs = value
        .as_mapping()
        .is_some_and(|m| m.contains_key(serde_yaml::Value::String("jobs".into())));
    if has_jobs {
        serde_yaml::from_str::<JobsFile>(text)
            .map(|f| f.jobs)
            .map_err(|e| with_other_jobs(located(path, e), &value))
    } else {
        Ok(vec![
            serde_yaml::from_str::<JobSpec>(text).map_err(|e| located(path, e))?
        ])
    }
}

/// serde stops at the first bad job; the jobs after it are parsed one by one (without line
/// numbers) so a single error names every job with a wrong key or type.
fn with_other_jobs(first: Error, value: &serde_yaml::Value) -> Error {
    let Some(jobs) = value.get("jobs").and_then(|j| j.as_sequence()) else {
        return first;
    };
    let bad: Vec<String> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            // Re-parsed from text so the message names the key (from_value would not);
            // its line numbers would be those of the copy, so they are dropped.
            let text = serde_yaml::to_string(v).ok()?;
            let e = serde_yaml::from_str::<JobSpec>(&text).err()?;
            let msg = e.to_string();
            let e = match e.location() {
                Some(l) => {
                    let suffix = format!(" at line {} column {}", l.line(), l.column());
                    plain_words(msg.strip_suffix(&suffix).unwrap_or(&msg))
                }
                None => plain_words(&msg),
            };
            let label = v
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("job {}", i + 1), str::to_string);
            Some(format!("{label}: {e}"))
        })
        .skip(1) // the first bad job is `first`, with its line and column
        .collect();
    if bad.is_empty() {
        return first;
    }
    Error::new(first.kind(), format!("{first}; {}", bad.join("; ")))
}

/// Reads and parses a run file.
pub fn load(path: &Path) -> Result<Vec<JobSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_has_line_and_column() {
        let text = "clip_vision: m.safetensors\ninputs:\n  images: [a.png]\nout: o.safetensors\nbatchsize: 3\n";
        let e = parse(text, Path::new("r.yaml")).unwrap_err();
        assert!(
            e.message()
                .starts_with("r.yaml:5:1: unknown key `batchsize`; did you mean `batch_size`?"),
            "{e}"
        );
    }

    #[test]
    fn jobs_list_and_wrong_type() {
        let text = "jobs:\n  - clip_vision: m\n    inputs: {images: [a]}\n    out: o\n  - clip_vision: m\n    inputs: {images: [a]}\n    out: o\n    batch_size: many\n";
        let e = parse(text, Path::new("r.yaml")).unwrap_err();
        assert!(e.message().starts_with("r.yaml:8:17: "), "{e}");
        let ok = "jobs:\n  - model: m\n    inputs: {pixels: p}\n    out: o\n";
        let jobs = parse(ok, Path::new("r.yaml")).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].clip_vision, "m");
    }

    #[test]
    fn bad_values_have_line_column_and_the_valid_choices() {
        let job = "clip_vision: m\ninputs: {images: [a.png]}\nout: o\n";
        let cases = [
            (
                "crop: middle\n",
                "4:7",
                ["\"middle\"", "\"center\", \"none\""],
            ),
            ("dtype: int4\n", "4:8", ["\"int4\"", "fp32, int8, fp16"]),
            (
                "donor_policy: run\n",
                "4:15",
                ["\"run\"", "\"stream\" and \"execute\""],
            ),
            (
                "format: parquet\n",
                "4:9",
                ["\"parquet\"", "\"safetensors\", \"npy\""],
            ),
        ];
        for (line, at, parts) in cases {
            let e = parse(&format!("{job}{line}"), Path::new("r.yaml")).unwrap_err();
            assert!(e.message().starts_with(&format!("r.yaml:{at}: ")), "{e}");
            for p in parts {
                assert!(e.message().contains(p), "{p} missing: {e}");
            }
        }
        // In a job list too, where the error also names the other bad jobs.
        let text = "jobs:\n  - clip_vision: m\n    inputs: {images: [a]}\n    out: o\n    dtype: half\n\
                    \n  - name: second\n    clip_vision: m\n    inputs: {images: [a]}\n    out: p\n    crop: wide\n\
                    \n  - name: third\n    clip_vision: m\n    inputs: {images: [a]}\n    out: q\n    donor_policy: run\n";
        let e = parse(text, Path::new("r.yaml")).unwrap_err();
        assert!(e.message().starts_with("r.yaml:11:11: "), "{e}");
        assert!(e.message().contains("crop: unknown value \"wide\""), "{e}");
        assert!(
            e.message()
                .contains("third: donor_policy: donor policy \"run\""),
            "{e}"
        );
    }

    #[test]
    fn values_parse_as_on_the_command_line_and_defaults_are_the_library_ones() {
        let job = "clip_vision: m\ninputs: {images: [a.png]}\nout: o\n";
        let d = &parse(job, Path::new("r.yaml")).unwrap()[0];
        let opts = d
            .load_options(Path::new("."), &RunSettings::default())
            .unwrap();
        let want = LoaderOptions::default();
        assert_eq!(format!("{:?}", opts.loader), format!("{want:?}"));
        assert_eq!(opts.dtype, ComputeDtype::default());
        let ej = d
            .encode_job(Path::new("."), &RunSettings::default())
            .unwrap();
        let def = EncodeJob::default();
        assert_eq!(
            (ej.crop, ej.format, ej.batch_size, ej.decode_threads),
            (def.crop, def.format, def.batch_size, def.decode_threads)
        );
        let text = format!("{job}crop: none\ndtype: HALF\ndonor_policy: Execute\nformat: npy\n");
        let s = &parse(&text, Path::new("r.yaml")).unwrap()[0];
        assert_eq!(
            (s.crop, s.dtype, s.donor_policy, s.format),
            (
                Crop::None,
                Some(ComputeDtype::Fp16),
                DonorPolicy::Execute,
                OutFormat::Npy
            )
        );
    }
}
