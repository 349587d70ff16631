//! Loading, encoding and unloading many times through the C ABI leaks nothing: no live
//! objects stay behind and the resident set stays roughly flat. Its own test binary, so
//! no other test's allocations move the RSS.

mod common;

use std::ffi::c_char;

use common::capi::*;

fn cycle(api: &Api, model: &std::path::Path, px: &ndarray::Array4<f32>) {
    let h = api.load(model);
    let out = api.encode_pixels_vec(h, px);
    assert_eq!(out.len(), 3);
    let mut p: *mut c_char = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(h, &mut p) }, DV_OK);
    assert_eq!(unsafe { (api.string_free)(p) }, DV_OK);
    assert_eq!(unsafe { (api.model_unload)(h) }, DV_OK);
}

#[test]
fn load_encode_unload_loop_does_not_leak() {
    let api = api();
    let m = "clip_quickgelu_f32";
    let model = fixture(m).join("model.safetensors");
    let px = read_pixels(m);
    // Warm up: ONNX Runtime's environment, thread pool, allocator arenas, the export.
    for _ in 0..10 {
        cycle(api, &model, &px);
    }
    let before = rss_kib();
    let n = 60;
    for _ in 0..n {
        cycle(api, &model, &px);
    }
    let after = rss_kib();
    let (mut models, mut outputs, mut strings) = (9, 9, 9);
    assert_eq!(
        unsafe { (api.live_objects)(&mut models, &mut outputs, &mut strings) },
        DV_OK
    );
    assert_eq!((models, outputs, strings), (0, 0, 0), "objects left alive");
    let growth = after.saturating_sub(before);
    eprintln!("RSS {before} KiB → {after} KiB after {n} load/encode/unload cycles");
    // A leaked model would be ≥ its sessions (hundreds of KiB each); allow allocator noise.
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB over {n} cycles ({before} → {after})"
    );
}
