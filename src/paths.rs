//! Files and folders every layer needs: atomic writes (a reader never sees half a file), paths
//! as text and as canonical keys, the folder this code was loaded from, and the
//! distorch-vision checkout it runs from.

use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// The temporary file an atomic write of `path` goes through: beside it (so the rename stays
/// on one filesystem), named for this process so two writers never share one.
fn temp_beside(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp{}", std::process::id()))
}

/// Moves the finished temporary file `tmp` onto `path`, or removes it when that fails.
fn publish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::new(ErrorKind::Io, format!("{}: {e}", path.display()))
    })
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    publish(&tmp, path)
}

/// Copies `source` to `target` through a temporary file and a rename, like [`write_atomic`].
pub fn copy_atomic(source: &Path, target: &Path) -> Result<()> {
    let tmp = temp_beside(target);
    if let Err(e) = std::fs::copy(source, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    publish(&tmp, target)
}

/// Creates the folder `path` goes into, when it names one.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// The canonical absolute path of an input (lexically absolute when it no longer exists),
/// exact for any file name (see [`path_text`]).
pub fn source_key(p: &Path) -> String {
    path_text(
        &std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf()),
    )
}

/// A path as text, losslessly: a UTF-8 path as it is; otherwise each byte that is not part of
/// valid UTF-8 as `\xNN` and each backslash as `\\` (so `lat\xe9.png` and `lat\xe8.png`
/// stay two names, never one `lat�.png`).
pub fn path_text(p: &Path) -> String {
    if let Some(s) = p.to_str() {
        return s.to_string();
    }
    let mut out = String::new();
    for chunk in p.as_os_str().as_encoded_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

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
    let name = if found {
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
        let c = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        PathBuf::from(c.to_string_lossy().into_owned())
    } else {
        PathBuf::new()
    };
    // For the executable itself glibc names argv[0] as typed (`distorch-vision`, found on
    // PATH), not a path: ask the kernel instead.
    let path = if name.as_os_str().is_empty()
        || std::env::args_os().next() == Some(name.clone().into_os_string())
    {
        std::env::current_exe().ok()?
    } else {
        name
    };
    Some(path.canonicalize().unwrap_or(path))
}

/// The distorch-vision checkout this program was built in, when it runs from its build folder
/// (`<root>/target/…`): where `.runtime/` and `graphs/` live. Code installed anywhere else
/// (a wheel in a virtual environment kept inside a checkout, `cargo install`) has none.
pub fn project_root() -> Option<PathBuf> {
    checkout_of(&own_dir()?)
}

/// The checkout whose `target/` holds `dir`.
fn checkout_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|root| {
            dir.starts_with(root.join("target"))
                && std::fs::read_to_string(root.join("Cargo.toml"))
                    .is_ok_and(|t| t.contains("name = \"distorch-vision\""))
        })
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dv-paths-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = temp_dir("write");
        let path = dir.join("out.safetensors");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(leftovers(&dir), ["out.safetensors"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_atomic_write_names_the_file_and_leaves_no_temporary() {
        let dir = temp_dir("fail");
        // The target is a non-empty folder: the rename onto it fails.
        let path = dir.join("taken");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let e = write_atomic(&path, b"x").unwrap_err();
        assert!(e.to_string().contains("taken"), "{e}");
        assert_eq!(leftovers(&dir), ["taken"]);
        let e = copy_atomic(&dir.join("missing"), &dir.join("copy")).unwrap_err();
        assert!(e.to_string().contains("copy"), "{e}");
        assert_eq!(leftovers(&dir), ["taken"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_build_folder_of_a_checkout_is_in_the_checkout() {
        let root = temp_dir("checkout");
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"distorch-vision\"\n",
        )
        .unwrap();
        let release = root.join("target/release");
        let site = root.join(".venv/lib/python3.11/site-packages/distorch_vision/lib");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::create_dir_all(&site).unwrap();
        assert_eq!(checkout_of(&release), Some(root.clone()));
        assert_eq!(checkout_of(&root.join("target")), Some(root.clone()));
        assert_eq!(checkout_of(&site), None);
        assert_eq!(checkout_of(&root), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_atomic_copy_copies_the_bytes() {
        let dir = temp_dir("copy");
        std::fs::write(dir.join("a"), b"weights").unwrap();
        copy_atomic(&dir.join("a"), &dir.join("b.safetensors")).unwrap();
        assert_eq!(
            std::fs::read(dir.join("b.safetensors")).unwrap(),
            b"weights"
        );
        assert_eq!(leftovers(&dir), ["a", "b.safetensors"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
