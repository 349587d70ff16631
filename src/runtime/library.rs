//! Finding `libonnxruntime.so.1.31.1`: explicit path, `ORT_DYLIB_PATH`, the project's
//! `.runtime/` folder or the folder of this program/library, then an installed
//! `onnxruntime` Python package.

use std::path::{Path, PathBuf};

pub const ORT_VERSION: &str = "1.31.1";
pub const ORT_LIB: &str = "libonnxruntime.so.1.31.1";
pub const INSTALL_HINT: &str = "run `scripts/setup.sh` in the distorch-vision checkout (it installs onnxruntime==1.31.1 from PyPI into .runtime/), or `pip install onnxruntime==1.31.1` and set ORT_DYLIB_PATH to its onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The folder holding this code: the executable's, or the shared library's when a host
/// loaded us as a plugin.
pub fn own_dir() -> Option<PathBuf> {
    own_file()?.parent().map(Path::to_path_buf)
}

/// Whether this code runs as a shared library (a plugin a host loaded) rather than as part
/// of the executable (the CLI, a Rust program linking the rlib).
pub fn is_plugin() -> bool {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.canonicalize().unwrap_or(p));
    own_file().is_some_and(|f| Some(&f) != exe.as_ref())
}

/// The file this code was loaded from (canonical).
fn own_file() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = own_dir as *const libc::c_void;
    // SAFETY: dladdr only reads the loader's tables for an address inside this object.
    let found = unsafe { libc::dladdr(addr, &mut info) } != 0 && !info.dli_fname.is_null();
    let path = if found {
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
        let c = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        PathBuf::from(c.to_string_lossy().into_owned())
    } else {
        std::env::current_exe().ok()?
    };
    Some(path.canonicalize().unwrap_or(path))
}

/// The distorch-vision checkout this program was built in, when it runs from one
/// (`<root>/target/<profile>/…`).
pub fn project_root() -> Option<PathBuf> {
    let start = own_dir()?;
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("name = \"distorch-vision\""))
        })
        .map(Path::to_path_buf)
}

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
