//! The library as a whole: versions, status names and the last error, starting ONNX Runtime
//! and shutting it down, the devices and models there are, strings and the live-object count.

use std::ffi::c_char;
use std::path::PathBuf;

use super::ffi::{self, guard, guard_string_out, opt_str, put, DvStatus, Fail};
use super::ffi::{DV_ERR_INVALID_HANDLE, DV_ERR_RUNTIME, DV_ERR_SHUT_DOWN};
use super::{handles, options};
use crate::plan::Inventory;

/// `DV_ABI_VERSION`: bumped on any incompatible change of the C surface.
pub const ABI_VERSION: u32 = 1;

/// `const char *dv_version(void)`: the crate version; static, never freed.
#[no_mangle]
pub extern "C" fn dv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// `uint32_t dv_abi_version(void)`.
#[no_mangle]
pub extern "C" fn dv_abi_version() -> u32 {
    ABI_VERSION
}

/// `const char *dv_status_string(dv_status)`: a static name for a status code.
#[no_mangle]
pub extern "C" fn dv_status_string(status: DvStatus) -> *const c_char {
    ffi::status_name_c(status)
        .unwrap_or("DV_ERR_UNKNOWN\0")
        .as_ptr()
        .cast()
}

/// `const char *dv_last_error(void)`: the message of this thread's last failed call.
#[no_mangle]
pub extern "C" fn dv_last_error() -> *const c_char {
    ffi::last_error()
}

/// `dv_status dv_init(const char *ort_library)`.
///
/// # Safety
/// `ort_library` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dv_init(ort_library: *const c_char) -> DvStatus {
    guard(|| {
        if let Some(p) = opt_str(ort_library, "ort_library")?.filter(|p| !p.is_empty()) {
            crate::runtime::set_library_path(&PathBuf::from(p))?;
        }
        if crate::runtime::env::is_shut_down() {
            return crate::runtime::env::restart()
                .map_err(|e| Fail::new(DV_ERR_SHUT_DOWN, e.message()));
        }
        crate::runtime::environment()?;
        Ok(())
    })
}

/// `dv_status dv_shutdown(void)`: releases every model's sessions and ONNX Runtime's
/// environment (joining its thread pool). Model handles become invalid; outputs and strings
/// stay valid until freed. Runs by itself at process exit or unload when never called.
#[no_mangle]
pub extern "C" fn dv_shutdown() -> DvStatus {
    guard(|| {
        handles::release_models();
        crate::runtime::shutdown();
        Ok(())
    })
}

/// `dv_status dv_list_devices(char **json_out)`.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_list_devices(json_out: *mut *mut c_char) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        serde_json::to_string(&Inventory::detect().to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising devices: {e}")))
    })
}

/// `dv_status dv_string_free(char *s)`.
///
/// # Safety
/// `s` is NULL or any pointer (it is only compared with the strings this library issued).
#[no_mangle]
pub unsafe extern "C" fn dv_string_free(s: *mut c_char) -> DvStatus {
    guard(|| {
        if s.is_null() || handles::string_free(s as usize) {
            Ok(())
        } else {
            Err(Fail::new(
                DV_ERR_INVALID_HANDLE,
                "string was not returned by distorch-vision or was already freed",
            ))
        }
    })
}

/// `dv_status dv_live_objects(size_t *models, size_t *outputs, size_t *strings)`.
///
/// # Safety
/// Each pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_live_objects(
    models: *mut usize,
    outputs: *mut usize,
    strings: *mut usize,
) -> DvStatus {
    guard(|| {
        let (m, o, s) = handles::live_counts();
        for (p, v) in [(models, m), (outputs, o), (strings, s)] {
            if !p.is_null() {
                put(p, v);
            }
        }
        Ok(())
    })
}

/// `dv_status dv_list_models(const char *comfyui_path, const char *extra_model_paths, char **json_out)`:
/// the models a `clip_vision` name can refer to, as the model folders resolve them (the
/// CLI's `models --json`). An empty list is success.
///
/// # Safety
/// `comfyui_path` and `extra_model_paths` are NULL or NUL-terminated strings; `json_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_list_models(
    comfyui_path: *const c_char,
    extra_model_paths: *const c_char,
    json_out: *mut *mut c_char,
) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        let folders = options::model_folders(comfyui_path, extra_model_paths)?;
        serde_json::to_string(&folders.listing()?.to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising models: {e}")))
    })
}
