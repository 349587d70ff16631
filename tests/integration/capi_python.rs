//! scripts/encode_with_plugin.py (ctypes) drives the plugin: with numpy (from the
//! checkout's .runtime/cpu) and without it, on a fixture's pixels; outputs match Hugging Face.

use std::path::PathBuf;
use std::process::Command;

use crate::common::capi::*;

fn run_script(model: &str, out: &PathBuf, with_numpy: bool) -> std::process::Output {
    let dir = fixture(model);
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("scripts/encode_with_plugin.py"))
        .arg("--plugin")
        .arg(plugin_path())
        .arg("--ort-library")
        .arg(ort_library())
        .arg("--model")
        .arg(dir.join("model.safetensors"))
        .arg("--pixels")
        .arg(dir.join("pixels.safetensors"))
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--eject-models", "false", "--graphs-dir"])
        .arg(graphs_dir())
        .env_remove("PYTHONPATH");
    if with_numpy {
        cmd.env("PYTHONPATH", root().join(".runtime/cpu"));
    }
    cmd.output().expect("python3")
}

#[test]
fn python_ctypes_host_encodes_pixels() {
    let which = Command::new("python3").arg("--version").output();
    if which.is_err() {
        eprintln!("python3 not available; skipping");
        return;
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("capi-python-{}", std::process::id()));
    for (model, with_numpy) in [("clip_quickgelu_f32", true), ("llava_f32", false)] {
        let out = base.join(format!("{model}-{with_numpy}"));
        let res = run_script(model, &out, with_numpy);
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{model}: script failed\n{stdout}\n{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let expected = read_safetensors(&fixture(model).join("expected.safetensors"));
        let got = read_safetensors(&out.join("outputs.safetensors"));
        assert_eq!(got.len(), expected.len());
        for ((n, s, v), (en, es, ev)) in got.iter().zip(&expected) {
            assert_eq!((n, s), (en, es));
            let d = max_abs_diff(v, ev);
            assert!(d <= 1e-4, "{model}/{n}: {d}");
            assert!(
                stdout.contains(&format!("{n} {s:?}")),
                "printed shapes: {stdout}"
            );
            assert_eq!(
                out.join(format!("{n}.npy")).is_file(),
                with_numpy,
                "{n}.npy"
            );
        }
    }
}

#[test]
fn python_images_without_pil_fail_clearly() {
    let has_pil = Command::new("python3")
        .args(["-c", "import PIL"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_pil {
        eprintln!("PIL is installed; the no-PIL message is not reachable here");
        return;
    }
    let dir = fixture("clip_quickgelu_f32");
    let out = Command::new("python3")
        .arg(root().join("scripts/encode_with_plugin.py"))
        .arg("--plugin")
        .arg(plugin_path())
        .arg("--model")
        .arg(dir.join("model.safetensors"))
        .arg("--images")
        .arg(&dir)
        .arg("--out")
        .arg(std::env::temp_dir())
        .output()
        .expect("python3");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Pillow"), "{err}");
}
