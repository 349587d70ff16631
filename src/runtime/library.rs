//! Finding ONNX Runtime's library (`libonnxruntime.so.<version>`, any version from 1.31 on):
//! an explicit path, `ORT_DYLIB_PATH`, the checkout's `.runtime/`, the folder of this program
//! or library, the Python environment distorch-vision is installed in (the wheel's layout),
//! then `python3`'s `onnxruntime` package. The library found is refused, naming its version,
//! when it is older than the C API this build calls.

use std::cell::OnceCell;
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};

use crate::paths::{is_plugin, own_dir, project_root};
use crate::{Error, ErrorKind, Result};

/// The ONNX Runtime `scripts/setup.sh` installs and the tests run; the pip extras ask for this
/// version or newer.
pub const ORT_VERSION: &str = "1.31.1";
/// The oldest ONNX Runtime that has the C API this build calls (`ort`'s `api-31`): the API
/// versions are 1.x minor numbers, and newer runtimes keep serving older API versions.
pub const MIN_VERSION: (u32, u32) = (1, 31);
/// The file name of ONNX Runtime's Linux library, before its version suffix.
const LIB_STEM: &str = "libonnxruntime.so";
/// What to run when ONNX Runtime is missing. distorch-vision is a wheel file, not a package on
/// an index, so the advice names commands that work as written (`pip install
/// "distorch-vision[cpu]"` would look for it on PyPI) and the extras that add the same.
pub const INSTALL_HINT: &str = "install ONNX Runtime with pip into the Python environment distorch-vision is installed in, one of the two builds the package's extras add (never both: they install the same module): for the CPU build (the extra distorch-vision[cpu]) `pip install \"onnxruntime>=1.31.1\"`; for CUDA (the extra distorch-vision[gpu]: onnxruntime-gpu>=1.31.1 with NVIDIA's CUDA 13 / cuDNN 9 wheels) the wheel file again with the extra, `pip install \"distorch_vision-<version>-py3-none-manylinux_2_28_x86_64.whl[gpu]\"`; an environment that already has onnxruntime or onnxruntime-gpu 1.31.1 or newer needs neither. Or set ORT_DYLIB_PATH to a libonnxruntime.so of 1.31.1 or newer; in a distorch-vision checkout, `scripts/setup.sh` installs it into .runtime/";

/// One place the library is looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// This file.
    File(PathBuf),
    /// The newest `libonnxruntime.so.<version>` (else `libonnxruntime.so`) in this folder.
    Folder(PathBuf),
    /// The `capi/` folder of the `onnxruntime` package `python3` on PATH finds (if any), asked
    /// only when this place is reached: starting Python costs tens of milliseconds, where
    /// every place before it is a look at a folder.
    Python(OnceCell<Option<PathBuf>>),
}

impl Place {
    /// The library this place holds, if any.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            Place::File(p) => p.is_file().then(|| p.clone()),
            Place::Folder(dir) => newest_in(dir),
            Place::Python(_) => newest_in(self.python_capi()?),
        }
    }

    /// A place with nothing to look in (`python3` has no `onnxruntime`, say).
    fn is_nothing(&self) -> bool {
        matches!(self, Place::Python(_)) && self.python_capi().is_none()
    }

    fn python_capi(&self) -> Option<&PathBuf> {
        match self {
            Place::Python(dir) => dir
                .get_or_init(|| python_package_dir().map(|d| d.join("capi")))
                .as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match self {
            Place::File(p) => return write!(f, "{}", p.display()),
            Place::Folder(dir) => dir,
            Place::Python(_) => match self.python_capi() {
                Some(dir) => dir,
                None => {
                    return f.write_str("python3 on PATH (none, or it has no onnxruntime module)")
                }
            },
        };
        write!(f, "{}", dir.join(format!("{LIB_STEM}*")).display())
    }
}

/// Places the library is looked for, in order, with where each came from.
pub fn candidates(explicit: Option<&Path>) -> Vec<(String, Place)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(("the explicit library path".into(), file_or_folder(p)));
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(("ORT_DYLIB_PATH".into(), file_or_folder(Path::new(&p))));
        return out;
    }
    if let Some(root) = project_root() {
        for sub in ["gpu", "cpu"] {
            out.push((
                format!("the project's .runtime/{sub} folder"),
                Place::Folder(root.join(".runtime").join(sub).join("onnxruntime/capi")),
            ));
        }
    }
    if let Some(dir) = own_dir() {
        let whose = if is_plugin() {
            "the folder of the distorch-vision library itself"
        } else {
            "the program's folder"
        };
        out.push((whose.into(), Place::Folder(dir.clone())));
        for site in installed_site_packages(&dir) {
            out.push((
                "the onnxruntime package of the Python environment distorch-vision is installed in"
                    .into(),
                Place::Folder(site.join("onnxruntime").join("capi")),
            ));
        }
    }
    out.push((
        "the onnxruntime package of python3 on PATH".into(),
        Place::Python(OnceCell::new()),
    ));
    out
}

/// A path given by the user: a folder is searched like the others, anything else is the file.
fn file_or_folder(p: &Path) -> Place {
    if p.is_dir() {
        Place::Folder(p.to_path_buf())
    } else {
        Place::File(p.to_path_buf())
    }
}

/// The `site-packages` folders holding the `distorch_vision` package this code came from: the
/// wheel puts the library in `<site>/distorch_vision/lib/` and the CLI in `<prefix>/bin/`,
/// beside `<prefix>/lib/python3.X/site-packages` (`dist-packages` on Debian's system Python).
pub(crate) fn installed_site_packages(own_dir: &Path) -> Vec<PathBuf> {
    if own_dir.ends_with("distorch_vision/lib") {
        return own_dir
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
    }
    let Some(prefix) = own_dir.parent().filter(|_| own_dir.ends_with("bin")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut sites: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .flat_map(|e| ["site-packages", "dist-packages"].map(|s| e.path().join(s)))
        .filter(|site| site.join("distorch_vision").is_dir())
        .collect();
    sites.sort();
    sites
}

/// The newest ONNX Runtime library in `dir`: `libonnxruntime.so.<version>` by version, else
/// the unversioned `libonnxruntime.so`.
fn newest_in(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(file_version) else {
            continue;
        };
        let path = entry.path();
        if path.is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, path));
        }
    }
    best.map(|(_, p)| p)
}

/// The version in a library file name: `libonnxruntime.so.1.32.0` → `[1, 32, 0]`,
/// `libonnxruntime.so` → `[]`; None for other names (`libonnxruntime_providers_cuda.so`).
fn file_version(name: &str) -> Option<Vec<u32>> {
    let rest = name.strip_prefix(LIB_STEM)?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.strip_prefix('.')?
        .split('.')
        .map(|part| part.parse().ok())
        .collect()
}

/// Where `python3` finds `onnxruntime`, if it does.
fn python_package_dir() -> Option<PathBuf> {
    python_path(
        "import importlib.util,os;s=importlib.util.find_spec('onnxruntime');print(os.path.dirname(s.origin) if s and s.origin else '')",
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

/// The first library found, checked to be new enough, or an error listing every place
/// looked in.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    let tried = candidates(explicit);
    // In order, so python3 is started only when no place before it holds the library.
    if let Some((from, path)) = tried
        .iter()
        .find_map(|(from, p)| Some((from, p.resolve()?)))
    {
        check_version(&path, from)?;
        return Ok(path);
    }
    let list: Vec<String> = tried
        .iter()
        .map(|(from, p)| {
            if p.is_nothing() {
                p.to_string()
            } else {
                format!("{p} ({from})")
            }
        })
        .collect();
    Err(Error::new(
        ErrorKind::Runtime,
        format!(
            "ONNX Runtime not found (looked in: {}); {INSTALL_HINT}",
            list.join(", ")
        ),
    ))
}

/// `OrtApiBase` of onnxruntime_c_api.h: the part of the C API that every version keeps.
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Refuses a library older than [`MIN_VERSION`], naming its version and the one needed. The
/// version comes from the library itself (`OrtGetApiBase()->GetVersionString()`), not from
/// its file name. A library that passes stays loaded: `ort` opens the same file next.
fn check_version(path: &Path, from: &str) -> Result<()> {
    let cannot = |e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Runtime,
            format!(
                "cannot load ONNX Runtime from {} ({from}): {e}; {INSTALL_HINT}",
                path.display()
            ),
        )
    };
    // SAFETY: loading ONNX Runtime runs its initialisers, which is what `ort` does next anyway;
    // OrtGetApiBase takes no argument and returns a pointer to a static table whose first
    // two members every ONNX Runtime release has kept.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| cannot(&e))?;
    let version = unsafe {
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> =
            lib.get(b"OrtGetApiBase\0").map_err(|e| cannot(&e))?;
        let base = get_base();
        if base.is_null() {
            return Err(cannot(&"OrtGetApiBase returned nothing"));
        }
        let v = ((*base).get_version_string)();
        if v.is_null() {
            return Err(cannot(&"it reports no version"));
        }
        CStr::from_ptr(v).to_string_lossy().into_owned()
    };
    if !new_enough(&version) {
        return Err(Error::new(
            ErrorKind::Runtime,
            format!(
                "ONNX Runtime {version} at {} ({from}) is older than distorch-vision needs: {}.{} or newer (C API version {}); upgrade it (`pip install -U \"onnxruntime>={ORT_VERSION}\"`, or onnxruntime-gpu for CUDA, in that Python environment), or set ORT_DYLIB_PATH to a newer libonnxruntime.so",
                path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1,
                MIN_VERSION.1,
            ),
        ));
    }
    std::mem::forget(lib);
    Ok(())
}

/// Whether a version string (`1.32.0`, `1.31.1-dev`) is at least [`MIN_VERSION`]. One that
/// does not parse is let through: `ort` checks the API version itself when it loads.
fn new_enough(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MIN_VERSION,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dv-ortlib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_names_give_their_versions() {
        assert_eq!(
            file_version("libonnxruntime.so.1.31.1"),
            Some(vec![1, 31, 1])
        );
        assert_eq!(
            file_version("libonnxruntime.so.1.32.0"),
            Some(vec![1, 32, 0])
        );
        assert_eq!(file_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(file_version("libonnxruntime_providers_cuda.so"), None);
        assert_eq!(file_version("libonnxruntime.so.1.31.1.bak"), None);
        assert_eq!(file_version("libonnxruntime.sox"), None);
    }

    #[test]
    fn a_folder_gives_its_newest_library() {
        let dir = temp_dir("newest");
        for name in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so.1.4.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(
            Place::Folder(dir.clone()).resolve(),
            Some(dir.join("libonnxruntime.so.1.32.0"))
        );
        std::fs::remove_file(dir.join("libonnxruntime.so.1.32.0")).unwrap();
        std::fs::remove_file(dir.join("libonnxruntime.so.1.31.1")).unwrap();
        std::fs::remove_file(dir.join("libonnxruntime.so.1.4.0")).unwrap();
        assert_eq!(
            Place::Folder(dir.clone()).resolve(),
            Some(dir.join("libonnxruntime.so"))
        );
        std::fs::remove_file(dir.join("libonnxruntime.so")).unwrap();
        assert_eq!(Place::Folder(dir.clone()).resolve(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_from_1_31_on_are_new_enough() {
        for v in [
            "1.31.0",
            "1.31.1",
            "1.32.0",
            "1.40.2",
            "2.0.0",
            "1.31.1-dev",
        ] {
            assert!(new_enough(v), "{v}");
        }
        for v in ["1.30.0", "1.22.1", "0.99.0"] {
            assert!(!new_enough(v), "{v}");
        }
    }

    #[test]
    fn the_installed_layouts_lead_to_their_site_packages() {
        let prefix = temp_dir("venv");
        let site = prefix.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("distorch_vision/lib")).unwrap();
        std::fs::create_dir_all(prefix.join("lib/python3.10/site-packages")).unwrap();
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        // The CLI in <prefix>/bin: only the environment that holds distorch_vision.
        assert_eq!(
            installed_site_packages(&prefix.join("bin")),
            vec![site.clone()]
        );
        // The library in <site>/distorch_vision/lib.
        assert_eq!(
            installed_site_packages(&site.join("distorch_vision/lib")),
            vec![site.clone()]
        );
        // Anywhere else: none.
        assert!(installed_site_packages(&prefix).is_empty());
        let _ = std::fs::remove_dir_all(&prefix);
    }
}
