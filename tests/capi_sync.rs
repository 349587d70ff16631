//! Keeps the three descriptions of the C surface in step: the `#[no_mangle]` functions of
//! src/capi/, the declarations of distorch_vision.h, and plugin.toml's symbol list; checks
//! the built library exports every listed symbol, and the node's inputs match SPEC §1.

#[path = "capi_common.rs"]
mod common;

use std::collections::BTreeSet;

use common::*;

/// `name → normalised signature` of the Rust exports.
fn rust_exports() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("src/capi")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() != "#[no_mangle]" {
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
fn header_functions() -> Vec<(String, String, Vec<String>)> {
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
    assert_eq!(
        names,
        [
            "clip_vision",
            "device",
            "virtual_vram_gb",
            "donor_device",
            "expert_mode_allocations",
            "eject_models"
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
    assert_eq!(v["default"].as_float(), Some(d.virtual_vram_gb));
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
