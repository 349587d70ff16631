//! One version everywhere: the crate's (Cargo.toml, the source) is what `dv_version()` and
//! the CLI report and what setup.py gives the wheel; the files that must spell it out are
//! checked against it here (the wheel's own file name and `--version` in
//! scripts/test_install.sh).

use std::ffi::CStr;

use crate::common::{bin, root, run};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn toml_file(path: &str) -> toml::Value {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_file_that_names_the_version_names_the_crates() {
    let plugin = toml_file("plugin.toml");
    assert_eq!(
        plugin["plugin"]["version"].as_str(),
        Some(VERSION),
        "plugin.toml"
    );

    // The wheel's version is read from Cargo.toml by setup.py, so its pyproject has none.
    let wheel = toml_file("python/pyproject.toml");
    assert!(
        wheel["project"].get("version").is_none(),
        "python/pyproject.toml"
    );
    let dynamic = wheel["project"]["dynamic"].as_array().unwrap();
    assert!(dynamic.iter().any(|v| v.as_str() == Some("version")));

    let init = read("python/distorch_vision/__init__.py");
    assert!(
        init.contains(&format!("__version__ = \"{VERSION}\"")),
        "python/distorch_vision/__init__.py: __version__ is not {VERSION}"
    );

    let node = toml_file("comfyui/pyproject.toml");
    assert_eq!(
        node["project"]["version"].as_str(),
        Some(VERSION),
        "comfyui/pyproject.toml"
    );
    let pin = format!("distorch-vision=={VERSION}");
    let deps: Vec<&str> = node["project"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(deps, [pin.as_str()], "comfyui/pyproject.toml dependencies");
    let reqs: Vec<String> = read("comfyui/requirements.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(reqs, [pin], "comfyui/requirements.txt");
}

#[test]
fn the_library_and_the_cli_report_the_crates_version() {
    let api = crate::common::capi::api();
    let v = unsafe { CStr::from_ptr((api.version)()) }.to_str().unwrap();
    assert_eq!(v, VERSION);
    let out = run(bin().arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("distorch-vision {VERSION}")
    );
}
