//! Finding the OpenVINO plugin library (`libonnxruntime_providers_openvino_plugin.so`, from
//! PyPI's `onnxruntime-ep-openvino`, with OpenVINO and TBB beside it), in the order ONNX
//! Runtime itself is found: an explicit path, `DISTORCH_OPENVINO_EP`, the checkout's
//! `.runtime/openvino/`, the folder of this program or library, the `onnxruntime_ep_openvino`
//! package of the Python environment an installed distorch-vision wheel lives in, then the one
//! `python3` on PATH finds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::paths::{is_plugin, own_dir, project_root};
use crate::runtime::library::python_path;

pub const PLUGIN_LIB: &str = "libonnxruntime_providers_openvino_plugin.so";
/// The folder of the wheel's files (the Python package), inside an install target.
pub const PACKAGE_DIR: &str = "onnxruntime_ep_openvino";
pub const PLUGIN_VERSION: &str = "1.8.1";
pub const ENV_VAR: &str = "DISTORCH_OPENVINO_EP";
/// What to run when the plugin is needed and missing: commands that work as written for an
/// installed wheel (distorch-vision is not a package on an index) or a checkout.
pub const INSTALL_HINT: &str = "`pip install onnxruntime-ep-openvino==1.8.1` into the Python environment distorch-vision is installed in (what the wheel's extra distorch-vision[openvino] adds), or in a distorch-vision checkout `scripts/setup.sh --openvino` (it installs the same into .runtime/openvino/), or set DISTORCH_OPENVINO_EP to a libonnxruntime_providers_openvino_plugin.so";

/// The plugin file a user path names: the file itself, or a folder holding it directly or in
/// the package folder (an install target such as `.runtime/openvino`).
fn in_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        let direct = p.join(PLUGIN_LIB);
        if direct.is_file() {
            return direct;
        }
        return p.join(PACKAGE_DIR).join(PLUGIN_LIB);
    }
    p.to_path_buf()
}

/// Candidate plugin paths in the order they are tried, with where each came from. An
/// explicit path or `DISTORCH_OPENVINO_EP` is the only candidate when given.
pub fn candidates(explicit: Option<&Path>) -> Vec<(String, PathBuf)> {
    let (mut out, searched) = places(explicit);
    if searched {
        out.extend(python_candidate());
    }
    out
}

/// The candidates before `python3`'s package, and whether the search goes on to it (not after
/// an explicit path or `DISTORCH_OPENVINO_EP`).
fn places(explicit: Option<&Path>) -> (Vec<(String, PathBuf)>, bool) {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(("the explicit plugin path".into(), in_path(p)));
        return (out, false);
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        out.push((ENV_VAR.into(), in_path(Path::new(&p))));
        return (out, false);
    }
    if let Some(root) = project_root() {
        out.push((
            "the project's .runtime/openvino folder".into(),
            root.join(".runtime/openvino")
                .join(PACKAGE_DIR)
                .join(PLUGIN_LIB),
        ));
    }
    if let Some(dir) = own_dir() {
        let whose = if is_plugin() {
            "the folder of the distorch-vision library itself"
        } else {
            "the program's folder"
        };
        out.push((whose.into(), dir.join(PLUGIN_LIB)));
        // An installed wheel: the `openvino` extra puts the plugin's package beside ours.
        for site in crate::runtime::library::installed_site_packages(&dir) {
            out.push((
                "the onnxruntime_ep_openvino package of the Python environment distorch-vision is installed in".into(),
                site.join(PACKAGE_DIR).join(PLUGIN_LIB),
            ));
        }
    }
    (out, true)
}

/// The plugin in the `onnxruntime_ep_openvino` package `python3` on PATH finds, if it does.
fn python_candidate() -> Option<(String, PathBuf)> {
    let dir = python_package_dir()?;
    Some((
        "the onnxruntime_ep_openvino package of python3 on PATH".into(),
        dir.join(PLUGIN_LIB),
    ))
}

/// Where `python3` finds `onnxruntime_ep_openvino`, asked once per process.
fn python_package_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        python_path(
            "import importlib.util,os;s=importlib.util.find_spec('onnxruntime_ep_openvino');print(os.path.dirname(s.origin) if s and s.origin else '')",
        )
    })
    .clone()
}

/// The plugin library: the first candidate that exists, or `Err` with every place looked in
/// (for a message that also says how to install it).
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let (mut tried, searched) = places(explicit);
    // python3 is started (tens of milliseconds) only when no place before it has the plugin.
    if searched && !tried.iter().any(|(_, p)| p.is_file()) {
        tried.extend(python_candidate());
    }
    if let Some((_, p)) = tried.iter().find(|(_, p)| p.is_file()) {
        // Absolute: ONNX Runtime resolves a relative library path against its own folder.
        return Ok(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    }
    let list: Vec<String> = tried
        .iter()
        .map(|(from, p)| format!("{} ({from})", p.display()))
        .collect();
    Err(if list.is_empty() {
        "nowhere".to_string()
    } else {
        list.join(", ")
    })
}

/// The message when the plugin is needed and not found.
pub fn not_found_message(looked: &str, needed_for: &str) -> String {
    format!(
        "{needed_for} needs the OpenVINO plugin of ONNX Runtime ({PLUGIN_LIB}, onnxruntime-ep-openvino {PLUGIN_VERSION}), which was not found (looked in: {looked}); {INSTALL_HINT}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_folder_names_the_plugin_inside_it() {
        let dir = std::env::temp_dir().join(format!("dv-ov-lib-{}", std::process::id()));
        let pkg = dir.join(PACKAGE_DIR);
        std::fs::create_dir_all(&pkg).unwrap();
        // An install target: the package folder holds the library.
        let c = candidates(Some(&dir));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, pkg.join(PLUGIN_LIB));
        // The package folder itself, holding the file.
        std::fs::write(pkg.join(PLUGIN_LIB), b"").unwrap();
        assert_eq!(find(Some(&pkg)).unwrap(), pkg.join(PLUGIN_LIB));
        // A path that does not exist is named in the error.
        let missing = dir.join("nope.so");
        let e = find(Some(&missing)).unwrap_err();
        assert!(e.contains("nope.so") && e.contains("explicit"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
