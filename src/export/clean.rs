//! The exports under a graphs folder, and removing them (`distorch-vision clean`).
//!
//! An export's `weights.safetensors` is a hard link to the model file, so deleting the model
//! frees no disk while an export of it exists: the export then holds the weights alone. Only
//! folders made of an export's own files are ever removed, file by file; anything else in the
//! graphs folder is left alone.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Manifest, WEIGHTS_FILE};
use crate::paths::path_text;
use crate::{Error, Result};

/// One export folder under a graphs root.
#[derive(Clone, Debug, Serialize)]
pub struct ExportEntry {
    /// The export folder.
    pub dir: PathBuf,
    /// The model file it was made from, as recorded (None: an unfinished export).
    pub model: Option<String>,
    /// Whether that file still exists.
    pub model_exists: bool,
    pub family: Option<String>,
    pub dtype: Option<String>,
    /// Content hash of the model's weights (None: an unfinished export).
    pub model_id: Option<String>,
    /// Bytes of the graphs and other files of the export (the weights left out).
    pub graph_bytes: u64,
    /// Bytes of the export's `weights.safetensors`.
    pub weights_bytes: u64,
    /// True when the weights are a hard link shared with another file (the model): removing
    /// the export frees only `graph_bytes`.
    pub weights_shared: bool,
}

impl ExportEntry {
    /// Disk space removing this export gives back.
    pub fn freed_bytes(&self) -> u64 {
        self.graph_bytes
            + if self.weights_shared {
                0
            } else {
                self.weights_bytes
            }
    }
}

/// Whether `name` is a file an export writes: graphs, int8 scales, the linked weights, the
/// manifest, or a temporary file of an atomic write (`<stem>.tmp<pid>`).
fn is_export_file(name: &str) -> bool {
    if name == WEIGHTS_FILE || name == "manifest.json" {
        return true;
    }
    if name.ends_with(".onnx") || name.ends_with(".q8") {
        return true;
    }
    name.rsplit_once(".tmp")
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The exports under `root`, sorted by folder name. Folders holding anything an export does
/// not write (or other folders) are not exports and are not listed.
pub fn list_exports(root: &Path) -> Result<Vec<ExportEntry>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let dir = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || entry.file_name() == ".ids" {
            continue;
        }
        if let Some(e) = read_export(&dir) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

fn read_export(dir: &Path) -> Option<ExportEntry> {
    use std::os::unix::fs::MetadataExt;
    let mut graph_bytes = 0;
    let (mut weights_bytes, mut weights_shared) = (0, false);
    for f in std::fs::read_dir(dir).ok()?.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(f.path()).ok()?;
        if !meta.is_file() || !is_export_file(&name) {
            return None; // not (only) an export's files
        }
        if name == WEIGHTS_FILE {
            weights_bytes = meta.len();
            weights_shared = meta.nlink() > 1;
        } else {
            graph_bytes += meta.len();
        }
    }
    let manifest: Option<Manifest> = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if manifest.is_none() && weights_bytes == 0 && graph_bytes == 0 {
        return None; // an empty folder is no export
    }
    Some(ExportEntry {
        dir: dir.to_path_buf(),
        model_exists: manifest
            .as_ref()
            .is_some_and(|m| Path::new(&m.source).is_file()),
        model: manifest.as_ref().map(|m| m.source.clone()),
        family: manifest.as_ref().map(|m| m.family.clone()),
        dtype: manifest.as_ref().map(|m| m.dtype.as_str().to_string()),
        model_id: manifest.as_ref().map(|m| m.model_id.clone()),
        graph_bytes,
        weights_bytes,
        weights_shared,
    })
}

/// Whether `entry` is an export of the model the user named `model`: the file `model`
/// resolves to now (`model_file`), by path; or, for an export whose model file is gone, the
/// recorded file by path, file name or stem (so the export of a deleted model can be named).
pub fn matches_model(entry: &ExportEntry, model: &str, model_file: Option<&Path>) -> bool {
    let Some(source) = entry.model.as_deref() else {
        return false;
    };
    let recorded = Path::new(source);
    if let Some(file) = model_file {
        let canon = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if recorded == canon {
            return true;
        }
    }
    if entry.model_exists {
        return false;
    }
    let given = Path::new(model);
    recorded == given
        || recorded.file_name() == Some(given.as_os_str())
        || recorded.file_stem() == Some(given.as_os_str())
}

/// Removes an export folder, file by file (only an export's own files), then the folder.
/// Returns the bytes freed.
pub fn remove_export(entry: &ExportEntry) -> Result<u64> {
    let dir = &entry.dir;
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for f in rd.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !is_export_file(&name) {
            return Err(Error::invalid(format!(
                "{}: holds {name}, which no export writes; left as it is",
                path_text(dir)
            )));
        }
    }
    // The manifest first: a half-removed folder is never taken for a finished export.
    let manifest = dir.join("manifest.json");
    if manifest.exists() {
        std::fs::remove_file(&manifest).map_err(|e| Error::io(&manifest, e))?;
    }
    for f in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        std::fs::remove_file(f.path()).map_err(|e| Error::io(&f.path(), e))?;
    }
    std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entry.freed_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_files_are_recognised_and_nothing_else() {
        for ok in [
            "weights.safetensors",
            "manifest.json",
            "layer.00.onnx",
            "head.onnx",
            "layer.03.q8",
            "layer.00.tmp4242",
            "manifest.tmp1",
        ] {
            assert!(is_export_file(ok), "{ok}");
        }
        for no in [
            "notes.txt",
            "model.safetensors",
            "layer.00.tmp",
            "x.tmpabc",
            "manifest.json.bak",
        ] {
            assert!(!is_export_file(no), "{no}");
        }
    }
}
