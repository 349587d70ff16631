//! Command-line style inputs (files, folders and file lists) to an ordered list of image files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::paths::{path_text, source_key};
use crate::{Error, Result};

/// File extensions (lower case, no dot) taken from folders.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// Extensions (lower case, no dot) of a file list: one image path a line, relative to the
/// list's folder; blank lines and lines starting with `#` are ignored (as the Ray front end
/// reads them).
pub const LIST_EXTENSIONS: [&str; 3] = ["txt", "lst", "list"];

/// Whether a path has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_path(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS)
}

/// Whether a path has one of [`LIST_EXTENSIONS`] (case-insensitive).
pub fn is_list_path(path: &Path) -> bool {
    has_extension(path, &LIST_EXTENSIONS)
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Files are kept in the order given (whatever their extension), file lists (see
/// [`LIST_EXTENSIONS`]) give their lines in order; folders are expanded recursively to their
/// image files, sorted by path (byte order). A file reached twice (given twice, or also through
/// a folder or list, however spelled) is kept once, at its first place, with a warning. A path
/// that does not exist is a `NotFound` error naming it.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            let mut seen = HashSet::new();
            walk(p, &mut found, &mut seen)?;
            found.sort_by(|a, b| {
                a.as_os_str()
                    .as_encoded_bytes()
                    .cmp(b.as_os_str().as_encoded_bytes())
            });
            out.extend(found);
        } else if is_list_path(p) {
            out.extend(read_list(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(once_each(out))
}

/// [`expand_inputs`], refusing inputs that hold no image file at all.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = expand_inputs(paths)?;
    if files.is_empty() {
        return Err(no_images_in(paths));
    }
    Ok(files)
}

/// The error when `inputs` name no image file at all.
pub fn no_images_in(inputs: &[PathBuf]) -> Error {
    let names: Vec<String> = inputs.iter().map(|p| path_text(p)).collect();
    Error::invalid(format!(
        "no image files found in {} (folders are searched for .{}; a .txt file lists one image path a line)",
        if names.is_empty() {
            "the inputs (none given)".to_string()
        } else {
            names.join(", ")
        },
        IMAGE_EXTENSIONS.join(", .")
    ))
}

/// The lines of a file list as paths (relative ones against the list's folder).
fn read_list(list: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    let base = list.parent().unwrap_or(Path::new(""));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| base.join(l))
        .collect())
}

/// Each file once, at its first place (compared by canonical path).
fn once_each(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = HashSet::with_capacity(files.len());
    let mut dropped = 0usize;
    let mut first_dup = None;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        if seen.insert(source_key(&f)) {
            out.push(f);
        } else {
            dropped += 1;
            first_dup.get_or_insert_with(|| path_text(&f));
        }
    }
    if let Some(first) = first_dup {
        tracing::warn!(
            "{dropped} input{} given more than once ({first}{}); each image is encoded once",
            if dropped == 1 { " was" } else { "s were" },
            if dropped > 1 { ", ..." } else { "" }
        );
    }
    out
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    // Symlinked folders are followed once each, so a link cycle cannot loop forever.
    let canon = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(canon) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        // Follow symlinks; a dangling one is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, found, seen)?;
        } else if meta.is_file() && is_image_path(&path) {
            found.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_folders_and_repeats() {
        let d = std::env::temp_dir().join(format!("dv-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("imgs")).unwrap();
        for n in ["a.png", "b.jpg"] {
            std::fs::write(d.join("imgs").join(n), b"x").unwrap();
        }
        std::fs::write(
            d.join("list.txt"),
            "# two images\nimgs/b.jpg\n\n  imgs/a.png  \nimgs/./b.jpg\n",
        )
        .unwrap();
        let got = expand_inputs(&[d.join("list.txt"), d.join("imgs")]).unwrap();
        assert_eq!(got, vec![d.join("imgs/b.jpg"), d.join("imgs/a.png")]);
        std::fs::create_dir_all(d.join("empty")).unwrap();
        let e = input_files(&[d.join("empty")]).unwrap_err();
        assert!(e.message().contains("no image files found in"), "{e}");
        assert!(e.message().contains(".png"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
