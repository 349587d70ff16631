//! What a person meets first: logging controls (-v/-q, DISTORCH_LOG, RUST_LOG, ONNX Runtime
//! kept at warn), JSON summaries and JSON errors, and the wording of `export` and `bench`.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `encode` of one image on the CPU, with the logging environment cleared first.
fn encode(tmp: &Path, tweak: impl FnOnce(&mut Command)) -> std::process::Output {
    let mut cmd = bin();
    cmd.env_remove("DISTORCH_LOG").env_remove("RUST_LOG");
    tweak(&mut cmd);
    cmd.args(["encode", "--device", "cpu", "--model"])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .arg("--images")
        .arg(root().join("tests/fixtures/images/plain_64x48.jpg"))
        .arg("--out")
        .arg(tmp.join("e.safetensors"))
        .arg("--graphs-dir")
        .arg(tmp.join("graphs"));
    run(&mut cmd)
}

/// `encode` of one image on the CPU with `extra` flags after the verb's own.
fn encode_with(tmp: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(["encode", "--device", "cpu", "--model"])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .arg("--images")
        .arg(root().join("tests/fixtures/images/plain_64x48.jpg"))
        .arg("--out")
        .arg(tmp.join("e.safetensors"))
        .arg("--graphs-dir")
        .arg(tmp.join("graphs"))
        .args(extra);
    run(&mut cmd)
}

fn lines_with(o: &std::process::Output, what: &str) -> usize {
    stderr(o).lines().filter(|l| l.contains(what)).count()
}

#[test]
fn logging_levels_sources_and_onnx_runtime_cap() {
    let tmp = temp_dir("ux_logging");
    // Default: warnings only, and the one-line summary.
    let o = encode(&tmp, |_| {});
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("encoded 1 image into"),
        "{}",
        stderr(&o)
    );
    // debug from DISTORCH_LOG, from RUST_LOG, and from -vv.
    let debug_line = "ONNX Runtime loaded from";
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "debug");
    });
    assert_eq!(lines_with(&o, debug_line), 1, "{}", stderr(&o));
    let o = encode(&tmp, |c| {
        c.env("RUST_LOG", "debug");
    });
    assert_eq!(lines_with(&o, debug_line), 1, "{}", stderr(&o));
    let o = encode(&tmp, |c| {
        c.arg("-vv");
    });
    assert_eq!(lines_with(&o, debug_line), 1, "{}", stderr(&o));
    // DISTORCH_LOG wins over RUST_LOG; -q wins over both and drops the summary.
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "warn").env("RUST_LOG", "debug");
    });
    assert_eq!(lines_with(&o, debug_line), 0, "{}", stderr(&o));
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "debug").arg("-q");
    });
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "-q prints nothing but errors");
    // info does not flood the log with ONNX Runtime's session dumps, unless asked for.
    let ort_dump = "Session Options";
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "info");
    });
    assert_eq!(lines_with(&o, ort_dump), 0, "{}", stderr(&o));
    let o = encode(&tmp, |c| {
        c.arg("-vvv");
    });
    assert_eq!(lines_with(&o, ort_dump), 0, "-vvv keeps ORT at warn too");
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "warn,ort=info");
    });
    assert!(lines_with(&o, ort_dump) > 0, "{}", stderr(&o));
    // A bad filter is reported, not silently ignored.
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_LOG", "warn,x=loud");
    });
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("log filter \"warn,x=loud\" is not valid"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn encode_json_summary_and_json_errors() {
    let tmp = temp_dir("ux_json");
    let o = run(bin()
        .args(["encode", "--json", "--device", "cpu", "--model"])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .arg("--images")
        .arg(root().join("tests/fixtures/images/plain_64x48.jpg"))
        .arg("--out")
        .arg(tmp.join("e.safetensors"))
        .arg("--graphs-dir")
        .arg(tmp.join("graphs")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["encoded"], 1);
    assert_eq!(v["out"], tmp.join("e.safetensors").display().to_string());
    let names: Vec<&str> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"image_embeds"), "{v}");
    assert!(v["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(stderr(&o), "", "the summary is not printed twice");

    // Sharded mode lists its outputs too, with their shapes over every row of the folder.
    let o = run(bin()
        .args([
            "encode",
            "--json",
            "--device",
            "cpu",
            "--shard-size",
            "2",
            "--model",
        ])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .arg("--images")
        .arg(root().join("tests/fixtures/images"))
        .arg("--out")
        .arg(tmp.join("shards"))
        .arg("--graphs-dir")
        .arg(tmp.join("graphs")));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let n = v["encoded"].as_u64().unwrap();
    assert!(n >= 3, "{v}");
    let embeds = v["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {v}"))
        .iter()
        .find(|o| o["name"] == "image_embeds")
        .unwrap_or_else(|| panic!("no image_embeds in {v}"));
    assert_eq!(embeds["shape"], serde_json::json!([n, 16]), "{v}");

    // Errors under --json: one object on stdout, the usual line on stderr, exit 1.
    let o = run(bin().args(["plan", "--model", "/no/such/model.safetensors", "--json"]));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/model.safetensors"));
    assert!(stderr(&o).starts_with("error: "));
    // A bad command line under --json: exit 2, a "usage" error object.
    let o = run(bin().args(["plan", "--json", "--no-such-flag"]));
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--no-such-flag"));
}

#[test]
fn export_says_reused_plainly() {
    let tmp = temp_dir("ux_export");
    let export = || {
        run(bin()
            .args(["export", "--model"])
            .arg(fixture("siglip_f32").join("model.safetensors"))
            .arg("--out")
            .arg(tmp.join("g")))
    };
    let o = export();
    assert!(o.status.success(), "{}", stderr(&o));
    let first = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(first.starts_with("exported 5 blocks to "), "{first}");
    let second = String::from_utf8_lossy(&export().stdout).into_owned();
    assert!(
        second.starts_with("reused the existing export of 5 blocks in "),
        "{second}"
    );
}

#[test]
fn bench_does_not_flag_tiny_models_over_budget() {
    let tmp = temp_dir("ux_bench");
    let o = run(bin()
        .env_remove("DISTORCH_LOG")
        .args([
            "bench",
            "--device",
            "cpu",
            "--iters",
            "1",
            "--no-whole",
            "--model",
        ])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .arg("--graphs-dir")
        .arg(&tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("RSS budget"))
        .unwrap_or_default();
    assert!(!line.contains("OVER"), "{out}");
    assert!(line.contains("not applicable"), "{out}");
}

#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let verbs: [Vec<std::ffi::OsString>; 3] = [
        vec!["devices".into(), "--json".into()],
        vec![
            "inspect".into(),
            "--json".into(),
            "--model".into(),
            model.clone().into(),
        ],
        vec![
            "plan".into(),
            "--json".into(),
            "--model".into(),
            model.into(),
        ],
    ];
    for args in verbs {
        let mut child = bin()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first line is written (`| head -0`).
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

#[test]
fn json_usage_errors_keep_the_whole_message() {
    let o = run(bin().args(["plan", "--json"]));
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("not provided") && msg.contains("--model"),
        "{msg}"
    );
}

#[test]
fn inspect_names_the_config_once_and_bad_thread_counts_warn() {
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let o = run(bin().args(["inspect", "--model"]).arg(&model));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let family = out.lines().find(|l| l.starts_with("family")).unwrap();
    assert_eq!(family.matches("config.json").count(), 1, "{family}");

    let tmp = temp_dir("threads_env");
    let o = encode(&tmp, |c| {
        c.env("DISTORCH_THREADS", "abc");
    });
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        lines_with(&o, "DISTORCH_THREADS=\"abc\""),
        1,
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("valid: 1 or more"), "{}", stderr(&o));
}

#[test]
fn counts_of_zero_are_refused_with_the_valid_values() {
    let tmp = temp_dir("ux_zero_counts");
    for flag in [
        "--batch-size",
        "--decode-threads",
        "--shard-size",
        "--micro-batch",
    ] {
        let o = encode_with(&tmp, &[flag, "0"]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(flag) && stderr(&o).contains("a whole number of at least 1"),
            "{flag}: {}",
            stderr(&o)
        );
    }
    // The same in a YAML run, before anything runs.
    let yaml = tmp.join("zero.yaml");
    std::fs::write(
        &yaml,
        format!(
            "clip_vision: {}\ndevice: cpu\ninputs: {{images: [{}]}}\nout: o.safetensors\nbatch_size: 0\n",
            fixture("clip_quickgelu_f32")
                .join("model.safetensors")
                .display(),
            root().join("tests/fixtures/images").display()
        ),
    )
    .unwrap();
    let o = run(bin().arg("run").arg(&yaml));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("batch_size is 0; valid: a whole number of at least 1"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.join("o.safetensors").exists());
}

#[test]
fn plan_table_shows_small_assignments_in_their_unit() {
    let o = run(bin()
        .args(["plan", "--model"])
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .args([
            "--simulate-devices",
            "cuda:0=24GiB,cuda:1=12GiB",
            "--expert-mode-allocations",
            "cuda:0,60%;cpu,*",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let header = text.lines().find(|l| l.starts_with("device")).unwrap();
    assert!(
        header.contains("assigned") && !header.contains("GiB"),
        "{text}"
    );
    let cuda0 = text.lines().find(|l| l.starts_with("cuda:0")).unwrap();
    let cuda1 = text.lines().find(|l| l.starts_with("cuda:1")).unwrap();
    assert!(cuda0.contains("KiB") && !cuda0.contains("0.000"), "{text}");
    assert!(cuda1.split_whitespace().nth(5) == Some("-"), "{cuda1}");
}

#[test]
fn micro_batch_on_a_cpu_only_plan_warns() {
    let tmp = temp_dir("ux_micro_cpu");
    let o = encode_with(&tmp, &["--micro-batch", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("micro_batch 2: every block of this plan runs on the CPU"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn file_lists_and_repeated_inputs_work_alike_in_every_mode() {
    let tmp = temp_dir("ux_lists_repeats");
    let images = root().join("tests/fixtures/images");
    // A list with a comment, a blank line and a relative path; the folder repeats one of them.
    std::fs::create_dir_all(tmp.join("imgs")).unwrap();
    for f in ["plain_64x48.jpg", "portrait_45x77.png"] {
        std::fs::copy(images.join(f), tmp.join("imgs").join(f)).unwrap();
    }
    std::fs::write(
        tmp.join("list.txt"),
        "# two images\nimgs/portrait_45x77.png\n\nimgs/plain_64x48.jpg\n",
    )
    .unwrap();
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let graphs = tmp.join("graphs");
    let base = |out: &str| {
        let mut c = bin();
        c.args(["encode", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--images")
            .arg(tmp.join("list.txt"))
            .arg(tmp.join("imgs/plain_64x48.jpg"))
            .arg("--out")
            .arg(tmp.join(out))
            .arg("--graphs-dir")
            .arg(&graphs);
        c
    };
    let one = run(&mut base("one.safetensors"));
    let sharded = run(base("shards").args(["--shard-size", "8"]));
    for (mode, o) in [("one file", &one), ("sharded", &sharded)] {
        assert!(o.status.success(), "{mode}: {}", stderr(o));
        assert!(
            stderr(o).contains("1 input was given more than once")
                && stderr(o).contains("encoded 2 images"),
            "{mode}: {}",
            stderr(o)
        );
    }
    let rows = |p: &Path| -> Vec<String> {
        let st = distorch_vision::model::SafeTensors::open(p).unwrap();
        serde_json::from_str(&st.metadata()["inputs"]).unwrap()
    };
    let want = vec![
        tmp.join("imgs/portrait_45x77.png").display().to_string(),
        tmp.join("imgs/plain_64x48.jpg").display().to_string(),
    ];
    assert_eq!(rows(&tmp.join("one.safetensors")), want);
    assert_eq!(rows(&tmp.join("shards/shard-00000.safetensors")), want);
}
