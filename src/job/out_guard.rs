//! What an encode may write over: never the model or an input, and an existing file only
//! when this program wrote it (a safetensors file whose `producer` metadata names us, or a
//! `.npy` next to the `sources.json` we write with it). Checked before any work.

use std::path::{Path, PathBuf};

use crate::model::SafeTensors;
use crate::{Error, Result};

/// Canonical form of `p`; for a path that does not exist yet, its canonical parent joined
/// with its name (so `./x` and `/abs/x` compare equal either way).
pub fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// The files a job reads (canonical, with what each is): the model, the pixels input and
/// every input image (a missing input is left to the job to report).
pub fn protected(
    model: &Path,
    pixels: Option<&Path>,
    images: &[PathBuf],
) -> Vec<(PathBuf, &'static str)> {
    let mut v = vec![(canonical(model), "model")];
    if let Some(p) = pixels {
        v.push((canonical(p), "pixels input"));
    }
    for f in crate::image::expand_inputs(images).unwrap_or_default() {
        v.push((canonical(&f), "input image"));
    }
    v
}

/// True when `p` is a safetensors file this program wrote.
pub fn is_ours(p: &Path) -> bool {
    SafeTensors::open(p).is_ok_and(|st| {
        st.metadata()
            .get("producer")
            .is_some_and(|v| v.starts_with("distorch-vision"))
    })
}

/// Refuses when one of `targets` (files the job would write) is in `protected` (the model
/// and every input, canonical), or exists and was not written by this program.
/// `npy_companion` is the `sources.json` whose presence marks a `.npy` as ours.
pub fn check_targets(
    targets: &[PathBuf],
    protected: &[(PathBuf, &'static str)],
    npy_companion: Option<&Path>,
) -> Result<()> {
    for t in targets {
        let c = canonical(t);
        if let Some((_, what)) = protected.iter().find(|(p, _)| *p == c) {
            return Err(Error::invalid(format!(
                "out: {} would overwrite the {what}; choose another output path",
                t.display()
            )));
        }
        if !t.exists() {
            continue;
        }
        if t.is_dir() {
            return Err(Error::invalid(format!(
                "out: {} is a folder where the output file would go; choose another output path",
                t.display()
            )));
        }
        let ext = t
            .extension()
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        let ours = if ext == "safetensors" {
            is_ours(t)
        } else if ext == "npy" || ext == "json" {
            npy_companion.is_some_and(|s| s.is_file() && is_our_sources(s))
        } else {
            false
        };
        if !ours {
            return Err(Error::invalid(format!(
                "out: {} exists and was not written by distorch-vision (only files this program wrote are replaced: safetensors with its \"producer\" metadata, .npy next to its sources.json); remove it or choose another output path",
                t.display()
            )));
        }
    }
    Ok(())
}

/// A `sources.json` as we write it: a JSON array of strings.
fn is_our_sources(p: &Path) -> bool {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .is_some()
}
