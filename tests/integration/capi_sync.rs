//! Keeps the three descriptions of the C surface in step: the `#[no_mangle]` functions of
//! src/capi/, the declarations of distorch_vision.h, and plugin.toml's symbol list; checks
//! the built library exports every listed symbol, and the node's inputs match contract §1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::capi::*;

/// Every `.rs` file under `dir`, at any depth (a submodule folder must not hide an export).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
    out
}

/// `name → normalised signature` of the Rust exports.
fn rust_exports() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in rust_files(&root().join("src/capi")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !matches!(line.trim(), "#[no_mangle]" | "#[unsafe(no_mangle)]") {
                continue;
            }
            // The signature: from the `fn` line (after attributes) to the opening brace.
            let mut sig = String::new();
            for l in &lines[i + 1..] {
                if l.trim_start().starts_with("#[") && sig.is_empty() {
                    continue;
                }
                sig.push_str(l.trim());
                sig.push(' ');
                if l.trim_end().ends_with('{') {
                    break;
                }
            }
            assert!(
                sig.starts_with("pub extern \"C\" fn ")
                    || sig.starts_with("pub unsafe extern \"C\" fn "),
                "{}: #[no_mangle] on something that is not a pub extern \"C\" fn: {sig}",
                path.display()
            );
            let name = sig.split("fn ").nth(1).unwrap().split('(').next().unwrap();
            out.push((name.trim().to_string(), sig));
        }
    }
    out.sort();
    out
}

/// Function declarations of the header: `(name, return type, parameter types)`.
pub(crate) fn header_functions() -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("distorch_vision.h")).unwrap();
    // Drop comments and preprocessor lines, then split into statements.
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        let j = rest[i..].find("*/").expect("closed comment") + i + 2;
        rest = &rest[j..];
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let stmt = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let stmt = stmt.rsplit('}').next().unwrap().trim().to_string();
        if stmt.starts_with("typedef") || !stmt.contains('(') || !stmt.contains("dv_") {
            continue;
        }
        let open = stmt.find('(').unwrap();
        let head = &stmt[..open];
        let name_start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = head[name_start..].to_string();
        let ret = head[..name_start].replace(' ', "");
        let params = stmt[open + 1..stmt.rfind(')').unwrap()].to_string();
        let types = if params.trim() == "void" {
            Vec::new()
        } else {
            params
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    let cut = p
                        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .map_or(0, |i| i + 1);
                    p[..cut].replace(' ', "")
                })
                .collect()
        };
        out.push((name, ret, types));
    }
    out.sort();
    out
}

/// The C spelling of a Rust parameter or return type of the exports.
fn c_type(rust: &str) -> String {
    match rust.replace(' ', "").as_str() {
        "DvStatus" => "dv_status",
        "u64" => "uint64_t",
        "u32" => "uint32_t",
        "i32" => "int32_t",
        "usize" => "size_t",
        "*constc_char" => "constchar*",
        "*mutc_char" => "char*",
        "*mut*mutc_char" => "char**",
        "*constf32" => "constfloat*",
        "*mutf32" => "float*",
        "*constu8" => "constuint8_t*",
        "*consti64" => "constint64_t*",
        "*muti64" => "int64_t*",
        "*mutu64" => "uint64_t*",
        "*mutu32" => "uint32_t*",
        "*mutusize" => "size_t*",
        "*constDvLoadOptions" => "constdv_load_options*",
        "*mutDvLoadOptions" => "dv_load_options*",
        "*mutDvTensor" => "dv_tensor*",
        other => panic!("no C spelling for Rust type {other:?}; add it here"),
    }
    .to_string()
}

/// The header's typedef names resolved to what the Rust side sees.
fn canon(c: &str) -> String {
    c.replace("dv_model*", "uint64_t*")
        .replace("dv_outputs*", "uint64_t*")
        .replace("dv_model", "uint64_t")
        .replace("dv_outputs", "uint64_t")
}

#[test]
fn header_declares_exactly_the_rust_exports_with_the_same_types() {
    let rust = rust_exports();
    let header = header_functions();
    assert!(rust.len() >= 19, "found only {} exports", rust.len());
    let rn: BTreeSet<&str> = rust.iter().map(|(n, _)| n.as_str()).collect();
    let hn: BTreeSet<&str> = header.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(rn, hn, "header vs #[no_mangle] exports");
    for (name, sig) in &rust {
        let (_, hret, hparams) = header.iter().find(|h| &h.0 == name).unwrap();
        let open = sig.find('(').unwrap();
        let close = sig.rfind(')').unwrap();
        let params: Vec<String> = sig[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| c_type(p.split_once(':').unwrap().1))
            .collect();
        let ret = sig[close + 1..]
            .trim()
            .trim_end_matches('{')
            .trim()
            .trim_start_matches("->")
            .trim();
        let ret = c_type(ret);
        assert_eq!(canon(hret), ret, "{name}: return type");
        let hp: Vec<String> = hparams.iter().map(|p| canon(p)).collect();
        assert_eq!(hp, params, "{name}: parameter types");
    }
}

#[test]
fn plugin_toml_lists_every_export_and_the_library_has_them() {
    let toml = plugin_toml();
    let listed: BTreeSet<String> = toml["symbols"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let rust: BTreeSet<String> = rust_exports().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, rust, "plugin.toml symbols vs #[no_mangle] exports");
    assert_eq!(
        toml["plugin"]["header"].as_str(),
        Some("distorch_vision.h"),
        "header file named in plugin.toml"
    );
    assert!(root().join("distorch_vision.h").is_file());

    // The built library (found by the name plugin.toml gives) exports each of them.
    let path = plugin_path();
    let lib = unsafe { libloading::Library::new(&path) }.unwrap();
    for s in &listed {
        let sym: Result<libloading::Symbol<*const ()>, _> =
            unsafe { lib.get(format!("{s}\0").as_bytes()) };
        assert!(sym.is_ok(), "{} does not export {s}", path.display());
    }
    for (name, _) in rust_exports() {
        assert!(listed.contains(&name));
    }
    assert_eq!(toml["plugin"]["name"].as_str(), Some("distorch-vision"));
    assert_eq!(
        toml["plugin"]["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        toml["plugin"]["abi_version"].as_integer(),
        Some(distorch_vision::capi::ABI_VERSION as i64)
    );
    let lib_names = &toml["plugin"]["library"];
    assert_eq!(lib_names["linux"].as_str(), Some("libdistorch_vision.so"));
    assert_eq!(
        lib_names["macos"].as_str(),
        Some("libdistorch_vision.dylib")
    );
    assert_eq!(lib_names["windows"].as_str(), Some("distorch_vision.dll"));
    // The header's ABI version agrees too.
    let header = std::fs::read_to_string(root().join("distorch_vision.h")).unwrap();
    assert!(header.contains(&format!(
        "#define DV_ABI_VERSION {}",
        distorch_vision::capi::ABI_VERSION
    )));
}

/// The header's status codes are the library's: same values, `dv_status_string` names them,
/// and plugin.toml's shutdown entry point is an export.
#[test]
fn status_codes_and_the_shutdown_entry_agree() {
    let header = std::fs::read_to_string(root().join("distorch_vision.h")).unwrap();
    let mut codes = Vec::new();
    for line in header.lines() {
        let l = line.trim();
        if let Some((name, rest)) = l.split_once(" = ") {
            if name == "DV_OK" || name.starts_with("DV_ERR_") {
                let value: i32 = rest
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|_| panic!("value of {name}: {l}"));
                codes.push((name.to_string(), value));
            }
        }
    }
    assert!(codes.len() >= 13, "found only {codes:?}");
    assert!(codes.contains(&("DV_ERR_SHUT_DOWN".to_string(), 12)));
    let lib = unsafe { libloading::Library::new(plugin_path()) }.unwrap();
    let status_string: libloading::Symbol<unsafe extern "C" fn(i32) -> *const std::ffi::c_char> =
        unsafe { lib.get(b"dv_status_string\0") }.unwrap();
    for (name, value) in &codes {
        let got = unsafe { std::ffi::CStr::from_ptr(status_string(*value)) };
        assert_eq!(got.to_str().unwrap(), name, "dv_status_string({value})");
        let same = distorch_vision::capi::status_name(*value);
        assert_eq!(same, Some(name.as_str()), "{name} in src/capi");
    }
    let toml = plugin_toml();
    let shutdown = toml["plugin"]["shutdown"]
        .as_str()
        .expect("plugin.shutdown");
    let exports: Vec<&str> = toml["symbols"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(exports.contains(&shutdown), "{shutdown} is not exported");
}

#[test]
fn node_inputs_are_spec_section_1() {
    let toml = plugin_toml();
    let node = toml["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str() == Some("CLIPVisionLoaderDisTorch2MultiGPU"))
        .expect("the loader node");
    let inputs = node["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    // contract §1 first, in its order; then the options of later dv_load_options versions.
    assert_eq!(
        names,
        [
            "clip_vision",
            "device",
            "virtual_vram_gb",
            "donor_device",
            "expert_mode_allocations",
            "eject_models",
            "dtype",
            "donor_policy",
            "cpu_engine"
        ]
    );
    let get = |n: &str| {
        inputs
            .iter()
            .find(|i| i["name"].as_str() == Some(n))
            .unwrap()
    };
    let d = distorch_vision::plan::LoaderOptions::default();
    assert_eq!(get("clip_vision")["type"].as_str(), Some("STRING"));
    assert!(get("clip_vision").get("default").is_none());
    assert_eq!(get("device")["type"].as_str(), Some("STRING"));
    let v = get("virtual_vram_gb");
    assert_eq!(v["type"].as_str(), Some("FLOAT"));
    assert_eq!(v["default"].as_float(), Some(d.virtual_vram()));
    assert_eq!(v["min"].as_float(), Some(0.0));
    assert_eq!(v["max"].as_float(), Some(128.0));
    assert_eq!(
        get("donor_device")["default"].as_str(),
        Some(d.donor_device.as_str())
    );
    assert_eq!(
        get("expert_mode_allocations")["default"].as_str(),
        Some(d.expert_mode_allocations.as_str())
    );
    let e = get("eject_models");
    assert_eq!(e["type"].as_str(), Some("BOOLEAN"));
    assert_eq!(e["default"].as_bool(), Some(d.eject_models));
    // The extra inputs: defaults are the library's, every choice parses, the header has the
    // field, and the options version that added it is stated.
    let dtype = get("dtype");
    assert_eq!(
        dtype["default"].as_str(),
        Some(format!("{:?}", distorch_vision::export::ComputeDtype::default()).to_lowercase())
            .as_deref()
    );
    for c in dtype["choices"].as_array().unwrap() {
        c.as_str()
            .unwrap()
            .parse::<distorch_vision::export::ComputeDtype>()
            .unwrap();
    }
    let policy = get("donor_policy");
    assert_eq!(
        policy["default"].as_str(),
        Some(d.donor_policy.as_str()),
        "donor_policy default"
    );
    for c in policy["choices"].as_array().unwrap() {
        c.as_str()
            .unwrap()
            .parse::<distorch_vision::plan::DonorPolicy>()
            .unwrap();
    }
    let engine = get("cpu_engine");
    assert_eq!(
        engine["default"].as_str(),
        Some(d.cpu_engine.as_str()),
        "cpu_engine default"
    );
    for c in engine["choices"].as_array().unwrap() {
        c.as_str()
            .unwrap()
            .parse::<distorch_vision::plan::CpuEngine>()
            .unwrap();
    }
    let header = std::fs::read_to_string(root().join("distorch_vision.h")).unwrap();
    for (field, version) in [("dtype", 2), ("donor_policy", 3), ("cpu_engine", 5)] {
        assert_eq!(
            get(field)["since_options_version"].as_integer(),
            Some(version)
        );
        assert!(header.contains(&format!(
            "    /* version {version} */\n    const char *{field};"
        )));
    }
    // The model list comes from a function the library exports.
    assert_eq!(
        get("clip_vision")["choices_from"].as_str(),
        Some("dv_list_models")
    );
    let outs = node["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["type"].as_str(), Some("CLIP_VISION"));
    // The functions the node names exist.
    let listed: Vec<&str> = toml["symbols"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for key in ["load", "unload"] {
        assert!(listed.contains(&node[key].as_str().unwrap()));
    }
    for enc in node["encodes"].as_array().unwrap() {
        assert!(listed.contains(&enc["function"].as_str().unwrap()));
    }
}

/// The one C program of docs/c-abi.md that has a `main`: the guide's example.
fn docs_c_example() -> String {
    let guide = std::fs::read_to_string(root().join("docs/c-abi.md")).expect("docs/c-abi.md");
    let blocks: Vec<&str> = guide
        .split("```c\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .filter(|b| b.contains("int main("))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "docs/c-abi.md: expected one C example with a main()"
    );
    blocks[0].to_string()
}

#[test]
fn the_c_guide_example_compiles_against_the_header_and_runs() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docs-c-example");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("encode_one.c");
    std::fs::write(&src, docs_c_example()).unwrap();
    let exe = dir.join("encode_one");
    // Linked against the built plugin by name, as a C program would be: every function the
    // example calls must exist with the header's prototype.
    let lib_dir = plugin_path().parent().unwrap().to_path_buf();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = std::process::Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(root())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ldistorch_vision")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed on the docs/c-abi.md example:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::process::Command::new(&exe)
        .arg(fixture("clip_quickgelu_f32").join("model.safetensors"))
        .env("DISTORCH_GRAPHS_DIR", graphs_dir())
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the example failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("\"compute_device\":\"cpu\""), "{stdout}");
    assert!(stdout.contains("image_embeds [1, 16]:"), "{stdout}");
}
