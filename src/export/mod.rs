//! Export: one ONNX graph per block (and optionally one whole-model graph) whose weights are
//! external data pointing into the original safetensors file through a hard link, so nothing
//! is duplicated on disk (and deleting the model frees nothing while an export of it exists:
//! `clean` lists and removes exports). A `manifest.json` lists the blocks in order; it is written last and
//! marks a finished export, which later runs on the same file reuse.

pub mod blocks;
pub mod clean;
pub mod graph;
pub mod naflex;
pub mod onnx;
pub mod quant;

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

pub use blocks::BlockIo;

use crate::model::{BlockKind, Model};
use crate::paths::{copy_atomic, write_atomic};
use crate::{Error, Result};

/// Bumped whenever the graphs change, so old exports are rebuilt rather than reused.
pub const EXPORT_FORMAT: u32 = 4;
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const WHOLE_FILE: &str = "whole.onnx";
/// The folder of an export where OpenVINO keeps the blocks it compiled (`runtime::engine`).
pub const COMPILED_CACHE_DIR: &str = "openvino-cache";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Granularity {
    /// One graph per block (always written).
    #[default]
    Blocks,
    /// Also one graph for the whole model (for `bench`'s split-overhead ratio).
    Whole,
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Granularity::Blocks => "blocks",
            Granularity::Whole => "whole",
        })
    }
}

impl std::str::FromStr for Granularity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "blocks" | "block" => Ok(Granularity::Blocks),
            "whole" => Ok(Granularity::Whole),
            _ => Err(Error::invalid(format!(
                "`granularity` {s:?} is not valid (valid: blocks, whole)"
            ))),
        }
    }
}

/// Compute precision of the exported graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    /// The reference: f32 compute on the file's values (contract §2.4).
    #[default]
    Fp32,
    /// Layers' linear weights in int8 with activations quantised on the fly (CPU only).
    Int8,
    /// f16 weights and activations inside each block (f32 at block boundaries); for CUDA.
    Fp16,
    /// The fp32 graphs, compiled by OpenVINO's CPU device with its bf16 precision hint (AMX or
    /// AVX512_BF16 CPUs): contract §6.4.
    Bf16,
}

impl ComputeDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeDtype::Fp32 => "fp32",
            ComputeDtype::Int8 => "int8",
            ComputeDtype::Fp16 => "fp16",
            ComputeDtype::Bf16 => "bf16",
        }
    }

    /// The dtype of the graphs this compute dtype runs: bf16 is a compile setting of
    /// OpenVINO on the fp32 graphs, so it shares their export.
    pub fn graphs(self) -> ComputeDtype {
        match self {
            ComputeDtype::Bf16 => ComputeDtype::Fp32,
            d => d,
        }
    }
}

impl std::fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read as on the command line (`fp16`, `half`, `FP32`, ...), in YAML runs and manifests alike.
impl<'de> Deserialize<'de> for ComputeDtype {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::error::deserialize_parsed(d, "a compute dtype (fp32, int8, fp16 or bf16)", "dtype")
    }
}

impl std::str::FromStr for ComputeDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(ComputeDtype::Fp32),
            "int8" | "i8" => Ok(ComputeDtype::Int8),
            "fp16" | "f16" | "float16" | "half" => Ok(ComputeDtype::Fp16),
            "bf16" | "bfloat16" => Ok(ComputeDtype::Bf16),
            _ => Err(Error::invalid(format!(
                "dtype: unknown compute dtype {s:?} (valid: fp32, int8, fp16, bf16)"
            ))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestBlock {
    /// The block's name ([`BlockKind`] as text); read back with [`BlockKind::parse`].
    pub name: String,
    pub file: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestWhole {
    pub file: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    #[serde(default)]
    pub dtype: ComputeDtype,
    pub model_id: String,
    pub source: String,
    pub source_bytes: u64,
    pub weights: String,
    pub family: String,
    pub config: serde_json::Value,
    pub outputs: Vec<String>,
    pub blocks: Vec<ManifestBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole: Option<ManifestWhole>,
}

/// A finished export on disk.
#[derive(Clone, Debug)]
pub struct Export {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// True when an earlier export was reused as it was.
    pub reused: bool,
}

/// Where exports go when no folder is given: `graphs/` of the project when the program runs
/// from a checkout, else a per-user cache folder.
pub fn default_graphs_root() -> PathBuf {
    if let Ok(dir) = std::env::var("DISTORCH_GRAPHS_DIR") {
        if !dir.is_empty() {
            return PathBuf::from(dir);
        }
    }
    if let Some(root) = crate::paths::project_root() {
        return root.join("graphs");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("distorch-vision").join("graphs")
}

/// The folder name of a model's export: readable stem plus content hash.
pub fn model_dir_name(model: &Model, content_id: &str) -> String {
    let stem: String = model
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{stem}-{}", &content_id[..16])
}

/// Exports `model` into `out` (or `<graphs_root>/<model-id>/`), reusing a finished export
/// of the same file contents.
pub fn export(
    model: &Model,
    out: Option<&Path>,
    graphs_root: Option<&Path>,
    granularity: Granularity,
) -> Result<Export> {
    export_with(model, out, graphs_root, granularity, ComputeDtype::Fp32)
}

/// `export` in a given compute precision (int8 and fp16 graphs go to `<model-id>-int8/` and
/// `<model-id>-fp16/`; bf16 runs the fp32 graphs, see [`ComputeDtype::graphs`]).
pub fn export_with(
    model: &Model,
    out: Option<&Path>,
    graphs_root: Option<&Path>,
    granularity: Granularity,
    dtype: ComputeDtype,
) -> Result<Export> {
    let dtype = dtype.graphs();
    let root = graphs_root
        .map(Path::to_path_buf)
        .unwrap_or_else(default_graphs_root);
    let content_id = cached_content_id(model, &root)?;
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None => root.join(match dtype {
            ComputeDtype::Fp32 | ComputeDtype::Bf16 => model_dir_name(model, &content_id),
            ComputeDtype::Int8 => format!("{}-int8", model_dir_name(model, &content_id)),
            ComputeDtype::Fp16 => format!("{}-fp16", model_dir_name(model, &content_id)),
        }),
    };
    if let Some(found) =
        reusable(model, &dir, &content_id, granularity).filter(|m| m.dtype == dtype)
    {
        return Ok(Export {
            dir,
            manifest: found,
            reused: true,
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let manifest_path = dir.join("manifest.json");
    // An unfinished or stale export must never be mistaken for a finished one.
    let _ = std::fs::remove_file(&manifest_path);
    // Nor may blocks compiled from the old graphs be loaded for the new ones.
    let _ = std::fs::remove_dir_all(dir.join(COMPILED_CACHE_DIR));
    link_weights(model.path(), &dir.join(WEIGHTS_FILE))?;

    for block in &model.blocks {
        let proto = match dtype {
            ComputeDtype::Fp32 | ComputeDtype::Fp16 | ComputeDtype::Bf16 => {
                blocks::block_graph(model, block.kind, WEIGHTS_FILE, false, dtype).0
            }
            ComputeDtype::Int8 => {
                let (proto, quant) = blocks::block_graph_int8(model, block.kind, WEIGHTS_FILE)?;
                if let Some(q) = quant {
                    write_atomic(&dir.join(&q.file), &q.bytes)?;
                }
                proto
            }
        };
        write_atomic(&dir.join(block_file(block.kind)), &proto.encode_to_vec())?;
    }
    let blocks = manifest_blocks(model);
    let whole = if granularity == Granularity::Whole && dtype != ComputeDtype::Int8 {
        let (proto, outputs, inputs) = blocks::whole_graph(model, WEIGHTS_FILE, dtype);
        write_atomic(&dir.join(WHOLE_FILE), &proto.encode_to_vec())?;
        Some(ManifestWhole {
            file: WHOLE_FILE.into(),
            inputs,
            outputs,
        })
    } else {
        None
    };
    let manifest = Manifest {
        format: EXPORT_FORMAT,
        dtype,
        model_id: content_id,
        // Absolute, so `clean` can tell later whether the model file still exists.
        source: crate::paths::path_text(
            &std::fs::canonicalize(model.path()).unwrap_or_else(|_| model.path().to_path_buf()),
        ),
        source_bytes: model.file.file_len(),
        weights: WEIGHTS_FILE.into(),
        family: model.config.family.clone(),
        config: serde_json::to_value(&model.config).unwrap_or_default(),
        outputs: model.output_names().iter().map(|s| s.to_string()).collect(),
        blocks,
        whole,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::runtime(e.to_string()))?;
    write_atomic(&manifest_path, &json)?;
    Ok(Export {
        dir,
        manifest,
        reused: false,
    })
}

/// The model's content hash, remembered per file (device, inode, size, mtime) under
/// `<root>/.ids/` so a cached export is found without reading the weights again.
fn cached_content_id(model: &Model, root: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(model.path()).map_err(|e| Error::io(model.path(), e))?;
    let stamp = format!(
        "{}:{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let key = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(stamp.as_bytes()));
    let entry = root.join(".ids").join(key);
    if let Ok(text) = std::fs::read_to_string(&entry) {
        if let Some((s, id)) = text.trim().split_once(' ') {
            let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if s == stamp && hex {
                return Ok(id.to_string());
            }
        }
    }
    let id = model.content_id()?;
    // A cache that cannot be written only costs a re-hash next time.
    if std::fs::create_dir_all(entry.parent().unwrap_or(root)).is_ok() {
        let _ = write_atomic(&entry, format!("{stamp} {id}\n").as_bytes());
    }
    Ok(id)
}

/// A finished export in `dir` for these contents, if there is one.
/// The export must match this model as it is now: the same weights, the same configuration
/// (a config.json edited beside unchanged weights changes the graphs) and the same blocks.
fn reusable(
    model: &Model,
    dir: &Path,
    content_id: &str,
    granularity: Granularity,
) -> Option<Manifest> {
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    let m: Manifest = serde_json::from_slice(&text).ok()?;
    let complete = m.format == EXPORT_FORMAT
        && m.model_id == content_id
        && m.weights == WEIGHTS_FILE
        && serde_json::to_value(&model.config).ok()? == m.config
        && m.blocks == manifest_blocks(model)
        && weights_file_ok(&dir.join(&m.weights), m.source_bytes)
        && m.blocks.iter().all(|b| dir.join(&b.file).is_file())
        && (granularity == Granularity::Blocks
            || m.whole
                .as_ref()
                .is_some_and(|w| dir.join(&w.file).is_file()));
    complete.then_some(m)
}

/// The export's weights are a regular file of the model's size. Older versions hard-linked a
/// symlinked model's *link* rather than its file: such an export holds a symlink there, which
/// ONNX Runtime refuses (the target lies outside the export), so it is rebuilt.
fn weights_file_ok(path: &Path, bytes: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.len() == bytes)
}

fn block_file(kind: BlockKind) -> String {
    format!("{kind}.onnx")
}

/// The manifest's block list for `model`: names, files, inputs and outputs in order.
fn manifest_blocks(model: &Model) -> Vec<ManifestBlock> {
    model
        .blocks
        .iter()
        .map(|block| {
            let io = blocks::block_io(model, block.kind);
            ManifestBlock {
                name: block.kind.name(),
                file: block_file(block.kind),
                inputs: io.inputs,
                outputs: io.outputs,
                bytes: block.bytes,
            }
        })
        .collect()
}

/// Puts the weights beside the graphs: a hard link (ONNX Runtime refuses external data that
/// resolves outside the graph's folder, symlinks included), or a copy across filesystems.
/// A symlinked model is resolved first: `link()` does not follow a symlink, and a hard link to
/// the link itself would point outside the export.
fn link_weights(source: &Path, target: &Path) -> Result<()> {
    let real = std::fs::canonicalize(source).map_err(|e| Error::io(source, e))?;
    let source = real.as_path();
    if let (Ok(a), Ok(b)) = (std::fs::metadata(source), std::fs::symlink_metadata(target)) {
        use std::os::unix::fs::MetadataExt;
        if b.file_type().is_file() && a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(());
        }
    }
    let _ = std::fs::remove_file(target);
    match std::fs::hard_link(source, target) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(
                "cannot hard-link {} into {} ({e}); copying the weights instead, which uses {} more bytes of disk",
                source.display(),
                target.display(),
                std::fs::metadata(source).map(|m| m.len()).unwrap_or(0)
            );
            copy_atomic(source, target)
        }
    }
}
