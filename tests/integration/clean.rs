//! `distorch-vision clean`: exported graphs hard-link the model, so a deleted model's export
//! holds its weights alone; `clean` lists exports and removes those of a model, of deleted
//! models, or all, and nothing else in the graphs folder.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// The quick CLIP fixture copied to `dir/<name>.safetensors` (with its config.json).
fn model_copy(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let src = fixture("clip_quickgelu_f32");
    std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
    let m = d.join(format!("{name}.safetensors"));
    std::fs::copy(src.join("model.safetensors"), &m).unwrap();
    m
}

fn clean(graphs: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let o = run(bin()
        .args(["clean", "--json", "--graphs-dir"])
        .arg(graphs)
        .args(extra));
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

#[test]
fn clean_lists_exports_and_removes_only_what_is_asked() {
    let tmp = temp_dir("clean_exports");
    let graphs = tmp.join("graphs");
    let a = model_copy(&tmp, "alpha");
    let b = model_copy(&tmp, "beta");
    for m in [&a, &b] {
        let o = run(bin()
            .args(["export", "--model"])
            .arg(m)
            .arg("--graphs-dir")
            .arg(&graphs));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Something of the user's in the graphs folder is never touched.
    std::fs::create_dir_all(graphs.join("mine")).unwrap();
    std::fs::write(graphs.join("mine/notes.txt"), b"keep").unwrap();

    // Listing only: both exports, weights shared with the model files.
    let (o, v) = clean(&graphs, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let exports = v["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 2, "{v}");
    assert!(exports
        .iter()
        .all(|e| e["weights_shared"] == true && e["model_exists"] == true));
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);
    let text = run(bin().arg("clean").arg("--graphs-dir").arg(&graphs));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("nothing removed: pass --model M"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // The model is deleted: its export now holds the weights alone.
    let a_export = exports
        .iter()
        .find(|e| e["model"].as_str().unwrap().ends_with("alpha.safetensors"))
        .unwrap()["dir"]
        .as_str()
        .unwrap()
        .to_string();
    let weights = Path::new(&a_export).join("weights.safetensors");
    assert_eq!(std::fs::metadata(&weights).unwrap().nlink(), 2);
    std::fs::remove_file(&a).unwrap();
    assert_eq!(std::fs::metadata(&weights).unwrap().nlink(), 1);
    let (_, v) = clean(&graphs, &[]);
    let gone = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dir"] == a_export.as_str())
        .unwrap()
        .clone();
    assert_eq!(gone["model_exists"], false);
    assert_eq!(gone["weights_shared"], false);

    // Named by its file name (the file is gone), only its export goes, with the space.
    let (o, v) = clean(&graphs, &["--model", "alpha.safetensors"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    let size = std::fs::metadata(&b).unwrap().len();
    assert!(v["freed_bytes"].as_u64().unwrap() > size, "{v}");
    assert!(!Path::new(&a_export).exists());
    let (_, v) = clean(&graphs, &[]);
    assert_eq!(v["exports"].as_array().unwrap().len(), 1);

    // A model with no export is an error naming what is there.
    let o = run(bin()
        .args(["clean", "--model", "gamma.safetensors", "--graphs-dir"])
        .arg(&graphs));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no export of \"gamma.safetensors\"")
            && stderr(&o).contains("beta.safetensors"),
        "{}",
        stderr(&o)
    );
    // An existing model given by path; then --all leaves the user's folder alone.
    let (o, v) = clean(&graphs, &["--model", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert!(b.is_file(), "the model itself is never removed");
    let (o, _) = clean(&graphs, &["--all"]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(graphs.join("mine/notes.txt")).unwrap(),
        b"keep"
    );
}
