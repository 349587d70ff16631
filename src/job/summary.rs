//! What an encode job did: one line for people, the same facts as JSON (`--json`).

use std::path::PathBuf;

use serde::Serialize;

use crate::job::batch::Skipped;

/// The result of one encode job. `Display` gives the one-line summary.
#[derive(Clone, Debug, Serialize)]
pub struct EncodeSummary {
    /// The output file or shard folder.
    pub out: PathBuf,
    /// Images (rows) encoded by this run.
    pub encoded: usize,
    /// Sharded mode: rows already in finished shards before this run (resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_done: Option<usize>,
    /// Sharded mode: shards this run wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards_written: Option<usize>,
    /// Inputs that could not be read, with the reason (sharded mode skips them).
    pub skipped: Vec<Skipped>,
    /// Single-file mode: each output's name and shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputShape>,
    pub seconds: f64,
    pub images_per_s: f64,
    /// The line shown to people.
    #[serde(skip)]
    pub line: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputShape {
    pub name: String,
    pub shape: Vec<usize>,
}

impl std::fmt::Display for EncodeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Images per second, 0 when no time passed.
pub fn rate(images: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        images as f64 / seconds
    } else {
        0.0
    }
}
