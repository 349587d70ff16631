//! Why CUDA cannot be used here, worded once: the driver probe (and through it the planner's
//! inventory), the device check before a plan loads and the provider status of `devices`
//! all say it the same way.
//!
//! A leaf: it depends on nothing else in the crate but the error type, so the driver probe
//! can use it without an import cycle.

use std::fmt;

use crate::{Error, ErrorKind};

/// The provider library that must sit beside `libonnxruntime.so.1.31.1` in a GPU build.
pub const PROVIDER_LIB: &str = "libonnxruntime_providers_cuda.so";

/// How to get the GPU build and its CUDA libraries, for an installed wheel (the package is a
/// wheel file on no index, and `onnxruntime` must go first: both builds are the same module)
/// and for a checkout.
const GPU_HINT: &str = "where the wheel is installed, the wheel file again with its [gpu] extra, `pip install \"distorch_vision-<version>-py3-none-manylinux_2_28_x86_64.whl[gpu]\"` (onnxruntime-gpu with NVIDIA's CUDA 13 / cuDNN 9 wheels; first `pip uninstall -y onnxruntime` when the CPU build is there); in a checkout, `scripts/setup.sh --gpu`";

/// One reason CUDA cannot run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `libcuda.so.1` cannot be opened.
    NoDriver,
    /// The driver opens but fails when asked for its GPUs (its error).
    DriverFailed(String),
    /// The driver reports no GPU at all.
    NoGpus,
    /// GPU `n` is not among this machine's usable GPUs (`present`, e.g. `cuda:0`).
    NoGpu { n: u32, present: Vec<String> },
    /// ONNX Runtime itself cannot be loaded (its error).
    NoOrt(String),
    /// The ONNX Runtime build at `library` has no CUDA execution provider.
    NoProvider { library: String },
    /// CUDA libraries the provider links against cannot be loaded: their names, and the
    /// folders searched before the system linker path.
    MissingLibraries {
        missing: Vec<String>,
        searched: Vec<String>,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoDriver => f.write_str("no CUDA driver (libcuda.so.1 not found)"),
            Unavailable::DriverFailed(e) => {
                write!(f, "the CUDA driver is present but unusable ({e})")
            }
            Unavailable::NoGpus => f.write_str("no GPU (the CUDA driver reports none)"),
            Unavailable::NoGpu { n, present } => write!(
                f,
                "no GPU {n} (this machine has {})",
                if present.is_empty() {
                    "no usable GPU".to_string()
                } else {
                    present.join(", ")
                }
            ),
            Unavailable::NoOrt(e) => write!(f, "ONNX Runtime cannot be loaded: {e}"),
            Unavailable::NoProvider { library } => write!(
                f,
                "the ONNX Runtime build at {library} has no CUDA execution provider ({PROVIDER_LIB} missing or not compiled in); install onnxruntime-gpu {} or newer instead of onnxruntime: {GPU_HINT}",
                crate::runtime::library::ORT_VERSION
            ),
            Unavailable::MissingLibraries { missing, searched } => write!(
                f,
                "CUDA libraries missing: {} (looked in {} and the system linker path; {GPU_HINT}, or set DISTORCH_CUDA_LIB_DIRS)",
                missing.join(", "),
                searched.join(", ")
            ),
        }
    }
}

impl Unavailable {
    /// The error for a plan that runs blocks on `device`, which cannot run here.
    pub fn for_device(&self, device: impl fmt::Display) -> Error {
        Error::new(
            ErrorKind::Runtime,
            format!("the plan runs blocks on {device}, which cannot run here: {self}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording() {
        assert_eq!(
            Unavailable::NoDriver.to_string(),
            "no CUDA driver (libcuda.so.1 not found)"
        );
        let none = Unavailable::NoGpu {
            n: 2,
            present: vec![],
        };
        assert_eq!(
            none.to_string(),
            "no GPU 2 (this machine has no usable GPU)"
        );
        let some = Unavailable::NoGpu {
            n: 2,
            present: vec!["cuda:0".into(), "cuda:1".into()],
        };
        assert_eq!(
            some.to_string(),
            "no GPU 2 (this machine has cuda:0, cuda:1)"
        );
        let e = Unavailable::NoDriver.for_device("cuda:0");
        assert_eq!(e.kind(), ErrorKind::Runtime);
        assert_eq!(
            e.message(),
            "the plan runs blocks on cuda:0, which cannot run here: no CUDA driver (libcuda.so.1 not found)"
        );
        let p = Unavailable::NoProvider {
            library: "/x/libonnxruntime.so".into(),
        };
        assert!(p.to_string().contains(PROVIDER_LIB), "{p}");
        // What to do, for a wheel (on no index: its file with [gpu]) and for a checkout.
        let libs = Unavailable::MissingLibraries {
            missing: vec!["libcudnn.so.9".into()],
            searched: vec!["/x/nvidia".into()],
        };
        for m in [p.to_string(), libs.to_string()] {
            assert!(
                m.contains(".whl[gpu]") && m.contains("scripts/setup.sh --gpu"),
                "{m}"
            );
        }
    }
}
