//! The C ABI (`distorch_vision.h`): a plugin surface over [`crate::loader`].
//!
//! Rules every entry point follows:
//! - it returns a `dv_status` (or a static/borrowed string) and never unwinds: the body runs
//!   inside `catch_unwind`, a panic becomes `DV_ERR_PANIC`;
//! - on failure it stores a message for [`dv_last_error`] (per thread) and leaves every
//!   handle/string/number out-parameter zeroed/NULL (a caller's `dv_tensor` is left as it
//!   was); on success the message is cleared;
//! - models and outputs are `u64` ids checked against a registry (see [`handles`]), so an
//!   unknown, freed or unloaded id is `DV_ERR_INVALID_HANDLE`, never undefined behaviour;
//! - after `dv_shutdown` (or the exit-time shutdown) calls that need ONNX Runtime return
//!   `DV_ERR_SHUT_DOWN`;
//! - buffers come with explicit element counts that must match the stated shape.
//!
//! All the work is the loader's: load is [`ClipVision::load`], encode is
//! [`ClipVision::encode`], the plan is [`crate::plan::Plan::to_json`].

pub mod handles;
pub mod image;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use ndarray::ArrayView4;

use crate::export::Granularity;
use crate::loader::{ClipVision, LoadOptions};
use crate::plan::{Inventory, LoaderOptions, DEFAULT_BATCH_SIZE, DEFAULT_VIRTUAL_VRAM_GB};
use crate::runtime::Outputs;
use crate::{Error, ErrorKind};

/// `DV_ABI_VERSION`: bumped on any incompatible change of the C surface.
pub const ABI_VERSION: u32 = 1;

pub type DvStatus = i32;
pub const DV_OK: DvStatus = 0;
pub const DV_ERR_INVALID_ARGUMENT: DvStatus = 1;
pub const DV_ERR_NOT_FOUND: DvStatus = 2;
pub const DV_ERR_IO: DvStatus = 3;
pub const DV_ERR_INVALID_MODEL: DvStatus = 4;
pub const DV_ERR_DOES_NOT_FIT: DvStatus = 5;
pub const DV_ERR_RUNTIME: DvStatus = 6;
pub const DV_ERR_NULL_POINTER: DvStatus = 7;
pub const DV_ERR_INVALID_HANDLE: DvStatus = 8;
pub const DV_ERR_SIZE_MISMATCH: DvStatus = 9;
pub const DV_ERR_STRUCT_SIZE: DvStatus = 10;
pub const DV_ERR_PANIC: DvStatus = 11;
pub const DV_ERR_SHUT_DOWN: DvStatus = 12;

/// `DV_DTYPE_F32`: the only dtype outputs have today.
pub const DV_DTYPE_F32: i32 = 1;

/// `dv_load_options`. Versions only append fields; `struct_size` says which the caller has:
/// version 1 ends after `extra_model_paths`, version 2 adds `dtype`, version 3 `donor_policy`,
/// version 4 `micro_batch`.
#[repr(C)]
pub struct DvLoadOptions {
    pub struct_size: usize,
    /// The model (ComfyUI's CLIPVisionLoader calls this input `clip_name`).
    pub clip_vision: *const c_char,
    pub device: *const c_char,
    /// Exactly the default (4.0) counts as not set (see `distorch_vision.h`).
    pub virtual_vram_gb: f64,
    pub donor_device: *const c_char,
    pub expert_mode_allocations: *const c_char,
    pub eject_models: i32,
    pub graphs_dir: *const c_char,
    pub comfyui_path: *const c_char,
    pub extra_model_paths: *const c_char,
    // --- version 2 ---
    pub dtype: *const c_char,
    // --- version 3 ---
    pub donor_policy: *const c_char,
    // --- version 4 ---
    /// Micro-batches of N images through the device segments (the CLI's `--micro-batch`); 0 = off.
    pub micro_batch: usize,
}

/// Size of a version-1 `dv_load_options`, the smallest accepted.
const LOAD_OPTIONS_V1: usize = std::mem::offset_of!(DvLoadOptions, dtype);
/// Size of a version-2 `dv_load_options` (through `dtype`).
const LOAD_OPTIONS_V2: usize = std::mem::offset_of!(DvLoadOptions, donor_policy);
/// Size of a version-3 `dv_load_options` (through `donor_policy`).
const LOAD_OPTIONS_V3: usize = std::mem::offset_of!(DvLoadOptions, micro_batch);

/// Bytes of `dv_load_options` this library reads or writes for a caller's `struct_size`:
/// whole versions only, so a size that ends inside a field never exposes half a pointer.
fn load_options_bytes(struct_size: usize) -> usize {
    let v4 = std::mem::size_of::<DvLoadOptions>();
    if struct_size >= v4 {
        v4
    } else if struct_size >= LOAD_OPTIONS_V3 {
        LOAD_OPTIONS_V3
    } else if struct_size >= LOAD_OPTIONS_V2 {
        LOAD_OPTIONS_V2
    } else {
        LOAD_OPTIONS_V1
    }
}

/// `dv_tensor` (version 1 layout).
#[repr(C)]
pub struct DvTensor {
    pub struct_size: usize,
    pub name: *const c_char,
    pub data: *const std::ffi::c_void,
    pub dtype: i32,
    pub ndim: usize,
    pub shape: *const i64,
    pub numel: usize,
    pub nbytes: usize,
}

/// A failure on its way to C: a status code and a message.
struct Fail {
    code: DvStatus,
    message: String,
}

impl Fail {
    fn new(code: DvStatus, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }
    fn null(what: &str) -> Fail {
        Fail::new(DV_ERR_NULL_POINTER, format!("{what} is NULL"))
    }
    fn handle(kind: &str, id: u64) -> Fail {
        Fail::new(
            DV_ERR_INVALID_HANDLE,
            format!("{kind} handle {id} is not valid (never issued, already freed or unloaded, or another kind of object)"),
        )
    }
}

/// The status code of a library error kind.
pub fn status_of(kind: ErrorKind) -> DvStatus {
    match kind {
        ErrorKind::InvalidArgument => DV_ERR_INVALID_ARGUMENT,
        ErrorKind::NotFound => DV_ERR_NOT_FOUND,
        ErrorKind::Io => DV_ERR_IO,
        ErrorKind::InvalidModel => DV_ERR_INVALID_MODEL,
        ErrorKind::DoesNotFit => DV_ERR_DOES_NOT_FIT,
        ErrorKind::Runtime => DV_ERR_RUNTIME,
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(status_of(e.kind()), e.message())
    }
}

type R<T = ()> = std::result::Result<T, Fail>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            *slot = c;
        }
    });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs one entry point's body: catches panics, maps failures to status codes, records
/// the message of the last failure for this thread.
fn guard(f: impl FnOnce() -> R) -> DvStatus {
    let (code, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => (DV_OK, String::new()),
        Ok(Err(fail)) => (fail.code, fail.message),
        Err(p) => (
            DV_ERR_PANIC,
            format!(
                "internal error (a bug in distorch-vision): {}",
                panic_message(p.as_ref())
            ),
        ),
    };
    // Setting the message cannot unwind (no allocation failure handling aside), but keep
    // even that on this side of the boundary.
    let _ = catch_unwind(|| set_last_error(&message));
    code
}

/// Writes `value` to an out-parameter that was already checked for NULL.
/// Writes the first `size` bytes of `value` (a caller's older, shorter struct version).
fn put_prefix<T>(out: *mut T, size: usize, value: T) {
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: the caller checked `out` for NULL; the C contract makes `size` bytes writable.
    unsafe { std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), out.cast::<u8>(), n) }
}

fn put<T>(out: *mut T, value: T) {
    // SAFETY: every caller checked `out` for NULL; the C contract makes it writable.
    unsafe { out.write(value) }
}

/// Reads an optional C string: NULL → None; invalid UTF-8 is an error naming the field.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string readable for the duration of the call.
unsafe fn opt_str(p: *const c_char, field: &str) -> R<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p)
        .to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("{field} is not valid UTF-8"),
            )
        })
}

fn model(id: u64) -> R<std::sync::Arc<ClipVision>> {
    handles::model(id).ok_or_else(|| model_gone(id))
}

/// Why `id` is not a live model: released by `dv_shutdown`, or the generic reasons.
fn model_gone(id: u64) -> Fail {
    if handles::released_by_shutdown(id) {
        Fail::new(
            DV_ERR_INVALID_HANDLE,
            format!(
                "model handle {id} was released by dv_shutdown(); nothing is left to use or unload"
            ),
        )
    } else {
        Fail::handle("model", id)
    }
}

/// Fails with `DV_ERR_SHUT_DOWN` once the library was shut down (calls that need ONNX Runtime).
fn running() -> R {
    if crate::runtime::env::is_shut_down() {
        return Err(Fail::new(
            DV_ERR_SHUT_DOWN,
            crate::runtime::env::SHUT_DOWN_MESSAGE,
        ));
    }
    Ok(())
}

fn outputs(id: u64) -> R<std::sync::Arc<handles::OutputSet>> {
    handles::outputs(id).ok_or_else(|| Fail::handle("outputs", id))
}

/// Checks a caller's f32 buffer against its stated shape and borrows it.
///
/// # Safety
/// `data` is NULL or points to `count` readable f32 values for the duration of the call.
unsafe fn f32_buffer<'a>(data: *const f32, count: usize, dims: &[(&str, usize)]) -> R<&'a [f32]> {
    if data.is_null() {
        return Err(Fail::null("data"));
    }
    let shape = dims
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some((n, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            format!("{n} is 0 ({shape}); every dimension must be at least 1"),
        ));
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(*v))
        .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize));
    if expected != Some(count) {
        return Err(Fail::new(
            DV_ERR_SIZE_MISMATCH,
            format!(
                "buffer holds {count} f32 values but the shape ({shape}) needs {}",
                expected.map_or("more than can be addressed".to_string(), |n| n.to_string())
            ),
        ));
    }
    if (data as usize) % std::mem::align_of::<f32>() != 0 {
        return Err(Fail::new(
            DV_ERR_INVALID_ARGUMENT,
            "data is not aligned for f32",
        ));
    }
    Ok(std::slice::from_raw_parts(data, count))
}

/// The requested outputs: NULL or "" = all, else comma-separated names.
///
/// # Safety
/// As [`opt_str`].
unsafe fn output_list(p: *const c_char) -> R<Vec<String>> {
    Ok(opt_str(p, "outputs")?
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

fn batch_or_default(batch_size: usize) -> usize {
    if batch_size == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        batch_size
    }
}

/// Copies the loader's outputs into an outputs object and registers it.
fn register_outputs(res: Outputs) -> u64 {
    let tensors = res
        .tensors
        .into_iter()
        .map(|(name, t)| {
            let shape = t.shape().iter().map(|&d| d as i64).collect();
            let n = t.len();
            let data = if t.is_standard_layout() {
                // Contiguous: reuse the storage when the elements are all of it.
                match t.into_raw_vec_and_offset() {
                    (v, Some(0)) if v.len() == n => v,
                    (v, Some(off)) => v[off..off + n].to_vec(),
                    (_, None) => Vec::new(),
                }
            } else {
                t.iter().copied().collect()
            };
            handles::Tensor {
                c_name: CString::new(name.clone()).unwrap_or_default(),
                name,
                data,
                shape,
            }
        })
        .collect();
    handles::insert_outputs(handles::OutputSet { tensors })
}

// ---------------------------------------------------------------------------------------
// Library

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

/// Every status code with its header name, NUL-terminated for C.
const STATUS_NAMES: &[(DvStatus, &str)] = &[
    (DV_OK, "DV_OK\0"),
    (DV_ERR_INVALID_ARGUMENT, "DV_ERR_INVALID_ARGUMENT\0"),
    (DV_ERR_NOT_FOUND, "DV_ERR_NOT_FOUND\0"),
    (DV_ERR_IO, "DV_ERR_IO\0"),
    (DV_ERR_INVALID_MODEL, "DV_ERR_INVALID_MODEL\0"),
    (DV_ERR_DOES_NOT_FIT, "DV_ERR_DOES_NOT_FIT\0"),
    (DV_ERR_RUNTIME, "DV_ERR_RUNTIME\0"),
    (DV_ERR_NULL_POINTER, "DV_ERR_NULL_POINTER\0"),
    (DV_ERR_INVALID_HANDLE, "DV_ERR_INVALID_HANDLE\0"),
    (DV_ERR_SIZE_MISMATCH, "DV_ERR_SIZE_MISMATCH\0"),
    (DV_ERR_STRUCT_SIZE, "DV_ERR_STRUCT_SIZE\0"),
    (DV_ERR_PANIC, "DV_ERR_PANIC\0"),
    (DV_ERR_SHUT_DOWN, "DV_ERR_SHUT_DOWN\0"),
];

/// The header's name of a status code (`"DV_ERR_NOT_FOUND"`), `None` for an unknown one.
pub fn status_name(status: DvStatus) -> Option<&'static str> {
    STATUS_NAMES
        .iter()
        .find(|(c, _)| *c == status)
        .map(|(_, n)| n.trim_end_matches('\0'))
}

/// `const char *dv_status_string(dv_status)`: a static name for a status code.
#[no_mangle]
pub extern "C" fn dv_status_string(status: DvStatus) -> *const c_char {
    let s: &'static str = STATUS_NAMES
        .iter()
        .find(|(c, _)| *c == status)
        .map_or("DV_ERR_UNKNOWN\0", |(_, n)| n);
    s.as_ptr().cast()
}

/// `const char *dv_last_error(void)`: the message of this thread's last failed call.
#[no_mangle]
pub extern "C" fn dv_last_error() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|e| e.try_borrow().map(|s| s.as_ptr()).ok())
            .ok()
            .flatten()
    })
    .ok()
    .flatten()
    .unwrap_or(EMPTY.as_ptr().cast())
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
    if !json_out.is_null() {
        put(json_out, std::ptr::null_mut());
    }
    guard(|| {
        if json_out.is_null() {
            return Err(Fail::null("json_out"));
        }
        let json = serde_json::to_string(&Inventory::detect().to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising devices: {e}")))?;
        put(json_out, handles::string_into_raw(json));
        Ok(())
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
    if !json_out.is_null() {
        put(json_out, std::ptr::null_mut());
    }
    guard(|| {
        if json_out.is_null() {
            return Err(Fail::null("json_out"));
        }
        let folders = model_folders(comfyui_path, extra_model_paths)?;
        let json = serde_json::to_string(&folders.listing()?.to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising models: {e}")))?;
        put(json_out, handles::string_into_raw(json));
        Ok(())
    })
}

/// The model folders of `comfyui_path` / `extra_model_paths` (NULL or "" = unset: the
/// ComfyUI folder then falls back to COMFYUI_PATH, as on the command line).
///
/// # Safety
/// Both are NULL or NUL-terminated strings.
unsafe fn model_folders(
    comfyui_path: *const c_char,
    extra_model_paths: *const c_char,
) -> R<crate::model::folders::ModelFolders> {
    let folder = |p, field| -> R<Option<PathBuf>> {
        Ok(opt_str(p, field)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    };
    Ok(crate::model::folders::ModelFolders::new(
        folder(comfyui_path, "comfyui_path")?,
        folder(extra_model_paths, "extra_model_paths")?,
    ))
}

// ---------------------------------------------------------------------------------------
// Models

/// `dv_status dv_load_options_init(dv_load_options *opts, size_t struct_size)`: contract §1
/// defaults. `struct_size` is the caller's `sizeof(dv_load_options)`.
///
/// # Safety
/// `opts` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dv_load_options_init(
    opts: *mut DvLoadOptions,
    struct_size: usize,
) -> DvStatus {
    guard(|| {
        if opts.is_null() {
            return Err(Fail::null("opts"));
        }
        let v1 = LOAD_OPTIONS_V1;
        if struct_size < v1 {
            return Err(Fail::new(
                DV_ERR_STRUCT_SIZE,
                format!("struct_size is {struct_size}; this library needs at least {v1}"),
            ));
        }
        let d = LoaderOptions::default();
        put_prefix(
            opts,
            load_options_bytes(struct_size),
            DvLoadOptions {
                struct_size,
                clip_vision: std::ptr::null(),
                device: std::ptr::null(),
                virtual_vram_gb: d.virtual_vram(),
                donor_device: std::ptr::null(),
                expert_mode_allocations: std::ptr::null(),
                eject_models: i32::from(d.eject_models),
                graphs_dir: std::ptr::null(),
                comfyui_path: std::ptr::null(),
                extra_model_paths: std::ptr::null(),
                dtype: std::ptr::null(),
                donor_policy: std::ptr::null(),
                micro_batch: 0,
            },
        );
        Ok(())
    })
}

/// Converts the C options into the loader's, field by field (contract §1 names).
///
/// # Safety
/// `o` is a whole `dv_load_options` (absent newer fields zeroed) whose strings are NULL or valid.
unsafe fn load_options(o: &DvLoadOptions) -> R<LoadOptions> {
    let clip_vision =
        opt_str(o.clip_vision, "clip_vision")?.ok_or_else(|| Fail::null("clip_vision"))?;
    let defaults = LoaderOptions::default();
    // Unset folders fall back to what the CLI uses (COMFYUI_PATH).
    let model_folders = model_folders(o.comfyui_path, o.extra_model_paths)?;
    Ok(LoadOptions {
        model_folders,
        clip_vision,
        loader: LoaderOptions {
            device: opt_str(o.device, "device")?.filter(|s| !s.trim().is_empty()),
            // A host's field always holds a number: the default reads as "not set".
            virtual_vram_gb: (o.virtual_vram_gb != DEFAULT_VIRTUAL_VRAM_GB)
                .then_some(o.virtual_vram_gb),
            donor_device: opt_str(o.donor_device, "donor_device")?.unwrap_or(defaults.donor_device),
            expert_mode_allocations: opt_str(o.expert_mode_allocations, "expert_mode_allocations")?
                .unwrap_or(defaults.expert_mode_allocations),
            eject_models: o.eject_models != 0,
            donor_policy: match opt_str(o.donor_policy, "donor_policy")?
                .filter(|s| !s.trim().is_empty())
            {
                Some(p) => p
                    .parse()
                    .map_err(|e: Error| Fail::from(e.context("donor_policy")))?,
                None => defaults.donor_policy,
            },
        },
        simulate_devices: None,
        graphs_dir: opt_str(o.graphs_dir, "graphs_dir")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        granularity: Granularity::default(),
        dtype: match opt_str(o.dtype, "dtype")?.filter(|s| !s.trim().is_empty()) {
            Some(d) => d.parse()?,
            None => Default::default(),
        },
        micro_batch: (o.micro_batch != 0).then_some(o.micro_batch),
        ..Default::default()
    })
}

/// `dv_status dv_model_load(const dv_load_options *opts, dv_model *model_out)`.
///
/// # Safety
/// `opts` is NULL or points to `opts->struct_size` readable bytes; `model_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_load(
    opts: *const DvLoadOptions,
    model_out: *mut u64,
) -> DvStatus {
    if !model_out.is_null() {
        put(model_out, 0);
    }
    guard(|| {
        if opts.is_null() {
            return Err(Fail::null("opts"));
        }
        if model_out.is_null() {
            return Err(Fail::null("model_out"));
        }
        // Read the size first: only then is it known how much of the struct is there.
        let size = std::ptr::read_unaligned(opts.cast::<usize>());
        let v1 = LOAD_OPTIONS_V1;
        if size < v1 {
            return Err(Fail::new(
                DV_ERR_STRUCT_SIZE,
                format!("opts->struct_size is {size}; this library needs at least {v1} (call dv_load_options_init first)"),
            ));
        }
        // Only the caller's version is read; fields it does not have stay NULL (defaults).
        // SAFETY: all-zero is a valid DvLoadOptions (null pointers, zero numbers), and the
        // C contract makes `size` bytes of `opts` readable.
        let mut o: DvLoadOptions = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(
            opts.cast::<u8>(),
            (&mut o as *mut DvLoadOptions).cast::<u8>(),
            load_options_bytes(size),
        );
        let lo = load_options(&o)?;
        running()?;
        let cv = ClipVision::load(&lo)?;
        put(model_out, handles::insert_model(cv));
        Ok(())
    })
}

/// `dv_status dv_model_unload(dv_model model)`.
#[no_mangle]
pub extern "C" fn dv_model_unload(model: u64) -> DvStatus {
    guard(|| {
        if model == 0 || handles::remove_model(model) {
            Ok(())
        } else {
            Err(model_gone(model))
        }
    })
}

/// `dv_status dv_model_plan_json(dv_model model, char **json_out)`.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_plan_json(model: u64, json_out: *mut *mut c_char) -> DvStatus {
    if !json_out.is_null() {
        put(json_out, std::ptr::null_mut());
    }
    guard(|| {
        if json_out.is_null() {
            return Err(Fail::null("json_out"));
        }
        let cv = self::model(model)?;
        let json = serde_json::to_string(&cv.plan().to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the plan: {e}")))?;
        put(json_out, handles::string_into_raw(json));
        Ok(())
    })
}

/// `dv_status dv_model_plan_text(dv_model model, char **text_out)`: the plan table the CLI's
/// `plan` prints (contract §5.4), for hosts that log it at load time as DisTorch does.
///
/// # Safety
/// `text_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_plan_text(model: u64, text_out: *mut *mut c_char) -> DvStatus {
    if !text_out.is_null() {
        put(text_out, std::ptr::null_mut());
    }
    guard(|| {
        if text_out.is_null() {
            return Err(Fail::null("text_out"));
        }
        let table = self::model(model)?.plan().render_table();
        put(text_out, handles::string_into_raw(table));
        Ok(())
    })
}

/// `dv_status dv_model_outputs_json(dv_model model, char **json_out)`: the names an encode
/// returns when it asks for no outputs in particular, as a JSON array in contract §3 order.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_outputs_json(model: u64, json_out: *mut *mut c_char) -> DvStatus {
    if !json_out.is_null() {
        put(json_out, std::ptr::null_mut());
    }
    guard(|| {
        if json_out.is_null() {
            return Err(Fail::null("json_out"));
        }
        // The same resolution an encode with no names does, so the two never disagree.
        let names = crate::runtime::resolve_outputs(self::model(model)?.model(), &[])?;
        let json = serde_json::to_string(&names)
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the output names: {e}")))?;
        put(json_out, handles::string_into_raw(json));
        Ok(())
    })
}

/// `dv_status dv_model_identity_json(dv_model model, char **json_out)`: what decides the
/// model's rows (weights' content id, family, configuration, compute dtype), the same fields a
/// sharded `encode --resume` compares, so a host's resume can refuse another model.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_identity_json(
    model: u64,
    json_out: *mut *mut c_char,
) -> DvStatus {
    if !json_out.is_null() {
        put(json_out, std::ptr::null_mut());
    }
    guard(|| {
        if json_out.is_null() {
            return Err(Fail::null("json_out"));
        }
        let id = crate::job::batch::RunIdentity::of_model(&*self::model(model)?);
        let json = serde_json::to_string(&id)
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the identity: {e}")))?;
        put(json_out, handles::string_into_raw(json));
        Ok(())
    })
}

/// `dv_status dv_model_image_size(dv_model model, uint32_t *size_out)`.
///
/// # Safety
/// `size_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_image_size(model: u64, size_out: *mut u32) -> DvStatus {
    if !size_out.is_null() {
        put(size_out, 0);
    }
    guard(|| {
        if size_out.is_null() {
            return Err(Fail::null("size_out"));
        }
        let cv = self::model(model)?;
        put(size_out, cv.model().config.image_size as u32);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Encoding

/// `dv_status dv_encode_pixels(...)`: preprocessed NCHW pixels, as the CLI's `encode`.
///
/// # Safety
/// `pixels` is NULL or points to `count` readable floats; `outputs` is NULL or a
/// NUL-terminated string; `outputs_out` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_encode_pixels(
    model: u64,
    pixels: *const f32,
    count: usize,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    outputs: *const c_char,
    batch_size: usize,
    outputs_out: *mut u64,
) -> DvStatus {
    if !outputs_out.is_null() {
        put(outputs_out, 0);
    }
    guard(|| {
        if outputs_out.is_null() {
            return Err(Fail::null("outputs_out"));
        }
        let cv = self::model(model)?;
        running()?;
        let data = f32_buffer(pixels, count, &[("B", b), ("C", c), ("H", h), ("W", w)])?;
        let wanted = output_list(outputs)?;
        let view = ArrayView4::from_shape((b, c, h, w), data)
            .map_err(|e| Fail::new(DV_ERR_SIZE_MISMATCH, format!("pixels: {e}")))?;
        let res = cv.encode(view, &wanted, batch_or_default(batch_size))?;
        put(outputs_out, register_outputs(res));
        Ok(())
    })
}

/// `dv_status dv_encode_image(...)`: a ComfyUI IMAGE buffer, preprocessed per contract §4.
///
/// # Safety
/// As [`dv_encode_pixels`], with `image` holding `count` floats in B×H×W×C order.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_encode_image(
    model: u64,
    image: *const f32,
    count: usize,
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    crop: i32,
    outputs: *const c_char,
    batch_size: usize,
    outputs_out: *mut u64,
) -> DvStatus {
    if !outputs_out.is_null() {
        put(outputs_out, 0);
    }
    guard(|| {
        if outputs_out.is_null() {
            return Err(Fail::null("outputs_out"));
        }
        let cv = self::model(model)?;
        running()?;
        let data = f32_buffer(image, count, &[("B", b), ("H", h), ("W", w), ("C", c)])?;
        if c != 3 && c != 4 {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("C is {c}; an IMAGE buffer has 3 (RGB) or 4 (RGBA) channels"),
            ));
        }
        let crop = image::crop_from_code(crop).ok_or_else(|| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("crop is {crop}; valid: DV_CROP_CENTER (0), DV_CROP_NONE (1)"),
            )
        })?;
        let wanted = output_list(outputs)?;
        let pixels = image::preprocess_for(&cv, data, (b, h, w, c), crop)?;
        let res = cv.encode(pixels.view(), &wanted, batch_or_default(batch_size))?;
        put(outputs_out, register_outputs(res));
        Ok(())
    })
}

/// `dv_status dv_preprocess_encoded(...)`: one encoded image file (PNG, JPEG, …) held in
/// memory, decoded and preprocessed exactly as the CLI's `encode --images` does, into
/// `3 × S × S` floats for [`dv_encode_pixels`].
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes; `name` is NULL or a NUL-terminated
/// string; `pixels_out` is NULL or points to `count` writable floats.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dv_preprocess_encoded(
    model: u64,
    data: *const u8,
    len: usize,
    name: *const c_char,
    crop: i32,
    pixels_out: *mut f32,
    count: usize,
) -> DvStatus {
    guard(|| {
        let cv = self::model(model)?;
        if data.is_null() {
            return Err(Fail::null("data"));
        }
        if pixels_out.is_null() {
            return Err(Fail::null("pixels_out"));
        }
        let s = cv.model().config.image_size;
        if count != 3 * s * s {
            return Err(Fail::new(
                DV_ERR_SIZE_MISMATCH,
                format!(
                    "pixels_out holds {count} floats; this model needs 3*{s}*{s} = {}",
                    3 * s * s
                ),
            ));
        }
        if (pixels_out as usize) % std::mem::align_of::<f32>() != 0 {
            return Err(Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                "pixels_out is not aligned for f32",
            ));
        }
        let crop = image::crop_from_code(crop).ok_or_else(|| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!("crop is {crop}; valid: DV_CROP_CENTER (0), DV_CROP_NONE (1)"),
            )
        })?;
        let name = opt_str(name, "name")?.unwrap_or_else(|| "image".to_string());
        // SAFETY: the caller guarantees `len` readable bytes at `data` (checked non-NULL).
        let bytes = std::slice::from_raw_parts(data, len);
        let px = image::preprocess_encoded(&cv, bytes, &name, crop)?;
        // SAFETY: `pixels_out` is non-NULL, aligned and holds `count` floats (checked above).
        std::slice::from_raw_parts_mut(pixels_out, count).copy_from_slice(&px);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Outputs

/// `dv_status dv_outputs_count(dv_outputs outputs, size_t *count_out)`.
///
/// # Safety
/// `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_count(outputs: u64, count_out: *mut usize) -> DvStatus {
    if !count_out.is_null() {
        put(count_out, 0);
    }
    guard(|| {
        if count_out.is_null() {
            return Err(Fail::null("count_out"));
        }
        put(count_out, self::outputs(outputs)?.tensors.len());
        Ok(())
    })
}

/// Fills a caller's `dv_tensor` with borrowed views into `t`.
///
/// # Safety
/// `out` is non-NULL and points to `out->struct_size` writable bytes.
unsafe fn fill_tensor(out: *mut DvTensor, t: &handles::Tensor) -> R {
    let size = std::ptr::read_unaligned(out.cast::<usize>());
    let v1 = std::mem::size_of::<DvTensor>();
    if size < v1 {
        return Err(Fail::new(
            DV_ERR_STRUCT_SIZE,
            format!("tensor_out->struct_size is {size}; this library needs at least {v1} (set it to sizeof(dv_tensor))"),
        ));
    }
    put(
        out,
        DvTensor {
            struct_size: size,
            name: t.c_name.as_ptr(),
            data: t.data.as_ptr().cast(),
            dtype: DV_DTYPE_F32,
            ndim: t.shape.len(),
            shape: t.shape.as_ptr(),
            numel: t.data.len(),
            nbytes: t.data.len() * std::mem::size_of::<f32>(),
        },
    );
    Ok(())
}

/// `dv_status dv_outputs_get(dv_outputs outputs, const char *name, dv_tensor *tensor_out)`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `tensor_out` is NULL or points to
/// `tensor_out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_get(
    outputs: u64,
    name: *const c_char,
    tensor_out: *mut DvTensor,
) -> DvStatus {
    guard(|| {
        if tensor_out.is_null() {
            return Err(Fail::null("tensor_out"));
        }
        let set = self::outputs(outputs)?;
        let name = opt_str(name, "name")?.ok_or_else(|| Fail::null("name"))?;
        let t = set.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
            let have: Vec<&str> = set.tensors.iter().map(|t| t.name.as_str()).collect();
            Fail::new(
                DV_ERR_NOT_FOUND,
                format!("no output {name:?} (have: {})", have.join(", ")),
            )
        })?;
        fill_tensor(tensor_out, t)
    })
}

/// `dv_status dv_outputs_get_index(dv_outputs outputs, size_t index, dv_tensor *tensor_out)`.
///
/// # Safety
/// As [`dv_outputs_get`].
#[no_mangle]
pub unsafe extern "C" fn dv_outputs_get_index(
    outputs: u64,
    index: usize,
    tensor_out: *mut DvTensor,
) -> DvStatus {
    guard(|| {
        if tensor_out.is_null() {
            return Err(Fail::null("tensor_out"));
        }
        let set = self::outputs(outputs)?;
        let t = set.tensors.get(index).ok_or_else(|| {
            Fail::new(
                DV_ERR_INVALID_ARGUMENT,
                format!(
                    "index {index} is out of range (count {})",
                    set.tensors.len()
                ),
            )
        })?;
        fill_tensor(tensor_out, t)
    })
}

/// `dv_status dv_outputs_free(dv_outputs outputs)`.
#[no_mangle]
pub extern "C" fn dv_outputs_free(outputs: u64) -> DvStatus {
    guard(|| {
        if outputs == 0 || handles::remove_outputs(outputs) {
            Ok(())
        } else {
            Err(Fail::handle("outputs", outputs))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_message() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, DV_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(dv_last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(guard(|| Ok(())), DV_OK);
        let msg = unsafe { CStr::from_ptr(dv_last_error()) }.to_str().unwrap();
        assert_eq!(msg, "");
    }

    #[test]
    fn every_error_kind_has_its_own_status() {
        use ErrorKind::*;
        let kinds = [
            InvalidArgument,
            NotFound,
            Io,
            InvalidModel,
            DoesNotFit,
            Runtime,
        ];
        let mut codes: Vec<_> = kinds.iter().map(|&k| status_of(k)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&DV_OK));
    }

    #[test]
    fn virtual_vram_gb_at_its_default_counts_as_not_set() {
        let model = CString::new("m.safetensors").unwrap();
        let mut o: DvLoadOptions = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<DvLoadOptions>();
        assert_eq!(unsafe { dv_load_options_init(&mut o, size) }, DV_OK);
        assert_eq!(o.virtual_vram_gb, DEFAULT_VIRTUAL_VRAM_GB);
        o.clip_vision = model.as_ptr();
        let read = |o: &DvLoadOptions| match unsafe { load_options(o) } {
            Ok(l) => l.loader.virtual_vram_gb,
            Err(f) => panic!("{}", f.message),
        };
        assert_eq!(read(&o), None);
        o.virtual_vram_gb = 8.0;
        assert_eq!(read(&o), Some(8.0));
        o.virtual_vram_gb = 0.0;
        assert_eq!(read(&o), Some(0.0));
    }

    #[test]
    fn micro_batch_zero_is_off_and_n_is_the_clis_micro_batch() {
        let model = CString::new("m.safetensors").unwrap();
        let mut o: DvLoadOptions = unsafe { std::mem::zeroed() };
        o.micro_batch = 7; // a sentinel: init resets it
        let size = std::mem::size_of::<DvLoadOptions>();
        assert_eq!(unsafe { dv_load_options_init(&mut o, size) }, DV_OK);
        assert_eq!(o.micro_batch, 0);
        o.clip_vision = model.as_ptr();
        let read = |o: &DvLoadOptions| match unsafe { load_options(o) } {
            Ok(l) => l.micro_batch,
            Err(f) => panic!("{}", f.message),
        };
        assert_eq!(read(&o), None);
        o.micro_batch = 3;
        assert_eq!(read(&o), Some(3));
        // A version-3 caller's size never reaches the field.
        assert_eq!(load_options_bytes(LOAD_OPTIONS_V3), LOAD_OPTIONS_V3);
        assert_eq!(load_options_bytes(size - 1), LOAD_OPTIONS_V3);
    }

    #[test]
    fn initialised_options_read_back_as_the_loader_defaults() {
        let model = CString::new("m.safetensors").unwrap();
        let mut o: DvLoadOptions = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<DvLoadOptions>();
        assert_eq!(unsafe { dv_load_options_init(&mut o, size) }, DV_OK);
        o.clip_vision = model.as_ptr();
        let l = match unsafe { load_options(&o) } {
            Ok(l) => l,
            Err(f) => panic!("{}", f.message),
        };
        let want = LoaderOptions::default();
        assert_eq!(format!("{:?}", l.loader), format!("{want:?}"));
        assert_eq!(l.dtype, crate::export::ComputeDtype::default());
        // The header documents what a batch_size of 0 means.
        assert_eq!(batch_or_default(0), DEFAULT_BATCH_SIZE);
        let header = include_str!("../../distorch_vision.h");
        let doc = format!("batch_size images per forward pass; 0 = {DEFAULT_BATCH_SIZE}");
        assert!(header.contains(&doc), "distorch_vision.h lacks {doc:?}");
    }
}
