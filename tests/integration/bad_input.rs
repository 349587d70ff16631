//! Bad input of every kind gives a non-zero exit and one clear line on stderr: never a
//! panic, a backtrace or a hang.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Runs the binary under a 60 s timeout and checks the failure is one clean line.
fn expect_error(args: &[&std::ffi::OsStr], needle: &str) {
    let o = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_distorch-vision"))
        .env("DISTORCH_GRAPHS_DIR", test_graphs_dir())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(124), "hung: {args:?}");
    assert!(!o.status.success(), "succeeded: {args:?}");
    assert!(!err.contains("panicked"), "panic: {err}");
    // Warnings may come first; the failure itself is one line.
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" WARN ")).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} not in: {err}"
    );
}

fn encode_args<'a>(model: &'a Path, pixels: &'a Path, out: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    vec![
        "encode".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--pixels".as_ref(),
        pixels.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]
}

/// The fixture's header and data, for making altered copies.
fn fixture_parts() -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let bytes = std::fs::read(fixture("clip_quickgelu_f32").join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

/// A model folder (config.json from the fixture) holding `bytes` as model.safetensors.
fn model_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("config.json"),
        d.join("config.json"),
    )
    .unwrap();
    let p = d.join("model.safetensors");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assemble(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(data);
    out
}

#[test]
fn broken_model_files() {
    let tmp = temp_dir("bad_models");
    let px = fixture("clip_quickgelu_f32").join("pixels.safetensors");
    let out = tmp.join("out.safetensors");
    let (header, data) = fixture_parts();
    let key = "vision_model.encoder.layers.1.mlp.fc1.weight";

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        ("truncated", vec![1, 2, 3], "too short"),
        (
            "lying_length",
            {
                let mut b = assemble(&header, &data);
                b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "header length",
        ),
        (
            "header_past_end",
            {
                let b = assemble(&header, &data);
                let n = u64::from_le_bytes(b[..8].try_into().unwrap());
                let mut b2 = (n + data.len() as u64 + 1).to_le_bytes().to_vec();
                b2.extend_from_slice(&b[8..]);
                b2
            },
            "past the end",
        ),
        (
            "invalid_json",
            {
                let mut b = 10u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"{\"a\": [1,,");
                b
            },
            "not valid JSON",
        ),
        (
            "not_safetensors",
            b"this is a text file, not a model at all, with enough bytes".to_vec(),
            "not a valid safetensors",
        ),
        (
            "truncated_data",
            {
                let b = assemble(&header, &data);
                b[..b.len() - 100].to_vec()
            },
            "past the end",
        ),
    ];
    let mut alter = |name: &'static str,
                     f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>),
                     needle: &'static str| {
        let mut h = header.clone();
        f(&mut h);
        cases.push((name, assemble(&h, &data), needle));
    };
    alter(
        "reversed_offsets",
        &|h| {
            let o = h[key]["data_offsets"].as_array().unwrap().clone();
            h.get_mut(key).unwrap()["data_offsets"] = serde_json::json!([o[1], o[0]]);
        },
        "reversed",
    );
    alter(
        "offsets_past_end",
        &|h| {
            h.get_mut(key).unwrap()["data_offsets"] = serde_json::json!([0, 1u64 << 33]);
        },
        "past the end",
    );
    alter(
        "shape_disagrees",
        &|h| {
            h.get_mut(key).unwrap()["shape"] = serde_json::json!([64, 31]);
        },
        "needs",
    );
    alter(
        "unknown_dtype",
        &|h| {
            h.get_mut(key).unwrap()["dtype"] = serde_json::json!("F8_E9M9");
        },
        "unknown dtype",
    );
    // A real safetensors dtype the model math does not take: not called an invalid file.
    alter(
        "u16_dtype",
        &|h| {
            h.get_mut(key).unwrap()["dtype"] = serde_json::json!("U16");
        },
        "dtype U16, a valid safetensors dtype this program does not read",
    );
    alter(
        "overlap",
        &|h| {
            let other = h["vision_model.encoder.layers.1.mlp.fc2.weight"]["data_offsets"].clone();
            h.get_mut(key).unwrap()["data_offsets"] = other;
        },
        "overlap",
    );
    alter(
        "missing_key",
        &|h| {
            h.remove(key);
        },
        key,
    );
    alter(
        "wrong_shape",
        &|h| {
            // Same byte count, other shape: only the family check can catch it.
            h.get_mut(key).unwrap()["shape"] = serde_json::json!([32, 64]);
        },
        "expected [64, 32]",
    );
    alter(
        "int_weight",
        &|h| {
            h.get_mut(key).unwrap()["dtype"] = serde_json::json!("I32");
        },
        "expected F32, F16 or BF16",
    );

    for (name, bytes, needle) in &cases {
        let m = model_with(&tmp, name, bytes);
        expect_error(&encode_args(&m, &px, &out), needle);
        expect_error(
            &["inspect".as_ref(), "--model".as_ref(), m.as_os_str()],
            needle,
        );
        expect_error(
            &[
                "export".as_ref(),
                "--model".as_ref(),
                m.as_os_str(),
                "--out".as_ref(),
                tmp.join("g").as_os_str(),
            ],
            needle,
        );
    }
    assert!(!out.exists(), "no output is written on failure");
}

#[test]
fn bad_configs_paths_and_families() {
    let tmp = temp_dir("bad_configs");
    let px = fixture("clip_quickgelu_f32").join("pixels.safetensors");
    let out = tmp.join("out.safetensors");
    let good = std::fs::read(fixture("clip_quickgelu_f32").join("model.safetensors")).unwrap();

    let m = model_with(&tmp, "bad_config", &good);
    std::fs::write(m.with_file_name("config.json"), "{ \"hidden_size\": 32, ").unwrap();
    expect_error(&encode_args(&m, &px, &out), "not valid JSON");
    std::fs::write(
        m.with_file_name("config.json"),
        r#"{"model_type":"clip_vision_model","hidden_size":"wide"}"#,
    )
    .unwrap();
    expect_error(
        &encode_args(&m, &px, &out),
        "hidden_size must be a positive integer",
    );
    std::fs::write(
        m.with_file_name("config.json"),
        r#"{"model_type":"clip_vision_model","hidden_size":32,"num_attention_heads":5}"#,
    )
    .unwrap();
    expect_error(&encode_args(&m, &px, &out), "not divisible");
    std::fs::write(
        m.with_file_name("config.json"),
        r#"{"model_type":"clip_vision_model","hidden_size":32,"patch_size":0}"#,
    )
    .unwrap();
    expect_error(
        &encode_args(&m, &px, &out),
        "patch_size = 0 is out of range",
    );
    std::fs::write(
        m.with_file_name("config.json"),
        r#"{"model_type":"clip_vision_model","hidden_size":32,"image_size":65536,"patch_size":64}"#,
    )
    .unwrap();
    expect_error(
        &encode_args(&m, &px, &out),
        "image_size = 65536 is out of range",
    );
    std::fs::write(m.with_file_name("config.json"), r#"{"model_type":"bert"}"#).unwrap();
    expect_error(&encode_args(&m, &px, &out), "not a vision tower");

    // No config.json and a size no family has.
    let m = tmp.join("no_config/model.safetensors");
    std::fs::create_dir_all(m.parent().unwrap()).unwrap();
    std::fs::write(&m, &good).unwrap();
    expect_error(&encode_args(&m, &px, &out), "no known CLIP Vision family");

    let dir = tmp.join("a_directory");
    std::fs::create_dir_all(&dir).unwrap();
    expect_error(&encode_args(&dir, &px, &out), "is a directory");
    let missing = tmp.join("missing.safetensors");
    expect_error(&encode_args(&missing, &px, &out), "no such file");
}

#[test]
fn bad_pixel_tensors() {
    let tmp = temp_dir("bad_pixels");
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let out = tmp.join("out.safetensors");
    let write = |name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let header = format!(
            r#"{{"pixel_values":{{"dtype":"F32","shape":{shape:?},"data_offsets":[0,{}]}}}}"#,
            n * 4
        );
        let p = tmp.join(name);
        write_raw_safetensors(&p, &header, n * 4);
        p
    };
    for (name, shape, needle) in [
        (
            "size.safetensors",
            vec![1, 3, 31, 32],
            "needs [B, 3, 32, 32]",
        ),
        (
            "channels.safetensors",
            vec![1, 4, 32, 32],
            "needs [B, 3, 32, 32]",
        ),
        ("rank.safetensors", vec![3, 32, 32], "rank 4"),
        ("empty_batch.safetensors", vec![0, 3, 32, 32], "B ≥ 1"),
    ] {
        let p = write(name, &shape);
        expect_error(&encode_args(&model, &p, &out), needle);
    }
    let two = tmp.join("two.safetensors");
    write_raw_safetensors(
        &two,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        8,
    );
    expect_error(&encode_args(&model, &two, &out), "exactly one tensor");
    let f16 = tmp.join("f16.safetensors");
    write_raw_safetensors(
        &f16,
        r#"{"p":{"dtype":"F16","shape":[1,3,32,32],"data_offsets":[0,6144]}}"#,
        6144,
    );
    expect_error(&encode_args(&model, &f16, &out), "F32");
    expect_error(
        &encode_args(&model, &tmp.join("nope.safetensors"), &out),
        "no such file",
    );
}

#[test]
fn bad_loader_values() {
    let tmp = temp_dir("bad_loader");
    let f = fixture("clip_quickgelu_f32");
    let (m, px) = (f.join("model.safetensors"), f.join("pixels.safetensors"));
    let out = tmp.join("o.safetensors");
    let mut base = encode_args(&m, &px, &out);
    base.drain(1..3); // drop `--device cpu`
    let with = |extra: &[&'static str]| {
        let mut a = base.clone();
        a.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        a
    };
    expect_error(&with(&["--device", "tpu:0"]), "cuda:N");
    expect_error(&with(&["--device", "cuda:7"]), "cuda:7");
    expect_error(
        &with(&["--device", "cpu", "--virtual-vram-gb", "200"]),
        "0.0 to 128.0",
    );
    expect_error(
        &with(&["--device", "cpu", "--virtual-vram-gb", "-1"]),
        "0.0 to 128.0",
    );
    expect_error(
        &with(&["--device", "cpu", "--donor-device", "cuda:3"]),
        "cuda:3",
    );
    expect_error(
        &with(&["--device", "cpu", "--expert-mode-allocations", "cpu 50%"]),
        "cpu 50%",
    );
    expect_error(
        &with(&[
            "--device",
            "cpu",
            "--expert-mode-allocations",
            "cpu,50%;cpu,50%",
        ]),
        "cpu,50%",
    );
    // --donor-policy is typed like --dtype: a bad value is a usage error (exit 2) that names
    // the flag and the valid choices.
    for (flag, bad, valid) in [
        ("--donor-policy", "teleport", "\"stream\""),
        ("--dtype", "fp8", "fp32"),
    ] {
        let o = bin()
            .args(with(&["--device", "cpu", flag, bad]))
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        let head = format!("error: invalid value '{bad}' for '{flag} <");
        assert!(err.starts_with(&head) && err.contains(valid), "{err}");
    }
    expect_error(
        &with(&["--device", "cpu", "--outputs", "pooler_output"]),
        "valid: last_hidden_state",
    );
    // A plan that needs CUDA fails at load with the reason.
    expect_error(
        &with(&["--device", "cuda:0", "--simulate-devices", "cuda:0=24GiB"]),
        "no CUDA driver",
    );
}

#[test]
fn huge_batch_sizes_do_not_abort() {
    let tmp = temp_dir("huge_batch");
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let images = root().join("tests/fixtures/images/exact_32x32.png");
    for (i, batch) in ["100000000", "10000000000000000"].iter().enumerate() {
        let out = tmp.join(format!("shards{i}"));
        let o = Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_distorch-vision"))
            .env("DISTORCH_GRAPHS_DIR", test_graphs_dir())
            .args([
                "encode",
                "--device",
                "cpu",
                "--shard-size",
                "4",
                "--batch-size",
                batch,
                "--model",
            ])
            .arg(&model)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "batch {batch}: {}", stderr(&o));
    }
}
