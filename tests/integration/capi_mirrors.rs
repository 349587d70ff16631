//! Every hand-written copy of the header's structs and signatures is held to the header:
//! the Rust structs of src/capi/, the Python package's ctypes bindings (library.py) and those of
//! the standalone ctypes host (scripts/encode_with_plugin.py). Structs are compared field by
//! field and version by version (the header's `/* version N */` marks, Rust's
//! `// --- version N ---`, Python's `# version N`), so a new `dv_load_options` version fails
//! here until every copy has its fields.

use std::collections::BTreeMap;

use super::capi_sync::header_functions;
use crate::common::capi::*;

/// One struct field: the options version that added it, its C type, its name.
type Field = (u32, String, String);

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A C type with its spaces dropped (`const char *` → `constchar*`), as `header_functions`
/// gives parameter types.
fn squash(t: &str) -> String {
    t.split_whitespace().collect()
}

/// The lines between the line that contains `start` and the first later line that, trimmed,
/// starts with `end`.
fn block<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| !l.contains(start));
    assert!(lines.next().is_some(), "{start:?} not found");
    lines
        .take_while(|l| !l.trim_start().starts_with(end))
        .collect()
}

/// The version a marker comment line starts, if it is one: `/* version 2 */`,
/// `// --- version 2 ---`, `# version 2`.
fn version_mark(line: &str) -> Option<u32> {
    let t = line.trim().trim_start_matches(['/', '*', '#', '-', ' ']);
    let n = t.strip_prefix("version ")?;
    n.trim_end_matches(['/', '*', '-', ' ']).parse().ok()
}

/// `typedef struct NAME { ... } NAME;` of the header.
fn header_struct(name: &str) -> Vec<Field> {
    let text = read("distorch_vision.h");
    let mut version = 1;
    let mut out = Vec::new();
    for line in block(&text, &format!("typedef struct {name} {{"), "}") {
        if let Some(v) = version_mark(line) {
            version = v;
            continue;
        }
        let code = line.split("/*").next().unwrap().trim();
        let Some(decl) = code.strip_suffix(';') else {
            continue;
        };
        let cut = decl
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap();
        out.push((version, squash(&decl[..=cut]), decl[cut + 1..].to_string()));
    }
    assert!(out.len() >= 8, "{name}: only {out:?}");
    out
}

/// `#[repr(C)] pub struct NAME { pub field: Type, ... }` of a Rust file, in C spelling.
fn rust_struct(path: &str, name: &str) -> Vec<Field> {
    let text = read(path);
    let mut version = 1;
    let mut out = Vec::new();
    for line in block(&text, &format!("pub struct {name} {{"), "}") {
        if let Some(v) = version_mark(line) {
            version = v;
            continue;
        }
        let Some((field, ty)) = line
            .trim()
            .strip_prefix("pub ")
            .and_then(|f| f.split_once(':'))
        else {
            continue;
        };
        let c = match ty.trim().trim_end_matches(',') {
            "usize" => "size_t",
            "f64" => "double",
            "i32" => "int32_t",
            "*const c_char" => "constchar*",
            "*const std::ffi::c_void" => "constvoid*",
            "*const i64" => "constint64_t*",
            other => panic!("{path}: no C spelling for Rust type {other:?}; add it here"),
        };
        out.push((version, c.to_string(), field.trim().to_string()));
    }
    out
}

/// A ctypes expression of a Python file in C spelling (`C.POINTER(C.c_float)` → `float*`),
/// through the file's aliases (`_sz = C.c_size_t`) and its struct classes.
fn ctype(expr: &str, aliases: &BTreeMap<String, String>) -> String {
    let e = expr.trim();
    if let Some(inner) = e
        .strip_prefix("C.POINTER(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return format!("{}*", ctype(inner, aliases));
    }
    if let Some(a) = aliases.get(e) {
        return ctype(a, aliases);
    }
    match e {
        "C.c_size_t" => "size_t",
        "C.c_uint64" => "uint64_t",
        "C.c_uint32" => "uint32_t",
        "C.c_int32" => "int32_t",
        "C.c_int64" => "int64_t",
        "C.c_double" => "double",
        "C.c_float" => "float",
        "C.c_char_p" => "char*",
        "C.c_void_p" => "void*",
        "LoadOptions" => "dv_load_options",
        "Tensor" => "dv_tensor",
        other => panic!("no C spelling for the ctypes expression {other:?}; add it here"),
    }
    .to_string()
}

/// Splits at the commas outside brackets.
fn top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The ctypes aliases a Python file assigns (`_u64, _st = C.c_uint64, C.c_int32`).
fn aliases(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((lhs, rhs)) = line.split_once(" = ") else {
            continue;
        };
        if !rhs.trim_start().starts_with("C.") {
            continue;
        }
        let names: Vec<&str> = lhs.split(',').map(str::trim).collect();
        let values = top_level(rhs);
        if names.len() == values.len()
            && names
                .iter()
                .all(|n| n.chars().all(|c| c == '_' || c.is_alphanumeric()))
        {
            out.extend(names.iter().map(|n| n.to_string()).zip(values));
        }
    }
    out
}

/// `class NAME(C.Structure): _fields_ = [("field", ctype), ...]` of a Python file.
fn python_struct(path: &str, class: &str) -> Vec<Field> {
    let text = read(path);
    let body = block(&text, &format!("class {class}(C.Structure):"), "]");
    let no_aliases = BTreeMap::new();
    let mut version = 1;
    let mut out = Vec::new();
    for line in body.iter().skip_while(|l| !l.contains("_fields_")).skip(1) {
        if let Some(v) = version_mark(line) {
            version = v;
            continue;
        }
        let entry = line.split('#').next().unwrap().trim();
        let Some(inner) = entry.strip_prefix('(').and_then(|e| e.strip_suffix("),")) else {
            continue;
        };
        let (name, ty) = inner.split_once(',').unwrap();
        out.push((
            version,
            ctype(ty, &no_aliases),
            name.trim().trim_matches('"').to_string(),
        ));
    }
    out
}

/// `"dv_name": (restype, [argtypes]),` entries of the dict a Python file opens on the line
/// holding `start`, in C spelling.
fn python_signatures(path: &str, start: &str) -> Vec<(String, String, Vec<String>)> {
    let text = read(path);
    let aliases = aliases(&text);
    let body: String = block(&text, start, "}")
        .iter()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    // Split at the quotes: text before the first key, then key, value, key, value, ...
    let parts: Vec<&str> = body.split('"').collect();
    for entry in parts[1..].chunks(2) {
        let name = entry[0].to_string();
        let rest = entry.get(1).copied().unwrap_or_default();
        let tuple = rest
            .trim()
            .strip_prefix(':')
            .and_then(|r| r.trim().strip_prefix('('))
            .and_then(|r| r.trim().trim_end_matches(',').strip_suffix(')'))
            .unwrap_or_else(|| panic!("{path}: {name}: cannot read {rest:?}"));
        let parts = top_level(tuple);
        assert_eq!(parts.len(), 2, "{path}: {name}: {tuple}");
        let args = parts[1]
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap();
        out.push((
            name,
            ctype(&parts[0], &aliases),
            top_level(args).iter().map(|a| ctype(a, &aliases)).collect(),
        ));
    }
    assert!(!out.is_empty(), "{path}: no signatures after {start:?}");
    out
}

/// A header type as ctypes can express it: no `const`, typedefs resolved, and every pointer to
/// bytes (`char *`, `void *`, `uint8_t *`) one kind, as ctypes passes them alike.
fn abi(t: &str) -> String {
    let t = t.replace("const", "");
    let t = match t.as_str() {
        "dv_model" | "dv_outputs" => "uint64_t".to_string(),
        "dv_model*" | "dv_outputs*" => "uint64_t*".to_string(),
        "dv_status" => "int32_t".to_string(),
        _ => t,
    };
    for bytes in ["char*", "void*", "uint8_t*"] {
        if let Some(rest) = t.strip_prefix(bytes) {
            return format!("bytes*{rest}");
        }
    }
    t
}

fn without_const(fields: &[Field]) -> Vec<Field> {
    fields
        .iter()
        .map(|(v, t, n)| (*v, t.replace("const", ""), n.clone()))
        .collect()
}

#[test]
fn every_copy_of_the_structs_has_the_headers_fields_and_versions() {
    for (c, rust_file, rust, python) in [
        (
            "dv_load_options",
            "src/capi/options.rs",
            "DvLoadOptions",
            "LoadOptions",
        ),
        ("dv_tensor", "src/capi/outputs.rs", "DvTensor", "Tensor"),
    ] {
        let header = header_struct(c);
        assert_eq!(rust_struct(rust_file, rust), header, "{rust_file} {rust}");
        for py in [
            "python/distorch_vision/library.py",
            "scripts/encode_with_plugin.py",
        ] {
            assert_eq!(
                python_struct(py, python),
                without_const(&header),
                "{py} {python} against distorch_vision.h {c}"
            );
        }
    }
    // The versions the header marks follow each other, and the library reads the newest.
    let versions: Vec<u32> = header_struct("dv_load_options")
        .iter()
        .map(|f| f.0)
        .collect();
    assert!(versions
        .windows(2)
        .all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    assert_eq!(
        versions.last().copied(),
        Some(distorch_vision::capi::options::LOAD_OPTIONS_VERSION as u32),
        "the newest dv_load_options version of the header is not the one src/capi/options.rs reads"
    );
}

#[test]
fn every_python_binding_has_the_headers_signature() {
    let header: BTreeMap<String, (String, Vec<String>)> = header_functions()
        .into_iter()
        .map(|(n, r, p)| (n, (abi(&r), p.iter().map(|t| abi(t)).collect())))
        .collect();
    let bindings = [
        ("python/distorch_vision/library.py", "_SIGNATURES: dict"),
        ("python/distorch_vision/library.py", "_OPTIONAL: dict"),
        ("scripts/encode_with_plugin.py", "sigs = {"),
    ];
    for (path, start) in bindings {
        for (name, ret, params) in python_signatures(path, start) {
            let (hret, hparams) = header
                .get(&name)
                .unwrap_or_else(|| panic!("{path} binds {name}, which the header lacks"));
            let got: Vec<String> = params.iter().map(|t| abi(t)).collect();
            assert_eq!(&abi(&ret), hret, "{path}: {name}: restype");
            assert_eq!(&got, hparams, "{path}: {name}: argtypes");
        }
    }
}
