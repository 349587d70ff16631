//! The GPU path's pieces that can be checked without a GPU: the CUDA provider status on a
//! machine without a driver, fp16 graphs on the CPU (with a warning), and the micro-batch runner's
//! threading machinery (segments on the CPU give the same outputs as the plain runner).

use crate::common::*;
use distorch_vision::loader::{ClipVision, LoadOptions};
use distorch_vision::plan::LoaderOptions;
use std::process::Output;

fn no_driver_here() -> bool {
    !distorch_vision::runtime::gpu::provider_status().driver
}

#[test]
fn provider_status_says_why_not_usable() {
    let st = distorch_vision::runtime::gpu::provider_status();
    if st.usable {
        return; // a GPU machine with the GPU build: nothing to refuse
    }
    let reason = st.reason.clone().unwrap_or_default();
    assert!(!reason.is_empty());
    if !st.driver {
        assert!(reason.contains("no CUDA driver"), "{reason}");
        assert_eq!(st.gpus, 0);
    }
    let o = run(bin().args(["devices"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("CUDA provider: not usable"), "{text}");
    let o = run(bin().args(["devices", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cuda_provider"]["usable"], false);
    assert!(v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["device"] == "cpu"));
    if no_driver_here() {
        assert!(v["cuda_provider"]["reason"]
            .as_str()
            .unwrap()
            .contains("no CUDA driver"));
    }
}

#[test]
fn fp16_on_the_cpu_runs_with_a_warning() {
    // fp16 is meant for CUDA; on the CPU it runs (for checking) and says so.
    let f = fixture("clip_quickgelu_f32");
    let tmp = temp_dir("gpu_fp16");
    let encode = |dtype: &str| {
        run(bin()
            .args(["encode", "--model"])
            .arg(f.join("model.safetensors"))
            .arg("--pixels")
            .arg(f.join("pixels.safetensors"))
            .arg("--out")
            .arg(tmp.join("out.safetensors"))
            .arg("--graphs-dir")
            .arg(tmp.join("graphs"))
            .args(["--device", "cpu", "--dtype", dtype]))
    };
    let o = encode("fp16");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("fp16 is meant for CUDA"), "{e}");
    assert!(tmp.join("out.safetensors").is_file());
    // Its graphs live apart from the fp32 ones.
    let dirs: Vec<String> = std::fs::read_dir(tmp.join("graphs"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(dirs.iter().any(|d| d.ends_with("-fp16")), "{dirs:?}");
    let o = encode("int4");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("valid: fp32, int8, fp16"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn micro_batches_through_segment_threads_match_the_plain_runner() {
    let tmp = temp_dir("gpu_micro");
    for name in FIXTURES {
        let f = fixture(name);
        let cv = ClipVision::load(&LoadOptions {
            clip_vision: f.join("model.safetensors").display().to_string(),
            loader: LoaderOptions {
                device: Some("cpu".into()),
                ..Default::default()
            },
            graphs_dir: Some(tmp.clone()),
            ..Default::default()
        })
        .unwrap();
        let px = distorch_vision::job::output::read_pixels(&f.join("pixels.safetensors")).unwrap();
        let plain = cv.encode(px.view(), &[], 8).unwrap();
        let p = cv.pipeline().unwrap();
        // Segments of at most 2 blocks: several threads with channels between them.
        for (micro, seg) in [(1, Some(2)), (2, Some(1)), (1, None)] {
            let m = distorch_vision::runtime::microbatch::encode(&p, px.view(), &[], micro, seg)
                .unwrap();
            assert_eq!(m.tensors.len(), plain.tensors.len(), "{name}");
            for ((n1, a), (n2, b)) in plain.tensors.iter().zip(&m.tensors) {
                assert_eq!(n1, n2);
                assert_eq!(a.shape(), b.shape(), "{name}/{n1}");
                let a: Vec<f32> = a.iter().copied().collect();
                let b: Vec<f32> = b.iter().copied().collect();
                let d = max_abs_diff(&a, &b);
                assert!(d <= 1e-5, "{name}/{n1} micro {micro} seg {seg:?}: {d}");
            }
        }
        // Each output alone (only the blocks it needs run).
        let expected = read_tensors(&f.join("expected.safetensors"));
        for (out_name, _, values) in &expected {
            let m = cv
                .encode_micro(px.view(), std::slice::from_ref(out_name), 1)
                .unwrap();
            let got: Vec<f32> = m.tensors[0].1.iter().copied().collect();
            let d = max_abs_diff(&got, values);
            assert!(d <= 1e-4, "{name}/{out_name}: {d}");
        }
    }
}

#[test]
fn cli_micro_batch_matches_the_references() {
    let f = fixture("llava_f32");
    let tmp = temp_dir("gpu_micro_cli");
    let out = tmp.join("out.safetensors");
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(f.join("model.safetensors"))
        .arg("--pixels")
        .arg(f.join("pixels.safetensors"))
        .arg("--out")
        .arg(&out)
        .args(["--device", "cpu", "--micro-batch", "1", "--graphs-dir"])
        .arg(tmp.join("graphs")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_close(&out, &f.join("expected.safetensors"), 1e-4);
}

/// Runs scripts/gpu_check.sh with `carry` as GPU_CARRY and a fresh OUT; numpy for its
/// comparisons comes from the CPU runtime's folder (as in capi_python).
fn gpu_check(name: &str, carry: &std::path::Path) -> (Output, String, std::path::PathBuf) {
    let out_dir = temp_dir(&format!("{name}_out"));
    let o = run(std::process::Command::new("bash")
        .arg(root().join("scripts/gpu_check.sh"))
        .env("DV_BIN", env!("CARGO_BIN_EXE_distorch-vision"))
        .env("GPU_CARRY", carry)
        .env("GPU_RUNTIME", carry.join("runtime"))
        .env("OUT", &out_dir)
        .env("PYTHONPATH", root().join(".runtime/cpu")));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    (o, stdout, out_dir)
}

/// The summary comes last: its closing `result:` line is the output's last line.
fn assert_summary_last(out: &str) {
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(last.starts_with("result: "), "last line: {last}\n{out}");
    let summary = out.rfind("== summary: gpu_check.sh").expect("a summary");
    assert!(
        out[summary..].contains("provider") || out[summary..].contains("carry"),
        "{out}"
    );
}

#[test]
fn gpu_check_script_exits_cleanly_without_a_gpu() {
    if !no_driver_here() {
        return; // on a GPU machine the script runs the real checks (minutes)
    }
    let carry = temp_dir("gpu_check_no_carry"); // empty: nothing to reassemble
    let (o, out, out_dir) = gpu_check("gpu_check_no_gpu", &carry);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("CUDA provider: not usable"), "{out}");
    assert!(out.contains("not checked"), "{out}");
    assert!(out.contains("CUDA fp32 parity"), "{out}");
    // The CPU references ran with this runtime, on every fixture.
    let fixtures = std::fs::read_dir(root().join("tests/fixtures/models"))
        .unwrap()
        .count();
    assert!(out.contains(&format!("CPU refs {fixtures}")), "{out}");
    assert_summary_last(&out);
    let log = std::fs::read_to_string(out_dir.join("gpu_check.log")).unwrap();
    assert!(
        log.trim_end()
            .ends_with(out.trim_end().lines().last().unwrap()),
        "{log}"
    );
}

#[test]
fn gpu_check_script_fails_on_a_broken_carry() {
    let carry = temp_dir("gpu_check_broken_carry");
    std::fs::write(carry.join("cuda.so.xz.part-aa"), b"corrupted").unwrap();
    let sums = format!(
        "{}  cuda.so.xz.part-aa\n{}  cuda.so.xz.part-ab\n{}  capi/libonnxruntime_providers_cuda.so\n",
        "0".repeat(64),
        "1".repeat(64),
        "2".repeat(64)
    );
    std::fs::write(carry.join("SHA256SUMS"), sums).unwrap();
    let (o, out, _) = gpu_check("gpu_check_broken", &carry);
    assert_eq!(o.status.code(), Some(3), "{out}\n{}", stderr(&o));
    assert!(out.contains("missing: cuda.so.xz.part-ab"), "{out}");
    assert!(out.contains("corrupt: cuda.so.xz.part-aa"), "{out}");
    assert_summary_last(&out);
}
