//! Model names resolved against model folders (contract §2.5): `--comfyui`, `COMFYUI_PATH`,
//! `extra_model_paths.yaml` with `base_path`, `~`, env vars, `|` lists and `is_default`.

use std::path::Path;

use crate::common::*;

fn place(dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let f = fixture("clip_quickgelu_f32");
    std::fs::copy(f.join("model.safetensors"), dst).unwrap();
    // The tiny fixture needs its config.json beside it.
    std::fs::copy(f.join("config.json"), dst.with_file_name("config.json")).unwrap();
}

fn models_json(cmd: &mut std::process::Command) -> serde_json::Value {
    let o = run(cmd.args(["models", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn comfyui_folder_lists_and_resolves_names() {
    let tmp = temp_dir("folders_comfy");
    let comfy = tmp.join("ComfyUI");
    let cv = comfy.join("models/clip_vision");
    place(&cv.join("clip_vision_g.safetensors"));
    place(&cv.join("sub/dir/tiny.sft"));
    std::fs::write(cv.join("readme.txt"), "x").unwrap();
    let v = models_json(bin().arg("--comfyui").arg(&comfy));
    assert_eq!(names(&v), ["clip_vision_g.safetensors", "sub/dir/tiny.sft"]);

    // By flag, and by COMFYUI_PATH; with or without the extension.
    for name in ["sub/dir/tiny.sft", "sub/dir/tiny", "clip_vision_g"] {
        let o = run(bin()
            .args(["inspect", "--json", "--model", name, "--comfyui"])
            .arg(&comfy));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let o = run(bin()
            .env("COMFYUI_PATH", &comfy)
            .args(["plan", "--model", name, "--device", "cpu"]));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    // An unknown name lists close matches.
    let o = run(bin()
        .args(["inspect", "--model", "clip_vison_g", "--comfyui"])
        .arg(&comfy));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("error: model \"clip_vison_g\" not found"),
        "{err}"
    );
    assert!(
        err.contains("did you mean clip_vision_g.safetensors"),
        "{err}"
    );
    let o = run(bin()
        .args(["inspect", "--model", "tiny", "--comfyui"])
        .arg(&comfy));
    assert!(stderr(&o).contains("sub/dir/tiny.sft"), "{}", stderr(&o));
    // A path still wins over the folders.
    let o = run(bin()
        .args(["inspect", "--model"])
        .arg(fixture("siglip_f32").join("model.safetensors"))
        .arg("--comfyui")
        .arg(&comfy));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn extra_model_paths_yaml_base_path_home_env_and_block_lists() {
    let tmp = temp_dir("folders_extra");
    let home = tmp.join("home");
    let comfy = tmp.join("ComfyUI");
    place(&comfy.join("models/clip_vision/own.safetensors"));
    // Section a: relative base_path, `|` list of two folders.
    place(&tmp.join("cfg/rel_base/vision1/a1.safetensors"));
    place(&tmp.join("cfg/rel_base/vision2/a2.sft"));
    // Section b: `~` base path, is_default (searched first).
    place(&home.join("models/clip/b.safetensors"));
    // Section c: no base path, an env var.
    place(&tmp.join("env_dir/cv/c.safetensors"));
    let yaml = tmp.join("cfg/extra_model_paths.yaml");
    std::fs::write(
        &yaml,
        "a1111:\n  base_path: rel_base\n  clip_vision: |\n    vision1\n    vision2\n  checkpoints: models/Stable-diffusion\n\
         mine:\n  base_path: ~/models\n  is_default: true\n  clip_vision: clip\n\
         other:\n  clip_vision: ${DV_TEST_ROOT}/env_dir/cv\n",
    )
    .unwrap();
    let v = models_json(
        bin()
            .env("HOME", &home)
            .env("DV_TEST_ROOT", &tmp)
            .arg("--comfyui")
            .arg(&comfy)
            .arg("--extra-model-paths")
            .arg(&yaml),
    );
    assert_eq!(
        names(&v),
        [
            "b.safetensors",
            "own.safetensors",
            "a1.safetensors",
            "a2.sft",
            "c.safetensors"
        ]
    );
    let folders: Vec<String> = v["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(folders[0], home.join("models/clip").display().to_string());
    assert!(folders[2].ends_with("cfg/rel_base/vision1"), "{folders:?}");
    for name in ["a2", "b", "c.safetensors", "own"] {
        let o = run(bin()
            .env("HOME", &home)
            .env("DV_TEST_ROOT", &tmp)
            .args(["inspect", "--model", name, "--comfyui"])
            .arg(&comfy)
            .arg("--extra-model-paths")
            .arg(&yaml));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    // Found as <comfyui>/extra_model_paths.yaml when not given.
    std::fs::copy(&yaml, comfy.join("extra_model_paths.yaml")).unwrap();
    place(&comfy.join("rel_base/vision1/in_comfy.safetensors"));
    let v = models_json(
        bin()
            .env("HOME", &home)
            .env("DV_TEST_ROOT", &tmp)
            .arg("--comfyui")
            .arg(&comfy),
    );
    assert!(
        names(&v).contains(&"in_comfy.safetensors".to_string()),
        "{v}"
    );
}

#[test]
fn library_resolution_by_path_and_by_name() {
    // A path resolves as it is, with or without folders; a name in the folders' models.
    let p = fixture("clip_quickgelu_f32").join("model.safetensors");
    let none = distorch_vision::model::folders::ModelFolders::new(None, None);
    assert_eq!(none.resolve(&p.display().to_string()).unwrap(), p);
    let tmp = temp_dir("folders_lib");
    place(&tmp.join("models/clip_vision/x/y.safetensors"));
    let folders = distorch_vision::model::folders::ModelFolders::new(Some(tmp.clone()), None);
    let got = folders.resolve("x/y").unwrap();
    assert_eq!(got, tmp.join("models/clip_vision/x/y.safetensors"));
    let o = distorch_vision::loader::LoadOptions {
        clip_vision: "x/y.safetensors".into(),
        model_folders: folders,
        ..Default::default()
    };
    assert!(o.model_folders.resolve(&o.clip_vision).is_ok());
}

#[test]
fn symlink_loops_in_model_folders_end() {
    let tmp = temp_dir("folders_loop");
    let comfy = tmp.join("ComfyUI");
    let cv = comfy.join("models/clip_vision");
    place(&cv.join("real/model.safetensors"));
    for link in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", cv.join(link)).unwrap();
    }
    let o = run(std::process::Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_distorch-vision"))
        .arg("--comfyui")
        .arg(&comfy)
        .args(["models", "--json"]));
    assert_ne!(o.status.code(), Some(124), "listing looped");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        names(&v).contains(&"real/model.safetensors".to_string()),
        "{v}"
    );
    // An unknown name (which lists every model for suggestions) ends too.
    let o = run(std::process::Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_distorch-vision"))
        .args(["inspect", "--model", "nothing-like-it", "--comfyui"])
        .arg(&comfy));
    assert_ne!(o.status.code(), Some(124), "resolution looped");
    assert!(!o.status.success());
}

/// Encodes `name` (looked up in `comfy`) on the CPU from the fixture's pixels into `out`.
fn encode_named(comfy: &Path, name: &str, fixture_name: &str, graphs: &Path, out: &Path) {
    let o = run(bin()
        .args(["encode", "--device", "cpu", "--model", name, "--comfyui"])
        .arg(comfy)
        .arg("--pixels")
        .arg(fixture(fixture_name).join("pixels.safetensors"))
        .arg("--out")
        .arg(out)
        .arg("--graphs-dir")
        .arg(graphs));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    assert_close(
        out,
        &fixture(fixture_name).join("expected.safetensors"),
        1e-4,
    );
}

#[test]
fn symlinked_models_encode_and_broken_cached_exports_are_rebuilt() {
    let tmp = temp_dir("folders_symlinks");
    let store = tmp.join("store");
    place(&store.join("model.safetensors"));
    let cv = tmp.join("ComfyUI/models/clip_vision");
    std::fs::create_dir_all(&cv).unwrap();
    // A symlinked folder, and a (relative) symlinked file with its own config beside it.
    std::os::unix::fs::symlink(&store, cv.join("linked")).unwrap();
    std::os::unix::fs::symlink(
        "../../../store/model.safetensors",
        cv.join("tiny.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("config.json"),
        cv.join("tiny.config.json"),
    )
    .unwrap();
    let comfy = tmp.join("ComfyUI");
    let graphs = tmp.join("graphs");
    encode_named(
        &comfy,
        "linked/model",
        "clip_quickgelu_f32",
        &graphs,
        &tmp.join("a.st"),
    );
    encode_named(
        &comfy,
        "tiny",
        "clip_quickgelu_f32",
        &graphs,
        &tmp.join("b.st"),
    );

    // An export cached by an older version holds a hard link to the symlink itself: it is
    // detected and rebuilt rather than handed to ONNX Runtime.
    let export = std::fs::read_dir(&graphs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tiny-")
        })
        .expect("the export of tiny");
    let weights = export.join("weights.safetensors");
    assert!(std::fs::symlink_metadata(&weights).unwrap().is_file());
    std::fs::remove_file(&weights).unwrap();
    std::fs::hard_link(cv.join("tiny.safetensors"), &weights).unwrap();
    assert!(std::fs::symlink_metadata(&weights).unwrap().is_symlink());
    encode_named(
        &comfy,
        "tiny",
        "clip_quickgelu_f32",
        &graphs,
        &tmp.join("c.st"),
    );
    assert!(std::fs::symlink_metadata(&weights).unwrap().is_file());
}

/// A sparse stock ViT-L/14 f16 file (only the header takes disk space): the key table's shapes.
fn vit_l(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_sparse_safetensors(path, &clip_tensors(1024, 24, 4096, 257, 768));
}

fn inspect_json(comfy: &Path, name: &str) -> (serde_json::Value, String) {
    let o = run(bin()
        .args(["inspect", "--json", "--model", name, "--comfyui"])
        .arg(comfy));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    (serde_json::from_slice(&o.stdout).unwrap(), stderr(&o))
}

#[test]
fn per_model_sidecars_and_a_folder_config_that_fits_only_some_files() {
    let tmp = temp_dir("folders_sidecar");
    let comfy = tmp.join("ComfyUI");
    let cv = comfy.join("models/clip_vision");
    // A flat folder: a stock ViT-L beside a custom model whose config.json is folder-wide.
    place(&cv.join("custom.safetensors"));
    vit_l(&cv.join("vit-l.safetensors"));
    let (v, err) = inspect_json(&comfy, "vit-l");
    assert_eq!(v["family"], "ViT-L/14", "{v}");
    assert_eq!(v["config"]["source"], "key table");
    assert!(
        err.contains("config.json")
            && err.contains("not used")
            && err.contains("vit-l.config.json"),
        "{err}"
    );
    let o = run(bin()
        .args(["plan", "--device", "cpu", "--model", "vit-l", "--comfyui"])
        .arg(&comfy));
    assert!(o.status.success(), "{}", stderr(&o));
    // The custom model still gets the folder's config.json, silently.
    let (v, err) = inspect_json(&comfy, "custom");
    assert_eq!(v["config"]["source"], "config.json", "{v}");
    assert_eq!(v["config"]["hidden_size"], 32);
    assert!(!err.contains("not used"), "{err}");
    let graphs = tmp.join("graphs");
    encode_named(
        &comfy,
        "custom",
        "clip_quickgelu_f32",
        &graphs,
        &tmp.join("a.st"),
    );

    // Per-model sidecars: <name>.json and <name>.config.json win over the folder's file.
    for (name, sidecar, fx) in [
        ("sig", "sig.json", "siglip_f32"),
        ("gelu", "gelu.config.json", "clip_gelu_f16"),
    ] {
        std::fs::copy(
            fixture(fx).join("model.safetensors"),
            cv.join(format!("{name}.safetensors")),
        )
        .unwrap();
        std::fs::copy(fixture(fx).join("config.json"), cv.join(sidecar)).unwrap();
        let (v, err) = inspect_json(&comfy, name);
        assert_eq!(v["config"]["source"], sidecar, "{v}");
        assert!(!err.contains("not used"), "{err}");
        encode_named(&comfy, name, fx, &graphs, &tmp.join(format!("{name}.st")));
    }
    // A sidecar names this one file: its mistakes are errors, never skipped.
    std::fs::write(cv.join("gelu.config.json"), r#"{"hidden_size": 48}"#).unwrap();
    let o = run(bin()
        .args(["inspect", "--model", "gelu", "--comfyui"])
        .arg(&comfy));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gelu.config.json"), "{}", stderr(&o));

    // A folder config.json that fits nothing, beside a file no family matches: both reasons.
    std::fs::write(
        cv.join("config.json"),
        r#"{"model_type":"clip_vision_model","hidden_size":64,"num_attention_heads":4}"#,
    )
    .unwrap();
    let o = run(bin()
        .args(["inspect", "--model", "custom", "--comfyui"])
        .arg(&comfy));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("config.json") && err.contains("no known CLIP Vision family"),
        "{err}"
    );
}

#[test]
fn models_lists_only_vision_towers_with_their_family() {
    let tmp = temp_dir("folders_towers");
    let comfy = tmp.join("ComfyUI");
    let cv = comfy.join("models/clip_vision");
    place(&cv.join("clip_l.safetensors"));
    // A test's reference outputs and pixels beside it: safetensors, but no vision tower.
    for f in ["expected.safetensors", "pixels.safetensors"] {
        std::fs::copy(fixture("clip_quickgelu_f32").join(f), cv.join(f)).unwrap();
    }
    let sig = cv.join("sig");
    std::fs::create_dir_all(&sig).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture("siglip_f32").join(f), sig.join(f)).unwrap();
    }
    // A vision tower that cannot load (too small for the key table, no config.json beside
    // it) is listed, with the reason instead of a family.
    std::fs::create_dir_all(cv.join("nocfg")).unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("model.safetensors"),
        cv.join("nocfg/tiny.safetensors"),
    )
    .unwrap();
    // A vision tower cut short (an interrupted download): listed with the reason too.
    let whole = std::fs::read(fixture("siglip_f32").join("model.safetensors")).unwrap();
    std::fs::create_dir_all(cv.join("partial")).unwrap();
    std::fs::write(
        cv.join("partial/model.safetensors"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let v = models_json(bin().arg("--comfyui").arg(&comfy));
    assert_eq!(
        names(&v),
        [
            "clip_l.safetensors",
            "nocfg/tiny.safetensors",
            "partial/model.safetensors",
            "sig/model.safetensors"
        ]
    );
    for m in v["models"].as_array().unwrap() {
        if m["name"] == "partial/model.safetensors" {
            assert!(m["family"].is_null(), "{m}");
            assert!(
                m["problem"]
                    .as_str()
                    .is_some_and(|p| p.contains("not a valid safetensors file")),
                "{m}"
            );
        } else if m["name"] == "nocfg/tiny.safetensors" {
            assert!(m["family"].is_null(), "{m}");
            assert!(m["problem"].as_str().is_some_and(|p| !p.is_empty()), "{m}");
        } else {
            assert!(m["family"].as_str().is_some_and(|f| !f.is_empty()), "{m}");
            assert!(m.get("problem").is_none(), "{m}");
        }
    }
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{v}");
    assert!(skipped.iter().any(|p| p.ends_with("expected.safetensors")));
    // The table shows the family; the files left out are counted on stderr.
    let o = run(bin().arg("--comfyui").arg(&comfy).arg("models"));
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(!table.contains("expected.safetensors"), "{table}");
    assert!(table.contains("sig/model.safetensors"), "{table}");
    assert!(stderr(&o).contains("2 other"), "{}", stderr(&o));
    // A name past the usual width keeps every row's size and path in line.
    place(&cv.join("a_long_folder_name/clip_vision_with_a_name_past_48_chars.safetensors"));
    let o = run(bin().arg("--comfyui").arg(&comfy).arg("models"));
    let table = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(rows.len(), 5, "{table}");
    let path_col: Vec<usize> = rows
        .iter()
        .map(|l| l.find(&*cv.to_string_lossy()).unwrap())
        .collect();
    assert!(path_col.iter().all(|&c| c == path_col[0]), "{table}");
}

#[test]
fn models_that_finds_nothing_says_what_was_searched() {
    let tmp = temp_dir("folders_nothing");
    let comfy = tmp.join("NotComfy");
    std::fs::create_dir_all(&comfy).unwrap();
    let o = run(bin().arg("--comfyui").arg(&comfy).arg("models"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: no clip_vision models found"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{} (does not exist)",
            comfy.join("models/clip_vision").display()
        )),
        "{err}"
    );
    // Pointing --comfyui at the models folder itself gets a hint.
    let models = tmp.join("C/models");
    place(&models.join("clip_vision/m.safetensors"));
    let o = run(bin().arg("--comfyui").arg(&models).arg("models"));
    assert!(
        stderr(&o).contains(&format!("did you mean {}?", tmp.join("C").display())),
        "{}",
        stderr(&o)
    );
    // Under --json the error is one object on stdout.
    let o = run(bin()
        .arg("--comfyui")
        .arg(&comfy)
        .args(["models", "--json"]));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    // A folder that exists but holds no vision tower says so too.
    let empty = tmp.join("E/models/clip_vision");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("expected.safetensors"),
        empty.join("expected.safetensors"),
    )
    .unwrap();
    let o = run(bin().arg("--comfyui").arg(tmp.join("E")).arg("models"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 .safetensors/.sft file(s) there are not vision towers"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_malformed_extra_model_paths_file_is_an_error_naming_it() {
    let tmp = temp_dir("folders_malformed");
    for (file, text, fragment) in [
        (
            "flat.yaml",
            "clip_vision: /models/cv\n",
            "section clip_vision",
        ),
        ("list.yaml", "comfyui: [a, b]\n", "section comfyui"),
        (
            "syntax.yaml",
            "comfyui:\n  base_path: /x\n   clip_vision: [oops\n",
            "line 3",
        ),
        (
            "none.yaml",
            "comfyui:\n  checkpoints: models/sd\n",
            "no section has a clip_vision",
        ),
    ] {
        let yaml = tmp.join(file);
        std::fs::write(&yaml, text).unwrap();
        let o = run(bin()
            .env_remove("COMFYUI_PATH")
            .args(["models", "--extra-model-paths"])
            .arg(&yaml));
        let err = stderr(&o);
        assert!(!o.status.success(), "{file}: {err}");
        assert!(
            err.contains(file) && err.contains(fragment),
            "{file}: {err}"
        );
        let folders = distorch_vision::model::folders::ModelFolders::new(None, Some(yaml.clone()));
        let e = folders.listing().unwrap_err().to_string();
        assert!(e.contains(file) && e.contains(fragment), "{file}: {e}");
    }
}
