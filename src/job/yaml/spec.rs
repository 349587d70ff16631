//! What a run file holds and reading it: the jobs' keys (`JobSpec`, `Inputs`) with the
//! library's defaults, one value or a list where a list is expected, and serde's messages
//! reworded for people (line and column first, key names, did-you-mean, "a whole number").

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::export::ComputeDtype;
use crate::image::Crop;
use crate::job::batch::{OutFormat, DEFAULT_DECODE_THREADS};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::batch::EncodeJob;
    use crate::job::yaml::RunSettings;

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
