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
    /// Each output's name and shape: of the file written (one-file mode), or over every row
    /// of the folder's shards (sharded mode).
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
    /// `shown` names `out` in the line (as the user wrote it).
    pub fn sharded(out: &Path, shown: &str, s: ShardSummary) -> Result<EncodeSummary> {
        if s.stopped {
            return Err(Error::runtime(stopped_line(
                s.rows, s.total, s.shards, shown,
            )));
        }
        let line = if s.encoded == 0 && s.skipped.is_empty() && s.already_done > 0 {
            format!(
                "nothing to encode: all {} are already in {} in {shown}",
                images(s.already_done),
                shards(s.shards)
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
                "encoded {} into {} new {} in {shown} in {:.2} s ({:.1} images/s){earlier}; {} skipped",
                images(s.encoded),
                s.shards_written,
                if s.shards_written == 1 { "shard" } else { "shards" },
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
            outputs: s.outputs,
            seconds: s.seconds,
            line,
        })
    }

    /// The summary of a one-file run that wrote `res` (`encoded` rows) to `out` (`shown` in
    /// the line).
    pub fn one_file(
        out: &Path,
        shown: &str,
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
            "encoded {} into {shown} ({}) in {seconds:.2} s{}",
            images(encoded),
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

/// Where a sharded run stopped by a signal is, and how to go on.
pub fn stopped_line(rows: usize, total: usize, shards: usize, shown: &str) -> String {
    format!(
        "stopped at {rows}/{total}; rerun with `resume` to encode the rest ({} in {} in {shown})",
        images(rows),
        shards_word(shards, "finished shard"),
    )
}

/// "1 image", "2 images".
pub fn images(n: usize) -> String {
    format!("{n} image{}", if n == 1 { "" } else { "s" })
}

fn shards(n: usize) -> String {
    shards_word(n, "shard")
}

/// "1 finished shard", "3 finished shards".
fn shards_word(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
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
    /// Each output with its shape over every row of the folder's shards.
    pub outputs: Vec<OutputShape>,
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
