//! A failed `dv_init` (wrong library path) does not poison the process: a later `dv_init`
//! with the right path works. Its own test binary, so ONNX Runtime starts unloaded.

mod common;

use std::ffi::{c_char, CStr};

use common::capi::*;

#[test]
fn dv_init_recovers_from_a_wrong_library_path() {
    // SAFETY: loading our own cdylib; the signatures mirror distorch_vision.h.
    let lib = unsafe { libloading::Library::new(plugin_path()) }.expect("load plugin");
    let init: libloading::Symbol<unsafe extern "C" fn(*const c_char) -> Status> =
        unsafe { lib.get(b"dv_init\0") }.unwrap();
    let last_error: libloading::Symbol<unsafe extern "C" fn() -> *const c_char> =
        unsafe { lib.get(b"dv_last_error\0") }.unwrap();
    let err = || {
        unsafe { CStr::from_ptr(last_error()) }
            .to_string_lossy()
            .into_owned()
    };

    let wrong = cstring("/nonexistent/libonnxruntime.so.1.31.1");
    let st = unsafe { init(wrong.as_ptr()) };
    assert_ne!(st, DV_OK);
    assert!(err().contains("/nonexistent"), "{}", err());

    let right = path_cstring(&ort_library());
    let st = unsafe { init(right.as_ptr()) };
    assert_eq!(st, DV_OK, "{}", err());
}
