//! Execution devices for sessions: the CPU, or the CUDA execution provider on one GPU, with
//! the exact reason when a plan needs CUDA that this machine or runtime lacks.

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::SessionBuilder;

use crate::plan::{Device, Inventory};
use crate::{Error, ErrorKind, Result};

/// Whether this ONNX Runtime build has the CUDA execution provider compiled in.
pub fn cuda_provider_available() -> Result<bool> {
    super::environment()?;
    Ok(<ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false))
}

/// Checks that `device` can run sessions here: driver, GPU index, runtime provider.
pub fn check_usable(device: Device) -> Result<()> {
    let Device::Cuda(n) = device else {
        return Ok(());
    };
    // SAFETY: only tries to dlopen the driver library.
    let driver = std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
        .unwrap_or(false);
    let err = |msg: String| Err(Error::new(ErrorKind::Runtime, msg));
    if !driver {
        return err(format!(
            "the plan runs blocks on {device}, but this machine has no CUDA driver (libcuda.so.1 not found)"
        ));
    }
    let inv = Inventory::detect();
    if inv.get(device).is_none() {
        let gpus: Vec<String> = inv
            .devices
            .iter()
            .filter(|d| d.device.is_gpu())
            .map(|d| d.device.to_string())
            .collect();
        return err(format!(
            "the plan runs blocks on {device}, but there is no GPU {n} (this machine has {})",
            if gpus.is_empty() {
                "no usable GPU".to_string()
            } else {
                gpus.join(", ")
            }
        ));
    }
    if !cuda_provider_available()? {
        let lib = super::env::loaded_library()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return err(format!(
            "the plan runs blocks on {device}, but the ONNX Runtime build at {lib} has no CUDA execution provider; install the GPU build with `scripts/setup.sh --gpu` (onnxruntime-gpu==1.31.1)"
        ));
    }
    // gpu: the CUDA/cuDNN libraries the provider links against must load (see runtime::cuda).
    super::cuda::require_libraries()?;
    Ok(())
}

/// Registers `device`'s execution provider on a session builder. CUDA registration must not
/// fall back to the CPU silently. CPU sessions get no provider options at all.
pub fn register(builder: SessionBuilder, device: Device) -> Result<SessionBuilder> {
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(n) => {
            // gpu: preload CUDA 13 / cuDNN 9 with RTLD_GLOBAL before the provider is loaded.
            super::cuda::preload();
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
