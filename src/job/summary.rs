//! What an encode job did: one line for people, the same facts as JSON (`--json`); the images
//! it skipped and why.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Outputs;
use crate::paths::{path_text, source_key};
use crate::{Error, Result};

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

impl EncodeSummary {
    /// The summary of a sharded run into `out`; an error saying where it stopped when a caught
    /// signal ended it early (the finished rows stay).
    pub fn sharded(out: &Path, s: ShardSummary) -> Result<EncodeSummary> {
        let shown = out.display();
        if s.stopped {
            return Err(Error::runtime(format!(
                "stopped at {}/{}; rerun with `resume` to encode the rest ({} images are in {} finished shards in {shown})",
                s.rows, s.total, s.rows, s.shards
            )));
        }
        let line = if s.encoded == 0 && s.skipped.is_empty() && s.already_done > 0 {
            format!(
                "nothing to encode: all {} images are already in {} shards in {shown}",
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
                "encoded {} images into {} new shards in {shown} in {:.2} s ({:.1} images/s){earlier}; {} skipped",
                s.encoded,
                s.shards_written,
                s.seconds,
                s.images_per_s(),
                s.skipped.len()
            )
        };
        Ok(EncodeSummary {
            out: out.to_path_buf(),
            encoded: s.encoded,
            already_done: Some(s.already_done),
            shards_written: Some(s.shards_written),
            images_per_s: s.images_per_s(),
            skipped: s.skipped,
            outputs: Vec::new(),
            seconds: s.seconds,
            line,
        })
    }

    /// The summary of a one-file run that wrote `res` (`encoded` rows) to `out`.
    pub fn one_file(
        out: &Path,
        encoded: usize,
        res: &Outputs,
        skipped: Vec<Skipped>,
        seconds: f64,
    ) -> EncodeSummary {
        let outputs: Vec<OutputShape> = res
            .tensors
            .iter()
            .map(|(n, t)| OutputShape {
                name: n.clone(),
                shape: t.shape().to_vec(),
            })
            .collect();
        let line = format!(
            "encoded {encoded} images into {} ({}) in {seconds:.2} s{}",
            out.display(),
            outputs
                .iter()
                .map(|o| format!("{} {:?}", o.name, o.shape))
                .collect::<Vec<_>>()
                .join(", "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {} skipped", skipped.len())
            }
        );
        EncodeSummary {
            out: out.to_path_buf(),
            encoded,
            already_done: None,
            shards_written: None,
            skipped,
            outputs,
            seconds,
            images_per_s: rate(encoded, seconds),
            line,
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
        rate(self.encoded, self.seconds)
    }
}

/// An input that could not be read, and why.
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

/// Images per second, 0 when no time passed.
pub fn rate(images: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        images as f64 / seconds
    } else {
        0.0
    }
}
