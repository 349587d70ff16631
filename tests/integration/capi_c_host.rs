//! Compiles tests/c_host/host.c with the system C compiler against distorch_vision.h and
//! runs it on fixtures: it dlopen()s the plugin, encodes, compares with expected values and
//! checks the misuse paths (see the C file).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::capi::*;

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn c_host_encodes_fixtures_and_survives_misuse() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("capi-c-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = compile_c_host(&dir);
    for m in ["clip_quickgelu_f32", "siglip_f32", "llava_f32"] {
        let data = dir.join(m);
        std::fs::create_dir_all(&data).unwrap();
        let px = read_pixels(m);
        write_f32(
            &data.join("pixels.f32"),
            px.as_standard_layout().as_slice().unwrap(),
        );
        let mut manifest = String::new();
        for (name, shape, values) in read_safetensors(&fixture(m).join("expected.safetensors")) {
            write_f32(&data.join(format!("{name}.f32")), &values);
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            manifest.push_str(&format!("{name} {} {}\n", shape.len(), dims.join(" ")));
        }
        std::fs::write(data.join("manifest.txt"), manifest).unwrap();
        // The model by path, and (a host's model dropdown) by name in a ComfyUI tree that
        // also holds a file that is not a vision tower.
        let comfy = data.join("ComfyUI");
        let cv = comfy.join("models/clip_vision");
        std::fs::create_dir_all(&cv).unwrap();
        for (from, to) in [
            ("model.safetensors", format!("{m}.safetensors")),
            ("config.json", "config.json".into()),
            ("expected.safetensors", "expected.safetensors".into()),
        ] {
            std::fs::copy(fixture(m).join(from), cv.join(to)).unwrap();
        }
        let mut runs = vec![Command::new(&exe), Command::new(&exe)];
        runs[0]
            .arg(plugin_path())
            .arg(ort_library())
            .arg(fixture(m).join("model.safetensors"));
        runs[1]
            .arg(plugin_path())
            .arg(ort_library())
            .arg(format!("{m}.safetensors"));
        for (i, cmd) in runs.iter_mut().enumerate() {
            cmd.arg(graphs_dir()).arg(&data);
            if i == 1 {
                cmd.arg("shutdown").arg(&comfy);
            }
        }
        for mut cmd in runs {
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "C host failed on {m}:\n{stdout}\n{stderr}"
            );
            assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
            eprintln!("{m}:\n{stdout}");
        }
    }
    // Each way a host can end, with every block on OpenVINO: releasing OpenVINO's sessions
    // from inside the host's dlclose() crashed at exit (SIGSEGV) until the library kept itself
    // loaded once the plugin was in.
    let m = "clip_quickgelu_f32";
    for end in ["dlclose", "exit", "shutdown"] {
        let out = Command::new(&exe)
            .arg(plugin_path())
            .arg(ort_library())
            .arg(fixture(m).join("model.safetensors"))
            .arg(graphs_dir())
            .arg(dir.join(m))
            .arg(end)
            .env("DISTORCH_OPENVINO_EP", root().join(".runtime/openvino"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim_end().ends_with("OK"),
            "C host on OpenVINO, ending with {end}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
