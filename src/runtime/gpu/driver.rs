//! The one probe of the CUDA driver: whether `libcuda.so.1` opens, how many GPUs it reports,
//! and each GPU's name and memory through one primary context per GPU (opened once per
//! process; ONNX Runtime uses the same ones). The planner's inventory, the device check and
//! the provider status all ask here. The driver is loaded dynamically (cudarc) and every
//! call is guarded, so a machine without one simply has no GPUs; nothing here panics.
//!
//! A leaf: it uses cudarc and the wording of [`Unavailable`] (itself a leaf) only, so the
//! planner can call it without an import cycle.

use std::sync::{Arc, OnceLock};

use cudarc::driver::CudaContext;

use super::unavailable::Unavailable;

/// Whether the driver library can be opened.
pub fn present() -> bool {
    // SAFETY: only tries to dlopen the driver library; a panic is caught.
    std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// GPUs the driver reports: 0 without a driver, or when it fails.
pub fn device_count() -> usize {
    if !present() {
        return 0;
    }
    std::panic::catch_unwind(|| CudaContext::device_count().unwrap_or(0))
        .unwrap_or(0)
        .max(0) as usize
}

type GpuContexts = Vec<(u32, Arc<CudaContext>, String)>;

/// One primary context per GPU, created once per process (ONNX Runtime uses the same ones).
fn gpu_contexts() -> &'static GpuContexts {
    static CONTEXTS: OnceLock<GpuContexts> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let probe = std::panic::catch_unwind(|| -> GpuContexts {
            if !present() {
                tracing::debug!("{}: no GPUs", Unavailable::NoDriver);
                return Vec::new();
            }
            let count = match CudaContext::device_count() {
                Ok(n) => n.max(0),
                Err(e) => {
                    tracing::debug!("{}: no GPUs", Unavailable::DriverFailed(e.to_string()));
                    return Vec::new();
                }
            };
            let mut out = Vec::new();
            for i in 0..count {
                match CudaContext::new(i as usize) {
                    Ok(ctx) => {
                        let name = ctx.name().unwrap_or_else(|_| format!("GPU {i}"));
                        out.push((i as u32, ctx, name));
                    }
                    Err(e) => tracing::warn!("cuda:{i}: cannot open a context ({e}); skipped"),
                }
            }
            out
        });
        probe.unwrap_or_else(|_| {
            tracing::warn!(
                "probing the CUDA driver panicked; treating the machine as having no GPUs"
            );
            Vec::new()
        })
    })
}

/// A GPU's name and memory as the driver reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    pub index: u32,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The usable GPUs by index: those whose context opened and whose memory could be read now
/// (the others are skipped with a warning).
pub fn gpus() -> Vec<GpuMemory> {
    let contexts = gpu_contexts();
    let mut out = Vec::new();
    for (i, ctx, name) in contexts {
        let info = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.mem_get_info()));
        match info {
            Ok(Ok((free, total))) => out.push(GpuMemory {
                index: *i,
                name: name.clone(),
                total_bytes: total as u64,
                free_bytes: free as u64,
            }),
            Ok(Err(e)) => tracing::warn!("cuda:{i}: cannot read its memory ({e}); skipped"),
            Err(_) => tracing::warn!("cuda:{i}: reading its memory panicked; skipped"),
        }
    }
    out
}
