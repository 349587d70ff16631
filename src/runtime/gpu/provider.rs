//! The CUDA execution provider: whether it can run here (the status `devices` prints, and
//! the check before a plan that needs it loads, each with the exact reason when not), and
//! registering it on a session builder for one GPU (the CPU gets no provider).
//!
//! Verified on a machine without a GPU or driver only: there the status says "no CUDA
//! driver" (run `scripts/gpu_check.sh` on a GPU machine).

use std::path::Path;

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::SessionBuilder;
use serde::Serialize;

use super::driver;
use super::libs::{self, LibStatus};
use super::unavailable::{Unavailable, PROVIDER_LIB};
use crate::plan::Device;
use crate::Result;

/// Whether this ONNX Runtime build has the CUDA execution provider compiled in.
pub fn cuda_provider_available() -> Result<bool> {
    crate::runtime::environment()?;
    Ok(<ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false))
}

/// Checks that `device` can run sessions here: driver, GPU index, runtime provider, and
/// the CUDA libraries the provider links against.
pub fn check_usable(device: Device) -> Result<()> {
    let Device::Cuda(n) = device else {
        return Ok(());
    };
    if !driver::present() {
        return Err(Unavailable::NoDriver.for_device(device));
    }
    let gpus = driver::gpus();
    if !gpus.iter().any(|g| g.index == n) {
        let present = gpus
            .iter()
            .map(|g| Device::Cuda(g.index).to_string())
            .collect();
        return Err(Unavailable::NoGpu { n, present }.for_device(device));
    }
    if !cuda_provider_available()? {
        let library = crate::runtime::env::loaded_library()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Err(Unavailable::NoProvider { library }.for_device(device));
    }
    // The CUDA/cuDNN libraries the provider links against must load (see `libs`).
    let missing = libs::missing_libraries();
    if !missing.is_empty() {
        return Err(libs::missing(&missing).for_device(device));
    }
    Ok(())
}

/// Whether sessions can run on the CUDA execution provider here, and why not.
#[derive(Clone, Debug, Serialize)]
pub struct CudaStatus {
    /// `libcuda.so.1` could be opened.
    pub driver: bool,
    /// GPUs the driver reports.
    pub gpus: usize,
    /// The ONNX Runtime library in use (or the error loading it).
    pub ort_library: Option<String>,
    /// The loaded ONNX Runtime build has the CUDA provider compiled in and its provider
    /// library beside it.
    pub provider_in_build: bool,
    pub libraries: Vec<LibStatus>,
    pub usable: bool,
    /// Why not, when not usable: the first blocking reason, in the order driver, GPU,
    /// ONNX Runtime build, CUDA libraries.
    pub reason: Option<String>,
}

impl CudaStatus {
    /// One line for `devices`.
    pub fn render_line(&self) -> String {
        if self.usable {
            format!(
                "CUDA provider: usable ({} GPU{}, {})",
                self.gpus,
                if self.gpus == 1 { "" } else { "s" },
                self.ort_library.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "CUDA provider: not usable: {}",
                self.reason.as_deref().unwrap_or("unknown reason")
            )
        }
    }
}

/// Whether the ONNX Runtime build in use has the CUDA provider: compiled in, and its
/// provider library beside the main library. `Err` carries the reason when ONNX Runtime
/// itself cannot be loaded.
fn provider_in_build() -> std::result::Result<(bool, String), String> {
    let compiled = cuda_provider_available().map_err(|e| e.to_string())?;
    let lib = crate::runtime::env::loaded_library()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let beside = lib.parent().is_some_and(|d| d.join(PROVIDER_LIB).is_file());
    Ok((compiled && beside, lib.display().to_string()))
}

/// The CUDA provider's status on this machine with the ONNX Runtime build in use.
pub fn provider_status() -> CudaStatus {
    let driver = driver::present();
    let gpus = driver::device_count();
    let (provider, ort_library, ort_err) = match provider_in_build() {
        Ok((p, lib)) => (p, Some(lib), None),
        Err(e) => (false, None, Some(e)),
    };
    let libraries = if driver && gpus > 0 && provider {
        libs::preload().to_vec()
    } else {
        libs::locate_only()
    };
    let missing: Vec<&str> = libraries
        .iter()
        .filter(|l| {
            if driver && gpus > 0 && provider {
                !l.loaded
            } else {
                l.path.is_none()
            }
        })
        .map(|l| l.name.as_str())
        .collect();
    let reason = if !driver {
        Some(Unavailable::NoDriver)
    } else if gpus == 0 {
        Some(Unavailable::NoGpus)
    } else if let Some(e) = ort_err {
        Some(Unavailable::NoOrt(e))
    } else if !provider {
        Some(Unavailable::NoProvider {
            library: ort_library.as_deref().unwrap_or("?").to_string(),
        })
    } else if !missing.is_empty() {
        Some(libs::missing(&missing))
    } else {
        None
    };
    CudaStatus {
        driver,
        gpus,
        ort_library,
        provider_in_build: provider,
        libraries,
        usable: reason.is_none(),
        reason: reason.map(|r| r.to_string()),
    }
}

/// Registers `device`'s CUDA execution provider on a session builder. CUDA registration must
/// not fall back to the CPU silently. CPU sessions get no provider options at all; Intel GPUs
/// are OpenVINO's (`runtime::engine`).
pub fn register(builder: SessionBuilder, device: Device) -> Result<SessionBuilder> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Xpu(_) => Err(crate::Error::runtime(format!(
            "{device} runs on OpenVINO, not on the CUDA provider"
        ))),
        Device::Cuda(n) => {
            // Preload CUDA 13 / cuDNN 9 with RTLD_GLOBAL before the provider is loaded.
            libs::preload();
            let cuda = cuda_options(n).build().error_on_failure();
            Ok(builder.with_execution_providers([cuda])?)
        }
    }
}

/// The CUDA provider's options for GPU `n`. TF32 off for fp32 parity. Each block is its own
/// session with its own CUDA arena (34 for ViT-H): growing each by exactly what is asked
/// rather than to the next power of two keeps the unused tails from adding up, and a
/// heuristic cuDNN convolution choice skips the exhaustive benchmark that would run for
/// every new input shape (the patch embedding is the only convolution).
fn cuda_options(n: u32) -> ep::CUDA {
    ep::CUDA::default()
        .with_device_id(n as i32)
        .with_tf32(false)
        .with_arena_extend_strategy(ep::ArenaExtendStrategy::SameAsRequested)
        .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Heuristic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_options_set_arena_and_conv_search() {
        // The option strings ONNX Runtime's CUDA provider parses (unknown values fail there).
        let opts = format!("{:?}", cuda_options(1));
        for kv in [
            ("device_id", "1"),
            ("use_tf32", "false"), // ORT parses "false" and "0" alike
            ("arena_extend_strategy", "kSameAsRequested"),
            ("cudnn_conv_algo_search", "HEURISTIC"),
        ] {
            let pair = format!("{:?}: {:?}", kv.0, kv.1);
            assert!(opts.contains(&pair), "{pair} not in {opts}");
        }
    }
}
