//! A plugin copied out of the checkout looks for ONNX Runtime beside itself, under any version's
//! file name, and says so in the search's error ("the folder of the distorch-vision library itself", not "the
//! program's folder": the program is the host). Its own test binary: ONNX Runtime starts
//! unloaded, and the environment variables changed here are this process's alone.

mod common;

use std::ffi::{c_char, CStr};

use common::capi::*;

#[test]
fn a_plugin_finds_onnx_runtime_in_its_own_folder() {
    // Outside the checkout, or the search would find its .runtime/ folder first.
    let dir = std::env::temp_dir().join(format!("dv-capi-ort-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join(library_name());
    std::fs::copy(plugin_path(), &plugin).unwrap();
    // Nothing else to find: no ORT_DYLIB_PATH, no python3 on PATH, no checkout around the copy.
    std::env::remove_var("ORT_DYLIB_PATH");
    std::env::set_var("PATH", "");

    // SAFETY: loading our own cdylib; the signatures mirror distorch_vision.h.
    let lib = unsafe { libloading::Library::new(&plugin) }.expect("load the copied plugin");
    let init: libloading::Symbol<unsafe extern "C" fn(*const c_char) -> Status> =
        unsafe { lib.get(b"dv_init\0") }.unwrap();
    let last_error: libloading::Symbol<unsafe extern "C" fn() -> *const c_char> =
        unsafe { lib.get(b"dv_last_error\0") }.unwrap();
    let err = || {
        unsafe { CStr::from_ptr(last_error()) }
            .to_string_lossy()
            .into_owned()
    };

    let st = unsafe { init(std::ptr::null()) };
    assert_ne!(st, DV_OK);
    let msg = err();
    assert!(
        msg.contains(&format!(
            "{}/libonnxruntime.so* (the folder of the distorch-vision library itself)",
            dir.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains("program's folder"), "{msg}");
    // One message: every place, and both pip extras.
    assert!(msg.contains("python3 on PATH (none"), "{msg}");
    assert!(
        msg.contains("distorch-vision[cpu]") && msg.contains("distorch-vision[gpu]"),
        "{msg}"
    );
    // Commands that work as written: the package is a wheel file, on no index.
    assert!(
        msg.contains("`pip install \"onnxruntime>=1.31.1\"`")
            && msg.contains(".whl[gpu]")
            && !msg.contains("pip install \"distorch-vision["),
        "{msg}"
    );

    // Any version's file name is found (the newest), not only the one setup.sh installs.
    let beside = dir.join("libonnxruntime.so.1.99.0");

    // Put the runtime there and the same search finds it.
    std::os::unix::fs::symlink(ort_library(), &beside).unwrap();
    let st = unsafe { init(std::ptr::null()) };
    assert_eq!(st, DV_OK, "{}", err());
    let _ = std::fs::remove_dir_all(&dir);
}
