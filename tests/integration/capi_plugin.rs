//! The C ABI driven as a host would: the built cdylib loaded with libloading, fixtures
//! encoded and compared with the CLI and with Hugging Face's outputs; misuse; threads.

use std::ffi::{c_char, CStr, CString};
use std::process::Command;

use crate::common::capi::*;
use crate::common::{assert_openvino_cpu_refused, intel_cpu};

#[test]
fn versions_and_status_names() {
    let api = api();
    let v = unsafe { CStr::from_ptr((api.version)()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(v, plugin_toml()["plugin"]["version"].as_str().unwrap());
    let abi = unsafe { (api.abi_version)() };
    assert_eq!(
        abi as i64,
        plugin_toml()["plugin"]["abi_version"].as_integer().unwrap()
    );
    let name = |s| {
        unsafe { CStr::from_ptr((api.status_string)(s)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(DV_OK), "DV_OK");
    assert_eq!(name(DV_ERR_INVALID_HANDLE), "DV_ERR_INVALID_HANDLE");
    assert_eq!(name(999), "DV_ERR_UNKNOWN");
}

#[test]
fn fixtures_match_the_cli_and_hugging_face() {
    let api = api();
    let tmp = tempdir("cli");
    for m in FIXTURES {
        let dir = fixture(m);
        let h = api.load(&dir.join("model.safetensors"));
        let mut size = 0u32;
        assert_eq!(unsafe { (api.model_image_size)(h, &mut size) }, DV_OK);
        let (mut patch, mut count) = (9u32, 9u32);
        assert_eq!(
            unsafe { (api.model_patching)(h, &mut patch, &mut count) },
            DV_OK
        );
        let got = if is_naflex(m) {
            // naflex: no square size; patches with their grids, which come back last.
            let (values, grids) = read_patches(m);
            assert_eq!((size, patch, count), (0, 4, 64));
            let (got, shapes) = api.encode_patches_vec(h, &values, &grids);
            assert_eq!(shapes, grids, "{m}: spatial_shapes");
            got
        } else {
            let px = read_pixels(m);
            assert_eq!(size as usize, px.shape()[2]);
            assert_eq!((patch, count), (0, 0));
            api.encode_pixels_vec(h, &px)
        };
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);

        let out = tmp.join(format!("{m}.safetensors"));
        let st = Command::new(env!("CARGO_BIN_EXE_distorch-vision"))
            .args(["encode", "--model"])
            .arg(dir.join("model.safetensors"))
            .arg("--pixels")
            .arg(dir.join("pixels.safetensors"))
            .arg("--out")
            .arg(&out)
            .args(["--device", "cpu", "--graphs-dir"])
            .arg(graphs_dir())
            .arg("--ort-library")
            .arg(ort_library())
            .output()
            .expect("run the CLI");
        assert!(
            st.status.success(),
            "CLI encode of {m} failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let cli = read_safetensors(&out);
        // The defaults: on-request outputs (all_hidden_states) are checked by name elsewhere.
        let mut expected = read_safetensors(&dir.join("expected.safetensors"));
        expected.retain(|t| !crate::common::ON_REQUEST.contains(&t.0.as_str()));

        let mut got_sorted = got.clone();
        got_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |v: &[(String, Vec<usize>, Vec<f32>)]| {
            v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&got_sorted), names(&cli), "{m}: output names vs CLI");
        assert_eq!(
            names(&got_sorted),
            names(&expected),
            "{m}: output names vs HF"
        );
        for ((name, shape, data), (_, cshape, cdata)) in got_sorted.iter().zip(&cli) {
            assert_eq!(shape, cshape, "{m}/{name}: shape vs CLI");
            let d = max_abs_diff(data, cdata);
            assert!(d <= 1e-5, "{m}/{name}: max |plugin − CLI| = {d}");
        }
        for ((name, shape, data), (_, eshape, edata)) in got_sorted.iter().zip(&expected) {
            assert_eq!(shape, eshape, "{m}/{name}: shape vs HF");
            let d = max_abs_diff(data, edata);
            assert!(d <= 1e-4, "{m}/{name}: max |plugin − HF| = {d}");
        }
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("capi-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn image_buffer_encode_matches_preprocessed_pixels() {
    let api = api();
    let m = "clip_quickgelu_f32";
    let h = api.load(&fixture(m).join("model.safetensors"));
    let (b, s) = (2usize, 32usize);
    // An IMAGE buffer of 8-bit values (so quantisation is exact) in BHWC, with alpha.
    let mut rgba = vec![0f32; b * s * s * 4];
    let mut rgb = vec![0f32; b * s * s * 3];
    let mut px = ndarray::Array4::<f32>::zeros((b, 3, s, s));
    let (mean, std) = distorch_vision::model::Model::open(&fixture(m).join("model.safetensors"))
        .unwrap()
        .config
        .mean_std();
    for n in 0..b {
        for y in 0..s {
            for x in 0..s {
                for c in 0..4 {
                    let v = ((n * 131 + y * 17 + x * 7 + c * 61) % 256) as f32 / 255.0;
                    rgba[((n * s + y) * s + x) * 4 + c] = v;
                    if c < 3 {
                        rgb[((n * s + y) * s + x) * 3 + c] = v;
                        px[[n, c, y, x]] = (v - mean[c]) / std[c];
                    }
                }
            }
        }
    }
    let want = api.encode_pixels_vec(h, &px);
    for (buf, c) in [(&rgba, 4usize), (&rgb, 3usize)] {
        for crop in [DV_CROP_CENTER, DV_CROP_NONE] {
            let mut out = 0u64;
            let st = unsafe {
                (api.encode_image)(
                    h,
                    buf.as_ptr(),
                    buf.len(),
                    b,
                    s,
                    s,
                    c,
                    crop,
                    std::ptr::null(),
                    1,
                    &mut out,
                )
            };
            assert_eq!(st, DV_OK, "{}", api.last_error());
            let got = api.take_outputs(out);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0);
                assert_eq!(g.1, w.1);
                let d = max_abs_diff(&g.2, &w.2);
                assert!(d <= 1e-5, "C={c} crop={crop} {}: {d}", g.0);
            }
        }
    }
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn all_hidden_states_is_an_output_name_computed_only_on_request() {
    let api = api();
    for m in ["siglip_s36_p8_f32", "dinov2_swiglu_f32"] {
        let h = api.load(&fixture(m).join("model.safetensors"));
        let px = read_pixels(m);
        let s = px.shape().to_vec();
        let data = px.as_standard_layout();
        let encode = |names: &str| {
            let names = cstring(names);
            let mut out = 0u64;
            let st = unsafe {
                (api.encode_pixels)(
                    h,
                    data.as_ptr(),
                    data.len(),
                    s[0],
                    s[1],
                    s[2],
                    s[3],
                    names.as_ptr(),
                    0,
                    &mut out,
                )
            };
            assert_eq!(st, DV_OK, "{m}: {}", api.last_error());
            api.take_outputs(out)
        };
        let expected = read_safetensors(&fixture(m).join("expected.safetensors"));
        let got = encode("all_hidden_states, last_hidden_state");
        let names: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["last_hidden_state", "all_hidden_states"], "{m}");
        for (name, shape, data) in &got {
            let (_, eshape, edata) = expected.iter().find(|t| &t.0 == name).unwrap();
            assert_eq!(shape, eshape, "{m}/{name}");
            assert_eq!(shape.len(), if name == "all_hidden_states" { 4 } else { 3 });
            let d = max_abs_diff(data, edata);
            assert!(d <= 1e-4, "{m}/{name}: max |plugin − HF| = {d}");
        }
        // Not part of the default set.
        let defaults = encode("");
        assert!(defaults.iter().all(|t| t.0 != "all_hidden_states"), "{m}");
        assert_eq!(defaults.len(), 3, "{m}");
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    }
}

#[test]
fn selected_outputs_plan_and_devices() {
    let api = api();
    let h = api.load(&fixture("llava_f32").join("model.safetensors"));
    let px = read_pixels("llava_f32");
    let names = cstring(" mm_projected ,image_embeds");
    let mut out = 0u64;
    let st = unsafe {
        (api.encode_pixels)(
            h,
            px.as_ptr(),
            px.len(),
            2,
            3,
            32,
            32,
            names.as_ptr(),
            0,
            &mut out,
        )
    };
    assert_eq!(st, DV_OK, "{}", api.last_error());
    let got = api.take_outputs(out);
    let got: Vec<_> = got.iter().map(|t| (t.0.as_str(), t.1.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("image_embeds", vec![2, 16]),
            ("mm_projected", vec![2, 16, 48])
        ]
    );

    let mut p: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
    let plan: serde_json::Value = serde_json::from_str(&unsafe { api.take_string(p) }).unwrap();
    assert_eq!(plan["compute_device"], "cpu");
    for k in ["mode", "model_bytes", "blocks", "devices", "warnings"] {
        assert!(plan.get(k).is_some(), "plan JSON lacks {k}: {plan}");
    }
    assert!(plan["blocks"][0]["name"].is_string());

    let mut d: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.list_devices)(&mut d) }, DV_OK);
    let devices: serde_json::Value = serde_json::from_str(&unsafe { api.take_string(d) }).unwrap();
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["device"] == "cpu"));
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn misuse_is_reported_not_undefined() {
    let api = api();
    let model_path = fixture("clip_quickgelu_f32").join("model.safetensors");
    let px = read_pixels("clip_quickgelu_f32");
    let null = std::ptr::null_mut::<u64>();

    // Loading: NULL options, NULL out, missing clip_vision, bad values, short struct.
    let mut h = 7u64;
    assert_eq!(
        unsafe { (api.model_load)(std::ptr::null(), &mut h) },
        DV_ERR_NULL_POINTER
    );
    assert_eq!(h, 0, "out-parameter is zeroed on failure");
    assert!(api.last_error().contains("opts"), "{}", api.last_error());
    let (st, msg) = api
        .load_with(&model_path, |o| o.clip_vision = std::ptr::null())
        .unwrap_err();
    assert_eq!(st, DV_ERR_NULL_POINTER, "{msg}");
    let (st, msg) = api
        .load_with(&fixture("nope").join("model.safetensors"), |_| {})
        .unwrap_err();
    assert_eq!(st, DV_ERR_NOT_FOUND, "{msg}");
    let (st, msg) = api
        .load_with(&model_path, |o| o.virtual_vram_gb = 500.0)
        .unwrap_err();
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("virtual_vram_gb"), "{msg}");
    let bad = cstring("tpu:0");
    let (st, msg) = api
        .load_with(&model_path, |o| o.device = bad.as_ptr())
        .unwrap_err();
    assert_ne!(st, DV_OK, "{msg}");
    assert!(msg.contains("tpu:0"), "{msg}");
    let (st, _) = api
        .load_with(&model_path, |o| o.struct_size = 8)
        .unwrap_err();
    assert_eq!(st, DV_ERR_STRUCT_SIZE);
    let mut o: LoadOptions = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { (api.load_options_init)(&mut o, 4) },
        DV_ERR_STRUCT_SIZE
    );
    assert_eq!(
        unsafe { (api.load_options_init)(std::ptr::null_mut(), 64) },
        DV_ERR_NULL_POINTER
    );
    let bad_utf8 = [0xffu8, 0xfe, 0];
    let (st, msg) = api
        .load_with(&model_path, |o| o.donor_device = bad_utf8.as_ptr().cast())
        .unwrap_err();
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
    assert_eq!(unsafe { (api.model_load)(&o, null) }, DV_ERR_NULL_POINTER);

    let h = api.load(&model_path);
    let mut out = 5u64;
    let enc = |model: u64, data: *const f32, count: usize, dims: [usize; 4], out: *mut u64| unsafe {
        (api.encode_pixels)(
            model,
            data,
            count,
            dims[0],
            dims[1],
            dims[2],
            dims[3],
            std::ptr::null(),
            0,
            out,
        )
    };
    // Wrong sizes.
    assert_eq!(
        enc(h, px.as_ptr(), px.len() - 1, [2, 3, 32, 32], &mut out),
        DV_ERR_SIZE_MISMATCH
    );
    assert_eq!(out, 0);
    assert!(api.last_error().contains("6143"), "{}", api.last_error());
    assert_eq!(
        enc(h, px.as_ptr(), px.len(), [2, 3, 32, 33], &mut out),
        DV_ERR_SIZE_MISMATCH
    );
    assert_eq!(
        enc(h, px.as_ptr(), 2 * 3 * 16 * 16, [2, 3, 16, 16], &mut out),
        DV_ERR_INVALID_ARGUMENT,
        "a shape the model does not take"
    );
    assert_eq!(
        enc(h, px.as_ptr(), 0, [0, 3, 32, 32], &mut out),
        DV_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        enc(
            h,
            px.as_ptr(),
            usize::MAX,
            [usize::MAX, 3, 32, 32],
            &mut out
        ),
        DV_ERR_SIZE_MISMATCH,
        "overflowing shapes"
    );
    // NULLs.
    assert_eq!(
        enc(h, std::ptr::null(), px.len(), [2, 3, 32, 32], &mut out),
        DV_ERR_NULL_POINTER
    );
    assert_eq!(
        enc(h, px.as_ptr(), px.len(), [2, 3, 32, 32], null),
        DV_ERR_NULL_POINTER
    );
    // Unknown output name, bad crop, bad channel count, image of another size.
    let unknown = cstring("pooler_output");
    let st = unsafe {
        (api.encode_pixels)(
            h,
            px.as_ptr(),
            px.len(),
            2,
            3,
            32,
            32,
            unknown.as_ptr(),
            0,
            &mut out,
        )
    };
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(api.last_error().contains("pooler_output"));
    let img = vec![0.5f32; 2 * 32 * 32 * 4];
    let enc_img = |dims: [usize; 4], crop: i32, out: *mut u64| unsafe {
        (api.encode_image)(
            h,
            img.as_ptr(),
            dims.iter().product(),
            dims[0],
            dims[1],
            dims[2],
            dims[3],
            crop,
            std::ptr::null(),
            0,
            out,
        )
    };
    assert_eq!(
        enc_img([2, 32, 32, 4], 7, &mut out),
        DV_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        enc_img([2, 32, 32, 2], 0, &mut out),
        DV_ERR_INVALID_ARGUMENT
    );
    assert_eq!(enc_img([2, 32, 32, 4], 0, null), DV_ERR_NULL_POINTER);

    // Outputs: lookups, NULLs, bad index/name, short struct, double free.
    assert_eq!(
        enc(h, px.as_ptr(), px.len(), [2, 3, 32, 32], &mut out),
        DV_OK
    );
    assert_ne!(out, 0);
    let mut t = Tensor::empty();
    let missing = cstring("mm_projected");
    assert_eq!(
        unsafe { (api.outputs_get)(out, missing.as_ptr(), &mut t) },
        DV_ERR_NOT_FOUND
    );
    assert_eq!(
        unsafe { (api.outputs_get)(out, std::ptr::null(), &mut t) },
        DV_ERR_NULL_POINTER
    );
    assert_eq!(
        unsafe { (api.outputs_get_index)(out, 3, &mut t) },
        DV_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { (api.outputs_get_index)(out, 0, std::ptr::null_mut()) },
        DV_ERR_NULL_POINTER
    );
    t.struct_size = 8;
    assert_eq!(
        unsafe { (api.outputs_get_index)(out, 0, &mut t) },
        DV_ERR_STRUCT_SIZE
    );
    let mut n = 0usize;
    assert_eq!(
        unsafe { (api.outputs_count)(out, std::ptr::null_mut()) },
        DV_ERR_NULL_POINTER
    );
    // A model id is not an outputs id and vice versa.
    assert_eq!(
        unsafe { (api.outputs_count)(h, &mut n) },
        DV_ERR_INVALID_HANDLE
    );
    let mut size = 0u32;
    assert_eq!(
        unsafe { (api.model_image_size)(out, &mut size) },
        DV_ERR_INVALID_HANDLE
    );
    assert_eq!(unsafe { (api.model_unload)(out) }, DV_ERR_INVALID_HANDLE);
    assert_eq!(unsafe { (api.outputs_free)(out) }, DV_OK);
    assert_eq!(unsafe { (api.outputs_free)(out) }, DV_ERR_INVALID_HANDLE);
    assert_eq!(
        unsafe { (api.outputs_count)(out, &mut n) },
        DV_ERR_INVALID_HANDLE
    );
    assert_eq!(unsafe { (api.outputs_free)(0) }, DV_OK, "0 is a no-op");
    assert_eq!(
        unsafe { (api.outputs_free)(u64::MAX) },
        DV_ERR_INVALID_HANDLE
    );

    // Strings: double free and foreign pointers.
    let mut p: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
    assert_eq!(unsafe { (api.string_free)(p) }, DV_OK);
    assert_eq!(unsafe { (api.string_free)(p) }, DV_ERR_INVALID_HANDLE);
    let mine = cstring("not yours");
    assert_eq!(
        unsafe { (api.string_free)(mine.as_ptr() as *mut c_char) },
        DV_ERR_INVALID_HANDLE
    );
    assert_eq!(unsafe { (api.string_free)(std::ptr::null_mut()) }, DV_OK);
    assert_eq!(
        unsafe { (api.model_plan_json)(h, std::ptr::null_mut()) },
        DV_ERR_NULL_POINTER
    );

    // Use after unload, double unload.
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    assert_eq!(
        enc(h, px.as_ptr(), px.len(), [2, 3, 32, 32], &mut out),
        DV_ERR_INVALID_HANDLE
    );
    assert!(
        api.last_error().contains("model handle"),
        "{}",
        api.last_error()
    );
    assert_eq!(
        unsafe { (api.model_plan_json)(h, &mut p) },
        DV_ERR_INVALID_HANDLE
    );
    assert!(p.is_null());
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_ERR_INVALID_HANDLE);
    assert_eq!(unsafe { (api.model_unload)(0) }, DV_OK);

    // A success clears the message.
    assert_eq!(unsafe { (api.model_unload)(0) }, DV_OK);
    assert_eq!(api.last_error(), "");
}

#[test]
fn threads_share_a_model_and_run_models_in_parallel() {
    let api = api();
    let a = api.load(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let b = api.load(&fixture("siglip_f32").join("model.safetensors"));
    let pa = read_pixels("clip_quickgelu_f32");
    let pb = read_pixels("siglip_f32");
    let want_a = api.encode_pixels_vec(a, &pa);
    let want_b = api.encode_pixels_vec(b, &pb);
    std::thread::scope(|s| {
        for i in 0..6 {
            let (h, px, want) = if i % 3 == 2 {
                (b, &pb, &want_b)
            } else {
                (a, &pa, &want_a)
            };
            s.spawn(move || {
                for _ in 0..4 {
                    let got = api.encode_pixels_vec(h, px);
                    for (g, w) in got.iter().zip(want) {
                        assert_eq!(g.0, w.0);
                        assert!(max_abs_diff(&g.2, &w.2) <= 1e-6);
                    }
                }
                // Errors on one thread do not leak into another's message.
                assert_eq!(
                    unsafe { (api.model_unload)(u64::MAX - 1) },
                    DV_ERR_INVALID_HANDLE
                );
                assert!(api.last_error().contains("not valid"));
            });
        }
    });
    assert_eq!(unsafe { (api.model_unload)(a) }, DV_OK);
    assert_eq!(unsafe { (api.model_unload)(b) }, DV_OK);
}

#[test]
fn unload_while_another_thread_encodes() {
    let api = api();
    let h = api.load(&fixture("clip_gelu_f16").join("model.safetensors"));
    let px = read_pixels("clip_gelu_f16");
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut ok = 0;
            for _ in 0..50 {
                let mut out = 0u64;
                let st = unsafe {
                    (api.encode_pixels)(
                        h,
                        px.as_ptr(),
                        px.len(),
                        2,
                        3,
                        32,
                        32,
                        std::ptr::null(),
                        0,
                        &mut out,
                    )
                };
                match st {
                    DV_OK => {
                        ok += 1;
                        assert_eq!(unsafe { (api.outputs_free)(out) }, DV_OK);
                    }
                    DV_ERR_INVALID_HANDLE => break,
                    other => panic!("unexpected status {other}: {}", api.last_error()),
                }
            }
            ok
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
        let _ = worker.join().unwrap();
    });
}

#[test]
fn eject_models_keeps_ejected_handles_usable() {
    let api = api();
    let a = api.load(&fixture("open_clip_f32").join("model.safetensors"));
    let px = read_pixels("open_clip_f32");
    let before = api.encode_pixels_vec(a, &px);
    // A second model loaded with eject_models releases the first's sessions (contract §5.6).
    let b = api
        .load_with(&fixture("clip_bf16").join("model.safetensors"), |o| {
            o.eject_models = 1
        })
        .unwrap();
    let after = api.encode_pixels_vec(a, &px);
    for (x, y) in before.iter().zip(&after) {
        assert!(max_abs_diff(&x.2, &y.2) <= 1e-6);
    }
    assert_eq!(unsafe { (api.model_unload)(a) }, DV_OK);
    assert_eq!(unsafe { (api.model_unload)(b) }, DV_OK);
}

/// Found by the C host: on a LLaVA file, asking for `image_embeds` alone fails in the
/// pipeline ("penultimate state missing"), because the head block also takes the
/// penultimate state (for `mm_projected`) but `encode_batch` only keeps it when
/// `penultimate_hidden_states` or `mm_projected` is requested. The CLI fails the same way
/// (`encode --outputs image_embeds`). Fix belongs in src/runtime/pipeline.rs.
#[test]
fn llava_image_embeds_alone() {
    let api = api();
    let h = api.load(&fixture("llava_f32").join("model.safetensors"));
    let px = read_pixels("llava_f32");
    let names = cstring("image_embeds");
    let mut out = 0u64;
    let st = unsafe {
        (api.encode_pixels)(
            h,
            px.as_ptr(),
            px.len(),
            2,
            3,
            32,
            32,
            names.as_ptr(),
            0,
            &mut out,
        )
    };
    assert_eq!(st, DV_OK, "{}", api.last_error());
    let got = api.take_outputs(out);
    assert_eq!(got.len(), 1);
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn a_newer_callers_larger_options_struct_is_accepted() {
    // A host built against a later header passes a longer struct; version-1 fields are read.
    #[repr(C)]
    struct Grown {
        v1: LoadOptions,
        added: [u64; 6],
    }
    let api = api();
    let path = path_cstring(&fixture("siglip_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let mut g: Grown = unsafe { std::mem::zeroed() };
    g.added = [0xABAB_ABAB_ABAB_ABAB; 6];
    let size = std::mem::size_of::<Grown>();
    assert_eq!(unsafe { (api.load_options_init)(&mut g.v1, size) }, DV_OK);
    assert_eq!(g.v1.struct_size, size);
    assert_eq!(g.v1.virtual_vram_gb, 4.0);
    assert_eq!(g.v1.eject_models, 1);
    // Versions 2 to 5 write their added fields (dtype, donor_policy, cpu_engine, openvino_ep =
    // NULL, micro_batch = 0); nothing past them is touched.
    assert_eq!(
        g.added[..5],
        [0, 0, 0, 0, 0],
        "dtype, donor_policy, micro_batch, cpu_engine and openvino_ep initialised"
    );
    assert_eq!(
        g.added[5..],
        [0xABAB_ABAB_ABAB_ABAB; 1],
        "bytes past the library's version are not touched"
    );
    // A newer caller's fields beyond version 5 are its own; they must not be read.
    g.v1.clip_vision = path.as_ptr();
    g.v1.graphs_dir = graphs.as_ptr();
    g.v1.eject_models = 0;
    let mut h = 0u64;
    assert_eq!(
        unsafe { (api.model_load)(&g.v1, &mut h) },
        DV_OK,
        "{}",
        api.last_error()
    );
    let mut p: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
    let plan: serde_json::Value = serde_json::from_str(&unsafe { api.take_string(p) }).unwrap();
    // Default device: cuda:0 when a GPU exists, else cpu.
    assert!(plan["compute_device"].is_string());
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn a_cuda_device_without_a_gpu_is_refused_at_load() {
    let api = api();
    let mut d: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.list_devices)(&mut d) }, DV_OK);
    let devices = unsafe { api.take_string(d) };
    if devices.contains("cuda:0") {
        eprintln!("this machine has a GPU; the refusal path is not reachable here");
        return;
    }
    let cuda = cstring("cuda:0");
    let (st, msg) = api
        .load_with(
            &fixture("clip_quickgelu_f32").join("model.safetensors"),
            |o| o.device = cuda.as_ptr(),
        )
        .unwrap_err();
    assert_ne!(st, DV_OK);
    assert!(msg.contains("cuda:0"), "{msg}");
}

#[test]
fn a_version_2_options_struct_chooses_the_compute_dtype() {
    let api = api();
    let model = fixture("clip_quickgelu_f32").join("model.safetensors");
    let path = path_cstring(&model);
    let graphs = path_cstring(&graphs_dir());
    let cpu = cstring("cpu");
    let load = |dtype: &CString| -> Result<u64, (Status, String)> {
        let mut o: LoadOptionsV2 = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<LoadOptionsV2>();
        let st = unsafe { (api.load_options_init)(&mut o.v1, size) };
        assert_eq!(st, DV_OK, "{}", api.last_error());
        assert_eq!(o.v1.struct_size, size);
        assert!(o.dtype.is_null(), "dtype defaults to NULL (fp32)");
        o.v1.clip_vision = path.as_ptr();
        o.v1.device = cpu.as_ptr();
        o.v1.graphs_dir = graphs.as_ptr();
        o.v1.eject_models = 0;
        o.dtype = dtype.as_ptr();
        let mut h = 0u64;
        let opts = (&o as *const LoadOptionsV2).cast::<LoadOptions>();
        match unsafe { (api.model_load)(opts, &mut h) } {
            DV_OK => Ok(h),
            st => Err((st, api.last_error())),
        }
    };
    let px = read_pixels("clip_quickgelu_f32");
    let embeds = |h: u64| -> Vec<f32> {
        let out = api.encode_pixels_vec(h, &px);
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
        out.into_iter()
            .find(|t| t.0 == "image_embeds")
            .expect("image_embeds")
            .2
    };
    let fp32 = embeds(load(&cstring("")).unwrap());
    let int8 = embeds(load(&cstring("int8")).unwrap());
    // int8 is an approximation: close to fp32, yet not the same numbers.
    let d = max_abs_diff(&fp32, &int8);
    assert!(d > 1e-6 && d < 0.1, "int8 vs fp32: {d}");
    let (st, msg) = load(&cstring("int4")).unwrap_err();
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("valid: fp32, int8, fp16"), "{msg}");
}

#[test]
fn a_struct_size_ending_inside_a_field_reads_only_whole_versions() {
    // A size between version 1 and version 2 ends inside `dtype`: the library must treat
    // the caller as version 1 and neither read nor write the partial field.
    #[repr(C)]
    struct Odd {
        v1: LoadOptions,
        tail: [u8; 8],
    }
    let api = api();
    let path = path_cstring(&fixture("siglip_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let cpu = cstring("cpu");
    let mut o: Odd = unsafe { std::mem::zeroed() };
    o.tail = [0xAB; 8];
    let size = std::mem::size_of::<LoadOptions>() + 4;
    assert_eq!(unsafe { (api.load_options_init)(&mut o.v1, size) }, DV_OK);
    assert_eq!(o.v1.struct_size, size);
    assert_eq!(o.tail, [0xAB; 8], "no partial field written");
    o.v1.clip_vision = path.as_ptr();
    o.v1.device = cpu.as_ptr();
    o.v1.graphs_dir = graphs.as_ptr();
    o.v1.eject_models = 0;
    let mut h = 0u64;
    // 0xABAB_ABAB as half a pointer would crash if it were read.
    assert_eq!(
        unsafe { (api.model_load)(&o.v1, &mut h) },
        DV_OK,
        "{}",
        api.last_error()
    );
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

/// Loads the quickgelu fixture on the CPU through a version-3 struct with `donor_policy`.
fn load_v3(api: &Api, policy: Option<&str>) -> Result<u64, (Status, String)> {
    let path = path_cstring(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let cpu = cstring("cpu");
    let policy = policy.map(cstring);
    let mut o: LoadOptionsV3 = unsafe { std::mem::zeroed() };
    o.donor_policy = c"sentinel".as_ptr();
    let size = std::mem::size_of::<LoadOptionsV3>();
    assert_eq!(
        unsafe { (api.load_options_init)(&mut o.v2.v1, size) },
        DV_OK
    );
    assert_eq!(o.v2.v1.struct_size, size);
    assert!(
        o.donor_policy.is_null(),
        "a library that knows version 3 resets donor_policy to NULL"
    );
    o.v2.v1.clip_vision = path.as_ptr();
    o.v2.v1.device = cpu.as_ptr();
    o.v2.v1.graphs_dir = graphs.as_ptr();
    o.v2.v1.eject_models = 0;
    o.donor_policy = policy.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
    let mut h = 0u64;
    let opts = (&o as *const LoadOptionsV3).cast::<LoadOptions>();
    match unsafe { (api.model_load)(opts, &mut h) } {
        DV_OK => Ok(h),
        st => Err((st, api.last_error())),
    }
}

fn plan_policy(api: &Api, h: u64) -> String {
    let mut p: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
    let plan: serde_json::Value = serde_json::from_str(&unsafe { api.take_string(p) }).unwrap();
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    plan["donor_policy"].as_str().unwrap().to_string()
}

#[test]
fn a_version_3_options_struct_chooses_the_donor_policy() {
    let api = api();
    assert_eq!(
        plan_policy(api, load_v3(api, Some("execute")).unwrap()),
        "execute"
    );
    assert_eq!(
        plan_policy(api, load_v3(api, Some(" Stream ")).unwrap()),
        "stream"
    );
    // NULL and "" are the default.
    assert_eq!(plan_policy(api, load_v3(api, None).unwrap()), "stream");
    assert_eq!(plan_policy(api, load_v3(api, Some("")).unwrap()), "stream");
    let (st, msg) = load_v3(api, Some("sideways")).unwrap_err();
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(
        msg.starts_with("donor_policy: ") && msg.contains("\"stream\" and \"execute\""),
        "{msg}"
    );
}

#[test]
fn a_version_4_options_struct_sets_the_micro_batch() {
    let api = api();
    let path = path_cstring(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let cpu = cstring("cpu");
    let load = |micro: usize| {
        let mut o: LoadOptionsV4 = unsafe { std::mem::zeroed() };
        o.micro_batch = 5; // a sentinel: a library that knows version 4 resets it
        let size = std::mem::size_of::<LoadOptionsV4>();
        assert_eq!(
            unsafe { (api.load_options_init)(&mut o.v3.v2.v1, size) },
            DV_OK
        );
        assert_eq!(o.micro_batch, 0, "micro_batch reset to 0 (off)");
        o.v3.v2.v1.clip_vision = path.as_ptr();
        o.v3.v2.v1.device = cpu.as_ptr();
        o.v3.v2.v1.graphs_dir = graphs.as_ptr();
        o.v3.v2.v1.eject_models = 0;
        o.micro_batch = micro;
        let mut h = 0u64;
        let opts = (&o as *const LoadOptionsV4).cast::<LoadOptions>();
        assert_eq!(
            unsafe { (api.model_load)(opts, &mut h) },
            DV_OK,
            "{}",
            api.last_error()
        );
        h
    };
    let px = read_pixels("clip_quickgelu_f32");
    let (plain, micro) = (load(0), load(2));
    // Micro-batches of 2 through the segments give the rows of one pass.
    assert_eq!(
        api.encode_pixels_vec(micro, &px),
        api.encode_pixels_vec(plain, &px)
    );
    for h in [plain, micro] {
        assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    }
}

#[test]
fn a_version_2_caller_never_has_donor_policy_read() {
    // A version-2 struct followed by bytes that would be a wild pointer as donor_policy.
    #[repr(C)]
    struct V2Host {
        v2: LoadOptionsV2,
        tail: usize,
    }
    let api = api();
    let path = path_cstring(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let cpu = cstring("cpu");
    let mut o: V2Host = unsafe { std::mem::zeroed() };
    o.tail = 0xABAB_ABAB_ABAB_ABAB;
    let size = std::mem::size_of::<LoadOptionsV2>();
    assert_eq!(
        unsafe { (api.load_options_init)(&mut o.v2.v1, size) },
        DV_OK
    );
    assert_eq!(
        o.tail, 0xABAB_ABAB_ABAB_ABAB,
        "version 3's field not written"
    );
    o.v2.v1.clip_vision = path.as_ptr();
    o.v2.v1.device = cpu.as_ptr();
    o.v2.v1.graphs_dir = graphs.as_ptr();
    o.v2.v1.eject_models = 0;
    let mut h = 0u64;
    assert_eq!(
        unsafe { (api.model_load)(&o.v2.v1, &mut h) },
        DV_OK,
        "{}",
        api.last_error()
    );
    assert_eq!(plan_policy(api, h), "stream");
}

#[test]
fn list_models_names_what_load_resolves() {
    let api = api();
    let tmp = tempdir("list_models");
    let cv = tmp.join("ComfyUI/models/clip_vision");
    std::fs::create_dir_all(cv.join("sub")).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(
            fixture("clip_quickgelu_f32").join(f),
            cv.join("sub").join(f),
        )
        .unwrap();
    }
    std::fs::copy(
        fixture("clip_quickgelu_f32").join("expected.safetensors"),
        cv.join("sub/expected.safetensors"),
    )
    .unwrap();
    let comfy = path_cstring(&tmp.join("ComfyUI"));
    let list = |comfy: *const c_char,
                extra: *const c_char|
     -> Result<serde_json::Value, (Status, String)> {
        let mut sentinel: c_char = 0;
        let mut p: *mut c_char = &mut sentinel;
        match unsafe { (api.list_models)(comfy, extra, &mut p) } {
            DV_OK => Ok(serde_json::from_str(&unsafe { api.take_string(p) }).unwrap()),
            st => {
                assert!(p.is_null(), "json_out NULL on failure");
                Err((st, api.last_error()))
            }
        }
    };
    let v = list(comfy.as_ptr(), std::ptr::null()).unwrap();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{v}");
    assert_eq!(models[0]["name"], "sub/model.safetensors");
    assert!(models[0]["family"].is_string(), "{v}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1, "{v}");
    // The name loads through the same folders.
    let name = cstring(models[0]["name"].as_str().unwrap());
    let h = api
        .load_with(std::path::Path::new("unused"), |o| {
            o.clip_vision = name.as_ptr();
            o.comfyui_path = comfy.as_ptr();
        })
        .unwrap();
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    // An extra_model_paths.yaml adds its folders.
    let extra_dir = tmp.join("elsewhere");
    std::fs::create_dir_all(&extra_dir).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture("siglip_f32").join(f), extra_dir.join(f)).unwrap();
    }
    let yaml = tmp.join("extra.yaml");
    std::fs::write(&yaml, "mine:\n  clip_vision: elsewhere\n").unwrap();
    let yaml_c = path_cstring(&yaml);
    let v = list(comfy.as_ptr(), yaml_c.as_ptr()).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 2, "{v}");
    // No folders at all: success with an empty list (a host shows an empty dropdown).
    let nowhere = path_cstring(&tmp.join("nowhere"));
    let v = list(nowhere.as_ptr(), c"".as_ptr()).unwrap();
    assert!(v["models"].as_array().unwrap().is_empty());
    assert_eq!(v["searched"][0]["exists"], false);
    // A missing extra_model_paths file and a NULL json_out are errors.
    let missing = path_cstring(&tmp.join("missing.yaml"));
    let (st, msg) = list(comfy.as_ptr(), missing.as_ptr()).unwrap_err();
    assert_eq!(st, DV_ERR_NOT_FOUND, "{msg}");
    assert!(msg.contains("missing.yaml"), "{msg}");
    assert_eq!(
        unsafe { (api.list_models)(comfy.as_ptr(), std::ptr::null(), std::ptr::null_mut()) },
        DV_ERR_NULL_POINTER
    );
}

#[test]
fn plugin_toml_declares_the_librarys_loader_defaults() {
    // Hosts read the node's defaults from plugin.toml; they must be LoaderOptions::default()
    // (the Python package, Ray entry point and ComfyUI node are checked against this file).
    let d = distorch_vision::plan::LoaderOptions::default();
    let manifest = plugin_toml();
    let inputs: Vec<&toml::Value> = manifest["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["inputs"].as_array().unwrap())
        .collect();
    let default_of = |name: &str| {
        inputs
            .iter()
            .find(|i| i["name"].as_str() == Some(name))
            .and_then(|i| i.get("default"))
            .cloned()
            .unwrap_or_else(|| panic!("plugin.toml: no default for {name}"))
    };
    assert_eq!(
        default_of("virtual_vram_gb").as_float(),
        Some(d.virtual_vram())
    );
    assert_eq!(
        default_of("donor_device").as_str(),
        Some(d.donor_device.as_str())
    );
    assert_eq!(
        default_of("expert_mode_allocations").as_str(),
        Some(d.expert_mode_allocations.as_str())
    );
    assert_eq!(default_of("eject_models").as_bool(), Some(d.eject_models));
}

/// Loads the quickgelu fixture on the CPU through a version-5 struct with `cpu_engine` and
/// `openvino_ep` (the checkout's plugin), returning the plan's engines or the error.
fn load_v5(
    api: &Api,
    engine: Option<&str>,
    dtype: Option<&str>,
) -> Result<Vec<String>, (Status, String)> {
    let path = path_cstring(&fixture("clip_quickgelu_f32").join("model.safetensors"));
    let graphs = path_cstring(&graphs_dir());
    let plugin = path_cstring(&root().join(".runtime/openvino"));
    let cpu = cstring("cpu");
    let engine = engine.map(cstring);
    let dtype = dtype.map(cstring);
    let mut o: LoadOptionsV5 = unsafe { std::mem::zeroed() };
    o.cpu_engine = c"sentinel".as_ptr();
    let size = std::mem::size_of::<LoadOptionsV5>();
    let v1 = &mut o.v4.v3.v2.v1;
    assert_eq!(unsafe { (api.load_options_init)(v1, size) }, DV_OK);
    assert!(
        o.cpu_engine.is_null(),
        "a library that knows version 5 resets cpu_engine to NULL"
    );
    o.v4.v3.v2.v1.clip_vision = path.as_ptr();
    o.v4.v3.v2.v1.device = cpu.as_ptr();
    o.v4.v3.v2.v1.graphs_dir = graphs.as_ptr();
    o.v4.v3.v2.v1.eject_models = 0;
    o.v4.v3.v2.dtype = dtype.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
    o.cpu_engine = engine.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
    o.openvino_ep = plugin.as_ptr();
    let mut h = 0u64;
    let opts = (&o as *const LoadOptionsV5).cast::<LoadOptions>();
    match unsafe { (api.model_load)(opts, &mut h) } {
        DV_OK => {
            let mut p: *mut c_char = std::ptr::null_mut();
            assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
            let plan: serde_json::Value =
                serde_json::from_str(&unsafe { api.take_string(p) }).unwrap();
            assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
            Ok(plan["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["engine"].as_str().unwrap().to_string())
                .collect())
        }
        st => Err((st, api.last_error())),
    }
}

#[test]
fn a_version_5_options_struct_chooses_the_cpu_engine() {
    let api = api();
    let all = |v: Vec<String>, e: &str| !v.is_empty() && v.iter().all(|x| x == e);
    assert!(all(load_v5(api, Some("mlas"), None).unwrap(), "mlas"));
    if intel_cpu() {
        assert!(all(
            load_v5(api, Some("openvino"), None).unwrap(),
            "openvino"
        ));
        // NULL = auto: the plugin named here is found, so OpenVINO; int8 stays on mlas.
        assert!(all(load_v5(api, None, None).unwrap(), "openvino"));
    } else {
        // The plugin offers no CPU device off Intel CPUs: refused when asked for, auto is mlas.
        let (st, msg) = load_v5(api, Some("openvino"), None).unwrap_err();
        assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
        assert_openvino_cpu_refused(&msg, "cpu_engine: openvino");
        assert!(all(load_v5(api, None, None).unwrap(), "mlas"));
    }
    assert!(all(load_v5(api, None, Some("int8")).unwrap(), "mlas"));
    let (st, msg) = load_v5(api, Some("gpu"), None).unwrap_err();
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(
        msg.contains("cpu_engine") && msg.contains("openvino"),
        "{msg}"
    );
}

#[test]
fn naflex_patches_images_and_misuse() {
    let api = api();
    let m = "siglip2_naflex_f32";
    let h = api.load(&fixture(m).join("model.safetensors"));
    let null = std::ptr::null();
    let mut out = 0u64;
    // An IMAGE buffer of one size: every image gets the grid ComfyUI's siglip2_preprocess picks.
    let (b, ih, iw) = (2usize, 20usize, 45usize);
    let image: Vec<f32> = (0..b * ih * iw * 3)
        .map(|i| ((i * 37) % 256) as f32 / 255.0)
        .collect();
    let st = unsafe {
        (api.encode_image)(
            h,
            image.as_ptr(),
            image.len(),
            b,
            ih,
            iw,
            3,
            DV_CROP_CENTER,
            null,
            0,
            &mut out,
        )
    };
    assert_eq!(st, DV_OK, "{}", api.last_error());
    let (tensors, shapes) = api.take_all_outputs(out);
    let p = distorch_vision::image::Patching {
        patch_size: 4,
        num_patches: 64,
    };
    let g = p.grid_for(ih, iw);
    assert_eq!(shapes.unwrap(), [g.rows as i64, g.cols as i64].repeat(b));
    let last = tensors.iter().find(|t| t.0 == "last_hidden_state").unwrap();
    assert_eq!(last.1, vec![b, 64, 32]);
    // One encoded file into patches, as the CLI prepares it.
    let path = fixture("..").join("images/landscape_131x33.png");
    let bytes = std::fs::read(&path).unwrap();
    let mut patches = vec![0f32; p.image_len()];
    let mut grid = [0i64; 2];
    let name = cstring("landscape");
    let st = unsafe {
        (api.preprocess_encoded_patches)(
            h,
            bytes.as_ptr(),
            bytes.len(),
            name.as_ptr(),
            patches.as_mut_ptr(),
            patches.len(),
            grid.as_mut_ptr(),
        )
    };
    assert_eq!(st, DV_OK, "{}", api.last_error());
    let spec = distorch_vision::model::Model::open(&fixture(m).join("model.safetensors"))
        .unwrap()
        .config
        .preprocess_spec(Default::default());
    let cli = distorch_vision::job::batch::preprocess_file(&path, &spec).unwrap();
    assert_eq!(patches, cli.values);
    let g = cli.grid.unwrap();
    assert_eq!(grid, [g.rows as i64, g.cols as i64]);
    // The wrong buffer size, and square-model calls on a naflex model, are refused by name.
    let st = unsafe {
        (api.preprocess_encoded_patches)(
            h,
            bytes.as_ptr(),
            bytes.len(),
            name.as_ptr(),
            patches.as_mut_ptr(),
            patches.len() - 1,
            grid.as_mut_ptr(),
        )
    };
    assert_eq!(st, DV_ERR_SIZE_MISMATCH);
    let st = unsafe {
        (api.preprocess_encoded_patches)(
            h,
            bytes.as_ptr(),
            bytes.len(),
            name.as_ptr(),
            std::ptr::null_mut(),
            patches.len(),
            grid.as_mut_ptr(),
        )
    };
    assert_eq!(st, DV_ERR_NULL_POINTER);
    assert!(
        api.last_error().contains("patches_out"),
        "{}",
        api.last_error()
    );
    let px = vec![0f32; 3 * 16 * 16];
    let st =
        unsafe { (api.encode_pixels)(h, px.as_ptr(), px.len(), 1, 3, 16, 16, null, 0, &mut out) };
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(api.last_error().contains("patches"), "{}", api.last_error());
    // Grids: one pair an image, each within the patch rows given.
    let (values, grids) = read_patches(m);
    let s = values.shape().to_vec();
    let data = values.as_standard_layout().to_owned();
    let encode = |grids: &[i64]| {
        let mut out = 0u64;
        let st = unsafe {
            (api.encode_patches)(
                h,
                data.as_ptr(),
                data.len(),
                s[0],
                s[1],
                s[2],
                grids.as_ptr(),
                grids.len(),
                std::ptr::null(),
                0,
                &mut out,
            )
        };
        assert_eq!(out, 0);
        (st, api.last_error())
    };
    let (st, _) = encode(&grids[..grids.len() - 2]);
    assert_eq!(st, DV_ERR_SIZE_MISMATCH);
    let mut big = grids.clone();
    big[0] = 9;
    let (st, e) = encode(&big);
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(e.contains("9x8") && e.contains("64"), "{e}");
    big[0] = 0;
    let (st, e) = encode(&big);
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(e.contains("spatial_shapes"), "{e}");
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
    // A square model takes no patches.
    let sq = api.load(&fixture("siglip_f32").join("model.safetensors"));
    let st = unsafe {
        (api.preprocess_encoded_patches)(
            sq,
            bytes.as_ptr(),
            bytes.len(),
            name.as_ptr(),
            patches.as_mut_ptr(),
            patches.len(),
            grid.as_mut_ptr(),
        )
    };
    assert_eq!(st, DV_ERR_INVALID_ARGUMENT);
    assert!(api.last_error().contains("square"), "{}", api.last_error());
    assert_eq!(unsafe { (api.model_unload)(sq) }, DV_OK);
}
