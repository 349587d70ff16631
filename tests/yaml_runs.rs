//! YAML run files: the shipped examples, equality with the CLI, located errors.

mod common;

use std::path::Path;

use common::*;

fn run_yaml(path: &Path) -> std::process::Output {
    run(bin().arg("run").arg(path))
}

#[test]
fn shipped_examples_run() {
    for ex in ["examples/encode_folder.yaml", "examples/multi_job.yaml"] {
        let o = run_yaml(&root().join(ex));
        assert!(o.status.success(), "{ex}: {}", stderr(&o));
    }
    let out = root().join("target/examples");
    assert!(out.join("encode_folder/index.json").is_file());
    assert!(out.join("multi/clip_stretch/image_embeds.npy").is_file());
    assert!(out.join("multi/siglip_pixels.safetensors").is_file());
}

#[test]
fn yaml_job_equals_cli_and_paths_are_relative_to_the_file() {
    let tmp = temp_dir("yaml_eq");
    let imgs = tmp.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for f in ["plain_64x48.jpg", "portrait_45x77.png", "rgba_33x50.png"] {
        std::fs::copy(root().join("tests/fixtures/images").join(f), imgs.join(f)).unwrap();
    }
    std::fs::create_dir_all(tmp.join("models")).unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("model.safetensors"),
        tmp.join("models/m.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("config.json"),
        tmp.join("models/config.json"),
    )
    .unwrap();
    std::fs::create_dir_all(tmp.join("cfg")).unwrap();
    let yaml = tmp.join("cfg/run.yaml");
    std::fs::write(
        &yaml,
        "jobs:\n  - clip_vision: ../models/m.safetensors\n    device: cpu\n    graphs_dir: ../graphs\n    inputs:\n      images: [../imgs]\n    crop: none\n    out: ../yaml.safetensors\n\
         \n  - model: ../models/m.safetensors\n    device: cpu\n    graphs_dir: ../graphs\n    inputs: {images: [../imgs]}\n    out: ../shards\n    shard_size: 2\n",
    )
    .unwrap();
    let o = run_yaml(&yaml);
    assert!(o.status.success(), "{}", stderr(&o));
    let cli = tmp.join("cli.safetensors");
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(tmp.join("models/m.safetensors"))
        .arg("--images")
        .arg(&imgs)
        .args(["--crop", "none", "--device", "cpu", "--out"])
        .arg(&cli)
        .arg("--graphs-dir")
        .arg(tmp.join("graphs")));
    assert!(o.status.success(), "{}", stderr(&o));
    let a = read_tensors(&tmp.join("yaml.safetensors"));
    let b = read_tensors(&cli);
    assert_eq!(a, b);
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("shards/index.json")).unwrap()).unwrap();
    assert_eq!(idx["rows"], 3);
    assert_eq!(idx["shards"].as_array().unwrap().len(), 2);
}

#[test]
fn errors_name_line_and_column() {
    let tmp = temp_dir("yaml_errors");
    let cases = [
        // unknown key
        (
            "clip_vision: m\ninputs:\n  images: [a.png]\nout: o\nvirtual_vram: 2\n",
            "5:1",
            "unknown field `virtual_vram`",
        ),
        // wrong type
        (
            "clip_vision: m\ninputs:\n  images: [a.png]\nout: o\neject_models: sometimes\n",
            "5:15",
            "eject_models",
        ),
        // unknown key inside inputs, in a job list
        (
            "jobs:\n  - clip_vision: m\n    inputs:\n      image: [a.png]\n    out: o\n",
            "4:7",
            "unknown field `image`",
        ),
        // missing field
        (
            "jobs:\n  - clip_vision: m\n    out: o\n",
            "2:5",
            "missing field `inputs`",
        ),
        // bad YAML
        ("clip_vision: [m\n", "", "yaml"),
    ];
    for (i, (text, loc, what)) in cases.iter().enumerate() {
        let p = tmp.join(format!("bad{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let o = run_yaml(&p);
        assert!(!o.status.success());
        let err = stderr(&o);
        let line = err.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!("error: {}:{loc}", p.display())),
            "{i}: {err}"
        );
        assert!(line.contains(what), "{i}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // Values are checked when the job runs, naming the field.
    let p = tmp.join("crop.yaml");
    std::fs::write(
        &p,
        "clip_vision: x\ninputs: {images: [a.png]}\nout: o\ncrop: middle\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&p));
    assert!(err.contains("crop: unknown value \"middle\""), "{err}");
}

#[test]
fn yaml_outputs_can_ask_for_all_hidden_states() {
    let tmp = temp_dir("yaml_all_hidden");
    let f = fixture("dinov2_gelu_f32");
    let yaml = tmp.join("run.yaml");
    std::fs::write(
        &yaml,
        format!(
            "jobs:\n  - clip_vision: {m}\n    device: cpu\n    graphs_dir: graphs\n    inputs: {{pixels: {px}}}\n    outputs: [all_hidden_states, image_embeds]\n    out: out.safetensors\n\
             \n  - clip_vision: {m}\n    device: cpu\n    graphs_dir: graphs\n    inputs: {{pixels: {px}}}\n    outputs: [all_hidden_states]\n    format: npy\n    out: npy\n",
            m = f.join("model.safetensors").display(),
            px = f.join("pixels.safetensors").display()
        ),
    )
    .unwrap();
    let o = run(bin().arg("run").arg(&yaml));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_tensors(&tmp.join("out.safetensors"));
    let mut names: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["all_hidden_states", "image_embeds"]);
    let worst = assert_close(
        &tmp.join("out.safetensors"),
        &f.join("expected.safetensors"),
        1e-4,
    );
    eprintln!("dinov2_gelu_f32 (YAML): max |diff| {worst:.2e}");
    // The .npy writer keeps the rank-4 shape [B, L, T, D].
    let npy = std::fs::read(tmp.join("npy/all_hidden_states.npy")).unwrap();
    let header = String::from_utf8_lossy(&npy[10..128]);
    assert!(header.contains("'shape': (2, 3, 17, 32)"), "{header}");
}
