//! docs/c-abi.md keeps up with the C ABI: every exported function, every `dv_load_options`
//! field (in the options table, with the version that added it) and every status code.

use crate::common::*;

fn c_abi_md() -> String {
    std::fs::read_to_string(root().join("docs/c-abi.md")).unwrap()
}

#[test]
fn the_c_guide_names_every_export() {
    let toml: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("plugin.toml")).unwrap()).unwrap();
    let doc = c_abi_md();
    let missing: Vec<&str> = toml["symbols"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .filter(|name| !doc.contains(&format!("{name}(")) && !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "docs/c-abi.md never names {missing:?}");
}

#[test]
fn the_c_guide_lists_every_option_field_and_status() {
    let header = std::fs::read_to_string(root().join("distorch_vision.h")).unwrap();
    let doc = c_abi_md();
    let body = &header[header.find("typedef struct dv_load_options {").unwrap()..];
    let body = &body[..body.find("} dv_load_options;").unwrap()];
    let mut version = 1;
    let mut missing = Vec::new();
    for line in body.lines().skip(1) {
        let line = line.trim();
        if let Some(v) = line
            .strip_prefix("/* version ")
            .and_then(|r| r.strip_suffix(" */"))
        {
            version = v.parse().unwrap();
            continue;
        }
        let Some(decl) = line.split(';').next().filter(|d| !d.is_empty()) else {
            continue;
        };
        let field = decl.rsplit([' ', '*']).next().unwrap();
        let row = format!("| `{field}` | {version} |");
        if !doc.contains(&row) {
            missing.push(row);
        }
    }
    for line in header.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("DV_ERR_") {
            let name = format!("DV_ERR_{}", rest.split([' ', '=']).next().unwrap());
            if !doc.contains(&format!("| `{name}` |")) {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "docs/c-abi.md lacks {missing:?}");
}
