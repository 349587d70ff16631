//! Shared by the `capi_*` tests: loads the built plugin the way a host would (libloading,
//! the library name from plugin.toml) and wraps the C functions. A module of the `integration`
//! binary uses it with `use crate::common::capi::*;`, a test binary of its own with
//! `mod common;` and `use common::capi::*;` (the paths and fixtures come from `common`).

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// The paths and fixtures every capi test needs, so one `use common::capi::*` suffices; a
// binary that does not use them all must not warn.
#[allow(unused_imports)]
pub use super::{fixture, max_abs_diff, root, FIXTURES};

pub type Status = i32;
pub const DV_OK: Status = 0;
pub const DV_ERR_INVALID_ARGUMENT: Status = 1;
pub const DV_ERR_NOT_FOUND: Status = 2;
pub const DV_ERR_NULL_POINTER: Status = 7;
pub const DV_ERR_INVALID_HANDLE: Status = 8;
pub const DV_ERR_SIZE_MISMATCH: Status = 9;
pub const DV_ERR_STRUCT_SIZE: Status = 10;
pub const DV_ERR_SHUT_DOWN: Status = 12;
pub const DV_CROP_CENTER: i32 = 0;
pub const DV_CROP_NONE: i32 = 1;

/// `dv_load_options` as a C host built against version 1 of the header declares it (the
/// tests run as such an older host; `LoadOptionsV2` is the current one).
#[repr(C)]
pub struct LoadOptions {
    pub struct_size: usize,
    pub clip_vision: *const c_char,
    pub device: *const c_char,
    pub virtual_vram_gb: f64,
    pub donor_device: *const c_char,
    pub expert_mode_allocations: *const c_char,
    pub eject_models: i32,
    pub graphs_dir: *const c_char,
    pub comfyui_path: *const c_char,
    pub extra_model_paths: *const c_char,
}

/// `dv_load_options` version 2: version 1 plus `dtype`.
#[repr(C)]
pub struct LoadOptionsV2 {
    pub v1: LoadOptions,
    pub dtype: *const c_char,
}

/// `dv_load_options` version 3: version 2 plus `donor_policy`.
#[repr(C)]
pub struct LoadOptionsV3 {
    pub v2: LoadOptionsV2,
    pub donor_policy: *const c_char,
}

/// `dv_load_options` version 4: version 3 plus `micro_batch`.
#[repr(C)]
pub struct LoadOptionsV4 {
    pub v3: LoadOptionsV3,
    pub micro_batch: usize,
}

/// `dv_load_options` version 5: version 4 plus `cpu_engine` and `openvino_ep`.
#[repr(C)]
pub struct LoadOptionsV5 {
    pub v4: LoadOptionsV4,
    pub cpu_engine: *const c_char,
    pub openvino_ep: *const c_char,
}

/// `dv_tensor`.
#[repr(C)]
pub struct Tensor {
    pub struct_size: usize,
    pub name: *const c_char,
    pub data: *const std::ffi::c_void,
    pub dtype: i32,
    pub ndim: usize,
    pub shape: *const i64,
    pub numel: usize,
    pub nbytes: usize,
}

impl Tensor {
    pub fn empty() -> Tensor {
        Tensor {
            struct_size: std::mem::size_of::<Tensor>(),
            name: std::ptr::null(),
            data: std::ptr::null(),
            dtype: 0,
            ndim: 0,
            shape: std::ptr::null(),
            numel: 0,
            nbytes: 0,
        }
    }
}

/// One f32 output: name, shape, values.
pub type Output = (String, Vec<usize>, Vec<f32>);

#[allow(clippy::type_complexity)]
pub struct Api {
    pub version: unsafe extern "C" fn() -> *const c_char,
    pub abi_version: unsafe extern "C" fn() -> u32,
    pub status_string: unsafe extern "C" fn(Status) -> *const c_char,
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    pub init: unsafe extern "C" fn(*const c_char) -> Status,
    pub shutdown: unsafe extern "C" fn() -> Status,
    pub list_devices: unsafe extern "C" fn(*mut *mut c_char) -> Status,
    pub string_free: unsafe extern "C" fn(*mut c_char) -> Status,
    pub live_objects: unsafe extern "C" fn(*mut usize, *mut usize, *mut usize) -> Status,
    pub load_options_init: unsafe extern "C" fn(*mut LoadOptions, usize) -> Status,
    pub model_load: unsafe extern "C" fn(*const LoadOptions, *mut u64) -> Status,
    pub model_unload: unsafe extern "C" fn(u64) -> Status,
    pub model_plan_json: unsafe extern "C" fn(u64, *mut *mut c_char) -> Status,
    pub model_image_size: unsafe extern "C" fn(u64, *mut u32) -> Status,
    pub encode_pixels: unsafe extern "C" fn(
        u64,
        *const f32,
        usize,
        usize,
        usize,
        usize,
        usize,
        *const c_char,
        usize,
        *mut u64,
    ) -> Status,
    pub encode_image: unsafe extern "C" fn(
        u64,
        *const f32,
        usize,
        usize,
        usize,
        usize,
        usize,
        i32,
        *const c_char,
        usize,
        *mut u64,
    ) -> Status,
    pub model_patching: unsafe extern "C" fn(u64, *mut u32, *mut u32) -> Status,
    pub encode_patches: unsafe extern "C" fn(
        u64,
        *const f32,
        usize,
        usize,
        usize,
        usize,
        *const i64,
        usize,
        *const c_char,
        usize,
        *mut u64,
    ) -> Status,
    pub preprocess_encoded_patches: unsafe extern "C" fn(
        u64,
        *const u8,
        usize,
        *const c_char,
        *mut f32,
        usize,
        *mut i64,
    ) -> Status,
    pub outputs_count: unsafe extern "C" fn(u64, *mut usize) -> Status,
    pub outputs_get: unsafe extern "C" fn(u64, *const c_char, *mut Tensor) -> Status,
    pub outputs_get_index: unsafe extern "C" fn(u64, usize, *mut Tensor) -> Status,
    pub outputs_free: unsafe extern "C" fn(u64) -> Status,
    pub list_models: unsafe extern "C" fn(*const c_char, *const c_char, *mut *mut c_char) -> Status,
}

pub fn plugin_toml() -> toml::Value {
    let text = std::fs::read_to_string(root().join("plugin.toml")).expect("plugin.toml");
    toml::from_str(&text).expect("plugin.toml parses")
}

/// The library file named by plugin.toml for this OS.
pub fn library_name() -> String {
    let os = if cfg!(target_os = "macos") {
        "macos"
    } else if cfg!(windows) {
        "windows"
    } else {
        "linux"
    };
    plugin_toml()["plugin"]["library"][os]
        .as_str()
        .expect("plugin.library entry")
        .to_string()
}

/// The cdylib cargo built next to this test (`target/<profile>/`).
pub fn plugin_path() -> PathBuf {
    let name = library_name();
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .skip(1)
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found above {}", exe.display()))
}

pub fn ort_library() -> PathBuf {
    root().join(".runtime/cpu/onnxruntime/capi/libonnxruntime.so.1.31.1")
}

pub fn graphs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-graphs")
}

pub fn cstring(s: impl AsRef<str>) -> CString {
    CString::new(s.as_ref()).expect("no NUL")
}

pub fn path_cstring(p: &Path) -> CString {
    cstring(p.to_str().expect("utf-8 path"))
}

static API: OnceLock<Api> = OnceLock::new();

/// The plugin, loaded once per test process and initialised with the checkout's ONNX Runtime.
pub fn api() -> &'static Api {
    API.get_or_init(|| {
        // SAFETY: loading our own cdylib; its initialisers are Rust's and have no side effects.
        let lib = unsafe { libloading::Library::new(plugin_path()) }.expect("load plugin");
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the types above mirror distorch_vision.h.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .unwrap_or_else(|e| panic!("symbol {}: {e}", $name))
            };
        }
        let api = Api {
            version: sym!("dv_version"),
            abi_version: sym!("dv_abi_version"),
            status_string: sym!("dv_status_string"),
            last_error: sym!("dv_last_error"),
            init: sym!("dv_init"),
            shutdown: sym!("dv_shutdown"),
            list_devices: sym!("dv_list_devices"),
            string_free: sym!("dv_string_free"),
            live_objects: sym!("dv_live_objects"),
            load_options_init: sym!("dv_load_options_init"),
            model_load: sym!("dv_model_load"),
            model_unload: sym!("dv_model_unload"),
            model_plan_json: sym!("dv_model_plan_json"),
            model_image_size: sym!("dv_model_image_size"),
            encode_pixels: sym!("dv_encode_pixels"),
            encode_image: sym!("dv_encode_image"),
            model_patching: sym!("dv_model_patching"),
            encode_patches: sym!("dv_encode_patches"),
            preprocess_encoded_patches: sym!("dv_preprocess_encoded_patches"),
            outputs_count: sym!("dv_outputs_count"),
            outputs_get: sym!("dv_outputs_get"),
            outputs_get_index: sym!("dv_outputs_get_index"),
            outputs_free: sym!("dv_outputs_free"),
            list_models: sym!("dv_list_models"),
        };
        let ort = path_cstring(&ort_library());
        let st = unsafe { (api.init)(ort.as_ptr()) };
        assert_eq!(st, DV_OK, "dv_init: {}", api.last_error());
        api
    })
}

impl Api {
    pub fn last_error(&self) -> String {
        // SAFETY: dv_last_error never returns NULL.
        unsafe { CStr::from_ptr((self.last_error)()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Takes ownership of a returned string.
    ///
    /// # Safety
    /// `p` is a string returned by the plugin and not yet freed.
    pub unsafe fn take_string(&self, p: *mut c_char) -> String {
        assert!(!p.is_null());
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        assert_eq!(unsafe { (self.string_free)(p) }, DV_OK);
        s
    }

    /// Loads a model on the CPU without ejecting others (tests run in parallel).
    pub fn load(&self, model: &Path) -> u64 {
        self.load_with(model, |_| {}).expect("load")
    }

    pub fn load_with(
        &self,
        model: &Path,
        tweak: impl FnOnce(&mut LoadOptions),
    ) -> Result<u64, (Status, String)> {
        let path = path_cstring(model);
        let graphs = path_cstring(&graphs_dir());
        let cpu = cstring("cpu");
        let mut o: LoadOptions = unsafe { std::mem::zeroed() };
        let st = unsafe { (self.load_options_init)(&mut o, std::mem::size_of::<LoadOptions>()) };
        assert_eq!(st, DV_OK);
        o.clip_vision = path.as_ptr();
        o.device = cpu.as_ptr();
        o.graphs_dir = graphs.as_ptr();
        o.eject_models = 0;
        tweak(&mut o);
        let mut h = 0u64;
        let st = unsafe { (self.model_load)(&o, &mut h) };
        if st == DV_OK {
            assert_ne!(h, 0);
            Ok(h)
        } else {
            assert_eq!(h, 0);
            Err((st, self.last_error()))
        }
    }

    /// Encodes NCHW pixels; the outputs as (name, shape, values), then frees them.
    pub fn encode_pixels_vec(
        &self,
        model: u64,
        px: &ndarray::Array4<f32>,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let s = px.shape();
        let data = px.as_standard_layout();
        let data = data.as_slice().expect("contiguous");
        let mut out = 0u64;
        let st = unsafe {
            (self.encode_pixels)(
                model,
                data.as_ptr(),
                data.len(),
                s[0],
                s[1],
                s[2],
                s[3],
                std::ptr::null(),
                0,
                &mut out,
            )
        };
        assert_eq!(st, DV_OK, "encode: {}", self.last_error());
        self.take_outputs(out)
    }

    /// Encodes naflex patches `[B, T, D]` with their grids; the f32 outputs as (name, shape,
    /// values) and the `spatial_shapes` the outputs end with, then frees them.
    pub fn encode_patches_vec(
        &self,
        model: u64,
        values: &ndarray::Array3<f32>,
        grids: &[i64],
    ) -> (Vec<Output>, Vec<i64>) {
        let s = values.shape();
        let data = values.as_standard_layout();
        let data = data.as_slice().expect("contiguous");
        let mut out = 0u64;
        let st = unsafe {
            (self.encode_patches)(
                model,
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
        assert_eq!(st, DV_OK, "encode_patches: {}", self.last_error());
        let (res, shapes) = self.take_all_outputs(out);
        (res, shapes.expect("naflex outputs end with spatial_shapes"))
    }

    /// The f32 outputs of `out`, then frees it (a naflex model's `spatial_shapes` is checked
    /// and left out: see [`Api::take_all_outputs`]).
    pub fn take_outputs(&self, out: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.take_all_outputs(out).0
    }

    /// The f32 outputs of `out` and, for a naflex model, the int64 `spatial_shapes` that comes
    /// last; then frees it.
    pub fn take_all_outputs(&self, out: u64) -> (Vec<Output>, Option<Vec<i64>>) {
        let mut n = 0usize;
        assert_eq!(unsafe { (self.outputs_count)(out, &mut n) }, DV_OK);
        let mut res = Vec::new();
        let mut shapes = None;
        for i in 0..n {
            let mut t = Tensor::empty();
            assert_eq!(unsafe { (self.outputs_get_index)(out, i, &mut t) }, DV_OK);
            let name = unsafe { CStr::from_ptr(t.name) }
                .to_str()
                .unwrap()
                .to_string();
            let shape: Vec<usize> = unsafe { std::slice::from_raw_parts(t.shape, t.ndim) }
                .iter()
                .map(|&d| d as usize)
                .collect();
            assert_eq!(shape.iter().product::<usize>(), t.numel);
            if t.dtype == 2 {
                // DV_DTYPE_I64: only the grids, last, [B, 2].
                assert_eq!(
                    (name.as_str(), i + 1, shape.len()),
                    ("spatial_shapes", n, 2)
                );
                assert_eq!(t.nbytes, t.numel * 8);
                shapes = Some(
                    unsafe { std::slice::from_raw_parts(t.data.cast::<i64>(), t.numel) }.to_vec(),
                );
                continue;
            }
            assert_eq!(t.dtype, 1);
            assert_eq!(t.nbytes, t.numel * 4);
            let data =
                unsafe { std::slice::from_raw_parts(t.data.cast::<f32>(), t.numel) }.to_vec();
            // The same tensor by name.
            let mut by_name = Tensor::empty();
            let cname = cstring(&name);
            assert_eq!(
                unsafe { (self.outputs_get)(out, cname.as_ptr(), &mut by_name) },
                DV_OK
            );
            assert_eq!(by_name.data, t.data);
            res.push((name, shape, data));
        }
        assert_eq!(unsafe { (self.outputs_free)(out) }, DV_OK);
        (res, shapes)
    }
}

/// Every f32 tensor of a safetensors file, by name (a naflex output's int64 `spatial_shapes`
/// left out).
pub fn read_safetensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "spatial_shapes")
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A naflex fixture's patches `[B, T, D]` and grids (rows, cols for each image).
pub fn read_patches(model: &str) -> (ndarray::Array3<f32>, Vec<i64>) {
    match distorch_vision::job::output::read_pixels(&fixture(model).join("pixels.safetensors"))
        .expect("pixels")
    {
        distorch_vision::image::Pixels::Patches { values, grids } => (
            values,
            grids
                .iter()
                .flat_map(|g| [g.rows as i64, g.cols as i64])
                .collect(),
        ),
        distorch_vision::image::Pixels::Square(_) => panic!("{model} holds square pixels"),
    }
}

/// Whether a fixture is a naflex model (its pixels are patches with grids).
pub fn is_naflex(model: &str) -> bool {
    model.starts_with("siglip2_naflex")
}

/// A fixture's square pixels (NCHW); see [`read_patches`] for naflex fixtures.
pub fn read_pixels(model: &str) -> ndarray::Array4<f32> {
    match distorch_vision::job::output::read_pixels(&fixture(model).join("pixels.safetensors"))
        .expect("pixels")
    {
        distorch_vision::image::Pixels::Square(a) => a,
        distorch_vision::image::Pixels::Patches { .. } => panic!("{model} holds naflex patches"),
    }
}

/// VmRSS of this process in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Compiles tests/c_host/host.c with the system C compiler (`$CC`, else `cc`) against
/// distorch_vision.h, warnings as errors and debug info (valgrind names its frames), into `dir`.
pub fn compile_c_host(dir: &Path) -> PathBuf {
    let exe = dir.join("host");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = std::process::Command::new(&cc)
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-g",
            "-I",
        ])
        .arg(root())
        .arg(root().join("tests/c_host/host.c"))
        .arg("-o")
        .arg(&exe)
        .args(["-ldl", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        out.status.success(),
        "compiling host.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}
