//! An encode job as the CLI and YAML runs describe it: inputs, output and its format, batch
//! and shard sizes, and the defaults of each.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::image::Crop;
use crate::plan::DEFAULT_BATCH_SIZE;
use crate::{Error, Result};

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
    /// How messages name `out` (a YAML run: as written in the file); None: `out` itself.
    pub out_label: Option<String>,
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
            out_label: None,
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

    /// Refuses counts that cannot work (0 images per batch, 0 decoder threads, 0 rows per
    /// shard), naming the field and the valid values, and a one-file `out` whose name says
    /// another format than the one written.
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("batch_size", Some(self.batch_size)),
            ("decode_threads", Some(self.decode_threads)),
            ("shard_size", self.shard_size),
        ];
        for (name, value) in counts {
            if value == Some(0) {
                return Err(Error::invalid(format!(
                    "{name} is 0; valid: a whole number of at least 1"
                )));
            }
        }
        if self.format == OutFormat::Safetensors && super::one_file::is_npy_file(&self.out) {
            return Err(Error::invalid(format!(
                "`out` {} ends in .npy but the format is safetensors; choose format npy (`format=npy`), or a .safetensors name",
                self.shown_out()
            )));
        }
        if let Some(ext) = self.foreign_extension() {
            return Err(Error::invalid(format!(
                "`out` {} names a .{ext} file, but encode writes safetensors (or npy with `format=npy`); name it .safetensors (`python -m distorch_vision encode` writes .npz)",
                self.shown_out()
            )));
        }
        Ok(())
    }

    /// The extension of a one-file `out` that names another container (`emb.npz`, `emb.pt`):
    /// such a file was silently written as safetensors under a name that says otherwise.
    fn foreign_extension(&self) -> Option<String> {
        const OTHERS: &[&str] = &[
            "npz", "pt", "pth", "pkl", "pickle", "h5", "hdf5", "json", "parquet",
        ];
        if self.is_sharded() || self.format != OutFormat::Safetensors {
            return None;
        }
        let ext = self.out.extension()?.to_str()?.to_ascii_lowercase();
        OTHERS.contains(&ext.as_str()).then_some(ext)
    }

    /// `out` as messages name it.
    pub fn shown_out(&self) -> String {
        self.out_label
            .clone()
            .unwrap_or_else(|| self.out.display().to_string())
    }

    /// Rows per shard of a sharded run: `shard_size`, or [`DEFAULT_SHARD_SIZE`].
    pub fn rows_per_shard(&self) -> usize {
        self.shard_size.unwrap_or(DEFAULT_SHARD_SIZE)
    }
}
