//! The CUDA 13 / cuDNN 9 libraries the GPU build of ONNX Runtime needs: where they are
//! searched (the `nvidia-*` wheels `scripts/setup.sh --gpu` installs, or the system) and
//! preloading them with `RTLD_GLOBAL` before the provider is registered.
//!
//! Verified on a machine without a GPU or driver only. The preload order and the sonames
//! below follow the CUDA 13 wheels' layout as documented by NVIDIA; they have not been
//! exercised against real wheels on a GPU machine (run `scripts/gpu_check.sh` there).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use super::unavailable::Unavailable;

/// The libraries `libonnxruntime_providers_cuda.so` (1.31.1, CUDA 13) links against, by
/// soname, in an order where each one's dependencies come first.
pub const REQUIRED_LIBS: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
];

/// Loaded as well when found (cuDNN 9 opens its sub-libraries by soname at run time;
/// preloading them globally makes those opens find the wheel's copies).
const OPTIONAL_PREFIXES: &[&str] = &["libnvJitLink.so", "libnvrtc.so", "libcudnn_"];

/// One library of [`REQUIRED_LIBS`] and where it was found.
#[derive(Clone, Debug, Serialize)]
pub struct LibStatus {
    pub name: String,
    pub path: Option<String>,
    pub loaded: bool,
    pub error: Option<String>,
}

/// Folders searched for the CUDA libraries, in order: `DISTORCH_CUDA_LIB_DIRS` (colon
/// separated), the `nvidia/*/lib` folders beside the ONNX Runtime library's package (the
/// wheel layout of `.runtime/gpu`), and those of the Python environment's `nvidia` package.
/// The system's linker path is tried last by soname.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os("DISTORCH_CUDA_LIB_DIRS") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    // <site>/onnxruntime/capi/libonnxruntime.so.* → <site>/nvidia
    let lib = crate::runtime::env::loaded_library()
        .map(Path::to_path_buf)
        .or_else(|| crate::runtime::library::find(None).ok());
    if let Some(site) = lib.as_deref().and_then(|p| p.ancestors().nth(3)) {
        roots.push(site.join("nvidia"));
    }
    if let Some(root) = crate::paths::project_root() {
        roots.push(root.join(".runtime/gpu/nvidia"));
    }
    if let Some(site) = python_nvidia_dir() {
        roots.push(site);
    }
    for root in roots {
        // nvidia/<pkg>/lib (cuDNN, CUDA 12 wheels) and nvidia/cu13/lib (CUDA 13 wheels).
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut subs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path().join("lib"))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            if !dirs.contains(&s) {
                dirs.push(s);
            }
        }
    }
    dirs
}

/// The `nvidia` namespace package folder of `python3`, if it has one (torch's CUDA wheels).
fn python_nvidia_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        crate::runtime::library::python_path(
            "import importlib.util as u;s=u.find_spec('nvidia');print(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')",
        )
    })
    .clone()
}

/// Where `soname` is in `dirs` (exact file name, else `soname.*`).
fn locate(soname: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    for d in dirs {
        let p = d.join(soname);
        if p.is_file() {
            return Some(p);
        }
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut hits: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{soname}.")))
                })
                .collect();
            hits.sort();
            if let Some(h) = hits.into_iter().next() {
                return Some(h);
            }
        }
    }
    None
}

fn dlopen_global(path: &Path) -> std::result::Result<(), String> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen of a shared library; the handle is deliberately kept open for the
    // life of the process (the CUDA provider needs these symbols until exit).
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a thread-local NUL-terminated string or null.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "dlopen failed".to_string()
        } else {
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(msg);
    }
    Ok(())
}

static PRELOAD: OnceLock<Vec<LibStatus>> = OnceLock::new();

/// Opens the CUDA/cuDNN libraries globally, once per process: each required soname from
/// the first search folder holding it, else from the system linker path; then the optional
/// cuDNN sub-libraries and JIT libraries found beside them.
pub fn preload() -> &'static [LibStatus] {
    PRELOAD.get_or_init(|| {
        let dirs = search_dirs();
        let mut out = Vec::new();
        for name in REQUIRED_LIBS {
            let found = locate(name, &dirs);
            let target = found.clone().unwrap_or_else(|| PathBuf::from(name));
            let r = dlopen_global(&target);
            out.push(LibStatus {
                name: name.to_string(),
                path: found.map(|p| p.display().to_string()),
                loaded: r.is_ok(),
                error: r.err(),
            });
        }
        for d in &dirs {
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            let mut extra: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        OPTIONAL_PREFIXES.iter().any(|pre| n.starts_with(pre)) && n.contains(".so")
                    })
                })
                .collect();
            extra.sort();
            for p in extra {
                if let Err(e) = dlopen_global(&p) {
                    tracing::debug!("optional CUDA library {}: {e}", p.display());
                }
            }
        }
        for l in &out {
            if !l.loaded {
                tracing::debug!("CUDA library {}: {:?}", l.name, l.error);
            }
        }
        out
    })
}

/// Required libraries that could not be loaded (after [`preload`]).
pub fn missing_libraries() -> Vec<String> {
    preload()
        .iter()
        .filter(|l| !l.loaded)
        .map(|l| l.name.clone())
        .collect()
}

/// Locates the required libraries without loading them (for the status on machines
/// without a GPU, where loading them would be pointless).
pub fn locate_only() -> Vec<LibStatus> {
    let dirs = search_dirs();
    REQUIRED_LIBS
        .iter()
        .map(|name| LibStatus {
            name: name.to_string(),
            path: locate(name, &dirs).map(|p| p.display().to_string()),
            loaded: false,
            error: None,
        })
        .collect()
}

/// Why the provider cannot run: `missing` required libraries, and where they were looked for.
pub fn missing(missing: &[impl AsRef<str>]) -> Unavailable {
    Unavailable::MissingLibraries {
        missing: missing.iter().map(|m| m.as_ref().to_string()).collect(),
        searched: search_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_versioned_names() {
        let dir = std::env::temp_dir().join(format!("dv-cuda-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libcufft.so.12.1.0"), b"").unwrap();
        std::fs::write(dir.join("libcudart.so.13"), b"").unwrap();
        let dirs = vec![dir.clone()];
        assert_eq!(
            locate("libcudart.so.13", &dirs),
            Some(dir.join("libcudart.so.13"))
        );
        assert_eq!(
            locate("libcufft.so.12", &dirs),
            Some(dir.join("libcufft.so.12.1.0"))
        );
        assert_eq!(locate("libcudnn.so.9", &dirs), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
