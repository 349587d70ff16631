//! Finding `libonnxruntime.so.1.31.1`: explicit path, `ORT_DYLIB_PATH`, the project's
//! `.runtime/` folder or the folder of this program/library, then an installed
//! `onnxruntime` Python package.

use std::path::{Path, PathBuf};

use crate::paths::{is_plugin, own_dir, project_root};

pub const ORT_VERSION: &str = "1.31.1";
pub const ORT_LIB: &str = "libonnxruntime.so.1.31.1";
pub const INSTALL_HINT: &str = "run `scripts/setup.sh` in the distorch-vision checkout (it installs onnxruntime==1.31.1 from PyPI into .runtime/), or `pip install onnxruntime==1.31.1` and set ORT_DYLIB_PATH to its onnxruntime/capi/libonnxruntime.so.1.31.1";

/// Candidate library paths in the order they are tried, with where each came from.
pub fn candidates(explicit: Option<&Path>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(("the explicit library path".into(), p.to_path_buf()));
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(("ORT_DYLIB_PATH".into(), PathBuf::from(p)));
        return out;
    }
    if let Some(root) = project_root() {
        for sub in ["gpu", "cpu"] {
            out.push((
                format!("the project's .runtime/{sub} folder"),
                root.join(".runtime")
                    .join(sub)
                    .join("onnxruntime/capi")
                    .join(ORT_LIB),
            ));
        }
    }
    if let Some(dir) = own_dir() {
        let whose = if is_plugin() {
            "the folder of the distorch-vision library itself"
        } else {
            "the program's folder"
        };
        out.push((whose.into(), dir.join(ORT_LIB)));
    }
    if let Some(dir) = python_package_dir() {
        out.push((
            "the installed onnxruntime Python package".into(),
            dir.join("capi").join(ORT_LIB),
        ));
    }
    out
}

/// Where `python3` finds `onnxruntime`, if it does.
fn python_package_dir() -> Option<PathBuf> {
    python_path(
        "import importlib.util,os;s=importlib.util.find_spec('onnxruntime');print(os.path.dirname(s.origin) if s else '')",
    )
}

/// The folder a `python3 -c` snippet prints, if python3 exists and prints one.
pub(crate) fn python_path(code: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", code])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The first candidate that exists, or an error listing every place looked in.
pub fn find(explicit: Option<&Path>) -> crate::Result<PathBuf> {
    let tried = candidates(explicit);
    if let Some((_, p)) = tried.iter().find(|(_, p)| p.is_file()) {
        return Ok(p.clone());
    }
    let list: Vec<String> = tried
        .iter()
        .map(|(from, p)| format!("{} ({from})", p.display()))
        .collect();
    Err(crate::Error::new(
        crate::ErrorKind::Runtime,
        format!(
            "ONNX Runtime {ORT_VERSION} library not found (looked in: {}); {INSTALL_HINT}",
            if list.is_empty() {
                "nowhere".to_string()
            } else {
                list.join(", ")
            }
        ),
    ))
}
