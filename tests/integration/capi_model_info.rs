//! `dv_model_plan_text`, `dv_model_outputs_json`, `dv_model_info_json` and
//! `dv_model_identity_json`: what a host shows about a loaded model (the plan table it logs at
//! load time, the outputs an encode returns by default, the family and kind a host follows
//! another loader's behaviour by, the identity a host's resume compares).

use std::ffi::c_char;

use crate::common::capi::*;

type StringFn = unsafe extern "C" fn(u64, *mut *mut c_char) -> Status;

fn string_fn(name: &str) -> StringFn {
    api(); // loads and initialises the plugin first
           // SAFETY: the plugin is our own cdylib; the type mirrors distorch_vision.h.
    let lib = Box::leak(Box::new(
        unsafe { libloading::Library::new(plugin_path()) }.expect("load plugin"),
    ));
    *unsafe { lib.get::<StringFn>(format!("{name}\0").as_bytes()) }
        .unwrap_or_else(|e| panic!("symbol {name}: {e}"))
}

fn call(f: StringFn, h: u64) -> String {
    let api = api();
    let mut p: *mut c_char = std::ptr::null_mut();
    let st = unsafe { f(h, &mut p) };
    assert_eq!(st, DV_OK, "{}", api.last_error());
    unsafe { api.take_string(p) }
}

#[test]
fn plan_text_is_the_cli_table() {
    let api = api();
    let f = string_fn("dv_model_plan_text");
    let h = api.load(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let text = call(f, h);
    assert!(text.starts_with("compute device cpu, mode none"), "{text}");
    assert!(
        text.contains("embed..head") && text.contains("cpu -> cpu"),
        "{text}"
    );
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn outputs_json_lists_the_default_outputs() {
    let api = api();
    let f = string_fn("dv_model_outputs_json");
    for (model, names) in [
        (
            "clip_quickgelu_f32",
            r#"["last_hidden_state","image_embeds","penultimate_hidden_states"]"#,
        ),
        (
            "llava_f32",
            r#"["last_hidden_state","image_embeds","penultimate_hidden_states","mm_projected"]"#,
        ),
    ] {
        let h = api.load(&fixture(model).join("model.safetensors"));
        assert_eq!(call(f, h), names, "{model}");
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    }
}

#[test]
fn info_json_names_family_kind_and_on_request_outputs() {
    let api = api();
    let f = string_fn("dv_model_info_json");
    for (model, kind, on_request) in [
        ("clip_quickgelu_f32", "clip", true),
        ("siglip_f32", "siglip", true),
        ("llava_f32", "clip", true),
        ("dinov2_gelu_f32", "dinov2", true),
        ("dinov3_gelu_f32", "dinov3", true),
    ] {
        let path = fixture(model).join("model.safetensors");
        let h = api.load(&path);
        let v: serde_json::Value = serde_json::from_str(&call(f, h)).unwrap();
        let m = distorch_vision::model::Model::open(&path).unwrap();
        assert_eq!(v["kind"], kind, "{model}: {v}");
        assert_eq!(v["family"], m.config.family.as_str(), "{model}");
        assert_eq!(v["image_size"], m.config.image_size, "{model}");
        assert_eq!(v["num_layers"], m.config.num_layers, "{model}");
        assert_eq!(v["llava"], model == "llava_f32", "{model}");
        assert_eq!(
            v["outputs"],
            serde_json::to_value(m.output_names()).unwrap(),
            "{model}"
        );
        assert_eq!(
            v["on_request"].as_array().unwrap().len(),
            usize::from(on_request),
            "{model}: {v}"
        );
        assert!(v["path"].as_str().unwrap().ends_with("model.safetensors"));
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    }
}

#[test]
fn identity_json_is_what_a_sharded_resume_compares() {
    let api = api();
    let f = string_fn("dv_model_identity_json");
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let h = api.load(&model);
    let id: serde_json::Value = serde_json::from_str(&call(f, h)).unwrap();
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    // The CLI's sharded run records the same fields (and the crop) in index.json.
    let dir = crate::common::temp_dir("capi-identity");
    let out = crate::common::bin()
        .args([
            "encode",
            "--device",
            "cpu",
            "--eject-models",
            "false",
            "--shard-size",
            "4",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--images")
        .arg(crate::common::root().join("tests/fixtures/images/exact_32x32.png"))
        .arg("--out")
        .arg(dir.join("shards"))
        .arg("--graphs-dir")
        .arg(graphs_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("shards/index.json")).unwrap()).unwrap();
    let mut cli = index["identity"].clone();
    cli.as_object_mut().unwrap().remove("crop");
    assert_eq!(id, cli);
    assert_eq!(id["model_id"].as_str().unwrap().len(), 32, "{id}");
    // Another model has another id.
    let h = api.load(&fixture("siglip_f32").join("model.safetensors"));
    let other: serde_json::Value = serde_json::from_str(&call(f, h)).unwrap();
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    assert_ne!(other["model_id"], id["model_id"]);
}

#[test]
fn bad_handles_and_null_pointers_are_reported() {
    let api = api();
    for name in [
        "dv_model_plan_text",
        "dv_model_outputs_json",
        "dv_model_info_json",
        "dv_model_identity_json",
    ] {
        let f = string_fn(name);
        let mut p: *mut c_char = 8 as *mut c_char; // must be reset to NULL on failure
        assert_eq!(
            unsafe { f(u64::MAX, &mut p) },
            DV_ERR_INVALID_HANDLE,
            "{name}"
        );
        assert!(p.is_null(), "{name}");
        let h = api.load(&fixture("siglip_f32").join("model.safetensors"));
        assert_eq!(
            unsafe { f(h, std::ptr::null_mut()) },
            DV_ERR_NULL_POINTER,
            "{name}"
        );
        assert!(api.last_error().contains("out"), "{}", api.last_error());
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    }
}
