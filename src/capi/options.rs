//! `dv_load_options`, the versioned struct a host loads a model with: its layout, the bytes of
//! each version, its defaults (`dv_load_options_init`) and its conversion into the loader's
//! options.

use std::ffi::c_char;
use std::path::PathBuf;

use super::ffi::{guard, opt_str, put_prefix, DvStatus, Fail, DV_ERR_STRUCT_SIZE, R};
use crate::export::Granularity;
use crate::loader::LoadOptions;
use crate::model::folders::ModelFolders;
use crate::plan::{LoaderOptions, DEFAULT_VIRTUAL_VRAM_GB};
use crate::Error;

/// `dv_load_options`. Versions only append fields; `struct_size` says which the caller has:
/// version 1 ends after `extra_model_paths`, version 2 adds `dtype`, version 3 `donor_policy`,
/// version 4 `micro_batch`, version 5 `cpu_engine` and `openvino_ep` (contract §6.4).
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
    // --- version 5 ---
    pub cpu_engine: *const c_char,
    pub openvino_ep: *const c_char,
}

/// The size of each version of `dv_load_options`, oldest first: where the next version's first
/// field starts, and the whole struct for the newest. A new version replaces the last entry by
/// the offset of its first field and appends the struct's size.
const VERSION_SIZES: [usize; 5] = [
    std::mem::offset_of!(DvLoadOptions, dtype),
    std::mem::offset_of!(DvLoadOptions, donor_policy),
    std::mem::offset_of!(DvLoadOptions, micro_batch),
    std::mem::offset_of!(DvLoadOptions, cpu_engine),
    std::mem::size_of::<DvLoadOptions>(),
];

/// The newest `dv_load_options` version, the one the header declares last.
pub const LOAD_OPTIONS_VERSION: usize = VERSION_SIZES.len();

/// Size of a version-1 `dv_load_options`, the smallest accepted.
const LOAD_OPTIONS_V1: usize = VERSION_SIZES[0];

/// Bytes of `dv_load_options` this library reads or writes for a caller's `struct_size`:
/// whole versions only, so a size that ends inside a field never exposes half a pointer.
fn load_options_bytes(struct_size: usize) -> usize {
    VERSION_SIZES
        .iter()
        .rev()
        .copied()
        .find(|&v| struct_size >= v)
        .unwrap_or(LOAD_OPTIONS_V1)
}

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
                cpu_engine: std::ptr::null(),
                openvino_ep: std::ptr::null(),
            },
        );
        Ok(())
    })
}

/// Reads a caller's `dv_load_options` (checked for NULL) as the loader's options: only the
/// caller's version is read; fields it does not have stay NULL (defaults).
///
/// # Safety
/// `opts` points to `opts->struct_size` readable bytes whose strings are NULL or valid.
pub(super) unsafe fn read(opts: *const DvLoadOptions) -> R<LoadOptions> {
    // Read the size first: only then is it known how much of the struct is there.
    let size = std::ptr::read_unaligned(opts.cast::<usize>());
    let v1 = LOAD_OPTIONS_V1;
    if size < v1 {
        return Err(Fail::new(
            DV_ERR_STRUCT_SIZE,
            format!("opts->struct_size is {size}; this library needs at least {v1} (call dv_load_options_init first)"),
        ));
    }
    // SAFETY: all-zero is a valid DvLoadOptions (null pointers, zero numbers), and the
    // C contract makes `size` bytes of `opts` readable.
    let mut o: DvLoadOptions = std::mem::zeroed();
    std::ptr::copy_nonoverlapping(
        opts.cast::<u8>(),
        (&mut o as *mut DvLoadOptions).cast::<u8>(),
        load_options_bytes(size),
    );
    load_options(&o)
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
            cpu_engine: match opt_str(o.cpu_engine, "cpu_engine")?.filter(|s| !s.trim().is_empty())
            {
                Some(e) => e.parse()?,
                None => defaults.cpu_engine,
            },
        },
        openvino_ep: opt_str(o.openvino_ep, "openvino_ep")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
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

/// The model folders of `comfyui_path` / `extra_model_paths` (NULL or "" = unset: the
/// ComfyUI folder then falls back to COMFYUI_PATH, as on the command line).
///
/// # Safety
/// Both are NULL or NUL-terminated strings.
pub(super) unsafe fn model_folders(
    comfyui_path: *const c_char,
    extra_model_paths: *const c_char,
) -> R<ModelFolders> {
    let folder = |p, field| -> R<Option<PathBuf>> {
        Ok(opt_str(p, field)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    };
    Ok(ModelFolders::new(
        folder(comfyui_path, "comfyui_path")?,
        folder(extra_model_paths, "extra_model_paths")?,
    ))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;
    use crate::capi::ffi::DV_OK;

    #[test]
    fn a_callers_size_reads_whole_versions_only() {
        let [v1, v2, v3, v4, v5] = VERSION_SIZES;
        assert!(v1 < v2 && v2 < v3 && v3 < v4 && v4 < v5);
        for (size, read) in [
            (v1, v1),
            (v2 - 1, v1),
            (v2, v2),
            (v3 - 1, v2),
            (v3, v3),
            (v4 - 1, v3),
            (v4, v4),
            (v5 - 1, v4),
            (v5, v5),
            (v5 + 64, v5),
        ] {
            assert_eq!(load_options_bytes(size), read, "struct_size {size}");
        }
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
        assert_eq!(l.openvino_ep, None);
    }

    #[test]
    fn version_5_reads_the_cpu_engine_and_the_plugin_path() {
        let model = CString::new("m.safetensors").unwrap();
        let (engine, plugin) = (
            CString::new("openvino").unwrap(),
            CString::new("/p").unwrap(),
        );
        let mut o: DvLoadOptions = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<DvLoadOptions>();
        assert_eq!(unsafe { dv_load_options_init(&mut o, size) }, DV_OK);
        o.clip_vision = model.as_ptr();
        o.cpu_engine = engine.as_ptr();
        o.openvino_ep = plugin.as_ptr();
        let l = unsafe { load_options(&o) }.unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(l.loader.cpu_engine, crate::plan::CpuEngine::OpenVino);
        assert_eq!(l.openvino_ep, Some(PathBuf::from("/p")));
        // A version-4 caller's size reads neither (they stay at their defaults).
        assert_eq!(load_options_bytes(VERSION_SIZES[3]), VERSION_SIZES[3]);
        let bad = CString::new("tbb").unwrap();
        o.cpu_engine = bad.as_ptr();
        let e = unsafe { load_options(&o) }.err().unwrap();
        assert!(
            e.message.contains("\"tbb\"") && e.message.contains("openvino"),
            "{}",
            e.message
        );
    }
}
