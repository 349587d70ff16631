//! YAML run files: the shipped examples, equality with the CLI, located errors.

use std::path::Path;

use crate::common::*;

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
    assert!(out.join("multi/siglip_mlas.safetensors").is_file());
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
            "unknown key `virtual_vram`; did you mean `virtual_vram_gb`?",
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
            "unknown key `image`; did you mean `images`? (valid keys here: images, pixels)",
        ),
        // missing field
        (
            "jobs:\n  - clip_vision: m\n    out: o\n",
            "2:5",
            "missing key `inputs`",
        ),
        // Rust type names never show: a whole number, a number
        (
            "clip_vision: m\ninputs: {images: [a.png]}\nout: o\nbatch_size: many\n",
            "4:13",
            "invalid type: string \"many\", expected a whole number",
        ),
        (
            "clip_vision: m\ninputs: {images: [a.png]}\nout: o\nvirtual_vram_gb: lots\n",
            "4:18",
            "expected a number",
        ),
        // The model given twice under its two names
        (
            "model: m\nclip_vision: m\ninputs: {images: [a.png]}\nout: o\n",
            "1:1",
            "`model`, `clip_vision` and `clip_name` are the same field (the model); give it once",
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
    // A bad typed value is refused when the file is read, naming the field and its valid choices.
    let p = tmp.join("crop.yaml");
    std::fs::write(
        &p,
        "clip_vision: x\ninputs: {images: [a.png]}\nout: o\ncrop: middle\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&p));
    assert!(err.contains("crop: unknown value \"middle\""), "{err}");
    // So is a CPU engine, with the valid ones.
    let p = tmp.join("engine.yaml");
    std::fs::write(
        &p,
        "clip_vision: x\ninputs: {images: [a.png]}\nout: o\ncpu_engine: tbb\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&p));
    assert!(
        err.contains(":4:") && err.contains("\"tbb\"") && err.contains("\"openvino\""),
        "{err}"
    );
}

/// A ComfyUI tree with one model (`clip_l.safetensors`) and a folder of two images.
fn comfy_and_images(tmp: &Path) {
    let cv = tmp.join("ComfyUI/models/clip_vision");
    std::fs::create_dir_all(&cv).unwrap();
    for (from, to) in [
        ("model.safetensors", "clip_l.safetensors"),
        ("config.json", "config.json"),
    ] {
        std::fs::copy(fixture("clip_quickgelu_f32").join(from), cv.join(to)).unwrap();
    }
    std::fs::create_dir_all(tmp.join("imgs")).unwrap();
    for f in ["plain_64x48.jpg", "portrait_45x77.png"] {
        std::fs::copy(
            root().join("tests/fixtures/images").join(f),
            tmp.join("imgs").join(f),
        )
        .unwrap();
    }
}

#[test]
fn every_job_is_checked_before_the_first_runs() {
    let tmp = temp_dir("yaml_precheck");
    comfy_and_images(&tmp);
    let yaml = tmp.join("run.yaml");
    std::fs::write(
        &yaml,
        "jobs:\n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    out: first.safetensors\n\
         \n  - name: typo\n    clip_vision: clip_k\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [imgs]}\n    out: second.safetensors\n\
         \n  - name: bad outputs\n    clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [imgs]}\n    outputs: [image_embedz]\n    out: third.safetensors\n",
    )
    .unwrap();
    let o = run_yaml(&yaml);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("2 of 3 jobs have errors, so none was run"),
        "{err}"
    );
    // The unknown model gets the CLI's suggestions.
    assert!(
        err.contains("typo: model \"clip_k\" not found")
            && err.contains("did you mean clip_l.safetensors?"),
        "{err}"
    );
    assert!(
        err.contains("bad outputs: unknown output \"image_embedz\""),
        "{err}"
    );
    assert!(
        !tmp.join("first.safetensors").exists(),
        "job 1 ran before the others were checked"
    );
    // A missing input is found before anything runs as well.
    std::fs::write(
        &yaml,
        "jobs:\n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    out: first.safetensors\n\
         \n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [no_such_folder]}\n    out: second.safetensors\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&yaml));
    assert!(
        err.contains("job 2: input") && err.contains("no_such_folder does not exist"),
        "{err}"
    );
    assert!(!tmp.join("first.safetensors").exists());
    // So is a folder without a single image (sharded: it would write an index and exit 0).
    std::fs::create_dir_all(tmp.join("empty")).unwrap();
    std::fs::write(
        &yaml,
        "jobs:\n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    out: first.safetensors\n\
         \n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [empty]}\n    out: shards\n    shard_size: 8\n",
    )
    .unwrap();
    let o = run_yaml(&yaml);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("job 2: no image files found in") && err.contains("empty"),
        "{err}"
    );
    assert!(!tmp.join("first.safetensors").exists());
    assert!(!tmp.join("shards").exists());
    // And an out named for another format (it would be safetensors under a .npz name).
    std::fs::write(
        &yaml,
        "jobs:\n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    out: first.safetensors\n\
         \n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [imgs]}\n    out: emb.npz\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&yaml));
    assert!(
        err.contains("job 2: `out` emb.npz names a .npz file") && err.contains(".safetensors"),
        "{err}"
    );
    assert!(!tmp.join("first.safetensors").exists());
}

#[test]
fn run_json_summarises_each_job() {
    let tmp = temp_dir("yaml_json");
    comfy_and_images(&tmp);
    let yaml = tmp.join("run.yaml");
    std::fs::write(
        &yaml,
        "jobs:\n  - name: one\n    clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    outputs: [image_embeds]\n    out: one.safetensors\n\
         \n  - clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    graphs_dir: graphs\n    inputs: {images: [imgs]}\n    out: shards\n    shard_size: 1\n",
    )
    .unwrap();
    let o = run(bin().arg("run").arg(&yaml).arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{v}");
    assert_eq!(jobs[0]["job"], "one");
    assert_eq!(jobs[0]["encoded"], 2);
    assert_eq!(jobs[0]["outputs"][0]["name"], "image_embeds");
    assert_eq!(jobs[0]["outputs"][0]["shape"][0], 2);
    assert_eq!(jobs[1]["job"], "job 2");
    assert_eq!(jobs[1]["encoded"], 2);
    assert_eq!(jobs[1]["shards_written"], 2);
    assert!(jobs[1]["skipped"].as_array().unwrap().is_empty());
    // A failing run under --json: one error object on stdout, non-zero exit.
    let o = run(bin().arg("run").arg(tmp.join("missing.yaml")).arg("--json"));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
}

#[test]
fn jobs_share_a_loaded_model_only_when_every_loader_option_matches() {
    let tmp = temp_dir("yaml_cache_key");
    let f = fixture("clip_quickgelu_f32");
    let job = |out: &str, extra: &str| {
        format!(
            "  - clip_name: {}\n    device: cpu\n    graphs_dir: graphs\n    inputs: {{pixels: {}}}\n    out: {out}\n{extra}",
            f.join("model.safetensors").display(),
            f.join("pixels.safetensors").display()
        )
    };
    let yaml = tmp.join("run.yaml");
    std::fs::write(
        &yaml,
        format!(
            "jobs:\n{}{}{}{}",
            job("fp32.safetensors", ""),
            job("int8.safetensors", "    dtype: int8\n"),
            job("again.safetensors", ""),
            job("micro.safetensors", "    micro_batch: 1\n"),
        ),
    )
    .unwrap();
    let o = run(bin()
        .arg("run")
        .arg(&yaml)
        .env("DISTORCH_LOG", "info,ort=error"));
    assert!(o.status.success(), "{}", stderr(&o));
    let embeds = |name: &str| -> Vec<f32> {
        read_tensors(&tmp.join(name))
            .into_iter()
            .find(|t| t.0 == "image_embeds")
            .expect("image_embeds")
            .2
    };
    // Job 2 asked for int8: it must not get job 1's fp32 model.
    let (fp32, int8) = (embeds("fp32.safetensors"), embeds("int8.safetensors"));
    let d = max_abs_diff(&fp32, &int8);
    assert!(
        d > 1e-6,
        "the int8 job returned fp32 outputs (max diff {d})"
    );
    assert_eq!(fp32, embeds("again.safetensors"));
    assert!(max_abs_diff(&fp32, &embeds("micro.safetensors")) < 1e-5);
    // Only job 3 (identical to job 1) reuses a loaded model; int8 and micro_batch load anew.
    let err = stderr(&o);
    let reused: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("reusing the loaded model"))
        .collect();
    assert_eq!(reused.len(), 1, "{err}");
    assert!(reused[0].contains("job 3"), "{err}");
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

#[test]
fn check_reports_every_problem_and_jobs_sharing_an_out() {
    let tmp = temp_dir("yaml_every_problem");
    comfy_and_images(&tmp);
    let yaml = tmp.join("run.yaml");
    // Two spellings of one out file; a job with three problems at once.
    std::fs::write(
        &yaml,
        "jobs:\n  - name: a\n    clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [imgs]}\n    out: same.safetensors\n\
         \n  - name: b\n    clip_vision: clip_l\n    comfyui: ComfyUI\n    device: cpu\n    inputs: {images: [imgs]}\n    out: imgs/../same.safetensors\n\
         \n  - name: c\n    clip_vision: clip_l\n    comfyui: ComfyUI\n    device: tpu:0\n    inputs: {images: [no_such_folder]}\n    outputs: [image_embedz]\n    out: c.safetensors\n",
    )
    .unwrap();
    let o = run_yaml(&yaml);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("2 of 3 jobs have errors"), "{err}");
    assert!(
        err.contains("b: out ") && err.contains("is also the out of a"),
        "{err}"
    );
    for part in ["no_such_folder does not exist", "image_embedz", "tpu:0"] {
        assert!(err.contains(part), "{part} missing: {err}");
    }
    assert!(!tmp.join("same.safetensors").exists());
    // A type error in one job does not hide the type errors of the others.
    std::fs::write(
        &yaml,
        "jobs:\n  - name: a\n    clip_vision: clip_l\n    batch_size: -3\n    inputs: {images: [imgs]}\n    out: a.safetensors\n\
         \n  - name: ok\n    clip_vision: clip_l\n    inputs: {images: [imgs]}\n    out: ok.safetensors\n\
         \n  - name: c\n    clip_vision: clip_l\n    shard_size: many\n    inputs: {images: [imgs]}\n    out: c.safetensors\n",
    )
    .unwrap();
    let err = stderr(&run_yaml(&yaml));
    assert!(err.contains("batch_size") && err.contains("-3"), "{err}");
    assert!(
        err.contains("c: shard_size") && err.contains("many"),
        "{err}"
    );
    assert!(!err.contains("ok:"), "{err}");
}

#[test]
fn quiet_runs_do_not_print_skipped_images() {
    let tmp = temp_dir("yaml_quiet_skips");
    comfy_and_images(&tmp);
    std::fs::write(tmp.join("imgs/broken.png"), b"not a png").unwrap();
    let yaml = tmp.join("run.yaml");
    std::fs::write(
        &yaml,
        "clip_vision: clip_l\ncomfyui: ComfyUI\ndevice: cpu\ngraphs_dir: graphs\ninputs: {images: [imgs]}\nout: out.safetensors\n",
    )
    .unwrap();
    let loud = run(bin().env_remove("DISTORCH_LOG").arg("run").arg(&yaml));
    assert!(loud.status.success(), "{}", stderr(&loud));
    assert!(stderr(&loud).contains("skipped "), "{}", stderr(&loud));
    let quiet = run(bin()
        .env_remove("DISTORCH_LOG")
        .args(["-q", "run"])
        .arg(&yaml));
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "", "-q prints errors only");
}

#[test]
fn single_values_stand_for_lists_and_paths_are_shown_as_written() {
    let tmp = temp_dir("yaml_single_values");
    comfy_and_images(&tmp);
    std::fs::create_dir_all(tmp.join("runs")).unwrap();
    let yaml = tmp.join("runs/run.yaml");
    let job = |images: &str| {
        format!(
            "clip_vision: clip_l\ncomfyui: ../ComfyUI\ndevice: cpu\ngraphs_dir: ../graphs\n\
             inputs: {{images: {images}}}\noutputs: image_embeds\nout: ../out.safetensors\n"
        )
    };
    std::fs::write(&yaml, job("../imgs")).unwrap();
    let o = run_yaml(&yaml);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("encoded 2 images into ../out.safetensors ("),
        "the out as written in the file: {err}"
    );
    let t = read_tensors(&tmp.join("out.safetensors"));
    let names: Vec<&str> = t.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["image_embeds"]);
    assert_eq!(t[0].1[0], 2);
    // A missing input is named as written, and where it was looked for.
    std::fs::write(&yaml, job("../nope")).unwrap();
    let err = stderr(&run_yaml(&yaml));
    assert!(
        err.contains("input ../nope does not exist (looked for ")
            && err.contains("relative to the run file"),
        "{err}"
    );
}

#[test]
fn messages_name_the_files_keys_not_the_clis_flags() {
    let tmp = temp_dir("yaml_option_names");
    comfy_and_images(&tmp);
    std::fs::write(tmp.join("imgs/broken.png"), b"not a png").unwrap();
    // `comfyui_path`, the name library messages use, is a key too.
    let job = "clip_vision: clip_l\ncomfyui_path: ComfyUI\ndevice: cpu\ngraphs_dir: graphs\ninputs: {images: [imgs]}\n";
    let sharded = tmp.join("sharded.yaml");
    std::fs::write(&sharded, format!("{job}out: shards\nshard_size: 2\n")).unwrap();
    assert!(run_yaml(&sharded).status.success());
    let again = stderr(&run_yaml(&sharded));
    assert!(
        again.contains("pass `resume` to continue it") && !again.contains("--"),
        "{again}"
    );
    let strict = tmp.join("strict.yaml");
    std::fs::write(
        &strict,
        format!("{job}out: out.safetensors\nstrict: true\n"),
    )
    .unwrap();
    let err = stderr(&run_yaml(&strict));
    assert!(
        err.contains("`strict`: stopping at an unreadable image") && !err.contains("--"),
        "{err}"
    );
}
