//! The index of a sharded output folder (`index.json`): what each finished shard holds, the
//! skipped images, and what made the rows; starting or resuming a run against it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::encode_job::EncodeJob;
use crate::image::PreprocessSpec;
use crate::job::summary::Skipped;
use crate::loader::ClipVision;
use crate::paths::{source_key, write_atomic};
use crate::{Error, ErrorKind, Result};

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
    /// The fields the model alone decides (all but `crop`), as JSON: what the C ABI's
    /// `dv_model_identity_json` gives a host's resume (Ray's) to compare.
    pub fn of_model(cv: &ClipVision) -> serde_json::Value {
        let spec = PreprocessSpec::clip(cv.model().config.image_size as u32);
        let mut v = serde_json::to_value(RunIdentity::of(cv, &spec)).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("crop");
        }
        v
    }

    pub(super) fn of(cv: &ClipVision, spec: &PreprocessSpec) -> RunIdentity {
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
    d.as_str().to_string()
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

    pub(super) fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(&dir.join(INDEX_FILE), &bytes)
    }

    /// The index a run in `dir` continues: a new one, or with `job.resume` the folder's,
    /// after dropping shards that are damaged or cut short (their rows are encoded again) and
    /// checking that this run makes the same rows. Removes temporary files of a killed run.
    pub(super) fn start_run(
        dir: &Path,
        job: &EncodeJob,
        outputs: &[String],
        identity: RunIdentity,
    ) -> Result<ShardIndex> {
        let prev_index = ShardIndex::read(dir)?;
        if prev_index.is_none() {
            let foreign = foreign_files(dir);
            if let Some(shard) = foreign.iter().find(|n| is_shard_file(n)) {
                return Err(Error::invalid(format!(
                    "{}: the folder holds shards ({shard}, ...) but no {INDEX_FILE}, so which images they hold is unknown; {} would overwrite them: move them away, or choose another output folder",
                    dir.display(),
                    if job.resume { "resuming" } else { "a new run" }
                )));
            }
            if !foreign.is_empty() {
                return Err(Error::invalid(format!(
                    "{}: the folder holds files that are not a sharded run of this program ({}{}; no {INDEX_FILE}){}; a sharded run goes into a new or empty folder, or one holding such a run: choose another output folder",
                    dir.display(),
                    foreign[..foreign.len().min(3)].join(", "),
                    if foreign.len() > 3 { ", ..." } else { "" },
                    if job.resume {
                        ", so there is nothing to resume"
                    } else {
                        ""
                    }
                )));
            }
        }
        let mut index = match prev_index {
            Some(prev) if job.resume => prev.resumed(dir, job, outputs, &identity)?,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{} already holds a run ({INDEX_FILE}); pass `resume` to continue it, or choose another folder",
                    dir.display()
                )))
            }
            None => ShardIndex {
                model: job.model_label.clone(),
                outputs: outputs.to_vec(),
                shard_size: job.rows_per_shard(),
                ..Default::default()
            },
        };
        index.identity = Some(identity);
        remove_temporary_files(dir);
        Ok(index)
    }

    /// This (earlier) index, to be continued: its intact shards, if the run makes the same rows.
    fn resumed(
        self,
        dir: &Path,
        job: &EncodeJob,
        outputs: &[String],
        identity: &RunIdentity,
    ) -> Result<ShardIndex> {
        let mut prev = self;
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
            Some(p) => p.differences(identity, &prev.model, &job.model_label),
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
        Ok(prev)
    }

    /// The files of `files` this run encodes, each with its canonical key: those in no
    /// finished shard, each once. Earlier skips of these files are forgotten (they are tried
    /// again), and the index is marked incomplete with `shard_size`.
    pub(super) fn rows_to_encode(
        &mut self,
        files: &[PathBuf],
        shard_size: usize,
    ) -> Vec<(PathBuf, String)> {
        // Finished rows by canonical path, whatever the spelling of either run.
        let mut done: HashSet<String> = HashSet::new();
        for s in &self.shards {
            if s.keys.len() == s.sources.len() {
                done.extend(s.keys.iter().cloned());
            } else {
                // An older index: its spellings, resolved from here.
                done.extend(s.sources.iter().map(|f| source_key(Path::new(f))));
            }
        }
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
        self.skipped.retain(|s| {
            let key = if s.key.is_empty() {
                source_key(Path::new(&s.file))
            } else {
                s.key.clone()
            };
            !retry.contains(key.as_str())
        });
        drop(retry);
        self.complete = false;
        self.shard_size = shard_size;
        todo
    }
}

/// A temporary file of a shard or the index (renamed into place once written).
fn is_temporary_file(name: &str) -> bool {
    name.starts_with("shard-") && name.contains(".tmp") || name.starts_with("index.tmp")
}

/// Leftover temporary files of a killed run.
fn remove_temporary_files(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if is_temporary_file(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn is_shard_file(name: &str) -> bool {
    name.starts_with("shard-") && name.ends_with(".safetensors")
}

/// The entries of `dir` (sorted) other than a killed run's temporary files: in a folder with
/// no index, none of them was written by a run this program can continue.
fn foreign_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !is_temporary_file(n))
        .collect();
    names.sort();
    names
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
