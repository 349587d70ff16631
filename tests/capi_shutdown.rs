//! `dv_shutdown()` through the C ABI: afterwards model handles are invalid with a message
//! naming it, loads and encodes return `DV_ERR_SHUT_DOWN`, outputs and strings stay valid
//! until freed, and `dv_init` says it cannot start ONNX Runtime again in this process.
//! Shutdown is process-wide and final, so this binary holds this one test only.

mod common;

use common::capi::*;

#[test]
fn after_dv_shutdown_calls_fail_clearly_and_outputs_stay_readable() {
    let api = api();
    let m = "clip_quickgelu_f32";
    let px = read_pixels(m);
    let expected = read_safetensors(&fixture(m).join("expected.safetensors"));
    let model = api.load(&fixture(m).join("model.safetensors"));
    // An outputs object and a string made before the shutdown.
    let s = px.shape();
    let data = px.as_standard_layout();
    let data = data.as_slice().unwrap();
    let encode = |model: u64, out: &mut u64| unsafe {
        (api.encode_pixels)(
            model,
            data.as_ptr(),
            data.len(),
            s[0],
            s[1],
            s[2],
            s[3],
            std::ptr::null(),
            0,
            out,
        )
    };
    let mut kept = 0u64;
    assert_eq!(encode(model, &mut kept), DV_OK, "{}", api.last_error());
    let mut json = std::ptr::null_mut();
    assert_eq!(unsafe { (api.model_plan_json)(model, &mut json) }, DV_OK);

    assert_eq!(unsafe { (api.shutdown)() }, DV_OK, "{}", api.last_error());

    // The model handle: invalid, and the message says why.
    let mut size = 7u32;
    let st = unsafe { (api.model_image_size)(model, &mut size) };
    assert_eq!(st, DV_ERR_INVALID_HANDLE);
    assert_eq!(size, 0);
    let msg = api.last_error();
    assert!(msg.contains("dv_shutdown"), "{msg}");
    let mut out = 9u64;
    assert_eq!(encode(model, &mut out), DV_ERR_INVALID_HANDLE);
    assert_eq!(out, 0);
    assert!(api.last_error().contains("dv_shutdown"));
    assert_eq!(unsafe { (api.model_unload)(model) }, DV_ERR_INVALID_HANDLE);
    assert!(api.last_error().contains("dv_shutdown"));

    // Loading needs ONNX Runtime: refused with its own status.
    let err = api
        .load_with(&fixture(m).join("model.safetensors"), |_| {})
        .unwrap_err();
    assert_eq!(err.0, DV_ERR_SHUT_DOWN, "{}", err.1);
    assert!(err.1.contains("shut down"), "{}", err.1);
    let name = unsafe { std::ffi::CStr::from_ptr((api.status_string)(DV_ERR_SHUT_DOWN)) };
    assert_eq!(name.to_str().unwrap(), "DV_ERR_SHUT_DOWN");

    // What was handed out before stays valid: the outputs (plain memory) and the string.
    let mut got = api.take_outputs(kept);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), expected.len());
    for ((n, sh, v), (en, es, ev)) in got.iter().zip(&expected) {
        assert_eq!((n, sh), (en, es));
        assert!(max_abs_diff(v, ev) <= 1e-4, "{n}");
    }
    let plan = unsafe { api.take_string(json) };
    assert!(plan.contains("compute_device"), "{plan}");

    // dv_init cannot start ONNX Runtime again in this process, and says so; the state stays
    // shut down (a second dv_shutdown is harmless).
    let ort = path_cstring(&ort_library());
    let st = unsafe { (api.init)(ort.as_ptr()) };
    let msg = api.last_error();
    assert_eq!(st, DV_ERR_SHUT_DOWN, "{msg}");
    assert!(
        msg.contains("cannot be started again") && msg.contains("new process"),
        "{msg}"
    );
    eprintln!("dv_init after dv_shutdown: {msg}");
    assert_eq!(unsafe { (api.shutdown)() }, DV_OK);
    let err = api
        .load_with(&fixture(m).join("model.safetensors"), |_| {})
        .unwrap_err();
    assert_eq!(err.0, DV_ERR_SHUT_DOWN, "{}", err.1);

    let (mut models, mut outputs, mut strings) = (9, 9, 9);
    unsafe { (api.live_objects)(&mut models, &mut outputs, &mut strings) };
    assert_eq!((models, outputs, strings), (0, 0, 0));
}
