//! Model folders (contract §2.5): `<comfyui>/models/clip_vision` plus every `clip_vision:` entry of
//! an `extra_model_paths.yaml`, and name resolution against them.

use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// Model file extensions found in the folders.
pub const MODEL_EXTENSIONS: [&str; 2] = ["safetensors", "sft"];

/// Where to look for models by name. `comfyui: None` falls back to the `COMFYUI_PATH`
/// environment variable; `extra_model_paths: None` to `<comfyui>/extra_model_paths.yaml`
/// when that file exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelFolders {
    pub comfyui: Option<PathBuf>,
    pub extra_model_paths: Option<PathBuf>,
}

/// One model found in a folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelEntry {
    /// Path relative to its folder, with `/`: what `clip_vision` / `--model` accepts.
    pub name: String,
    pub path: PathBuf,
    /// The folder it was found in.
    pub folder: PathBuf,
    pub bytes: u64,
    /// The family its header (and config) gives, e.g. "ViT-H/14"; None when it cannot be
    /// loaded, and `problem` says why.
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A model-file-named file that is not a vision tower (e.g. a test's `expected.safetensors`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

/// A model folder and whether it exists.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchedFolder {
    pub path: PathBuf,
    pub exists: bool,
}

/// What a listing found: the models, the files passed over, and the folders searched.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Listing {
    pub folders: Vec<SearchedFolder>,
    pub models: Vec<ModelEntry>,
    pub skipped: Vec<SkippedFile>,
}

impl Listing {
    /// `{"folders": [path, ...], "searched": [{"path", "exists"}], "models": [{"name", "path",
    /// "folder", "bytes", "family", "problem"?}], "skipped": [{"path", "reason"}]}`: what
    /// `models --json` prints and `dv_list_models` returns.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "folders": self.folders.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            "searched": self.folders,
            "models": self.models,
            "skipped": self.skipped,
        })
    }

    /// One line for a listing without models: what was searched and what was there.
    pub fn nothing_found(&self) -> String {
        if self.folders.is_empty() {
            return "no model folders configured: pass `comfyui_path=PATH` (the ComfyUI folder that holds models/), set COMFYUI_PATH, or give `extra_model_paths=FILE`".into();
        }
        let searched: Vec<String> = self
            .folders
            .iter()
            .map(|f| {
                if f.exists {
                    f.path.display().to_string()
                } else {
                    format!("{} (does not exist)", f.path.display())
                }
            })
            .collect();
        let mut msg = format!(
            "no clip_vision models found; searched {}",
            searched.join(", ")
        );
        if !self.skipped.is_empty() {
            msg.push_str(&format!(
                "; {} .safetensors/.sft file(s) there are not vision towers (e.g. {}: {})",
                self.skipped.len(),
                self.skipped[0].path.display(),
                self.skipped[0].reason
            ));
        }
        if let Some(hint) = self
            .folders
            .iter()
            .find_map(|f| misplaced_root_hint(&f.path))
        {
            msg.push_str(&format!("; {hint}"));
        }
        msg
    }
}

/// For `<root>/models/clip_vision` that does not exist: a hint when `root` itself looks like
/// the clip_vision or models folder (a common mistake with --comfyui).
fn misplaced_root_hint(folder: &Path) -> Option<String> {
    if folder.exists() || !folder.ends_with("models/clip_vision") {
        return None;
    }
    let root = folder.parent()?.parent()?;
    let name = root.file_name()?.to_string_lossy();
    let parent = if name == "clip_vision" {
        root.parent()?.parent()?
    } else if name == "models" {
        root.parent()?
    } else {
        return None;
    };
    Some(format!(
        "`comfyui_path` takes the ComfyUI folder itself: did you mean {}?",
        parent.display()
    ))
}

impl ModelFolders {
    pub fn new(comfyui: Option<PathBuf>, extra_model_paths: Option<PathBuf>) -> Self {
        ModelFolders {
            comfyui,
            extra_model_paths,
        }
    }

    fn comfyui_root(&self) -> Option<PathBuf> {
        self.comfyui.clone().or_else(|| {
            std::env::var_os("COMFYUI_PATH")
                .filter(|v| !v.is_empty())
                .map(|v| PathBuf::from(expand(&v.to_string_lossy())))
        })
    }

    /// The clip_vision folders in search order (they need not exist).
    pub fn folders(&self) -> Result<Vec<PathBuf>> {
        let comfy = self.comfyui_root();
        let yaml = match &self.extra_model_paths {
            Some(p) => {
                if !p.is_file() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("extra model paths file {} not found", p.display()),
                    ));
                }
                Some(p.clone())
            }
            None => comfy
                .as_ref()
                .map(|c| c.join("extra_model_paths.yaml"))
                .filter(|p| p.is_file()),
        };
        let (first, rest) = match &yaml {
            Some(y) => parse_extra_model_paths(y)?,
            None => (Vec::new(), Vec::new()),
        };
        if let (Some(y), true) = (&self.extra_model_paths, first.is_empty() && rest.is_empty()) {
            if comfy.is_none() {
                // Given explicitly and the only source: finding nothing is a mistake to name.
                return Err(Error::invalid(format!(
                    "{}: no section has a clip_vision entry, so no model folders are configured",
                    y.display()
                )));
            }
        }
        let mut out = first;
        if let Some(c) = comfy {
            out.push(c.join("models").join("clip_vision"));
        }
        out.extend(rest);
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(p.clone()));
        Ok(out)
    }

    /// Every model in the folders (first folder first, names sorted within a folder).
    pub fn list(&self) -> Result<Vec<ModelEntry>> {
        Ok(self.listing()?.models)
    }

    /// The models in the folders (first folder first, names sorted within a folder), the
    /// model-named files that are not vision towers, and the folders searched. Reads each
    /// file's header (and config), never its weights.
    pub fn listing(&self) -> Result<Listing> {
        let mut out = Listing::default();
        for folder in self.folders()? {
            out.folders.push(SearchedFolder {
                exists: folder.is_dir(),
                path: folder.clone(),
            });
            let mut found = Vec::new();
            walk(&folder, &folder, &mut found, 0);
            found.sort_by(|a: &ModelEntry, b| a.name.cmp(&b.name));
            for mut e in found {
                match vision_tower(&e.path) {
                    Tower::Loads(family) => {
                        e.family = Some(family);
                        out.models.push(e);
                    }
                    Tower::Broken(problem) => {
                        e.problem = Some(problem);
                        out.models.push(e);
                    }
                    Tower::Not(reason) => out.skipped.push(SkippedFile {
                        path: e.path,
                        reason,
                    }),
                }
            }
        }
        Ok(out)
    }

    /// A path that exists is used as is; otherwise `name` is looked up in the folders.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        if name.trim().is_empty() {
            return Err(Error::invalid(
                "clip_vision is empty: give a .safetensors path or a model name",
            ));
        }
        let p = Path::new(name);
        if p.exists() {
            return Ok(p.to_path_buf());
        }
        let folders = self.folders()?;
        let rel = name.replace('\\', "/");
        for f in &folders {
            let cand = f.join(&rel);
            if cand.is_file() {
                return Ok(cand);
            }
            for ext in MODEL_EXTENSIONS {
                let c = f.join(format!("{rel}.{ext}"));
                if c.is_file() {
                    return Ok(c);
                }
            }
        }
        let names: Vec<String> = self.list()?.into_iter().map(|e| e.name).collect();
        let close = close_matches(&rel, &names);
        let mut msg = format!("model {name:?} not found (no such file");
        if folders.is_empty() {
            msg.push_str(
                "; no model folders configured: pass `comfyui_path=PATH`, set COMFYUI_PATH, or give `extra_model_paths=FILE`)",
            );
        } else {
            msg.push_str(&format!(
                ", and no such name in {})",
                folders
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if close.is_empty() {
                if names.is_empty() {
                    msg.push_str("; those folders hold no models");
                } else if names.len() <= 8 {
                    msg.push_str(&format!("; available: {}", names.join(", ")));
                } else {
                    msg.push_str(&format!(
                        "; {} models are available (see `distorch-vision models`)",
                        names.len()
                    ));
                }
            } else {
                msg.push_str(&format!("; did you mean {}?", close.join(", ")));
            }
        }
        Err(Error::new(ErrorKind::NotFound, msg))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ModelEntry>, depth: usize) {
    walk_seen(root, dir, out, depth, &mut std::collections::HashSet::new());
}

/// Recursive listing; `seen` holds canonical folders already visited so symlink loops end.
fn walk_seen(
    root: &Path,
    dir: &Path,
    out: &mut Vec<ModelEntry>,
    depth: usize,
    seen: &mut std::collections::HashSet<PathBuf>,
) {
    if depth > 32 {
        return;
    }
    if !dir.canonicalize().is_ok_and(|c| seen.insert(c)) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk_seen(root, &path, out, depth + 1, seen);
        } else if meta.is_file()
            && path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| MODEL_EXTENSIONS.iter().any(|m| x.eq_ignore_ascii_case(m)))
        {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(ModelEntry {
                name,
                path: path.clone(),
                folder: root.to_path_buf(),
                bytes: meta.len(),
                family: None,
                problem: None,
            });
        }
    }
}

/// Keys whose presence (after open_clip names are mapped to Hugging Face ones) marks a
/// vision tower: the patch embedding of CLIP/SigLIP, and of DINOv2/v3 (contract §2.1b).
const VISION_TOWER_KEYS: [&str; 2] = [
    "vision_model.embeddings.patch_embedding.weight",
    "embeddings.patch_embeddings.projection.weight",
];

/// Whether a tensor name (as in the file) is a vision tower's patch embedding, in any layout.
fn is_vision_key(name: &str) -> bool {
    VISION_TOWER_KEYS.contains(&name) || name == "visual.conv1.weight"
}

/// What a model-named file is.
pub enum Tower {
    /// A vision tower that loads, with its family.
    Loads(String),
    /// A vision tower that cannot be loaded, with why.
    Broken(String),
    /// Not a vision tower (or not a safetensors file), with why.
    Not(String),
}

/// Classifies a file from its header (and config); never reads the weights.
pub fn vision_tower(path: &Path) -> Tower {
    let file = match crate::model::SafeTensors::open(path) {
        Ok(f) => f,
        // A damaged vision tower (a cut-short download) is listed with the reason; a file
        // whose header names no vision tower is passed over.
        Err(e) => {
            return match crate::model::SafeTensors::header_names(path) {
                Some(names) if !names.iter().any(|n| is_vision_key(n)) => {
                    Tower::Not(e.message().to_string())
                }
                _ => Tower::Broken(e.message().to_string()),
            }
        }
    };
    let keys = crate::model::Keys::from_file(&file);
    if !VISION_TOWER_KEYS.iter().any(|k| keys.contains(k)) {
        return Tower::Not("no vision tower keys (patch embedding) in its header".into());
    }
    drop(file);
    match crate::model::Model::open(path) {
        Ok(m) => Tower::Loads(m.config.family.clone()),
        Err(e) => Tower::Broken(e.message().to_string()),
    }
}

/// `~` and `$VAR` / `${VAR}` expanded (unknown variables are left as written).
pub fn expand(s: &str) -> String {
    let s = s.trim();
    let home = || std::env::var("HOME").unwrap_or_default();
    let s = if s == "~" {
        home()
    } else if let Some(rest) = s.strip_prefix("~/") {
        format!("{}/{rest}", home())
    } else {
        s.to_string()
    };
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, end) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(j) => (&s[i + 2..i + 2 + j], i + 3 + j),
                    None => ("", i + 1),
                }
            } else {
                let j = s[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(s.len(), |j| i + 1 + j);
                (&s[i + 1..j], j)
            };
            match (!name.is_empty())
                .then(|| std::env::var(name).ok())
                .flatten()
            {
                Some(v) => {
                    out.push_str(&v);
                    i = end;
                    continue;
                }
                None => {
                    if name.is_empty() {
                        out.push('$');
                        i += 1;
                    } else {
                        out.push_str(&s[i..end]);
                        i = end;
                    }
                    continue;
                }
            }
        }
        let c = s[i..].chars().next().unwrap_or('\0');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The clip_vision folders of an `extra_model_paths.yaml`: (`is_default` sections, others).
pub fn parse_extra_model_paths(path: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e)))?;
    let yaml_dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let yaml_dir = std::fs::canonicalize(&yaml_dir).unwrap_or(yaml_dir);
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    let serde_yaml::Value::Mapping(top) = doc else {
        if doc.is_null() {
            return Ok((first, rest));
        }
        return Err(Error::invalid(format!(
            "{}: expected a mapping of sections at the top level",
            path.display()
        )));
    };
    for (section, body) in top {
        // ComfyUI skips empty sections and fails on any other non-mapping one; skipping
        // those too would hide a mistyped file (e.g. `clip_vision:` at the top level).
        let body = match body {
            serde_yaml::Value::Mapping(body) => body,
            serde_yaml::Value::Null => continue,
            other => {
                return Err(Error::invalid(format!(
                    "{}: section {}: expected a mapping of model types to folders (e.g. \
                     `comfyui:` with `base_path:` and `clip_vision:` indented under it), found {}",
                    path.display(),
                    serde_yaml::to_string(&section).unwrap_or_default().trim(),
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                )))
            }
        };
        let get = |k: &str| body.get(serde_yaml::Value::String(k.into()));
        let base = get("base_path").and_then(|v| v.as_str()).map(|b| {
            let b = PathBuf::from(expand(b));
            if b.is_absolute() {
                b
            } else {
                yaml_dir.join(b)
            }
        });
        let is_default = get("is_default").and_then(|v| v.as_bool()).unwrap_or(false);
        let Some(entry) = get("clip_vision") else {
            continue;
        };
        let Some(entry) = entry.as_str() else {
            return Err(Error::invalid(format!(
                "{}: section {:?}: clip_vision must be a string (one path per line)",
                path.display(),
                section.as_str().unwrap_or("?")
            )));
        };
        for line in entry.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let p = PathBuf::from(expand(line));
            let full = match &base {
                Some(b) if !p.is_absolute() => b.join(p),
                None if !p.is_absolute() => yaml_dir.join(p),
                _ => p,
            };
            if is_default {
                first.push(full);
            } else {
                rest.push(full);
            }
        }
    }
    Ok((first, rest))
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Names close to `name` (by edit distance, or one containing the other), best first, at most 5.
pub fn close_matches(name: &str, names: &[String]) -> Vec<String> {
    let strip = |s: &str| {
        let l = s.to_lowercase();
        MODEL_EXTENSIONS
            .iter()
            .find_map(|e| l.strip_suffix(&format!(".{e}")).map(str::to_string))
            .unwrap_or(l)
    };
    let q = strip(name);
    let q_base = q.rsplit('/').next().unwrap_or(&q).to_string();
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|n| {
            let c = strip(n);
            let base = c.rsplit('/').next().unwrap_or(&c).to_string();
            let d = edit_distance(&q, &c)
                .min(edit_distance(&q, &base))
                .min(edit_distance(&q_base, &base));
            let limit = (q.chars().count() / 3).max(2);
            if d <= limit {
                Some((d, n))
            } else if !q.is_empty() && (c.contains(&q) || q.contains(&base)) {
                Some((limit + 1, n))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_matches() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let names = vec![
            "clip_vision_h.safetensors".to_string(),
            "sub/siglip.sft".to_string(),
            "other.safetensors".to_string(),
        ];
        assert_eq!(
            close_matches("clip_vison_h", &names),
            vec![names[0].clone()]
        );
        assert_eq!(close_matches("siglip", &names), vec![names[1].clone()]);
    }

    #[test]
    fn expands_variables() {
        std::env::set_var("DV_TEST_VAR", "abc");
        assert_eq!(expand("$DV_TEST_VAR/x/${DV_TEST_VAR}"), "abc/x/abc");
        assert_eq!(expand("$DV_NOPE_NOT_SET/x"), "$DV_NOPE_NOT_SET/x");
    }
}
